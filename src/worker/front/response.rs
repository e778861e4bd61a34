//! What a handler returns, and how it goes on the wire. The app chooses the
//! status, its reason phrase and the headers; the front alone chooses the
//! framing (`Content-Length`, chunked, or close-delimited) and the
//! connection headers, so that nothing the app sends can change where this
//! response ends. Headers with bytes that could inject a line (CR, LF, NUL
//! or any other control byte) turn the response into a 500 and a log line.
//!
//! As PEP 3333 asks, the head is written only once the body produced its
//! first non-empty chunk (or ended): an app whose iterator fails before
//! that still gets a clean 500.

use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::Protocol;
use super::request::Version;
use super::sendfile::{self, FileBody, Out};

/// The chunks of a streamed body, produced on the serving thread.
pub type Chunks = Box<dyn Iterator<Item = io::Result<Vec<u8>>>>;

/// A response body.
pub enum ResponseBody {
    Empty,
    /// One chunk: written with its `Content-Length`.
    Full(Vec<u8>),
    /// Chunks pulled one at a time, each written before the next is asked
    /// for. `length`: the total, if the handler knows it (else the app's
    /// `Content-Length` header, else chunked on HTTP/1.1 — or, when the
    /// iterator's `size_hint` says exactly one chunk is left after the
    /// first, that chunk's length).
    Stream {
        chunks: Chunks,
        length: Option<u64>,
    },
    /// A file region, sent with `sendfile`; its length frames it (an app's
    /// smaller `Content-Length` sends only that much).
    File(FileBody),
}

/// What a [`super::Handler`] returns.
pub struct Response {
    /// The status code (200..=999; informational ones are refused).
    pub status: u16,
    /// The reason phrase as the app gave it (may be empty).
    pub reason: Vec<u8>,
    /// Header fields in order. `Content-Length` is read as the body's
    /// length; `Connection: close` closes after this response; other
    /// hop-by-hop fields (`Transfer-Encoding`, `Keep-Alive`, `Upgrade`...)
    /// are dropped: framing is the front's.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: ResponseBody,
}

impl Response {
    pub fn new(status: u16, reason: impl Into<Vec<u8>>) -> Response {
        Response { status, reason: reason.into(), headers: Vec::new(), body: ResponseBody::Empty }
    }
    pub fn header(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Response {
        self.body = ResponseBody::Full(bytes.into());
        self
    }
    pub fn stream(
        mut self,
        chunks: impl Iterator<Item = io::Result<Vec<u8>>> + 'static,
        length: Option<u64>,
    ) -> Response {
        self.body = ResponseBody::Stream { chunks: Box::new(chunks), length };
        self
    }
    /// A plain-text answer (errors the front makes itself).
    pub fn text(status: u16, reason: &str, body: &str) -> Response {
        Response::new(status, reason).header("Content-Type", "text/plain; charset=utf-8").body(format!("{body}\n"))
    }
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response").field("status", &self.status).field("headers", &self.headers.len()).finish()
    }
}

/// What the request and connection decide about the response.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ctx {
    pub protocol: Protocol,
    pub version: Version,
    /// A HEAD request: no body bytes.
    pub head: bool,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
}

/// What happened on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub status: u16,
    /// The connection may carry another request.
    pub keep_alive: bool,
    /// Bytes of the head: status line, header fields, blank line.
    pub head_bytes: u64,
    /// Body bytes handed to the connection (without chunk framing).
    pub body_bytes: u64,
    /// Header fields in the head.
    pub headers: u32,
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    NoBody,
    Length(u64),
    Chunked,
    Close,
}

/// A response checked and with its first chunk pulled.
struct Prepared {
    status: u16,
    reason: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body's length, when known.
    length: Option<u64>,
    /// The app asked for `Connection: close`.
    close: bool,
    first: Vec<u8>,
    rest: Option<Chunks>,
    file: Option<FileBody>,
}

/// Writes `resp`; never fails (a failed write closes the connection).
pub(super) fn write_response(out: &mut dyn Out, resp: Response, ctx: &Ctx) -> Written {
    let prepared = match prepare(resp, ctx) {
        Ok(p) => p,
        Err(why) => {
            tracing::error!(why, "the app's response cannot be sent; answered 500 instead");
            let fallback = Response::text(500, "Internal Server Error", "Internal Server Error");
            match prepare(fallback, ctx) {
                Ok(p) => p,
                Err(_) => return Written { status: 500, ..Written::default() },
            }
        }
    };
    let status = prepared.status;
    let frame = frame(&prepared, ctx);
    let keep_alive = ctx.keep_alive && !prepared.close && frame != Frame::Close;
    let mut w = BodyWriter { out, pending: Vec::with_capacity(1024), frame, written: 0 };
    let headers = write_head(&mut w.pending, &prepared, ctx, frame, keep_alive);
    let head_bytes = w.pending.len() as u64;
    let complete = match prepared.file {
        Some(file) if frame != Frame::NoBody => w.file(&file).is_ok_and(|done| done),
        _ => w.body(prepared.first, prepared.rest).is_ok_and(|done| done),
    };
    Written { status, keep_alive: keep_alive && complete, head_bytes, body_bytes: w.written, headers }
}

