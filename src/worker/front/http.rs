//! HTTP/1.1 request heads: parsing (httparse) and every decision made from
//! the head alone — the target's path and query, how the body is framed,
//! whether the connection may be kept alive, and which heads are refused.
//! It sees bytes straight from the network: it works on a bounded window
//! of them, returns an error for anything it does not accept, and cannot
//! panic.
//!
//! Framing follows RFC 9112 §6 with the request-smuggling defences:
//! `Content-Length` together with `Transfer-Encoding`, differing
//! `Content-Length` values, any transfer coding but a lone `chunked`, and
//! `Transfer-Encoding` on HTTP/1.0 are all refused with 400 and a close,
//! as is obsolete line folding (httparse refuses it in requests).

use super::Config;
use super::request::{FieldSpan, Span, Version};

/// Upper bound of [`Config::max_headers`]: the size of the parser's array,
/// which lives on the stack.
pub const HEADER_ARRAY: usize = 256;

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, or 0).
    Empty,
    Length(u64),
    Chunked,
}

/// A request head, as spans into the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, final empty line included.
    pub len: usize,
    pub method: Span,
    pub target: Span,
    /// The target's path (for absolute-form, after the authority; empty
    /// there means `/`). Not decoded.
    pub path: Span,
    pub query: Span,
    pub version: Version,
    pub framing: Framing,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1).
    pub expect_continue: bool,
}

/// Why a head is refused; each maps to the status sent before closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Over `buffer-size`, or more than `max_headers` fields: 431.
    TooLarge,
    TooManyHeaders,
    /// The declared body is over `limit-post`: 413.
    BodyTooLarge,
    /// An HTTP version other than 1.0 and 1.1: 505.
    Version,
    /// An `Expect` other than `100-continue`: 417.
    Expectation,
    /// Anything else malformed or ambiguous: 400, with why (for the log).
    Bad(&'static str),
}

impl HeadError {
    /// The status code and reason phrase of the answer.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => (431, "Request Header Fields Too Large"),
            HeadError::BodyTooLarge => (413, "Content Too Large"),
            HeadError::Version => (505, "HTTP Version Not Supported"),
            HeadError::Expectation => (417, "Expectation Failed"),
            HeadError::Bad(_) => (400, "Bad Request"),
        }
    }
    pub fn why(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head larger than buffer-size",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::BodyTooLarge => "declared body larger than limit-post",
            HeadError::Version => "unsupported HTTP version",
            HeadError::Expectation => "unsupported Expect",
            HeadError::Bad(why) => why,
        }
    }
}

/// Decides when to run the parser over a growing buffer: on the first
/// bytes (garbage without a line end, such as a TLS hello or a uwsgi
/// packet, is refused at once instead of holding a thread until the head
/// deadline), once the request line is complete, and whenever an empty
/// line appears. Reparsing after every read instead
/// would cost the square of the head size against a client that sends a
/// byte at a time.
#[derive(Debug, Default)]
pub struct HeadScan {
    scanned: usize,
    line_seen: bool,
}

