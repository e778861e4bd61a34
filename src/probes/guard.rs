//! The probe socket's front door: the only code that reads bytes from the
//! network. It runs on one thread with `poll` and owns every connection:
//!
//! - accepts TCP connections, at most [`MAX_CONNS`] at a time and a quarter
//!   of that per peer address, 64 per poll round, and reads each at once
//!   (kubelet's request arrives with the handshake); when full, a finished
//!   (lingering) connection, a stalled writer, or the connection still
//!   sending its head that sent the least is dropped, so neither a
//!   slowloris client nor a flood from one pod crowds out kubelet;
//! - reads the request head, at most [`MAX_HEAD`] bytes (else 431) within
//!   [`HEAD_DEADLINE`] (else closed), and parses it as bytes
//!   ([`parse_head`]: it cannot panic, whatever arrives);
//! - answers malformed requests itself (400, 405, 431, 505) at once, and
//!   never waits for a request body: every request gets its answer or a
//!   close within the head deadline, whatever its method, body or
//!   `Transfer-Encoding`;
//! - hands a parsed GET/HEAD to a handler thread over a bounded channel
//!   (kubelet's endpoints and the rest on separate threads) and writes
//!   their answer back, dropping writers that stall and capping the bytes
//!   of answers held at once; tiny_http is used by the handlers only to
//!   build and serialise responses, so nothing but this guard ever reaches
//!   the HTTP library (no internal socket other processes could connect to);
//! - after the answer, shuts its write side and discards what the client
//!   still sends for a short, bounded time (closing with unread input would
//!   reset the connection and could destroy the answer in flight).
//!
//! One request per connection (`Connection: close`): probes and scrapers
//! reconnect anyway. A panic in this thread restarts the loop (see
//! [`serve`]); the listening socket outlives it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Connections tracked at once. Far above what probes and scrapers need,
/// well below the default 1024-fd limit the master shares.
pub const MAX_CONNS: usize = 256;
/// Time a client gets to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time to produce and relay one answer (a /livez answer may take
/// `liveness-timeout`; /metrics and /status read /proc).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// After the answer: how long unread client input is discarded before the
/// connection is closed, and how much of it at most.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

#[cfg(test)]
use super::head::head_end;
pub use super::head::{MAX_HEAD, Method, Parsed, Request, parse_head, plain_answer};

/// Panics caught in the probe threads (guard and handlers), for `/metrics`.
pub static PANICS: AtomicU64 = AtomicU64::new(0);

/// A job for a handler thread.
pub struct Job {
    pub token: u64,
    pub request: Request,
}

/// A handler's answer: the connection's token and the serialised response.
pub type Answer = (u64, Vec<u8>);

enum State {
    /// Receiving the request head.
    Head(Vec<u8>),
    /// Handed to a handler thread; waiting for its answer.
    Waiting,
    /// Writing the answer.
    Writing { out: Vec<u8>, sent: usize },
    /// Answer sent, write side shut: discarding input until EOF or deadline.
    Linger { discarded: usize },
}

struct Conn {
    token: u64,
    tcp: TcpStream,
    peer: Option<std::net::IpAddr>,
    state: State,
    /// When the connection is dropped: the head, write-progress or linger
    /// deadline of its current state.
    deadline: Instant,
    /// Last moment it may spend waiting for or writing its answer at all.
    answer_by: Instant,
    since: Instant,
}

impl Conn {
    fn received(&self) -> usize {
        match &self.state {
            State::Head(buf) => buf.len(),
            _ => usize::MAX,
        }
    }
}

/// What the guard loop needs besides the listener.
pub struct Channels {
    /// `/livez`, `/readyz`, `/startupz`: kubelet's, on their own handler so
    /// that scrapes of a large `/metrics` never queue in front of them.
    pub probes: SyncSender<Job>,
    /// Everything else.
    pub others: SyncSender<Job>,
    pub answers: Receiver<Answer>,
    /// Readable when an answer is queued (handlers write a byte).
    pub wake: UnixStream,
    /// Answers the guard makes itself, at once, without a thread switch:
    /// `/readyz` and `/startupz` (a read of the published snapshot, never
    /// blocking). None: the request goes to a handler.
    pub immediate: Immediate,
}

/// See [`Channels::immediate`].
pub type Immediate = Box<dyn Fn(&Request) -> Option<Vec<u8>> + Send>;

