//! `harakiri`: the WSGI worker's watchdog for requests that run too long.
//! A Rust thread (it never takes the GIL, so a request stuck holding it
//! cannot stop it) sleeps until the earliest deadline of the requests in
//! flight — with none in flight it sleeps until one starts: no idle
//! wakeups. When a request passes `harakiri`:
//!
//! 1. it logs the request (method, URI, how long it ran, the thread; its
//!    headers with `harakiri-verbose`),
//! 2. raises [`stack_signal`] on itself: `faulthandler`, registered for it
//!    when the worker starts, writes every Python thread's stack to
//!    stderr from the signal handler, GIL or not — so the log shows the
//!    line the request is stuck on, which uWSGI's harakiri does not,
//! 3. answers the client 504 when the response has not started (the
//!    request carries its connection's fd; the socket is then shut down,
//!    so the app's late answer cannot reach the client), and
//! 4. asks the master for a replacement (`PODMASTER_RECYCLE=harakiri`),
//!    which starts first; this worker keeps serving its other threads.
//!
//! When the master then stops this worker, its drain would wait forever
//! for the stuck thread: the watchdog waits until every other request is
//! done and ends the process with `_exit` (no Python finalisation, which
//! could block on the stuck thread's GIL).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The signal `faulthandler` dumps every thread's stack on: a real-time
/// signal nothing else in a worker uses (SIGUSR1/2 are often the app's).
pub(super) fn stack_signal() -> i32 {
    libc::SIGRTMIN() + 7
}

/// A request in flight on one serving thread.
struct Active {
    started: Instant,
    /// `GET /path` (and the headers with harakiri-verbose).
    what: String,
    /// The connection, while the response has not started (504 possible).
    conn: Option<RawFd>,
    /// Harakiri struck it already.
    struck: bool,
}

#[derive(Default)]
struct Cells {
    /// One per serving thread (indexed by [`THREAD_CELL`]).
    cells: Vec<Option<Active>>,
    /// The watchdog waits without a deadline: a starting request wakes it.
    idle: bool,
}

/// The watchdog's shared state.
pub(super) struct Harakiri {
    limit: Duration,
    verbose: bool,
    state: Mutex<Cells>,
    wake: Condvar,
    next_cell: AtomicUsize,
    struck: AtomicBool,
}

thread_local! {
    /// This serving thread's cell, assigned at its first request.
    static THREAD_CELL: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Clears its request's cell when the request is over.
pub(super) struct Watched {
    h: Arc<Harakiri>,
    cell: usize,
}

impl Watched {
    /// The response has started: no 504 any more, the fd is not ours.
    pub(super) fn responding(&self) {
        if let Some(Some(a)) = self.h.lock().cells.get_mut(self.cell) {
            a.conn = None;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(c) = self.h.lock().cells.get_mut(self.cell) {
            *c = None;
        }
    }
}

impl Harakiri {
    pub(super) fn new(limit: Duration, verbose: bool) -> Arc<Harakiri> {
        Arc::new(Harakiri {
            limit,
            verbose,
            state: Mutex::new(Cells::default()),
            wake: Condvar::new(),
            next_cell: AtomicUsize::new(0),
            struck: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Cells> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn verbose(&self) -> bool {
        self.verbose
    }

    /// A request starts on this thread, on connection `conn`.
    pub(super) fn begin(self: &Arc<Self>, what: String, conn: Option<RawFd>) -> Watched {
        let cell = THREAD_CELL.with(|c| {
            c.get().unwrap_or_else(|| {
                let i = self.next_cell.fetch_add(1, Ordering::Relaxed);
                c.set(Some(i));
                i
            })
        });
        let mut st = self.lock();
        if st.cells.len() <= cell {
            st.cells.resize_with(cell + 1, || None);
        }
        st.cells[cell] = Some(Active { started: Instant::now(), what, conn, struck: false });
        if st.idle {
            st.idle = false;
            self.wake.notify_one();
        }
        Watched { h: Arc::clone(self), cell }
    }

    /// The watchdog's loop; `notify` asks the master, `draining` is the
    /// worker's drain flag. Returns only by ending the process.
    pub(super) fn watch(&self, notify: impl Fn(&str), draining: &AtomicBool) -> ! {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let stuck_only = st.cells.iter().flatten().all(|a| a.struck);
            if self.struck.load(Ordering::Relaxed) && draining.load(Ordering::Relaxed) && stuck_only {
                tracing::warn!("harakiri: the other requests are done; the stuck worker exits now");
                super::access::flush();
                // SAFETY: `_exit` ends the process at once; nothing after
                // it runs, and it needs no invariant.
                unsafe { libc::_exit(0) };
            }
            let due = st
                .cells
                .iter()
                .enumerate()
                .find_map(|(i, a)| a.as_ref().filter(|a| !a.struck && now >= a.started + self.limit).map(|_| i));
            if let Some(a) = due.and_then(|i| st.cells[i].as_mut().map(|a| (i, a))) {
                // Under the lock: the connection stays open while its cell
                // is set, so the 504 cannot reach another client.
                self.strike(a.1, now, a.0);
                drop(st);
                notify("PODMASTER_RECYCLE=harakiri");
                st = self.lock();
                continue;
            }
            let next = st.cells.iter().flatten().filter(|a| !a.struck).map(|a| a.started + self.limit).min();
            let wait = match (next, self.struck.load(Ordering::Relaxed)) {
                // A stuck request: look at the drain flag now and then.
                (_, true) => Some(next.map_or(Duration::from_millis(100), |n| n - now).min(Duration::from_millis(100))),
                (Some(n), false) => Some(n - now),
                (None, false) => None,
            };
            st = match wait {
                Some(d) => self.wake.wait_timeout(st, d).unwrap_or_else(PoisonError::into_inner).0,
                None => {
                    st.idle = true;
                    self.wake.wait(st).unwrap_or_else(PoisonError::into_inner)
                }
            };
        }
    }

    /// Log, stacks and 504 (see the module docs); the caller asks for
    /// the replacement.
    fn strike(&self, a: &mut Active, now: Instant, thread: usize) {
        a.struck = true;
        self.struck.store(true, Ordering::Relaxed);
        let conn = a.conn.take();
        tracing::error!(
            pid = std::process::id(),
            request = a.what.as_str(),
            ran_s = format!("{:.1}", (now - a.started).as_secs_f64()),
            harakiri_s = self.limit.as_secs_f64(),
            thread,
            answered_504 = conn.is_some(),
            "harakiri: a request ran too long; the Python stacks of every thread follow, and the worker is replaced"
        );
        // SAFETY: raising a signal on this thread; its handler is
        // faulthandler's, which is async-signal-safe by design.
        unsafe { libc::raise(stack_signal()) };
        if let Some(fd) = conn {
            answer_504(fd);
        }
    }
}

/// Writes a 504 on `fd` (best effort, never blocking long: the socket has
/// a send timeout from the front) and shuts the connection down.
fn answer_504(fd: RawFd) {
    const BODY: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\
        Content-Length: 45\r\nConnection: close\r\n\r\nthe request ran longer than harakiri allows\r\n";
    // SAFETY: `fd` is the connection's, open while its cell is set (the
    // front closes it only after the handler returned and cleared it).
    unsafe {
        libc::send(fd, BODY.as_ptr().cast(), BODY.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
