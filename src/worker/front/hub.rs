//! The worker's epoll set, shared by its serving threads: the listening
//! sockets (level-triggered, `EPOLLEXCLUSIVE`: the workers share the
//! listeners, and a new connection wakes one worker, not all) and the
//! parked connections. With several threads a connection is
//! `EPOLLONESHOT`: a ready connection is handed to one thread, and is
//! silent until that thread parks it again (an `epoll_ctl` per park). With
//! one thread it is edge-triggered and registered once: no event can be
//! taken while its connection is being served (the only thread is busy
//! serving it), an edge during the service is reported at the next wait,
//! and at worst costs a read that finds nothing — one syscall per request
//! fewer.
//!
//! One thread at a time waits in `epoll_wait` (the poller); the events it
//! gets go to a queue that every free thread takes from, so a batch of
//! ready connections is spread over the threads, and with `threads = 1`
//! one `epoll_wait` serves a whole batch. The others wait on a condition
//! variable. Before each wait the poller does the housekeeping, bounded
//! work under the lock: parked connections past their deadline are closed
//! (a sweep of the table every [`sweep interval`](Hub::new)), accepting
//! resumes after a pause, and the drain takes effect.
//!
//! A drain is noticed within [`Config::drain_poll`] (the longest wait):
//! the listeners leave the epoll set, idle parked connections are closed,
//! and an idle connection is closed instead of parked from then on. The
//! drain flag is set by a signal handler, which cannot wake an epoll wait;
//! a quarter second is soon enough against the master's `drain-delay`.
//!
//! `accept` failing for want of fds (EMFILE, ENFILE, ENOBUFS) leaves the
//! connection queued and the listener ready: the listeners leave the epoll
//! set for `drain_poll`, so that the poller waits instead of spinning.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::{Conn, Occupancy};
use super::serve::Listening;
use super::{Config, Handler};

mod table;
use table::Table;

/// Events taken per `epoll_wait`: with one thread, one wait per this many
/// ready connections at most.
pub(super) const MAX_EVENTS: usize = 64;
/// Tokens of listening sockets have this bit; connection tokens never do.
const LISTENER: u64 = 1 << 63;

/// What a serving thread is handed.
// Moved once from the table to the thread, never stored: boxing the
// connection would cost an allocation per event instead of a copy.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job<'o> {
    /// Listening socket `i` has a connection to accept.
    Accept(usize),
    /// A parked connection has input (or an error, or its peer closed).
    Serve(Conn<'o>),
}

pub(super) struct Hub<'a> {
    epoll: Epoll,
    listeners: &'a [Listening],
    pub(super) config: &'a Config,
    drain: &'a AtomicBool,
    occupancy: &'a Occupancy,
    /// Told of the 408s the sweep sends (access log, request metrics).
    handler: &'a dyn Handler,
    state: Mutex<State<'a>>,
    /// Free threads wait here while another one polls.
    turn: Condvar,
    sweep_every: Duration,
    /// Connections are edge-triggered and registered once (one thread).
    edge: bool,
    /// An accept error was logged and no accept has succeeded since.
    accept_failing: AtomicBool,
}

struct State<'o> {
    parked: Table<Conn<'o>>,
    /// Tokens from the last `epoll_wait` that no thread took yet.
    ready: VecDeque<u64>,
    /// A thread is in `epoll_wait` (or about to be).
    polling: bool,
    /// Threads waiting on `turn`.
    waiting: usize,
    accepting: Accepting,
    /// The drain started and idle parked connections got their grace.
    drained: bool,
    next_sweep: Instant,
    /// Draining and no connection left: every thread returns.
    done: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepting {
    On,
    /// Listeners out of the epoll set until then (accept failed).
    Paused(Instant),
    /// Draining.
    Off,
}

