//! Serving a connection whenever it has input, on the calling thread,
//! until it would block — then it is parked again (see `serve`), or
//! closed. HTTP: requests are read in order and answered in order
//! (pipelining falls out of that: bytes read past one request stay
//! buffered for the next, and all that is buffered is served before the
//! connection is parked), as long as both sides keep the connection alive
//! and the worker is not draining. uwsgi: one request, then close.
//!
//! A connection is in one of two phases between services: waiting for
//! (the rest of) a request head, or lingering after a close that still
//! had input coming. A partly received head is parked with its bytes and
//! its deadline rather than read on the thread: a client that trickles
//! its head (slowloris) then costs a parked fd and at most `buffer-size`
//! bytes until `head-timeout`, not a serving thread — with `threads = 1`
//! one such client would otherwise stop the worker for that long. The
//! same holds for a uwsgi packet that arrives in pieces.
//!
//! Every failure ends in the most precise answer that can still be framed
//! — 4xx for a bad head, 413 over `limit-post`, 500 for a handler that
//! panicked (caught: logged, and the thread serves on) — or, when nothing
//! can be framed any more, in a close.

use std::borrow::Cow;
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::body::{BodyFailure, Framing as BodyFraming, RequestBody};
use super::http::{self, Framing, Head, HeadError, HeadScan};
use super::outcome::Outcome;
use super::request::{FieldSpan, Fields, Request, Scheme, decode_path};
use super::response::{Ctx, Response, Written, write_response};
use super::stream::{Peer, Stream};
use super::wire::{self, Wire};
use super::{Config, Handler, Protocol};

/// Unread body bytes dropped to keep a connection alive after the handler
/// returned; with more left than this, the connection closes instead.
const DISCARD_MAX: u64 = 64 * 1024;
/// After deciding to close with input still arriving (an unread body, an
/// error answer), the write side is shut and input discarded for at most
/// this long and this much: closing with unread input makes the kernel
/// send a reset, which can destroy the response still in flight.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// What a connection is served with: shared by every connection of a
/// listening socket.
pub(super) struct Site<'a> {
    pub handler: &'a dyn Handler,
    pub config: &'a Config,
    /// `SERVER_NAME`/`SERVER_PORT` for HTTP (uwsgi: when the vars lack them).
    pub server_name: &'a str,
    pub server_port: &'a str,
    /// The worker's open connections, against the keep-alive cap.
    pub occupancy: &'a Occupancy,
    pub drain: &'a AtomicBool,
}

/// How many connections a worker holds open (being served or parked),
/// and how many it may keep alive after a response
/// ([`Config::max_keepalive`]): over that, each response closes its
/// connection, so that a flood of idle keep-alive clients cannot pile up.
#[derive(Debug)]
pub(super) struct Occupancy {
    open: AtomicUsize,
    max_keepalive: usize,
}

impl Occupancy {
    pub(super) fn new(max_keepalive: usize) -> Occupancy {
        Occupancy { open: AtomicUsize::new(0), max_keepalive }
    }
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    fn room(&self) -> bool {
        self.open() <= self.max_keepalive
    }
}

/// Per-thread scratch space: the read buffer a connection borrows while
/// served, and the current request head with its field spans.
pub(super) struct Scratch {
    read: Box<[u8]>,
    read_len: usize,
    head: Vec<u8>,
    fields: Vec<FieldSpan>,
}

impl Scratch {
    pub(super) fn new(config: &Config) -> Scratch {
        let read_len = wire::buffer_len(config.buffer_size);
        Scratch {
            read: vec![0; read_len].into_boxed_slice(),
            read_len,
            head: Vec::with_capacity(config.buffer_size),
            fields: Vec::new(),
        }
    }
}

/// A connection between services: its socket, unread bytes, and phase.
/// Counted in its worker's [`Occupancy`] from its accept to its drop
/// (which closes the socket).
/// How long an idle connection may wait for its next request once the
/// worker drains (then the sweep closes it).
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Conn<'o> {
    wire: Wire,
    peer: Peer,
    /// Index of its listening socket's [`Site`], and its protocol.
    pub(super) site: usize,
    protocol: Protocol,
    scan: HeadScan,
    phase: Phase,
    /// Requests answered on it ([`Config::keepalive_requests`]).
    served: u32,
    /// Its slot in the hub's table (and epoll token) once first parked;
    /// the hub's business.
    pub(super) token: Option<u64>,
    occupancy: &'o Occupancy,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for a request head. Until its first byte, the wait is idle
    /// (a drain ends it) and lasts until `idle_until`; from then the head
    /// must be complete by `head_by`. The first head of a connection has
    /// `head_timeout` from the accept for both.
    Head { idle_until: Instant, head_by: Option<Instant> },
    /// Closing: the write side is shut, input is read and dropped until
    /// the peer closes, `until`, or `left` more bytes.
    Linger { until: Instant, left: usize },
}

