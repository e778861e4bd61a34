//! Serving one connection to completion on the calling thread. HTTP:
//! requests are read in order and answered in order (pipelining falls out
//! of that: bytes read past one request stay buffered for the next), as
//! long as both sides keep the connection alive and the worker is not
//! draining. uwsgi: one request, then close.
//!
//! Every failure ends in the most precise answer that can still be framed
//! — 4xx for a bad head, 413 over `limit-post`, 500 for a handler that
//! panicked (caught: logged, and the thread serves on) — or, when nothing
//! can be framed any more, in a close.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::body::{BodyFailure, Framing as BodyFraming, RequestBody};
use super::http::{self, Framing, Head, HeadError, HeadScan};
use super::outcome::Outcome;
use super::request::{FieldSpan, Fields, Request, Scheme, decode_path};
use super::response::{Ctx, Response, Written, write_response};
use super::stream::{Peer, Stream};
use super::uwsgi;
use super::wire::{FillError, Wait, Wire};
use super::{Config, Handler, Protocol};

/// Unread body bytes dropped to keep a connection alive after the handler
/// returned; with more left than this, the connection closes instead.
const DISCARD_MAX: u64 = 64 * 1024;

/// What a connection is served with: shared by every connection of a
/// listening socket.
pub(super) struct Site<'a> {
    pub handler: &'a dyn Handler,
    pub config: &'a Config,
    pub protocol: Protocol,
    /// `SERVER_NAME`/`SERVER_PORT` for HTTP (uwsgi: when the vars lack them).
    pub server_name: &'a str,
    pub server_port: &'a str,
    /// The listening socket this site's connections come from: while
    /// connections wait in its queue, a kept-alive connection is closed
    /// after its response, so a thread is not held by one client while
    /// others wait (with `threads` connections served at a time, keep-alive
    /// clients would otherwise keep every other client out for good).
    pub listener: std::os::fd::BorrowedFd<'a>,
}

