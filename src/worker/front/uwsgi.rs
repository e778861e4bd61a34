//! The uwsgi binary protocol, as nginx's `uwsgi_pass` and Apache's
//! mod_proxy_uwsgi send it (uWSGI's `core/protocol.c` is the contract): a
//! 4-byte header — modifier1 (u8, 0 = WSGI), the vars block's size (u16
//! little-endian), modifier2 (u8) — then the vars, each `u16 LE key length,
//! key, u16 LE value length, value`, then `CONTENT_LENGTH` bytes of body.
//! The answer is an HTTP/1.x status line, headers and the body up to the
//! close; one request per connection.
//!
//! The packet comes from the network: the vars block is bounded by
//! `buffer-size` (uWSGI refuses larger ones the same way), each var must
//! lie inside the block, their number is bounded, and nothing here panics.

use std::borrow::Cow;

use super::Protocol;
use super::request::{FieldSpan, Fields, Request, Scheme, Span, Version, decode_path};

/// Length of the packet header.
pub const HEADER_LEN: usize = 4;

/// Most vars in one packet: nginx's `uwsgi_params` has 15, plus one per
/// request header; [`super::Config::max_headers`] is added to this.
pub const EXTRA_VARS: usize = 64;

/// The 4-byte packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeader {
    pub modifier1: u8,
    pub size: u16,
    pub modifier2: u8,
}

impl PacketHeader {
    pub fn parse(b: [u8; HEADER_LEN]) -> PacketHeader {
        PacketHeader { modifier1: b[0], size: u16::from_le_bytes([b[1], b[2]]), modifier2: b[3] }
    }
}

/// Why a packet is refused (the connection is closed; nothing frames an
/// answer to a packet that is not a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// modifier1 other than 0 (WSGI): another plugin's request.
    Modifier(u8),
    /// The vars block is larger than `buffer-size`.
    TooLarge {
        size: u16,
        max: usize,
    },
    /// A var runs past the end of the block.
    Overrun,
    TooManyVars,
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::Modifier(m) => write!(f, "uwsgi packet with modifier1 {m}: only 0 (WSGI) is served"),
            PacketError::TooLarge { size, max } => {
                write!(f, "uwsgi vars block of {size} bytes is over buffer-size {max}: raise buffer-size")
            }
            PacketError::Overrun => write!(f, "uwsgi var runs past the end of the packet"),
            PacketError::TooManyVars => write!(f, "too many uwsgi vars in one packet"),
        }
    }
}

/// Checks a packet header against the limits: Ok(vars block size).
pub fn check_header(h: PacketHeader, buffer_size: usize) -> Result<usize, PacketError> {
    if h.modifier1 != 0 {
        return Err(PacketError::Modifier(h.modifier1));
    }
    if usize::from(h.size) > buffer_size {
        return Err(PacketError::TooLarge { size: h.size, max: buffer_size });
    }
    Ok(usize::from(h.size))
}

/// Splits a vars block into spans of keys and values (relative to
/// `block`), in packet order, into `out` (cleared first).
pub fn parse_vars(block: &[u8], max_vars: usize, out: &mut Vec<FieldSpan>) -> Result<(), PacketError> {
    out.clear();
    let mut at = 0;
    while at < block.len() {
        if out.len() >= max_vars {
            return Err(PacketError::TooManyVars);
        }
        let key = take_string(block, &mut at)?;
        let value = take_string(block, &mut at)?;
        out.push(FieldSpan { name: key, value });
    }
    Ok(())
}

/// One `u16 LE length, bytes` at `*at`.
fn take_string(block: &[u8], at: &mut usize) -> Result<Span, PacketError> {
    let len_bytes = block.get(*at..*at + 2).ok_or(PacketError::Overrun)?;
    let len = usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]]));
    let start = *at + 2;
    let end = start + len;
    if end > block.len() {
        return Err(PacketError::Overrun);
    }
    *at = end;
    Ok(Span::new(start, end))
}

/// Why a well-formed packet is still not a request the app can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarsError {
    /// No `REQUEST_METHOD`: usually an nginx `location` without
    /// `include uwsgi_params`.
    NoMethod,
    /// `CONTENT_LENGTH` is not a decimal number.
    BadLength,
}

