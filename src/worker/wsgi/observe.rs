//! What the WSGI worker records about each request, outside the app's
//! call: the request metrics in this process's row of the scoreboard
//! (in flight, status class, duration, time queued; see
//! [`crate::scoreboard::http`]) and the access-log line ([`super::access`]).
//! [`Observer::begin`] runs as the handler is called, [`Observer::done`]
//! once the front has written the response, GIL released both times.
//!
//! The in-flight gauge is kept per serving thread: a thread has at most
//! one request in the app, so `begin` raises the gauge only if the
//! thread's previous request was done — should the front ever fail to
//! call `done` (a bug it survives by dropping the connection), the gauge
//! stays one too high for that thread until its next request, never for
//! good.

use std::cell::Cell;
use std::time::Duration;

use super::access::AccessLog;
use crate::scoreboard::http::HttpRow;
use crate::worker::front::{Outcome, Request};

pub(super) struct Observer {
    row: Option<&'static HttpRow>,
    access: AccessLog,
}

thread_local! {
    /// This thread has a request counted in flight.
    static IN_FLIGHT: Cell<bool> = const { Cell::new(false) };
}

impl Observer {
    pub(super) fn new(row: Option<&'static HttpRow>, access: AccessLog) -> Observer {
        Observer { row, access }
    }

    /// A request is about to enter the app: in flight, and how long it
    /// waited (TCP: since its last bytes arrived, read from the kernel).
    pub(super) fn begin(&self, req: &Request<'_>) {
        self.access.begin(req);
        let Some(row) = self.row else { return };
        if !IN_FLIGHT.with(|f| f.replace(true)) {
            row.begin();
        }
        if let Some(ms) = req.conn_fd.filter(|_| req.conn_tcp).and_then(crate::sys::since_last_receive_ms) {
            row.queued(Duration::from_millis(u64::from(ms)));
        }
    }

    /// The front wrote the response (or gave up on the client: status 0).
    pub(super) fn done(&self, req: &Request<'_>, outcome: &Outcome) {
        if let Some(row) = self.row {
            if IN_FLIGHT.with(|f| f.replace(false)) {
                row.end();
            }
            if outcome.status != 0 {
                row.answered(outcome.status, outcome.duration);
            }
        }
        self.access.log(req, outcome);
    }
}