impl Site<'_> {
    /// Whether connections are waiting to be accepted on this site's socket.
    fn others_waiting(&self) -> bool {
        let mut fds = [nix::poll::PollFd::new(self.listener, nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

/// Serves `stream` until it closes, times out, or the worker drains.
pub(super) fn serve_connection(stream: Box<dyn Stream>, peer: Peer, site: &Site<'_>, drain: &Arc<AtomicBool>) {
    let accepted = Instant::now();
    let mut wire = Wire::new(stream, site.config, Arc::clone(drain));
    let linger = match site.protocol {
        Protocol::Http => serve_http(&mut wire, &peer, site, accepted),
        Protocol::Uwsgi => serve_uwsgi(&mut wire, site, accepted),
    };
    wire.close(linger);
}

/// How reading the next head ended without one.
enum NoHead {
    /// Closed, idle timeout, or draining while idle: close quietly.
    Gone,
    /// The head took longer than `head_timeout`: 408, close.
    TimedOut,
    Refused(HeadError),
}

/// The HTTP request loop; returns whether to linger on close.
fn serve_http(wire: &mut Wire, peer: &Peer, site: &Site<'_>, accepted: Instant) -> bool {
    let config = site.config;
    let mut head_buf = Vec::with_capacity(config.buffer_size);
    let mut fields = Vec::new();
    // The first head must be complete within head_timeout of the accept;
    // later ones may wait keepalive_timeout for their first byte, and then
    // have head_timeout. Until a first byte comes, the wait is idle (a
    // drain ends it at once).
    let mut idle_until = accepted + config.head_timeout;
    let mut head_by = Some(accepted + config.head_timeout);
    loop {
        let head = match read_head(wire, &mut head_buf, &mut fields, config, idle_until, head_by) {
            Ok(head) => head,
            Err(NoHead::Gone) => return false,
            Err(NoHead::TimedOut) => {
                tracing::debug!("request head not complete within head-timeout; closing");
                answer_error(wire, 408, "Request Timeout", "request head not received in time");
                return false;
            }
            Err(NoHead::Refused(e)) => {
                let (code, reason) = e.status();
                tracing::debug!(code, why = e.why(), "refused a request head");
                answer_error(wire, code, reason, e.why());
                return true;
            }
        };
        let arrived = Instant::now();
        let mut req = http_request(&head_buf, &head, &fields, peer, site);
        req.conn_fd = wire.raw_fd();
        let (written, unread) = exchange(wire, site, &req, &head);
        site.handler.done(&req, &Outcome::new(&written, arrived));
        if !written.keep_alive {
            return unread || !wire.buffered().is_empty() || written.status >= 400;
        }
        idle_until = Instant::now() + config.keepalive_timeout;
        head_by = None;
    }
}

/// Reads the next request head; its bytes are copied to `head_buf` and
/// consumed from the wire, `fields` holds its header spans.
fn read_head(
    wire: &mut Wire,
    head_buf: &mut Vec<u8>,
    fields: &mut Vec<FieldSpan>,
    config: &Config,
    idle_until: Instant,
    mut head_by: Option<Instant>,
) -> Result<Head, NoHead> {
    let mut scan = HeadScan::default();
    loop {
        let buf = wire.buffered();
        if !buf.is_empty() {
            head_by.get_or_insert_with(|| Instant::now() + config.head_timeout);
            if scan.should_parse(buf) || buf.len() >= config.buffer_size {
                match http::parse_head(buf, config, fields) {
                    Ok(Some(head)) => {
                        head_buf.clear();
                        head_buf.extend_from_slice(&buf[..head.len]);
                        wire.consume(head.len);
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Refused(e)),
                }
            }
        }
        let wait = match head_by {
            Some(by) if !wire.buffered().is_empty() => Wait::Head(by),
            _ => Wait::Idle(idle_until),
        };
        match wire.fill(wait) {
            Ok(_) => {}
            Err(FillError::TimedOut) if !wire.buffered().is_empty() => return Err(NoHead::TimedOut),
            Err(_) => return Err(NoHead::Gone),
        }
    }
}

fn http_request<'a>(
    head_buf: &'a [u8],
    head: &Head,
    fields: &'a [FieldSpan],
    peer: &'a Peer,
    site: &Site<'a>,
) -> Request<'a> {
    let path = head.path.get(head_buf);
    Request {
        protocol: Protocol::Http,
        method: head.method.get(head_buf),
        request_uri: head.target.get(head_buf),
        script_name: b"",
        path_info: if path.is_empty() { Cow::Borrowed(b"/") } else { decode_path(path) },
        query_string: head.query.get(head_buf),
        server_protocol: head.version.as_bytes(),
        version: head.version,
        headers: Fields::new(head_buf, fields),
        vars: Fields::empty(),
        remote_addr: peer.addr.as_bytes(),
        remote_port: peer.port.as_bytes(),
        server_name: site.server_name.as_bytes(),
        server_port: site.server_port.as_bytes(),
        scheme: Scheme::Http,
        content_length: match head.framing {
            Framing::Length(n) => Some(n),
            Framing::Empty | Framing::Chunked => None,
        },
        conn_fd: None,
    }
}

/// One request/response exchange on HTTP: calls the handler, settles the
/// body, writes the answer. Also says whether body bytes may still be on
/// their way (the close should linger).
fn exchange(wire: &mut Wire, site: &Site<'_>, req: &Request<'_>, head: &Head) -> (Written, bool) {
    let framing = match head.framing {
        Framing::Empty => BodyFraming::Length(0),
        Framing::Length(n) => BodyFraming::Length(n),
        Framing::Chunked => BodyFraming::Chunked,
    };
    let config = site.config;
    let mut body = RequestBody::new(wire, framing, config.limit_post, head.expect_continue, config.io_timeout);
    let (resp, mut keep_alive) = call(site.handler, req, &mut body);
    let resp = match settle_body(&mut body) {
        Settled::Done => resp,
        Settled::Close => {
            keep_alive = false;
            resp
        }
        Settled::Answer(code, reason, why) => {
            tracing::debug!(code, why, "request body failed");
            keep_alive = false;
            Response::text(code, reason, why)
        }
        Settled::Gone => return (Written::default(), false),
    };
    let unread = !body.is_finished();
    let ctx = Ctx {
        protocol: Protocol::Http,
        version: head.version,
        head: req.method == b"HEAD",
        keep_alive: keep_alive && head.keep_alive && !wire.draining() && !site.others_waiting(),
    };
    (write_response(wire, resp, &ctx), unread)
}

/// Calls the handler, catching a panic (500, close).
fn call(handler: &dyn Handler, req: &Request<'_>, body: &mut RequestBody<'_>) -> (Response, bool) {
    match catch_unwind(AssertUnwindSafe(|| handler.call(req, body))) {
        Ok(resp) => (resp, true),
        Err(panic) => {
            let method = String::from_utf8_lossy(req.method);
            let path = String::from_utf8_lossy(&req.path_info);
            tracing::error!(panic = %super::panic_text(&*panic), %method, %path, "the handler panicked; answered 500");
            (Response::text(500, "Internal Server Error", "Internal Server Error"), false)
        }
    }
}

/// What the body's state after the handler means for the answer.
enum Settled {
    /// Read whole (or the rest discarded): the connection may go on.
    Done,
    /// Unread rest too large, or never asked for: answer, then close.
    Close,
    /// The body failed in a way the client should hear about.
    Answer(u16, &'static str, &'static str),
    /// The client is gone or silent: close without an answer.
    Gone,
}

fn settle_body(body: &mut RequestBody<'_>) -> Settled {
    match body.failure() {
        Some(BodyFailure::TooLarge) => {
            return Settled::Answer(413, "Content Too Large", "request body larger than limit-post");
        }
        Some(BodyFailure::BadFraming(why)) => return Settled::Answer(400, "Bad Request", why),
        Some(BodyFailure::TimedOut | BodyFailure::Closed) => return Settled::Gone,
        None => {}
    }
    if body.is_finished() {
        return Settled::Done;
    }
    if body.awaiting_continue() || !body.discard(DISCARD_MAX) {
        return Settled::Close;
    }
    Settled::Done
}

/// Writes a framework error answer with `Connection: close`.
fn answer_error(wire: &mut Wire, code: u16, reason: &str, why: &str) {
    let ctx = Ctx { protocol: Protocol::Http, version: super::Version::Http11, head: false, keep_alive: false };
    write_response(wire, Response::text(code, reason, why), &ctx);
}

/// One uwsgi request; returns whether to linger on close.
fn serve_uwsgi(wire: &mut Wire, site: &Site<'_>, accepted: Instant) -> bool {
    let config = site.config;
    let deadline = accepted + config.head_timeout;
    let block_len = match read_at_least(wire, uwsgi::HEADER_LEN, deadline) {
        Some(b) => {
            let h = uwsgi::PacketHeader::parse([b[0], b[1], b[2], b[3]]);
            match uwsgi::check_header(h, config.buffer_size.min(usize::from(u16::MAX))) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("{e}; closing");
                    return true;
                }
            }
        }
        None => return false,
    };
    let Some(packet) = read_at_least(wire, uwsgi::HEADER_LEN + block_len, deadline) else {
        return false;
    };
    let block = packet[uwsgi::HEADER_LEN..uwsgi::HEADER_LEN + block_len].to_vec();
    wire.consume(uwsgi::HEADER_LEN + block_len);
    let mut vars = Vec::new();
    if let Err(e) = uwsgi::parse_vars(&block, config.max_headers + uwsgi::EXTRA_VARS, &mut vars) {
        tracing::warn!("{e}; closing");
        return true;
    }
    let mut headers = Vec::new();
    let defaults =
        uwsgi::Defaults { server_name: site.server_name.as_bytes(), server_port: site.server_port.as_bytes() };
    let arrived = Instant::now();
    let mut req = match uwsgi::request(&block, &vars, &mut headers, &defaults) {
        Ok(req) => req,
        Err(e) => return uwsgi_refusal(wire, e),
    };
    req.conn_fd = wire.raw_fd();
    uwsgi_exchange(wire, site, &req, arrived)
}