fn frame(p: &Prepared, ctx: &Ctx) -> Frame {
    if ctx.head || p.status == 204 || p.status == 304 {
        Frame::NoBody
    } else if let Some(n) = p.length {
        Frame::Length(n)
    } else if chunked_allowed(ctx) {
        Frame::Chunked
    } else {
        Frame::Close
    }
}

/// Chunked framing needs an HTTP/1.1 client on HTTP; nginx's uwsgi module
/// reads a response up to the close and would pass chunk sizes through.
fn chunked_allowed(ctx: &Ctx) -> bool {
    ctx.protocol == Protocol::Http && ctx.version == Version::Http11
}

/// Writes the head into `buf`; returns how many header fields it has.
fn write_head(buf: &mut Vec<u8>, p: &Prepared, ctx: &Ctx, frame: Frame, keep_alive: bool) -> u32 {
    let mut fields = p.headers.len() as u32;
    // HTTP: this server's version, whatever the client's (RFC 9110 §6.2);
    // uwsgi: the request's, as uWSGI answers nginx.
    let version = if ctx.protocol == Protocol::Http { Version::Http11 } else { ctx.version };
    buf.extend_from_slice(version.as_bytes());
    // By hand: `write!` goes through the formatting machinery, which cost
    // more than the rest of the head.
    let status = [b' ', digit(p.status / 100), digit(p.status / 10), digit(p.status), b' '];
    buf.extend_from_slice(&status);
    buf.extend_from_slice(&p.reason);
    buf.extend_from_slice(b"\r\n");
    for (name, value) in &p.headers {
        buf.extend_from_slice(name);
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value);
        buf.extend_from_slice(b"\r\n");
    }
    // A HEAD answer carries the framing header a GET would have had.
    match (p.status, p.length) {
        (204, _) | (304, None) => {}
        (_, Some(n)) => {
            buf.extend_from_slice(b"Content-Length: ");
            decimal(buf, n);
            buf.extend_from_slice(b"\r\n");
            fields += 1;
        }
        (_, None) if frame == Frame::Chunked || (ctx.head && chunked_allowed(ctx)) => {
            buf.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            fields += 1;
        }
        (_, None) => {}
    }
    if ctx.protocol == Protocol::Http {
        if !keep_alive {
            buf.extend_from_slice(b"Connection: close\r\n");
            fields += 1;
        } else if ctx.version == Version::Http10 {
            buf.extend_from_slice(b"Connection: keep-alive\r\n");
            fields += 1;
        }
    }
    buf.extend_from_slice(b"\r\n");
    fields
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u16) -> u8 {
    b'0' + (n % 10) as u8
}

/// Appends `n` in decimal (without the `fmt` machinery, which would cost
/// more than the rest of a response head or an access-log line).
pub(crate) fn decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Checks the app's status and headers, reads its framing wishes, and
/// pulls the body's first non-empty chunk. `Err`: why it must be a 500.
fn prepare(resp: Response, ctx: &Ctx) -> Result<Prepared, String> {
    if !(200..=999).contains(&resp.status) {
        return Err(format!("status {} (informational or out of range)", resp.status));
    }
    if !resp.reason.iter().all(|b| is_field_byte(*b)) {
        return Err("control byte in the reason phrase".into());
    }
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut declared: Option<u64> = None;
    let mut close = false;
    for (name, value) in resp.headers {
        if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
            return Err(format!("invalid header name {:?}", String::from_utf8_lossy(&name)));
        }
        if !value.iter().all(|b| is_field_byte(*b)) {
            return Err(format!("control byte in the value of header {}", String::from_utf8_lossy(&name)));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = super::http::parse_length(&value).ok_or("invalid Content-Length from the app")?;
            if declared.is_some_and(|d| d != n) {
                return Err("differing Content-Length headers from the app".into());
            }
            declared = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if !is_hop_by_hop(&name) {
            headers.push((name, value));
        }
    }
    let no_body = ctx.head || resp.status == 204 || resp.status == 304;
    if let ResponseBody::File(mut file) = resp.body {
        match declared {
            Some(n) if n > file.length => {
                return Err(format!("Content-Length {n} is more than the {} bytes left in the file", file.length));
            }
            Some(n) => file.length = n,
            None => {}
        }
        let length = Some(file.length);
        return Ok(Prepared {
            status: resp.status,
            reason: resp.reason,
            headers,
            length,
            close,
            first: Vec::new(),
            rest: None,
            file: Some(file),
        });
    }
    let (length, first, rest) = pull_first(resp.body, declared, no_body)?;
    Ok(Prepared { status: resp.status, reason: resp.reason, headers, length, close, first, rest, file: None })
}

type Pulled = (Option<u64>, Vec<u8>, Option<Chunks>);

