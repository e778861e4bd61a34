//! The probe server's request-head parser and its fixed answers: bytes in,
//! a verdict out ([`parse_head`] cannot panic and reads nothing past the
//! head). Used by the guard only; it never touches a socket.

/// Largest request head accepted; probes send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a head (kubelet sends four or five).
const MAX_HEADERS: usize = 100;

/// Methods the probe endpoints serve; anything else is answered 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A request the guard accepted, for a handler thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The request target (path and query), visible ASCII only.
    pub target: String,
    /// (1, 0) or (1, 1).
    pub version: (u8, u8),
    /// The `Accept` field values joined with `, ` (RFC 9110 5.3), empty
    /// when there is none; `/metrics` picks its format from it. Bytes that
    /// are not UTF-8 (obs-text) become U+FFFD.
    pub accept: String,
}

/// What [`parse_head`] made of the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A request for the handlers.
    Request(Request),
    /// A complete but unacceptable head: answer with this status and close.
    Reject(u16, &'static str),
}

/// Parses a request head from raw bytes. Line ends may be CRLF or bare LF
/// (RFC 9112 allows a server to accept LF). Never panics, never allocates
/// more than the head, and reads nothing past it (a body is not read).
pub fn parse_head(buf: &[u8]) -> Parsed {
    let Some(end) = head_end(buf) else {
        return if buf.len() > MAX_HEAD { Parsed::Reject(431, "request head too large") } else { Parsed::Partial };
    };
    if end > MAX_HEAD {
        return Parsed::Reject(431, "request head too large");
    }
    let mut lines = buf[..end].split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // RFC 9112 2.2: a server should ignore empty lines before the request line.
    let request_line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Reject(400, "malformed request line");
    };
    let version = match version {
        b"HTTP/1.1" => (1, 1),
        b"HTTP/1.0" => (1, 0),
        v if v.len() == 8
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[6] == b'.'
            && v[7].is_ascii_digit() =>
        {
            return Parsed::Reject(505, "HTTP version not supported");
        }
        _ => return Parsed::Reject(400, "malformed HTTP version"),
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Parsed::Reject(400, "malformed method");
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return Parsed::Reject(400, "malformed request target");
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut accept = String::new();
    for (n, line) in lines.filter(|l| !l.is_empty()).enumerate() {
        if n >= MAX_HEADERS {
            return Parsed::Reject(431, "too many header fields");
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Parsed::Reject(400, "malformed header field");
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Parsed::Reject(400, "malformed header name");
        }
        // Field values may hold obs-text (bytes >= 0x80), never NUL or CR.
        if value.iter().any(|b| *b == 0 || *b == b'\r' || (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            return Parsed::Reject(400, "malformed header value");
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(len) = parse_length(value) else { return Parsed::Reject(400, "malformed Content-Length") };
            if content_length.is_some_and(|l| l != len) {
                return Parsed::Reject(400, "conflicting Content-Length");
            }
            content_length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"accept") {
            if !accept.is_empty() {
                accept.push_str(", ");
            }
            accept.push_str(&String::from_utf8_lossy(value));
        }
    }
    if chunked && content_length.is_some() {
        return Parsed::Reject(400, "both Transfer-Encoding and Content-Length");
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Parsed::Reject(405, "method not allowed: probes are read-only (GET, HEAD)"),
    };
    // Visible ASCII only, so this is valid UTF-8.
    let target = origin_form(&String::from_utf8_lossy(target));
    Parsed::Request(Request { method, target, version, accept })
}

/// The path and query of a request target: an absolute-form target
/// (`http://host:port/livez?x`, which RFC 9112 requires servers to accept)
/// loses its scheme and authority; other forms are kept as they are.
fn origin_form(target: &str) -> String {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"].iter().find_map(|p| lower.starts_with(p).then(|| &target[p.len()..]))
    else {
        return target.to_owned();
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_owned(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_owned(),
    }
}

/// Index just past the blank line that ends the head (CRLF or LF forms).
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = 0;
    let mut seen_line = false;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let line = &buf[line_start..i];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if seen_line {
                    return Some(i + 1);
                }
            } else {
                seen_line = true;
            }
            line_start = i + 1;
        }
        i += 1;
    }
    None
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|b| *b != b' ' && *b != b'\t').map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// 1*DIGIT, at most 19 digits (no sign, no overflow).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// A complete answer the guard sends itself (no handler involved).
pub fn plain_answer(code: u16, why: &str) -> Vec<u8> {
    let reason = match code {
        400 => "Bad Request",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let allow = if code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}Connection: close\r\n\
         Content-Length: {}\r\n\r\n{why}\n",
        why.len() + 1
    )
    .into_bytes()
}