/// The first `n` buffered bytes, reading until they are there (None: the
/// peer closed, stalled past `deadline`, or the worker drains first).
fn read_at_least(wire: &mut Wire, n: usize, deadline: Instant) -> Option<&[u8]> {
    while wire.buffered().len() < n {
        let wait = if wire.buffered().is_empty() { Wait::Idle(deadline) } else { Wait::Head(deadline) };
        wire.fill(wait).ok()?;
    }
    Some(&wire.buffered()[..n])
}

fn uwsgi_refusal(wire: &mut Wire, e: uwsgi::VarsError) -> bool {
    let why = match e {
        uwsgi::VarsError::NoMethod => {
            tracing::warn!("uwsgi request without REQUEST_METHOD: does the nginx location include uwsgi_params?");
            "no REQUEST_METHOD"
        }
        uwsgi::VarsError::BadLength => "invalid CONTENT_LENGTH",
    };
    let ctx = Ctx { protocol: Protocol::Uwsgi, version: super::Version::Http10, head: false, keep_alive: false };
    write_response(wire, Response::text(400, "Bad Request", why), &ctx);
    true
}

fn uwsgi_exchange(wire: &mut Wire, site: &Site<'_>, req: &Request<'_>, arrived: Instant) -> bool {
    let config = site.config;
    let length = req.content_length.unwrap_or(0);
    let ctx = Ctx { protocol: Protocol::Uwsgi, version: req.version, head: req.method == b"HEAD", keep_alive: false };
    if config.limit_post.is_some_and(|limit| length > limit) {
        write_response(wire, Response::text(413, "Content Too Large", "request body larger than limit-post"), &ctx);
        return true;
    }
    let mut body = RequestBody::new(wire, BodyFraming::Length(length), None, false, config.io_timeout);
    let (resp, _) = call(site.handler, req, &mut body);
    let unread = !body.is_finished();
    let gone = matches!(body.failure(), Some(BodyFailure::TimedOut | BodyFailure::Closed));
    let written = if gone { Written::default() } else { write_response(wire, resp, &ctx) };
    site.handler.done(req, &Outcome::new(&written, arrived));
    !gone && (unread || !wire.buffered().is_empty())
}

#[cfg(test)]
mod tests;