/// The body's known length, its first non-empty chunk (empty: none) and
/// the rest. For a response without body (HEAD, 204, 304) nothing is
/// pulled, except a lone chunk whose length a HEAD answer reports.
fn pull_first(body: ResponseBody, declared: Option<u64>, no_body: bool) -> Result<Pulled, String> {
    let (mut chunks, length) = match body {
        ResponseBody::Empty => return Ok((Some(declared.unwrap_or(0)), Vec::new(), None)),
        ResponseBody::Full(v) => return Ok((Some(v.len() as u64), v, None)),
        ResponseBody::Stream { chunks, length } => (chunks, length),
        ResponseBody::File(_) => return Err("a file body reached the chunk path (a bug)".into()),
    };
    if let (Some(a), Some(b)) = (length, declared) {
        if a != b {
            return Err(format!("Content-Length {b} differs from the body length {a} the handler gave"));
        }
    }
    let known = length.or(declared);
    if no_body {
        if known.is_none() && chunks.size_hint() == (1, Some(1)) {
            let lone = next_chunk(&mut chunks).map_err(|e| format!("body iterator failed: {e}"))?;
            return Ok((Some(lone.map_or(0, |c| c.len() as u64)), Vec::new(), None));
        }
        return Ok((known, Vec::new(), None));
    }
    loop {
        match next_chunk(&mut chunks) {
            Err(e) => return Err(format!("body iterator failed before its first chunk: {e}")),
            Ok(None) => return Ok((Some(known.unwrap_or(0)), Vec::new(), None)),
            Ok(Some(c)) if c.is_empty() => continue,
            Ok(Some(c)) => {
                let single = known.is_none() && chunks.size_hint() == (0, Some(0));
                let length = if single { Some(c.len() as u64) } else { known };
                return Ok((length, c, Some(chunks)));
            }
        }
    }
}

/// The next chunk; a panic in the iterator (app code) is an error.
fn next_chunk(chunks: &mut Chunks) -> io::Result<Option<Vec<u8>>> {
    match catch_unwind(AssertUnwindSafe(|| chunks.next())) {
        Ok(next) => next.transpose(),
        Err(panic) => Err(io::Error::other(format!("panicked: {}", super::panic_text(&*panic)))),
    }
}

/// Writes body bytes in the chosen framing, coalescing small pieces.
struct BodyWriter<'o> {
    out: &'o mut dyn Out,
    pending: Vec<u8>,
    frame: Frame,
    written: u64,
}

/// Pieces up to this size are copied into one buffer and written together
/// (head and a small body in one segment); larger ones go out directly.
const COALESCE: usize = 16 * 1024;

impl BodyWriter<'_> {
    /// Writes the body; Ok(true) when it went out whole and framed.
    fn body(&mut self, first: Vec<u8>, rest: Option<Chunks>) -> io::Result<bool> {
        let mut whole = self.frame == Frame::NoBody || self.chunk(&first)?;
        if let (Some(mut chunks), false) = (rest, self.frame == Frame::NoBody) {
            while whole {
                match next_chunk(&mut chunks) {
                    Ok(Some(c)) => whole = self.chunk(&c)?,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "the app's body iterator failed mid-body; closing the connection");
                        whole = false;
                    }
                }
            }
        }
        if let Frame::Length(n) = self.frame {
            if whole && self.written < n {
                tracing::error!(
                    declared = n,
                    sent = self.written,
                    "the app's body is shorter than its length; closing"
                );
                whole = false;
            }
        }
        if whole && self.frame == Frame::Chunked {
            self.pending.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush()?;
        Ok(whole && self.frame != Frame::Close)
    }

    /// A file body after the head; Ok(true) when it went out whole.
    fn file(&mut self, file: &FileBody) -> io::Result<bool> {
        self.flush_pending()?;
        let sent = sendfile::send(self.out, file)?;
        self.written += sent;
        if sent < file.length {
            tracing::error!(promised = file.length, sent, "the file shrank while it was sent; closing");
        }
        self.out.flush()?;
        Ok(sent == file.length && self.frame != Frame::Close)
    }

    /// One chunk; Ok(false) when it overran the declared length (cut).
    fn chunk(&mut self, data: &[u8]) -> io::Result<bool> {
        if data.is_empty() {
            return Ok(true);
        }
        let mut data = data;
        let mut fits = true;
        if let Frame::Length(n) = self.frame {
            let room = n.saturating_sub(self.written);
            if data.len() as u64 > room {
                tracing::error!(declared = n, "the app's body is longer than its length; cut and closing");
                data = &data[..usize::try_from(room).unwrap_or(0)];
                fits = false;
            }
        }
        if self.frame == Frame::Chunked {
            let _ = write!(self.pending, "{:x}\r\n", data.len());
        }
        if data.len() <= COALESCE {
            self.pending.extend_from_slice(data);
        } else {
            self.flush_pending()?;
            self.out.write_all(data)?;
        }
        if self.frame == Frame::Chunked {
            self.pending.extend_from_slice(b"\r\n");
        }
        self.written += data.len() as u64;
        if self.pending.len() > COALESCE {
            self.flush_pending()?;
        }
        Ok(fits)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.out.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        self.out.flush()
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a field value or reason phrase: HTAB, SP, visible
/// ASCII, obs-text; never CR, LF, NUL or another control byte.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

fn is_hop_by_hop(name: &[u8]) -> bool {
    [&b"keep-alive"[..], b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests;
