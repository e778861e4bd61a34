//! The threads of a WSGI worker: `threads` OS threads serving whatever
//! the worker's epoll set (the `hub`) says is ready — a listening socket
//! with a connection to accept, or a parked connection with input. A
//! thread serves a connection for as long as it has input and parks it
//! again when it would block, so an idle keep-alive client costs a parked
//! fd, not a thread: with `threads = 1`, 64 keep-alive clients are all
//! served in turn (gunicorn's gthread worker and every event-driven server
//! work this way; uWSGI instead closes each connection after its
//! response).
//!
//! Once draining, no connection is accepted, idle ones are closed,
//! requests in flight are answered with `Connection: close`, and [`serve`]
//! returns when every connection is gone.

use std::io::{self, ErrorKind};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use nix::sys::epoll::EpollEvent;

use super::conn::{Occupancy, Scratch, Site, serve_ready};
use super::hub::{Hub, Job, MAX_EVENTS};
use super::stream::Listener;
use super::{Config, Handler, Protocol};

/// A listening socket and the protocol it speaks.
#[derive(Debug)]
pub struct Listening {
    pub listener: Listener,
    pub protocol: Protocol,
}

/// Serves `listeners` with `threads` threads until `drain` is set and
/// every connection is done. Connections open when the drain starts
/// finish their current request, answered with `Connection: close`; idle
/// ones close within `config.drain_poll`.
///
/// Errors: no listener, a listener that cannot be made non-blocking, no
/// epoll set, or no thread could be started.
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
    let occupancy = Occupancy::new(config.max_keepalive);
    let names: Vec<(String, String)> = listeners.iter().map(|l| l.listener.server_name_port()).collect();
    let sites: Vec<Site<'_>> = names
        .iter()
        .map(|(name, port)| Site {
            handler,
            config,
            server_name: name,
            server_port: port,
            occupancy: &occupancy,
            drain,
        })
        .collect();
    let hub = Hub::new(threads, listeners, config, drain, &occupancy, handler)?;
    std::thread::scope(|scope| {
        let mut started = 0;
        for i in 0..threads.max(1) {
            let thread = std::thread::Builder::new().name(format!("front-{i}"));
            let (hub, sites) = (&hub, &sites);
            match thread.spawn_scoped(scope, move || handler.run_thread(&mut || serving_thread(hub, sites))) {
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

/// One serving thread: take what is ready, serve it, until the hub says
/// the worker is done.
fn serving_thread(hub: &Hub<'_>, sites: &[Site<'_>]) {
    let mut scratch = Scratch::new(hub.config);
    let mut events = vec![EpollEvent::empty(); MAX_EVENTS];
    while let Some(job) = hub.next_job(&mut events) {
        let conn = match job {
            Job::Serve(conn) => conn,
            Job::Accept(i) => match hub.accept(i) {
                Some(conn) => conn,
                None => continue,
            },
        };
        let token = conn.token;
        let Some(site) = sites.get(conn.site) else {
            hub.release(token);
            continue;
        };
        match catch_unwind(AssertUnwindSafe(|| serve_ready(conn, &mut scratch, site))) {
            Ok(Some(conn)) => hub.park(conn),
            Ok(None) => hub.release(token),
            Err(panic) => {
                hub.release(token);
                tracing::error!(panic = %super::panic_text(&*panic), "the front panicked serving a connection (a bug); dropped it");
            }
        }
    }
}