impl HeadScan {
    /// Whether `buf` (the same buffer, grown) is worth parsing now.
    pub fn should_parse(&mut self, buf: &[u8]) -> bool {
        let first = self.scanned == 0;
        let from = self.scanned.saturating_sub(2);
        self.scanned = buf.len();
        let new = buf.get(from..).unwrap_or_default();
        let mut hit = first && !buf.is_empty();
        for (i, b) in new.iter().enumerate() {
            if *b != b'\n' {
                continue;
            }
            if !self.line_seen {
                self.line_seen = true;
                hit = true;
            }
            let rest = &new[i + 1..];
            if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
                hit = true;
            }
        }
        hit
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: incomplete, read
/// more. Header field spans go to `fields` (cleared first). Only the first
/// `config.buffer_size` bytes are looked at.
pub fn parse_head(buf: &[u8], config: &Config, fields: &mut Vec<FieldSpan>) -> Result<Option<Head>, HeadError> {
    fields.clear();
    let window = &buf[..buf.len().min(config.buffer_size)];
    // Uninitialised: filling 256 empty headers (8 KiB) per request cost
    // more than parsing a short head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_ARRAY];
    let max = config.max_headers.clamp(1, HEADER_ARRAY);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(window, &mut headers[..max]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() >= config.buffer_size => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(parse_error(e, window)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("incomplete request line"));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    for h in req.headers.iter() {
        fields.push(FieldSpan { name: Span::of(window, h.name.as_bytes()), value: Span::of(window, h.value) });
    }
    let target_span = Span::of(window, target.as_bytes());
    let (path, query, authority) = split_target(window, target_span, method)?;
    let view = FieldView { buf: window, fields };
    host_rules(&view, version, authority)?;
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: the target's authority replaces Host.
        if let Some(host) = fields.iter_mut().find(|f| f.name.get(window).eq_ignore_ascii_case(b"host")) {
            host.value = authority;
        }
    }
    let view = FieldView { buf: window, fields };
    let framing = framing(&view, version)?;
    if let (Framing::Length(n), Some(limit)) = (framing, config.limit_post) {
        if n > limit {
            return Err(HeadError::BodyTooLarge);
        }
    }
    let expect_continue = expect_continue(&view, version)?;
    Ok(Some(Head {
        len,
        method: Span::of(window, method.as_bytes()),
        target: target_span,
        path,
        query,
        version,
        framing,
        keep_alive: keep_alive(&view, version),
        expect_continue,
    }))
}

/// httparse's error, made precise where the head shows more.
fn parse_error(e: httparse::Error, window: &[u8]) -> HeadError {
    let first_line = window.split(|b| *b == b'\n').next().unwrap_or_default();
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        // httparse says Version for `HTTP/2.0`, for `FOO/1.1` and for a
        // target with a space (`GET /a b HTTP/1.1`) alike: only the first
        // is an unsupported version (505), the others are malformed (400).
        httparse::Error::Version if unsupported_version(first_line) => HeadError::Version,
        httparse::Error::Version if first_line.windows(6).any(|w| w == b" HTTP/") => {
            HeadError::Bad("invalid request line")
        }
        // A field line starting with a space or tab: httparse refuses it as
        // a bad name; RFC 9112 §5.2 calls it obs-fold (400 for a request).
        httparse::Error::HeaderName if window.windows(2).any(|w| w == b"\n " || w == b"\n\t") => {
            HeadError::Bad("obsolete line folding in a header field")
        }
        httparse::Error::HeaderName => HeadError::Bad("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Bad("invalid byte in a header field value"),
        httparse::Error::NewLine => HeadError::Bad("invalid line ending"),
        httparse::Error::Token => HeadError::Bad("invalid request line"),
        _ => HeadError::Bad("malformed request head"),
    }
}

/// A request line of three tokens whose last reads `HTTP/x.y` (digits):
/// well-formed, with a version this server does not speak.
fn unsupported_version(first_line: &[u8]) -> bool {
    let line = first_line.strip_suffix(b"\r").unwrap_or(first_line);
    let mut tokens = line.split(|b| *b == b' ');
    let (Some(_), Some(_), Some(version), None) = (tokens.next(), tokens.next(), tokens.next(), tokens.next()) else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Path, query and (absolute-form) authority of the request target.
fn split_target(buf: &[u8], target: Span, method: &str) -> Result<(Span, Span, Option<Span>), HeadError> {
    let t = target.get(buf);
    let at = |i: usize| target.start + i;
    let (rest_from, authority) = if t.first() == Some(&b'/') {
        (0, None)
    } else if t == b"*" {
        if method != "OPTIONS" {
            return Err(HeadError::Bad("asterisk-form target on a method other than OPTIONS"));
        }
        return Ok((target, Span::new(target.end, target.end), None));
    } else {
        let scheme_len = if starts_with_ignore_case(t, b"http://") {
            7
        } else if starts_with_ignore_case(t, b"https://") {
            8
        } else {
            return Err(HeadError::Bad("request target is neither a path nor an http(s) URL"));
        };
        let auth_end =
            t[scheme_len..].iter().position(|b| *b == b'/' || *b == b'?').map_or(t.len(), |p| p + scheme_len);
        if auth_end == scheme_len {
            return Err(HeadError::Bad("absolute-form target without a host"));
        }
        (auth_end, Some(Span::new(at(scheme_len), at(auth_end))))
    };
    let rest = &t[rest_from..];
    let (path, query) = match rest.iter().position(|b| *b == b'?') {
        Some(q) => (Span::new(at(rest_from), at(rest_from + q)), Span::new(at(rest_from + q + 1), target.end)),
        None => (Span::new(at(rest_from), target.end), Span::new(target.end, target.end)),
    };
    Ok((path, query, authority))
}

/// Field lookup over the spans of one head.
struct FieldView<'a> {
    buf: &'a [u8],
    fields: &'a [FieldSpan],
}

impl<'a> FieldView<'a> {
    fn values(&self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.name.get(self.buf).eq_ignore_ascii_case(name))
            .map(|f| f.value.get(self.buf))
    }
    /// The comma-separated elements of every `name` field, trimmed, empty
    /// ones skipped (RFC 9110 §5.6.1).
    fn elements(&self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.values(name).flat_map(|v| v.split(|b| *b == b',')).map(trim_ows).filter(|e| !e.is_empty())
    }
}