/// Runs the guard on the calling thread forever. A panic inside the loop is
/// caught, counted and logged, and the loop starts again on the same
/// listener: the pod keeps its probes (connections open at that moment are
/// dropped; kubelet retries). Restarting here rather than exiting the
/// master keeps a bug in request handling from turning into a restart of
/// every replica that one client can reach.
pub fn serve(listener: TcpListener, ch: Channels) {
    let _ = listener.set_nonblocking(true);
    let mut next_token = 0u64;
    loop {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&listener, &ch, &mut next_token)));
        if let Err(panic) = run {
            PANICS.fetch_add(1, Ordering::Relaxed);
            tracing::error!(panic = panic_message(&panic), "probe guard panicked; restarting it on the same socket");
            // Never spin if something keeps panicking at once.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn run(listener: &TcpListener, ch: &Channels, next_token: &mut u64) {
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let now = Instant::now();
        conns.retain(|c| c.deadline > now);
        let timeout = conns
            .iter()
            .map(|c| c.deadline)
            .min()
            .map(|t| t.saturating_duration_since(now).as_millis().min(60_000) as u32 + 1)
            .and_then(|ms| PollTimeout::try_from(ms).ok())
            .unwrap_or(PollTimeout::NONE);
        let ready: Vec<PollFlags> = {
            let mut fds =
                vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(ch.wake.as_fd(), PollFlags::POLLIN)];
            for c in &conns {
                let events = match c.state {
                    State::Head(_) | State::Linger { .. } => PollFlags::POLLIN,
                    // Only errors and hang-ups are reported while waiting.
                    State::Waiting => PollFlags::empty(),
                    State::Writing { .. } => PollFlags::POLLOUT,
                };
                fds.push(PollFd::new(c.tcp.as_fd(), events));
            }
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect()
        };
        if !ready[1].is_empty() {
            take_answers(ch, &mut conns);
        }
        let mut keep = Vec::with_capacity(conns.len());
        for (c, revents) in conns.drain(..).zip(ready.iter().skip(2)) {
            if revents.is_empty() {
                keep.push(c);
            } else if matches!(c.state, State::Waiting) {
                // The client went away while its answer is being made.
            } else if let Some(c) = step(c, ch) {
                keep.push(c);
            }
        }
        conns = keep;
        if !ready[0].is_empty() {
            accept_some(listener, &mut conns, next_token, ch);
        }
    }
}

/// Bytes of answers held in memory at once; an answer that would go
/// beyond is replaced by a 503 (slow readers of a large `/metrics` cannot
/// grow the master without bound).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

fn take_answers(ch: &Channels, conns: &mut [Conn]) {
    let mut buf = [0u8; 256];
    while matches!((&ch.wake).read(&mut buf), Ok(n) if n > 0) {}
    let mut held: usize = conns
        .iter()
        .map(|c| match &c.state {
            State::Writing { out, .. } => out.len(),
            _ => 0,
        })
        .sum();
    while let Ok((token, mut out)) = ch.answers.try_recv() {
        // The connection may be gone (deadline, eviction, hang-up): drop the answer.
        let Some(c) = conns.iter_mut().find(|c| c.token == token && matches!(c.state, State::Waiting)) else {
            continue;
        };
        if held + out.len() > MAX_ANSWER_BYTES {
            out = plain_answer(503, "probe server busy: too many large answers in flight");
        }
        held += out.len();
        c.state = State::Writing { out, sent: 0 };
        c.deadline = (Instant::now() + WRITE_STALL).min(c.answer_by);
    }
}

/// Accepts per poll round at most: the connections already open get
/// their turn between rounds of a flood.
const ACCEPTS_PER_ROUND: usize = 64;
/// Connections one peer address may hold at once: a flood from one pod
/// leaves room for kubelet and Prometheus.
const MAX_PER_PEER: usize = MAX_CONNS / 4;
/// A writer that makes no progress this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(2);

