//! The probe socket's front door. tiny_http handles HTTP but gives every
//! connection its own thread, has no read timeout, and ends its accept
//! loop on the first accept error (EMFILE in a flood), so it never faces
//! the network directly. This guard does, on one thread with `poll`:
//!
//! - accepts TCP connections, at most [`MAX_CONNS`] at a time; when full,
//!   the oldest connection still sending its request is dropped (a
//!   slowloris client cannot crowd out kubelet);
//! - reads the request head, at most [`MAX_HEAD`] bytes (else 431) within
//!   [`HEAD_DEADLINE`] (else closed);
//! - relays the complete head, with `Connection: close`, to tiny_http on an
//!   internal abstract UNIX socket and streams the answer back.
//!
//! Threads are bounded (this one plus tiny_http's, at most one per relayed
//! request), accept errors are survived, and no slow client delays another.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Connections tracked at once. Far above what probes and scrapers need,
/// well below the default 1024-fd limit the master shares.
pub const MAX_CONNS: usize = 256;
/// Largest request head accepted; probes send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Time a client gets to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time to relay one answer (a /livez answer may take liveness-timeout).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);

enum State {
    /// Receiving the request head.
    Head(Vec<u8>),
    /// Waiting for tiny_http's answer; relaying it as it comes.
    Relay { inner: UnixStream, out: Vec<u8>, sent: usize, inner_done: bool },
}

struct Conn {
    tcp: TcpStream,
    state: State,
    deadline: Instant,
    since: Instant,
}

/// Runs forever on the calling thread.
pub fn run(listener: TcpListener, inner: UnixAddr) {
    let _ = listener.set_nonblocking(true);
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let now = Instant::now();
        conns.retain(|c| c.deadline > now);
        let next = conns.iter().map(|c| c.deadline).min();
        let timeout = next
            .map(|t| PollTimeout::try_from(t.saturating_duration_since(now).as_millis().min(60_000) as u32 + 1))
            .and_then(Result::ok)
            .unwrap_or(PollTimeout::NONE);
        let ready: Vec<(bool, PollFlags)> = {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            for c in &conns {
                let fd = match &c.state {
                    State::Head(_) => PollFd::new(c.tcp.as_fd(), PollFlags::POLLIN),
                    State::Relay { inner, out, sent, inner_done } => {
                        if *sent < out.len() {
                            PollFd::new(c.tcp.as_fd(), PollFlags::POLLOUT)
                        } else if !inner_done {
                            PollFd::new(inner.as_fd(), PollFlags::POLLIN)
                        } else {
                            PollFd::new(c.tcp.as_fd(), PollFlags::POLLOUT)
                        }
                    }
                };
                fds.push(fd);
            }
            if poll(&mut fds, timeout).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().map(|r| (!r.is_empty(), r)).unwrap_or((false, PollFlags::empty()))).collect()
        };
        // Existing connections first (indexes shift once we accept).
        let mut keep = Vec::with_capacity(conns.len());
        for (c, (active, _)) in conns.drain(..).zip(ready.iter().skip(1)) {
            if !active {
                keep.push(c);
                continue;
            }
            if let Some(c) = step(c, &inner) {
                keep.push(c);
            }
        }
        conns = keep;
        if ready[0].0 {
            accept_all(&listener, &mut conns);
        }
    }
}

fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>) {
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                if conns.len() >= MAX_CONNS {
                    // Make room: drop the oldest client still sending its head.
                    match conns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| matches!(c.state, State::Head(_)))
                        .min_by_key(|(_, c)| c.since)
                    {
                        Some((i, _)) => {
                            conns.swap_remove(i);
                        }
                        None => continue, // all busy relaying: drop the newcomer
                    }
                }
                let _ = tcp.set_nonblocking(true);
                let now = Instant::now();
                conns.push(Conn { tcp, state: State::Head(Vec::new()), deadline: now + HEAD_DEADLINE, since: now });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => continue,
            Err(_) => {
                // EMFILE/ENFILE/ENOBUFS: shed the oldest slow client and stop
                // for this round; the pending connection stays queued.
                if let Some((i, _)) = conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c.state, State::Head(_)))
                    .min_by_key(|(_, c)| c.since)
                {
                    conns.swap_remove(i);
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

/// Advances one connection; None when it is finished or failed.
fn step(mut c: Conn, inner_addr: &UnixAddr) -> Option<Conn> {
    match &mut c.state {
        State::Head(buf) => {
            let mut chunk = [0u8; 4096];
            match c.tcp.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(c),
                Err(_) => return None,
            }
            if let Some(end) = find_head_end(buf) {
                let head = with_connection_close(&buf[..end]);
                let inner = UnixStream::connect_addr(inner_addr).ok()?;
                let mut w = &inner;
                w.write_all(&head).ok()?;
                inner.set_nonblocking(true).ok()?;
                c.state = State::Relay { inner, out: Vec::new(), sent: 0, inner_done: false };
                c.deadline = Instant::now() + ANSWER_DEADLINE;
            } else if buf.len() > MAX_HEAD {
                let msg =
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                let _ = c.tcp.write(msg);
                return None;
            }
            Some(c)
        }
        State::Relay { inner, out, sent, inner_done } => {
            if *sent < out.len() {
                match c.tcp.write(&out[*sent..]) {
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return None,
                }
            } else if !*inner_done {
                let mut chunk = [0u8; 8192];
                match inner.read(&mut chunk) {
                    Ok(0) => *inner_done = true,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => *inner_done = true,
                }
            }
            if *inner_done && *sent >= out.len() {
                return None;
            }
            Some(c)
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The head with any Connection header replaced by `Connection: close`:
/// one request per relayed connection, so tiny_http closes when done.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 20);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.len() > 11 && line[..11].eq_ignore_ascii_case("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_rewriting() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
        let h = with_connection_close(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(String::from_utf8(h).unwrap(), "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    }
}