/// HTTP/1.1 needs exactly one Host (RFC 9112 §3.2: 400 otherwise); a
/// second Host is refused on any version.
fn host_rules(view: &FieldView<'_>, version: Version, authority: Option<Span>) -> Result<(), HeadError> {
    match view.values(b"host").count() {
        0 if version == Version::Http11 && authority.is_none() => Err(HeadError::Bad("HTTP/1.1 request without Host")),
        0 | 1 => Ok(()),
        _ => Err(HeadError::Bad("more than one Host field")),
    }
}

/// The body's framing, refusing every ambiguous combination.
fn framing(view: &FieldView<'_>, version: Version) -> Result<Framing, HeadError> {
    let has_te = view.values(b"transfer-encoding").next().is_some();
    let has_cl = view.values(b"content-length").next().is_some();
    if has_te {
        if version == Version::Http10 {
            return Err(HeadError::Bad("Transfer-Encoding on HTTP/1.0"));
        }
        if has_cl {
            return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
        }
        let mut codings = view.elements(b"transfer-encoding");
        return match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(HeadError::Bad("Transfer-Encoding other than a lone chunked")),
        };
    }
    let mut length: Option<u64> = None;
    for v in view.values(b"content-length") {
        // Each field may be a list of one repeated value (RFC 9110 §8.6);
        // an empty element is as invalid as a non-digit.
        for element in v.split(|b| *b == b',').map(trim_ows) {
            let n = parse_length(element).ok_or(HeadError::Bad("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Bad("differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// A decimal length: digits only (no sign, no spaces), at most 19 of them
/// so that it fits a u64 without overflow.
pub fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// HTTP/1.1: kept alive unless `Connection: close`; HTTP/1.0: only with
/// `Connection: keep-alive` (and no `close`).
fn keep_alive(view: &FieldView<'_>, version: Version) -> bool {
    let mut close = false;
    let mut keep = false;
    for token in view.elements(b"connection") {
        close |= token.eq_ignore_ascii_case(b"close");
        keep |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    !close && (version == Version::Http11 || keep)
}

/// `Expect: 100-continue` on HTTP/1.1 asks for a 100 before the body; an
/// HTTP/1.0 client cannot understand a 100, so there it is ignored (RFC
/// 9110 §10.1.1); any other expectation gets 417.
fn expect_continue(view: &FieldView<'_>, version: Version) -> Result<bool, HeadError> {
    let mut wants = false;
    for e in view.elements(b"expect") {
        if !e.eq_ignore_ascii_case(b"100-continue") {
            return Err(HeadError::Expectation);
        }
        wants = true;
    }
    Ok(wants && version == Version::Http11)
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|b| *b != b' ' && *b != b'\t').map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests;