impl<'a> Hub<'a> {
    /// Sets up the epoll set with the listeners in it. Parked connections
    /// are swept for deadlines every `drain_poll`, or an eighth of the
    /// shorter timeout when that is less (a timeout is then late by at
    /// most an eighth).
    pub(super) fn new(
        threads: usize,
        listeners: &'a [Listening],
        config: &'a Config,
        drain: &'a AtomicBool,
        occupancy: &'a Occupancy,
        handler: &'a dyn Handler,
    ) -> io::Result<Hub<'a>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| errno_io(e, "epoll_create1"))?;
        let shortest = config.keepalive_timeout.min(config.head_timeout) / 8;
        let sweep_every = config.drain_poll.min(shortest).max(Duration::from_millis(1));
        let state = State {
            parked: Table::default(),
            ready: VecDeque::with_capacity(MAX_EVENTS),
            polling: false,
            waiting: 0,
            accepting: Accepting::On,
            drained: false,
            next_sweep: Instant::now() + sweep_every,
            done: false,
        };
        let hub = Hub {
            epoll,
            listeners,
            config,
            drain,
            occupancy,
            handler,
            state: Mutex::new(state),
            turn: Condvar::new(),
            sweep_every,
            edge: threads <= 1,
            accept_failing: AtomicBool::new(false),
        };
        hub.listen(true).map_err(|e| errno_io(e, "adding a listening socket to epoll"))?;
        Ok(hub)
    }

    fn lock(&self) -> MutexGuard<'_, State<'a>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (`on`) or removes the listening sockets from the epoll set.
    fn listen(&self, on: bool) -> nix::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.listener.as_fd();
            if !on {
                let _ = self.epoll.delete(fd);
                continue;
            }
            let token = LISTENER | i as u64;
            let exclusive = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, token);
            match self.epoll.add(fd, exclusive) {
                Ok(()) | Err(Errno::EEXIST) => {}
                // Kernels before 4.5: every worker wakes, one accepts.
                Err(Errno::EINVAL) => self.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next thing to serve; None when the worker is done (drained).
    /// `events` is this thread's buffer for `epoll_wait`.
    pub(super) fn next_job(&self, events: &mut [EpollEvent]) -> Option<Job<'a>> {
        let mut st = self.lock();
        loop {
            if st.done {
                return None;
            }
            if let Some(job) = take_ready(&mut st) {
                if !st.ready.is_empty() && st.waiting > 0 {
                    self.turn.notify_one();
                }
                return Some(job);
            }
            if st.polling {
                st.waiting += 1;
                st = match self.turn.wait_timeout(st, self.config.drain_poll) {
                    Ok((g, _)) => g,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                st.waiting -= 1;
                continue;
            }
            st.polling = true;
            let (closing, timeout) = self.housekeeping(&mut st);
            drop(st);
            for conn in closing {
                conn.expire(self.handler);
            }
            let finished = self.drain.load(Ordering::Relaxed) && self.occupancy.open() == 0;
            let n = if finished { 0 } else { self.wait(events, timeout) };
            st = self.lock();
            st.polling = false;
            if finished {
                st.done = true;
                self.turn.notify_all();
                return None;
            }
            st.ready.extend(events[..n].iter().map(EpollEvent::data));
            // Someone must poll next while this thread serves: a waiting
            // thread takes the next job or the poller's place.
            if st.waiting > 0 {
                self.turn.notify_one();
            }
        }
    }

    /// Deadlines, pauses and the drain (see the module doc): the
    /// connections to close (outside the lock), and how long the poller
    /// may wait before the next housekeeping is due.
    fn housekeeping(&self, st: &mut State<'a>) -> (Vec<Conn<'a>>, Duration) {
        let now = Instant::now();
        let mut closing = Vec::new();
        if self.drain.load(Ordering::Relaxed) {
            if st.accepting != Accepting::Off {
                let _ = self.listen(false);
                st.accepting = Accepting::Off;
            }
            if !st.drained {
                st.drained = true;
                // Idle connections get a short grace, then the sweep closes them.
                st.parked.take_where(
                    |c| {
                        c.on_drain(now);
                        false
                    },
                    &mut closing,
                );
            }
        } else if let Accepting::Paused(until) = st.accepting {
            if now >= until {
                st.accepting = match self.listen(true) {
                    Ok(()) => Accepting::On,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch the listening sockets again; retrying");
                        Accepting::Paused(now + self.config.drain_poll)
                    }
                };
            }
        }
        if now >= st.next_sweep {
            st.parked.take_where(|c| c.deadline() <= now, &mut closing);
            st.next_sweep = now + self.sweep_every;
        }
        let mut timeout = self.config.drain_poll.min(st.next_sweep.saturating_duration_since(now));
        if let Accepting::Paused(until) = st.accepting {
            timeout = timeout.min(until.saturating_duration_since(now));
        }
        (closing, timeout)
    }

    /// `epoll_wait` up to `timeout` (rounded up to whole milliseconds);
    /// how many events it put in `events`.
    fn wait(&self, events: &mut [EpollEvent], timeout: Duration) -> usize {
        let ms = timeout.as_micros().div_ceil(1000);
        let timeout = EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX);
        match self.epoll.wait(events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                // Only a bug gets here (EBADF, EFAULT, EINVAL): do not spin.
                tracing::error!(error = %e, "epoll_wait failed");
                std::thread::sleep(self.config.drain_poll);
                0
            }
        }
    }

    /// Accepts a connection from listening socket `i`, if one is there.
    pub(super) fn accept(&self, i: usize) -> Option<Conn<'a>> {
        let l = self.listeners.get(i)?;
        match l.listener.accept() {
            Ok((stream, peer)) => {
                if self.accept_failing.load(Ordering::Relaxed) {
                    self.accept_failing.store(false, Ordering::Relaxed);
                    tracing::info!("accepting connections again");
                }
                Some(Conn::new(stream, peer, i, l.protocol, self.config, self.occupancy))
            }
            // Taken by another worker, or aborted by the client while queued.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                if !self.accept_failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, pause = ?self.config.drain_poll, "accept failed; pausing accepts, retrying after each pause");
                }
                let mut st = self.lock();
                if st.accepting == Accepting::On {
                    let _ = self.listen(false);
                    st.accepting = Accepting::Paused(Instant::now() + self.config.drain_poll);
                }
                None
            }
        }
    }

    /// Parks a connection until it has input (or its deadline passes);
    /// once the drain started, an idle one only for a short grace
    /// ([`Conn::on_drain`]).
    pub(super) fn park(&self, mut conn: Conn<'a>) {
        let mut st = self.lock();
        if st.drained {
            conn.on_drain(Instant::now());
        }
        let (token, first) = match conn.token {
            Some(token) => match st.parked.put(token, conn) {
                Ok(()) => (token, false),
                Err(_) => return, // not its slot: a bug; dropped (closed)
            },
            None => {
                let token = st.parked.insert(conn);
                if let Some(c) = st.parked.get_mut(token) {
                    c.token = Some(token);
                }
                (token, true)
            }
        };
        if !first && self.edge {
            return;
        }
        // The connection is in the table before epoll can report it, and
        // the lock keeps a sweep from closing its fd under this call.
        let flags = EpollFlags::EPOLLIN | if self.edge { EpollFlags::EPOLLET } else { EpollFlags::EPOLLONESHOT };
        let armed = st.parked.get_mut(token).and_then(|c| c.fd()).map(|fd| {
            let mut ev = EpollEvent::new(flags, token);
            if first { self.epoll.add(fd, ev) } else { self.epoll.modify(fd, &mut ev) }
        });
        if !matches!(armed, Some(Ok(()))) {
            tracing::debug!(error = ?armed, "cannot park a connection in epoll; closed it");
            let conn = st.parked.take(token);
            st.parked.release(token);
            drop(st);
            drop(conn);
        }
    }

    /// Frees the slot of a connection that was closed while served.
    pub(super) fn release(&self, token: Option<u64>) {
        if let Some(token) = token {
            self.lock().parked.release(token);
        }
    }
}

/// The first job in the ready queue that is still valid.
fn take_ready<'a>(st: &mut State<'a>) -> Option<Job<'a>> {
    while let Some(token) = st.ready.pop_front() {
        if token & LISTENER != 0 {
            if st.accepting == Accepting::On {
                return Some(Job::Accept((token & !LISTENER) as usize));
            }
        } else if let Some(conn) = st.parked.take(token) {
            return Some(Job::Serve(conn));
        }
    }
    None
}

fn errno_io(e: Errno, what: &str) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}