impl<'o> Conn<'o> {
    pub(super) fn new(
        stream: Box<dyn Stream>,
        peer: Peer,
        site: usize,
        protocol: Protocol,
        config: &Config,
        occupancy: &'o Occupancy,
    ) -> Conn<'o> {
        occupancy.open.fetch_add(1, Ordering::Relaxed);
        let by = Instant::now() + config.head_timeout;
        Conn {
            wire: Wire::new(stream, config.io_timeout),
            peer,
            site,
            protocol,
            scan: HeadScan::default(),
            phase: Phase::Head { idle_until: by, head_by: Some(by) },
            served: 0,
            token: None,
            occupancy,
        }
    }

    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.wire.stream().fd()
    }

    /// When a parked connection is closed if nothing comes.
    pub(super) fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Head { idle_until, .. } if self.wire.buffered().is_empty() => idle_until,
            Phase::Head { idle_until, head_by } => head_by.unwrap_or(idle_until),
            Phase::Linger { until, .. } => until,
        }
    }

    /// No byte of a request received (a drain gives these a short grace,
    /// [`Conn::on_drain`]).
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head { .. }) && self.wire.buffered().is_empty()
    }

    /// A drain started. An idle parked connection is not closed at once:
    /// its client may be sending the next request this very moment (it was promised keep-alive), and closing
    /// would reset that request under it — wrk under a chain reload lost
    /// a few requests that way, and the client cannot tell a request the
    /// server never saw from one it did. So an idle connection gets
    /// [`DRAIN_GRACE`] for a next request (answered with `Connection:
    /// close`, the worker is draining); one already in its socket is
    /// served. A partial head or a lingering close keeps its deadline.
    pub(super) fn on_drain(&mut self, now: Instant) {
        if !self.is_idle() {
            return;
        }
        if let Phase::Head { idle_until, .. } = &mut self.phase {
            *idle_until = (*idle_until).min(now + DRAIN_GRACE);
        }
    }

    /// Closes a parked connection whose deadline passed; a partly received
    /// HTTP head gets a 408 first, if the socket takes it without waiting.
    /// The 408 is reported to `handler` (access log, request metrics).
    pub(super) fn expire(mut self, handler: &dyn Handler) {
        let partial = matches!(self.phase, Phase::Head { .. }) && !self.wire.buffered().is_empty();
        if partial && self.protocol == Protocol::Http {
            tracing::debug!("request head not complete within head-timeout; closing");
            let line = FirstLine::of(self.wire.buffered());
            let mut out = Vec::with_capacity(256);
            let ctx = Ctx { protocol: Protocol::Http, version: super::Version::Http11, head: false, keep_alive: false };
            let mut written = write_response(
                &mut out,
                Response::text(408, "Request Timeout", "request head not received in time"),
                &ctx,
            );
            if !self.wire.send_now(&out) {
                written = Written::default();
            }
            line.report(handler, &self.peer, &written);
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.occupancy.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do with a connection after serving what it had.
enum Step {
    /// It would block: park it.
    Park,
    Close,
    /// Close after a linger (input may still be on its way).
    Linger,
}

/// Serves `conn` as far as its input goes; returns it when it should be
/// parked (waiting for input), or None when it was closed.
pub(super) fn serve_ready<'o>(mut conn: Conn<'o>, scratch: &mut Scratch, site: &Site<'_>) -> Option<Conn<'o>> {
    conn.wire.attach(std::mem::take(&mut scratch.read), scratch.read_len);
    let mut step = match conn.phase {
        Phase::Linger { .. } => Step::Linger,
        Phase::Head { .. } => match conn.protocol {
            Protocol::Http => serve_http(&mut conn, scratch, site),
            Protocol::Uwsgi => packet::serve_uwsgi(&mut conn, scratch, site),
        },
    };
    if let Step::Linger = step {
        if let Phase::Head { .. } = conn.phase {
            conn.wire.shutdown_write();
            conn.phase = Phase::Linger { until: Instant::now() + LINGER_TIME, left: LINGER_BYTES };
        }
        step = linger(&mut conn);
    }
    scratch.read = conn.wire.detach();
    match step {
        Step::Park => Some(conn),
        Step::Close | Step::Linger => None,
    }
}

/// Reads and drops input until the peer closes, the byte budget is spent,
/// or nothing more comes now (Park: the deadline is the phase's).
fn linger(conn: &mut Conn<'_>) -> Step {
    loop {
        conn.wire.discard_buffered();
        let Phase::Linger { until, left } = conn.phase else { return Step::Close };
        if Instant::now() >= until {
            return Step::Close;
        }
        match conn.wire.fill_now() {
            Ok(Some(n)) if n < left => conn.phase = Phase::Linger { until, left: left - n },
            Ok(Some(_)) | Err(_) => return Step::Close,
            Ok(None) => return Step::Park,
        }
    }
}

/// How reading the next head ended without one.
enum NoHead {
    /// Nothing more to read now: park.
    Blocked,
    /// Closed by the peer, or failed: close quietly.
    Gone,
    /// The head took longer than `head_timeout`: 408, close.
    TimedOut,
    Refused(HeadError),
}

/// The HTTP request loop over what the connection has.
fn serve_http(conn: &mut Conn<'_>, scratch: &mut Scratch, site: &Site<'_>) -> Step {
    let config = site.config;
    loop {
        let head = match read_head(conn, scratch, config) {
            Ok(head) => head,
            Err(NoHead::Blocked) => return Step::Park,
            Err(NoHead::Gone) => return Step::Close,
            Err(NoHead::TimedOut) => {
                tracing::debug!("request head not complete within head-timeout; closing");
                let line = FirstLine::of(conn.wire.buffered());
                let written = answer_error(&mut conn.wire, 408, "Request Timeout", "request head not received in time");
                line.report(site.handler, &conn.peer, &written);
                return Step::Close;
            }
            Err(NoHead::Refused(e)) => {
                let line = FirstLine::of(conn.wire.buffered());
                let (code, reason) = e.status();
                if code == 431 {
                    // Logged as uWSGI does: real clients with large cookies
                    // need a larger buffer-size, and this line says so.
                    let buffer_size = config.buffer_size;
                    tracing::warn!(
                        code,
                        why = e.why(),
                        buffer_size,
                        "refused a request head; raise buffer-size if it was a real client"
                    );
                } else {
                    tracing::debug!(code, why = e.why(), "refused a request head");
                }
                let written = answer_error(&mut conn.wire, code, reason, e.why());
                line.report(site.handler, &conn.peer, &written);
                return Step::Linger;
            }
        };
        let arrived = Instant::now();
        let mut req = http_request(&scratch.head, &head, &scratch.fields, &conn.peer, site);
        req.conn_fd = conn.wire.raw_fd();
        req.conn_tcp = conn.wire.is_tcp();
        conn.served = conn.served.saturating_add(1);
        let last = conn.served >= config.keepalive_requests;
        let (written, unread) = exchange(&mut conn.wire, site, &req, &head, last);
        site.handler.done(&req, &Outcome::new(&written, arrived));
        if !written.keep_alive {
            let linger = unread || !conn.wire.buffered().is_empty() || written.status >= 400;
            return if linger { Step::Linger } else { Step::Close };
        }
        conn.phase = Phase::Head { idle_until: Instant::now() + config.keepalive_timeout, head_by: None };
        if conn.wire.buffered().is_empty() && !conn.wire.may_have_more() {
            // Not even a read to see whether more came: the epoll set says
            // so, and the other connections ready meanwhile go first. (A
            // read that filled the buffer may have left bytes in the
            // socket, which an edge-triggered epoll would not report.)
            return Step::Park;
        }
    }
}

/// Reads the next request head from what the socket has; its bytes are
/// copied to `scratch.head` and consumed from the wire, `scratch.fields`
/// holds its header spans.
fn read_head(conn: &mut Conn<'_>, scratch: &mut Scratch, config: &Config) -> Result<Head, NoHead> {
    loop {
        let buf = conn.wire.buffered();
        if !buf.is_empty() {
            if conn.scan.should_parse(buf) || buf.len() >= config.buffer_size {
                match http::parse_head(buf, config, &mut scratch.fields) {
                    Ok(Some(head)) => {
                        scratch.head.clear();
                        scratch.head.extend_from_slice(&buf[..head.len]);
                        conn.wire.consume(head.len);
                        conn.scan = HeadScan::default();
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Refused(e)),
                }
            }
            // Incomplete: the head's deadline runs from its first byte (a
            // head that came whole never needed the clock).
            let Phase::Head { idle_until, mut head_by } = conn.phase else { return Err(NoHead::Gone) };
            let now = Instant::now();
            let by = *head_by.get_or_insert(now + config.head_timeout);
            conn.phase = Phase::Head { idle_until, head_by: Some(by) };
            if now >= by {
                return Err(NoHead::TimedOut);
            }
        }
        match conn.wire.fill_now() {
            Ok(Some(_)) => {}
            Ok(None) => return Err(NoHead::Blocked),
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
        conn_tcp: false,
    }
}

/// One request/response exchange on HTTP: calls the handler, settles the
/// body, writes the answer (closing the connection if it is the `last`
/// one it may carry). Also says whether body bytes may still be on their
/// way (the close should linger).
fn exchange(wire: &mut Wire, site: &Site<'_>, req: &Request<'_>, head: &Head, last: bool) -> (Written, bool) {
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
        keep_alive: keep_alive
            && head.keep_alive
            && !last
            && !site.drain.load(Ordering::Relaxed)
            && site.occupancy.room(),
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
pub(super) fn answer_error(wire: &mut Wire, code: u16, reason: &str, why: &str) -> Written {
    let ctx = Ctx { protocol: Protocol::Http, version: super::Version::Http11, head: false, keep_alive: false };
    write_response(wire, Response::text(code, reason, why), &ctx)
}

/// The first line of a head the front refused or gave up on, kept to
/// report the refusal to the handler ([`Handler::done`]): access logs and
/// request metrics count these requests like any other, or a flood of
/// malformed or slow heads would not show anywhere but the debug log.
pub(super) struct FirstLine {
    bytes: Vec<u8>,
    /// When the refusal was decided (its duration runs from there).
    at: Instant,
}

/// At most this much of a refused head's first line is kept.
const FIRST_LINE_MAX: usize = 1024;

impl FirstLine {
    pub(super) fn of(buffered: &[u8]) -> FirstLine {
        let end = buffered.iter().take(FIRST_LINE_MAX).position(|&b| b == b'\n').unwrap_or(FIRST_LINE_MAX);
        let line = &buffered[..end.min(buffered.len())];
        FirstLine { bytes: line.strip_suffix(b"\r").unwrap_or(line).to_vec(), at: Instant::now() }
    }

    /// The request as far as it can be read: method and target when the
    /// line starts with a token and a space, else `-` (the access log
    /// escapes whatever bytes they hold).
    fn request<'a>(&'a self, peer: &'a Peer, protocol: Protocol) -> Request<'a> {
        let mut words = self.bytes.split(|&b| b == b' ');
        let method = words.next().filter(|m| (1..=32).contains(&m.len()) && m.iter().all(|&b| is_tchar(b)));
        let target = method.and_then(|_| words.next()).filter(|t| !t.is_empty());
        let version = target.and_then(|_| words.next()).filter(|v| v.starts_with(b"HTTP/") && v.len() <= 8);
        let target = target.unwrap_or(b"-");
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, &b""[..]),
        };
        Request {
            protocol,
            method: method.unwrap_or(b"-"),
            request_uri: target,
            script_name: b"",
            path_info: Cow::Borrowed(path),
            query_string: query,
            server_protocol: version.unwrap_or(b"-"),
            version: super::Version::Http11,
            headers: Fields::empty(),
            vars: Fields::empty(),
            remote_addr: peer.addr.as_bytes(),
            remote_port: peer.port.as_bytes(),
            server_name: b"",
            server_port: b"",
            scheme: Scheme::Http,
            content_length: None,
            conn_fd: None,
            conn_tcp: false,
        }
    }

    /// Tells `handler` that this head was answered `written` by the front.
    pub(super) fn report(&self, handler: &dyn Handler, peer: &Peer, written: &Written) {
        self.report_as(handler, peer, Protocol::Http, written);
    }

    pub(super) fn report_as(&self, handler: &dyn Handler, peer: &Peer, protocol: Protocol, written: &Written) {
        let req = self.request(peer, protocol);
        handler.done(&req, &Outcome::new(written, self.at));
    }
}

/// RFC 9110 `tchar`: what a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

mod packet;
#[cfg(test)]
mod tests;