fn accept_some(listener: &TcpListener, conns: &mut Vec<Conn>, next_token: &mut u64, ch: &Channels) {
    for _ in 0..ACCEPTS_PER_ROUND {
        match listener.accept() {
            Ok((tcp, addr)) => {
                let peer = Some(addr.ip());
                if conns.iter().filter(|c| c.peer == peer).count() >= MAX_PER_PEER
                    && !evict_one(conns, |c| c.peer == peer)
                {
                    continue; // this peer's connections are all being answered
                }
                if conns.len() >= MAX_CONNS && !evict_one(conns, |_| true) {
                    continue; // all busy being answered: drop the newcomer
                }
                let _ = tcp.set_nonblocking(true);
                let now = Instant::now();
                *next_token += 1;
                let c = Conn {
                    token: *next_token,
                    tcp,
                    peer,
                    state: State::Head(Vec::new()),
                    deadline: now + HEAD_DEADLINE,
                    answer_by: now + ANSWER_DEADLINE,
                    since: now,
                };
                // Most clients (kubelet) send the request with the handshake:
                // read it now, so it is never the one evicted by a flood.
                if let Some(c) = step(c, ch) {
                    conns.push(c);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(_) => {
                // EMFILE/ENFILE/ENOBUFS: shed a slow client and stop for this
                // round; the pending connection stays queued in the kernel.
                if !evict_one(conns, |_| true) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

/// Drops one connection among those `eligible`: a lingering one, else the
/// writer stalled longest, else the one still sending its head that has
/// sent the least (then the oldest). Connections being answered are kept.
fn evict_one(conns: &mut Vec<Conn>, eligible: impl Fn(&Conn) -> bool) -> bool {
    let now = Instant::now();
    let linger = || conns.iter().position(|c| eligible(c) && matches!(c.state, State::Linger { .. }));
    let stalled = || {
        conns
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c) && matches!(c.state, State::Writing { .. }))
            .filter(|(_, c)| c.deadline.saturating_duration_since(now) < WRITE_STALL / 2)
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i)
    };
    let head = || {
        conns
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c) && matches!(c.state, State::Head(_)))
            .min_by_key(|(_, c)| (c.received(), c.since))
            .map(|(i, _)| i)
    };
    let victim = linger().or_else(stalled).or_else(head);
    victim.map(|i| conns.swap_remove(i)).is_some()
}

/// Advances one connection; None when it is finished or failed.
fn step(mut c: Conn, ch: &Channels) -> Option<Conn> {
    match &mut c.state {
        State::Head(buf) => {
            let mut chunk = [0u8; 4096];
            match c.tcp.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => return Some(c),
                Err(_) => return None,
            }
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            crate::test_hooks::maybe_panic_guard(buf);
            match parse_head(buf) {
                Parsed::Partial => Some(c),
                Parsed::Reject(code, why) => {
                    c.state = State::Writing { out: plain_answer(code, why), sent: 0 };
                    c.deadline = Instant::now() + WRITE_STALL;
                    Some(c)
                }
                Parsed::Request(request) => {
                    // Under CPU pressure each thread switch can cost a
                    // scheduler slice: kubelet's readiness probe is answered
                    // here, and written at once.
                    if let Some(out) = (ch.immediate)(&request) {
                        c.state = State::Writing { out, sent: 0 };
                        c.deadline = (Instant::now() + WRITE_STALL).min(c.answer_by);
                        return step(c, ch);
                    }
                    let path = request.target.split('?').next().unwrap_or_default();
                    let queue =
                        if matches!(path, "/livez" | "/readyz" | "/startupz") { &ch.probes } else { &ch.others };
                    let out = match queue.try_send(Job { token: c.token, request }) {
                        Ok(()) => None,
                        Err(TrySendError::Full(_)) => Some(plain_answer(503, "probe handlers busy")),
                        Err(TrySendError::Disconnected(_)) => Some(plain_answer(500, "probe handlers gone")),
                    };
                    c.state = match out {
                        None => State::Waiting,
                        Some(out) => State::Writing { out, sent: 0 },
                    };
                    c.deadline = c.answer_by;
                    Some(c)
                }
            }
        }
        State::Waiting => Some(c),
        State::Writing { out, sent } => {
            match c.tcp.write(&out[*sent..]) {
                Ok(n) => {
                    *sent += n;
                    c.deadline = (Instant::now() + WRITE_STALL).min(c.answer_by);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
            if *sent >= out.len() {
                let _ = c.tcp.shutdown(Shutdown::Write);
                c.state = State::Linger { discarded: 0 };
                c.deadline = Instant::now() + LINGER;
            }
            Some(c)
        }
        State::Linger { discarded } => {
            let mut chunk = [0u8; 4096];
            match c.tcp.read(&mut chunk) {
                Ok(0) => None,
                Ok(n) if *discarded + n > LINGER_BYTES => None,
                Ok(n) => {
                    *discarded += n;
                    Some(c)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => Some(c),
                Err(_) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> Parsed {
        Parsed::Request(Request { method: Method::Get, target: target.into(), version: (1, 1), accept: String::new() })
    }

    #[test]
    fn heads() {
        assert_eq!(parse_head(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"), req("/readyz"));
        // Absolute-form (RFC 9112 3.2.2): scheme and authority dropped.
        assert_eq!(parse_head(b"GET http://127.0.0.1:9191/livez HTTP/1.1\r\n\r\n"), req("/livez"));
        assert_eq!(parse_head(b"GET HTTPS://x?verbose HTTP/1.1\r\n\r\n"), req("/?verbose"));
        assert_eq!(parse_head(b"GET http://x HTTP/1.1\r\n\r\n"), req("/"));
        assert_eq!(parse_head(b"GET /readyz HTTP/1.1\nHost: x\n\n"), req("/readyz"));
        assert_eq!(parse_head(b"\r\nGET /livez HTTP/1.1\r\n\r\n"), req("/livez"));
        assert_eq!(parse_head(b"GET /readyz HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse_head(b""), Parsed::Partial);
        // The input that panicked the old guard: a multi-byte character at byte 11.
        assert!(matches!(parse_head("GET /abcdeé HTTP/1.1\r\n\r\n".as_bytes()), Parsed::Reject(400, _)));
        assert!(matches!(
            parse_head("GET / HTTP/1.1\r\nconnection\u{e9}: x\r\n\r\n".as_bytes()),
            Parsed::Reject(400, _)
        ));
        assert_eq!(parse_head("GET / HTTP/1.1\r\nX-Name: caf\u{e9}\r\n\r\n".as_bytes()), req("/"));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), Parsed::Reject(400, _)));
        assert!(matches!(parse_head(b"GET /livez\r\n\r\n"), Parsed::Reject(400, _)));
        assert!(matches!(parse_head(b"GET / HTTP/9.9\r\n\r\n"), Parsed::Reject(505, _)));
        assert!(matches!(parse_head(b"POST /readyz HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"), Parsed::Reject(405, _)));
        for bad in ["-1", "1e3", "", "99999999999999999999", "+5", "0x10"] {
            let head = format!("GET / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(parse_head(head.as_bytes()), Parsed::Reject(400, _)), "{bad}");
        }
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Reject(400, _)
        ));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"),
            Parsed::Reject(400, _)
        ));
        // Accept fields are kept, several joined as one list.
        let Parsed::Request(r) =
            parse_head(b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\nX: y\r\naccept:  */*;q=0.1 \r\n\r\n")
        else {
            panic!("not a request")
        };
        assert_eq!(r.accept, "text/plain, */*;q=0.1");
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse_head(long.as_bytes()), Parsed::Reject(431, _)));
    }

    #[test]
    fn plain_answers_are_complete_http() {
        let a = String::from_utf8(plain_answer(405, "no")).unwrap();
        assert!(a.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(a.contains("Allow: GET, HEAD\r\n") && a.ends_with("\r\n\r\nno\n"));
        assert!(a.contains("Content-Length: 3\r\n"));
    }

    mod props {
        use super::super::*;
        use super::req;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Any bytes: no panic, and a verdict consistent with the head end.
            #[test]
            fn any_bytes(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
                let started = Instant::now();
                let parsed = parse_head(&buf);
                prop_assert!(started.elapsed() < Duration::from_millis(100));
                if head_end(&buf).is_none() {
                    prop_assert_eq!(parsed, Parsed::Partial);
                }
            }

            /// Well-formed heads with arbitrary header values parse to their target.
            #[test]
            fn well_formed(
                target in "/[!-~]{0,60}",
                values in proptest::collection::vec("[ -~\u{80}-\u{ff}]{0,40}", 0..8),
                lf_only in any::<bool>(),
            ) {
                let eol = if lf_only { "\n" } else { "\r\n" };
                let mut head = format!("GET {target} HTTP/1.1{eol}");
                for (i, v) in values.iter().enumerate() {
                    head.push_str(&format!("X-H{i}: {v}{eol}"));
                }
                head.push_str(eol);
                prop_assert_eq!(parse_head(head.as_bytes()), req(&target));
            }

            /// Request lines made of arbitrary bytes are answered, never accepted
            /// with a target that is not visible ASCII.
            #[test]
            fn request_lines(line in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut head = line.clone();
                head.extend_from_slice(b"\r\n\r\n");
                if let Parsed::Request(r) = parse_head(&head) {
                    prop_assert!(r.target.bytes().all(|b| (0x21..0x7f).contains(&b)));
                }
            }
        }
    }
}
