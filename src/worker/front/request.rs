//! The request both protocols produce, in the terms a WSGI `environ` needs
//! (PEP 3333, CGI): method, `SCRIPT_NAME`/`PATH_INFO`/`QUERY_STRING`,
//! header fields, peer, server and scheme. Everything borrows the request
//! head the connection read (no copies), except a `PATH_INFO` that had to
//! be percent-decoded. The body is not here: it is the
//! [`super::RequestBody`] handed next to it, read from the connection.

use std::borrow::Cow;

use super::Protocol;

/// A byte range in a request head (offsets, so that a parsed head can be
/// kept while its bytes move to another buffer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
    /// The span of `part`, which must lie inside `base` (a sub-slice of
    /// it); an empty span at 0 otherwise, which no caller relies on.
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if start <= base.len() && part.len() <= base.len() - start {
            Span::new(start, start + part.len())
        } else {
            Span::default()
        }
    }
    /// The bytes of the span in `buf`; empty if it does not fit.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start..self.end).unwrap_or_default()
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A header field or uwsgi var as spans of its name and value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: Span,
    pub value: Span,
}

/// An ordered list of (name, value) byte strings over a head buffer.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    buf: &'a [u8],
    spans: &'a [FieldSpan],
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8], spans: &'a [FieldSpan]) -> Fields<'a> {
        Fields { buf, spans }
    }
    pub fn empty() -> Fields<'static> {
        Fields { buf: &[], spans: &[] }
    }
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    /// The pairs in the order they arrived (repeated names included).
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let buf = self.buf;
        self.spans.iter().map(move |f| (f.name.get(buf), f.value.get(buf)))
    }
    /// The first value whose name equals `name` ASCII-case-insensitively.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// The HTTP version of a request (`SERVER_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// `wsgi.url_scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One request, borrowed from its head. Field meanings follow CGI/PEP 3333
/// so that the WSGI bridge copies each into `environ` as it is.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The wire protocol it came by.
    pub protocol: Protocol,
    /// `REQUEST_METHOD`.
    pub method: &'a [u8],
    /// `REQUEST_URI`: the target as received (not decoded).
    pub request_uri: &'a [u8],
    /// `SCRIPT_NAME`: empty for HTTP (mounts are the bridge's business);
    /// the var for uwsgi.
    pub script_name: &'a [u8],
    /// `PATH_INFO`: the percent-decoded path, as bytes (the bridge makes a
    /// latin-1 `str` of them, as PEP 3333 says).
    pub path_info: Cow<'a, [u8]>,
    /// `QUERY_STRING`, as received (not decoded).
    pub query_string: &'a [u8],
    /// `SERVER_PROTOCOL`, e.g. `HTTP/1.1`.
    pub server_protocol: &'a [u8],
    /// The version the response is framed for.
    pub version: Version,
    /// Header fields: for HTTP as received (`Content-Type: ...`); for
    /// uwsgi the `HTTP_*` vars plus `CONTENT_TYPE` and `CONTENT_LENGTH`.
    /// [`Request::header`] and [`Request::cgi_headers`] read both forms.
    pub headers: Fields<'a>,
    /// Every uwsgi var in packet order (the bridge puts them all in
    /// `environ`, as uWSGI does); empty for HTTP.
    pub vars: Fields<'a>,
    /// `REMOTE_ADDR`/`REMOTE_PORT`: empty when unknown (a Unix socket).
    pub remote_addr: &'a [u8],
    pub remote_port: &'a [u8],
    /// `SERVER_NAME`/`SERVER_PORT`.
    pub server_name: &'a [u8],
    pub server_port: &'a [u8],
    /// `wsgi.url_scheme`.
    pub scheme: Scheme,
    /// The body's declared length (`CONTENT_LENGTH`); None for a chunked
    /// body (its length is known only once read) and for no body.
    pub content_length: Option<u64>,
    /// The connection's socket, open for as long as the handler runs (a
    /// watchdog may answer on it, see `harakiri`); None in tests.
    pub conn_fd: Option<std::os::fd::RawFd>,
    /// The connection is TCP, whose `TCP_INFO` tells how long the request
    /// waited (false for a UNIX socket: asking would be a failed syscall
    /// per request).
    pub conn_tcp: bool,
}

impl<'a> Request<'a> {
    /// The value of header `name` (any case, HTTP form: `content-type`,
    /// `x-forwarded-for`), whichever protocol the request came by.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        match self.protocol {
            Protocol::Http => self.headers.get(name.as_bytes()),
            Protocol::Uwsgi => {
                let mut key = Vec::with_capacity(name.len() + 5);
                cgi_name(name.as_bytes(), &mut key);
                self.headers.get(&key)
            }
        }
    }

    /// The header fields under their CGI names (`HTTP_HOST`,
    /// `CONTENT_TYPE`), as `environ` keys them, in arrival order.
    pub fn cgi_headers(&self) -> impl Iterator<Item = (Cow<'a, [u8]>, &'a [u8])> + 'a {
        let protocol = self.protocol;
        self.headers.iter().map(move |(name, value)| match protocol {
            Protocol::Uwsgi => (Cow::Borrowed(name), value),
            Protocol::Http => {
                let mut key = Vec::with_capacity(name.len() + 5);
                cgi_name(name, &mut key);
                (Cow::Owned(key), value)
            }
        })
    }
}

/// Appends the CGI name of HTTP field `name` to `out`: `HTTP_` + upper
/// case with `-` as `_`, except `CONTENT_TYPE` and `CONTENT_LENGTH`,
/// which CGI names without the prefix.
pub fn cgi_name(name: &[u8], out: &mut Vec<u8>) {
    let bare = name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"content-length");
    if !bare {
        out.extend_from_slice(b"HTTP_");
    }
    out.extend(name.iter().map(|b| if *b == b'-' { b'_' } else { b.to_ascii_uppercase() }));
}

/// Percent-decodes a path (PEP 3333's `PATH_INFO`). `%2F` becomes `/` as
/// in every WSGI server; a `%` not followed by two hex digits stays as it
/// is. Borrows when there is nothing to decode.
pub fn decode_path(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).and_then(|h| Some((hex_val(h[0])? << 4) | hex_val(h[1])?));
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_path_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/b", b"/a/b"),
            (b"/a%20b", b"/a b"),
            (b"/a%2Fb", b"/a/b"),
            (b"/%e9t%C3%A9", b"/\xe9t\xc3\xa9"),
            (b"/100%", b"/100%"),
            (b"/%zz%4", b"/%zz%4"),
            (b"/%%41", b"/%A"),
            (b"%", b"%"),
        ];
        for (raw, want) in cases {
            assert_eq!(&*decode_path(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn cgi_names() {
        for (name, want) in [
            ("Host", "HTTP_HOST"),
            ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
            ("Content-Type", "CONTENT_TYPE"),
            ("CONTENT-LENGTH", "CONTENT_LENGTH"),
        ] {
            let mut out = Vec::new();
            cgi_name(name.as_bytes(), &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn span_of_outside_slice_is_empty() {
        let a = b"hello world";
        let b = b"other";
        assert_eq!(Span::of(a, &a[6..]), Span::new(6, 11));
        assert_eq!(Span::of(a, b), Span::default());
    }
}