/// Where the request's per-listener defaults come from.
pub struct Defaults<'a> {
    pub server_name: &'a [u8],
    pub server_port: &'a [u8],
}

/// Builds the request from a parsed vars block. `headers` receives the
/// spans of the `HTTP_*`, `CONTENT_TYPE` and `CONTENT_LENGTH` vars.
pub fn request<'a>(
    block: &'a [u8],
    vars: &'a [FieldSpan],
    headers: &'a mut Vec<FieldSpan>,
    defaults: &Defaults<'a>,
) -> Result<Request<'a>, VarsError> {
    let all = Fields::new(block, vars);
    let get = |name: &[u8]| all.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    let method = get(b"REQUEST_METHOD").filter(|m| !m.is_empty()).ok_or(VarsError::NoMethod)?;
    let content_length = match get(b"CONTENT_LENGTH") {
        None | Some(b"") => None,
        Some(v) => Some(super::http::parse_length(v).ok_or(VarsError::BadLength)?),
    };
    let request_uri = get(b"REQUEST_URI").unwrap_or_default();
    let (uri_path, uri_query) = match request_uri.iter().position(|b| *b == b'?') {
        Some(q) => (&request_uri[..q], &request_uri[q + 1..]),
        None => (request_uri, &b""[..]),
    };
    // nginx sends PATH_INFO decoded ($document_uri); without it, uWSGI
    // decodes REQUEST_URI's path.
    let path_info = match get(b"PATH_INFO") {
        Some(p) => Cow::Borrowed(p),
        None => decode_path(uri_path),
    };
    let server_protocol = get(b"SERVER_PROTOCOL").unwrap_or(b"HTTP/1.0");
    let version = if server_protocol == b"HTTP/1.1" { Version::Http11 } else { Version::Http10 };
    headers.clear();
    headers.extend(vars.iter().copied().filter(|f| {
        let k = f.name.get(block);
        k.starts_with(b"HTTP_") || k == b"CONTENT_TYPE" || k == b"CONTENT_LENGTH"
    }));
    Ok(Request {
        protocol: Protocol::Uwsgi,
        method,
        request_uri,
        script_name: get(b"SCRIPT_NAME").unwrap_or_default(),
        path_info,
        query_string: get(b"QUERY_STRING").unwrap_or(uri_query),
        server_protocol,
        version,
        headers: Fields::new(block, headers),
        vars: all,
        remote_addr: get(b"REMOTE_ADDR").unwrap_or_default(),
        remote_port: get(b"REMOTE_PORT").unwrap_or_default(),
        server_name: get(b"SERVER_NAME").unwrap_or(defaults.server_name),
        server_port: get(b"SERVER_PORT").unwrap_or(defaults.server_port),
        scheme: scheme(get(b"UWSGI_SCHEME"), get(b"HTTPS")),
        content_length,
        conn_fd: None,
        conn_tcp: false,
    })
}

/// `wsgi.url_scheme` as uWSGI sets it: `UWSGI_SCHEME` when present, else
/// https when `HTTPS` is `on` or `1` (nginx sends `HTTPS on` on TLS).
fn scheme(uwsgi_scheme: Option<&[u8]>, https: Option<&[u8]>) -> Scheme {
    match uwsgi_scheme {
        Some(s) if s.eq_ignore_ascii_case(b"https") => Scheme::Https,
        Some(s) if !s.is_empty() => Scheme::Http,
        _ => match https {
            Some(v) if v.eq_ignore_ascii_case(b"on") || v == b"1" => Scheme::Https,
            _ => Scheme::Http,
        },
    }
}

/// Encodes vars as a packet, as nginx does (for tests and tools).
pub fn encode_packet(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        for s in [k, v] {
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            block.extend_from_slice(&len.to_le_bytes());
            block.extend_from_slice(&s[..usize::from(len)]);
        }
    }
    let size = u16::try_from(block.len()).unwrap_or(u16::MAX);
    let mut packet = vec![0u8];
    packet.extend_from_slice(&size.to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&block);
    packet
}

#[cfg(test)]
mod tests;
