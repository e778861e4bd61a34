//! The threads of a WSGI worker: `threads` OS threads, each taking a
//! connection from the listening sockets and serving it to completion
//! before taking the next (uWSGI's threads with `http-socket` work the
//! same way). Within the process one thread at a time waits in `poll` and
//! `accept` (an accept lock, uWSGI's `thunder-lock`, so that a connection
//! wakes one thread, not all); across processes the listener is
//! non-blocking and a connection taken by another worker is just
//! `WouldBlock`. The wait is a `poll` of [`Config::drain_poll`], so a
//! drain is noticed that soon; once draining, no connection is accepted,
//! and [`serve`] returns when every thread finished its connection.

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::conn::{Site, serve_connection};
use super::stream::{Listener, Peer, Stream};
use super::{Config, Handler, Protocol};

/// A listening socket and the protocol it speaks.
#[derive(Debug)]
pub struct Listening {
    pub listener: Listener,
    pub protocol: Protocol,
}

/// Serves `listeners` with `threads` threads until `drain` is set and
/// every thread has finished its current connection. Connections open
/// when the drain starts finish their current request, answered with
/// `Connection: close`; idle ones close within `config.drain_poll`.
///
/// Errors: no listener, a listener that cannot be made non-blocking, or
/// no thread could be started.
pub fn serve(
    listeners: &[Listening],
    threads: usize,
    handler: &dyn Handler,
    config: &Config,
    drain: &Arc<AtomicBool>,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(ErrorKind::InvalidInput, "the front was given no listening socket"));
    }
    for l in listeners {
        l.listener.set_nonblocking().map_err(|e| io::Error::new(e.kind(), format!("listening socket: {e}")))?;
    }
    let names: Vec<(String, String)> = listeners.iter().map(|l| l.listener.server_name_port()).collect();
    let sites: Vec<Site<'_>> = listeners
        .iter()
        .zip(&names)
        .map(|(l, (name, port))| Site {
            handler,
            config,
            protocol: l.protocol,
            server_name: name,
            server_port: port,
            listener: std::os::fd::AsFd::as_fd(&l.listener),
        })
        .collect();
    // The accept lock; it guards the round-robin cursor over listeners.
    let cursor = Mutex::new(0usize);
    std::thread::scope(|scope| {
        let mut started = 0;
        for i in 0..threads.max(1) {
            let thread = std::thread::Builder::new().name(format!("front-{i}"));
            match thread.spawn_scoped(scope, || accept_loop(listeners, &sites, &cursor, config, drain)) {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::error!(error = %e, started, wanted = threads, "cannot start a serving thread");
                    break;
                }
            }
        }
        if started == 0 {
            return Err(io::Error::other("no serving thread could be started"));
        }
        Ok(())
    })
}

/// One serving thread: take a connection, serve it, until draining.
fn accept_loop(
    listeners: &[Listening],
    sites: &[Site<'_>],
    cursor: &Mutex<usize>,
    config: &Config,
    drain: &Arc<AtomicBool>,
) {
    let mut last_error: Option<ErrorKind> = None;
    while !drain.load(Ordering::Relaxed) {
        let next = {
            let mut cursor = cursor.lock().unwrap_or_else(PoisonError::into_inner);
            next_connection(listeners, &mut cursor, config, drain)
        };
        match next {
            Ok(Some((stream, peer, i))) => {
                last_error = None;
                let Some(site) = sites.get(i) else { continue };
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| serve_connection(stream, peer, site, drain))) {
                    tracing::error!(panic = %super::panic_text(&*panic), "the front panicked serving a connection (a bug); dropped it");
                }
            }
            Ok(None) => {}
            Err(e) => {
                // EMFILE and the like leave the connection queued, so poll
                // would return at once: pause, and say so once per kind.
                if last_error != Some(e.kind()) {
                    tracing::error!(error = %e, "accept failed; retrying every drain-poll interval");
                    last_error = Some(e.kind());
                }
                std::thread::sleep(config.drain_poll);
            }
        }
    }
}

type Accepted = (Box<dyn Stream>, Peer, usize);

/// Waits up to `drain_poll` for a connection on any listener and accepts
/// it, starting with the listener after the last one served.
fn next_connection(
    listeners: &[Listening],
    cursor: &mut usize,
    config: &Config,
    drain: &AtomicBool,
) -> io::Result<Option<Accepted>> {
    let mut fds: Vec<PollFd<'_>> =
        listeners.iter().map(|l| PollFd::new(l.listener.as_fd(), PollFlags::POLLIN)).collect();
    let timeout = PollTimeout::try_from(config.drain_poll).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) | Err(Errno::EINTR) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(io::Error::new(io::Error::from(e).kind(), format!("poll on the listening sockets: {e}"))),
    }
    if drain.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let n = listeners.len();
    for k in 0..n {
        let i = (*cursor + k) % n;
        let ready = fds[i].revents().is_some_and(|r| !r.is_empty());
        if !ready {
            continue;
        }
        match listeners[i].listener.accept() {
            Ok((stream, peer)) => {
                *cursor = i + 1;
                return Ok(Some((stream, peer, i)));
            }
            // Taken by another worker, or aborted by the client while queued.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("accept: {e}"))),
        }
    }
    Ok(None)
}
