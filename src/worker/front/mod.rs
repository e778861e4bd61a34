//! The WSGI worker's front: everything between a listening socket and the
//! app, in Rust, independent of Python. It owns connections, HTTP/1.1
//! parsing and the uwsgi binary protocol, request-body framing and response
//! framing; the app sees one [`Request`] at a time through the [`Handler`]
//! trait, with a body it reads as a stream. Bytes from the network are
//! hostile (DESIGN.md, trust boundaries): every parser here works on bytes,
//! is bounded, and cannot panic; a panicking handler costs one response,
//! never the process.
//!
//! What it must never do: buffer a whole request or response body, wait
//! without a deadline, or let the app's headers inject bytes into the
//! response framing.
//!
//! # Layout
//! - [`stream`]: the small trait over `TcpStream`/`UnixStream`, listeners, peers.
//! - `wire`: a connection's socket and read buffer, waits under deadlines.
//! - [`http`]: HTTP/1.1 request heads (httparse), framing and keep-alive rules.
//! - `chunked`: the streaming `Transfer-Encoding: chunked` decoder.
//! - [`uwsgi`]: the uwsgi binary protocol as nginx and Apache speak it.
//! - [`request`]: the request both protocols produce; [`body`]: its body reader.
//! - [`response`]: what a handler returns, and how it is framed and written;
//!   [`sendfile`]: file bodies.
//! - `outcome`: what became of a request, told to the handler after the write.
//! - `conn`: serving a connection while it has input (keep-alive,
//!   pipelining, errors, lingering closes); `conn/packet`: uwsgi.
//! - `hub`: the worker's epoll set of listeners and parked connections,
//!   deadlines, the drain.
//! - `serve`: the serving threads.
//!
//! # Connections and threads
//! A thread serves a connection only while it has input: between requests
//! (and while a head is still arriving) the connection is parked in the
//! worker's epoll set, so `threads` bounds the requests in progress, not
//! the clients connected. See `serve` and `hub`.

pub mod body;
mod chunked;
mod conn;
pub mod http;
mod hub;
mod outcome;
pub mod request;
pub mod response;
pub mod sendfile;
mod serve;
pub mod stream;
pub mod uwsgi;
mod wire;

use std::time::Duration;

pub use body::RequestBody;
pub use outcome::Outcome;
pub use request::{Fields, Request, Scheme, Version};
pub use response::{Response, ResponseBody};
pub use sendfile::FileBody;
pub use serve::{Listening, serve};
pub use stream::{Listener, Stream};

/// The app side of the front: called once per request on the thread that
/// serves the connection. The body is read from the connection as the
/// handler asks for it (`Expect: 100-continue` is answered on the first
/// read), so an app that does not read its body never makes the client
/// send it. What the handler does not read is discarded (a little) or the
/// connection is closed after the response (more than a little).
///
/// A panic is caught: the client gets a 500 with `Connection: close`, the
/// panic is logged, and the thread goes on serving. `Sync` because every
/// serving thread calls the same handler.
pub trait Handler: Send + Sync {
    /// Answers one request.
    fn call(&self, req: &Request<'_>, body: &mut RequestBody<'_>) -> Response;

    /// Runs a serving thread's whole life: `serve` returns when the thread
    /// is done. A handler with per-thread setup wraps it (the WSGI handler
    /// makes the thread's Python thread state once here, instead of once
    /// per request); the default just calls it.
    fn run_thread(&self, serve: &mut (dyn FnMut() + Send)) {
        serve()
    }

    /// Called once per request `call` answered (its response written, or
    /// abandoned when the client went away: status 0), on the same thread,
    /// before the connection's next request: access logs and request
    /// metrics belong here. Default: nothing.
    fn done(&self, req: &Request<'_>, outcome: &Outcome) {
        let _ = (req, outcome);
    }
}

impl<F> Handler for F
where
    F: Fn(&Request<'_>, &mut RequestBody<'_>) -> Response + Send + Sync,
{
    fn call(&self, req: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        self(req, body)
    }
}

/// Which protocol a listening socket speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 and HTTP/1.1 (uWSGI's `http-socket`).
    Http,
    /// The uwsgi binary protocol (uWSGI's `socket`/`uwsgi-socket`), one
    /// request per connection, as nginx's `uwsgi_pass` sends it.
    Uwsgi,
}

/// Limits and timeouts of the front. Every wait has one of these deadlines.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest HTTP request head, or uwsgi vars block, in bytes: uWSGI's
    /// `buffer-size`. Over it: 431 and close (HTTP), close (uwsgi).
    pub buffer_size: usize,
    /// Most header fields in one HTTP request head (over it: 431).
    pub max_headers: usize,
    /// Largest request body (uWSGI's `limit-post`): 413 when the declared
    /// length is larger, or when a chunked body grows past it.
    pub limit_post: Option<u64>,
    /// Time a client has to send a whole request head, counted from the
    /// accept (first request) or from the head's first byte (later ones):
    /// a head that trickles in (slowloris) is cut off here.
    pub head_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: Duration,
    /// Most connections a worker keeps open after a response: with more
    /// open, each response closes its connection (`Connection: close`).
    pub max_keepalive: usize,
    /// Most requests one connection carries; the last one is answered
    /// with `Connection: close`.
    pub keepalive_requests: u32,
    /// Longest wait for one read of a request body or one write of a
    /// response to make progress.
    pub io_timeout: Duration,
    /// The longest a worker waits for connections before it looks at the
    /// drain flag (set by a signal handler, which cannot wake the wait).
    pub drain_poll: Duration,
}

/// uWSGI's default `buffer-size`.
pub const DEFAULT_BUFFER_SIZE: usize = 4096;
/// Header fields per request head: far more than browsers send (≈ 20),
/// few enough that the parser's array stays small.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// nginx's `client_header_timeout` is 60 s; a parked slow head costs only
/// an fd here, but a real client sends its head in one round trip, and a
/// shorter deadline frees a slowloris's fds sooner.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// As uvicorn's default; long enough for a browser's next click to reuse
/// the connection, short enough that idle connections do not pile up.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// uWSGI's `http-timeout` default: a body read or response write that makes
/// no progress for this long means the peer is gone.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Parked keep-alive connections cost an fd and a few hundred bytes each;
/// nginx's `worker_connections` is 512 by default, and a worker with a
/// thousand clients idle between requests is already a busy one.
pub const DEFAULT_MAX_KEEPALIVE: usize = 1024;
/// nginx's `keepalive_requests` default. A connection stays with the worker
/// that accepted it, and the kernel's choice of worker at accept time can
/// leave one worker with most of a client's connections; closing each
/// connection now and then lets the reconnect go to a worker that waits
/// (an idle one), at the cost of one handshake per thousand requests.
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// A drain is noticed within a quarter second (the master's `drain-delay`
/// is seconds), at four wake-ups a second per idle thread.
pub const DEFAULT_DRAIN_POLL: Duration = Duration::from_millis(250);

impl Default for Config {
    fn default() -> Self {
        Config {
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            limit_post: None,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_keepalive: DEFAULT_MAX_KEEPALIVE,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            io_timeout: DEFAULT_IO_TIMEOUT,
            drain_poll: DEFAULT_DRAIN_POLL,
        }
    }
}

/// The text of a caught panic, for the log line.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}
