//! The WSGI worker against hostile clients and heavy bodies, end to end:
//! the real podmaster with a real WSGI app (`tests/scripts/wsgi/bulk.py`).
//! - `http`, `uwsgi`: tables of malformed, ambiguous and smuggling
//!   requests on the app's HTTP and uwsgi ports (the hostile-client suite
//!   of the probe server, pointed at the app): each gets a 4xx or a close
//!   within a deadline, never a 5xx and never a hang, and afterwards the
//!   same worker answers a good request.
//! - `slow`: clients that hold a thread (slowloris heads, idle and
//!   half-open connections, a client that never reads its answer): each is
//!   cut at the front's deadline and the worker serves others after.
//! - `bodies`: `limit-post`, and 100 MB each way in bounded memory.
//! - `reload`: a chain reload and a drain under keep-alive load.

#[path = "../common/mod.rs"]
mod common;

mod bodies;
mod http;
mod reload;
mod slow;
mod uwsgi;

use std::time::Duration;

use common::wsgi::*;

/// A quick case (the answer or close comes at once) must end within this.
const QUICK: Duration = Duration::from_secs(5);

/// What a hostile request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// One answer with this status (a 4xx from the front is followed by
    /// the close, and on HTTP says `Connection: close`). No answer has a
    /// 5xx, except a 505 where the table expects one.
    Status(u16),
    /// These answers in order, nothing more.
    Statuses(&'static [u16]),
    /// A close (or a reset) without any byte of an answer.
    Close,
}

/// Runs one case on a new connection and checks what came back, then that
/// the worker `worker` still serves a good request.
fn case(w: &Wsgi, worker: i32, addr: &str, name: &str, bytes: &[u8], half_close: bool, expect: Expect) {
    let out = exchange(addr, bytes, half_close, QUICK);
    let shown = String::from_utf8_lossy(&out.raw[..out.raw.len().min(300)]).into_owned();
    assert!(!out.hung, "{name}: no answer and no close within {QUICK:?}; got {shown:?}");
    let (answers, cut) = out.answers();
    // The one 5xx a client can cause: 505 for a well-formed request line
    // naming a version other than 1.0 and 1.1 (RFC 9110 §15.6.6).
    let allowed_5xx = matches!(expect, Expect::Status(505));
    for a in &answers {
        let ok = a.head.status < 500 || (allowed_5xx && a.head.status == 505);
        assert!(ok, "{name}: a {} from the front: {shown:?}", a.head.status);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.head.status).collect();
    match expect {
        Expect::Status(code) => {
            assert_eq!(statuses, [code], "{name}: {shown:?}");
            assert!(!cut, "{name}: answer cut short: {shown:?}");
            if code >= 400 && addr == w.http {
                assert!(answers[0].head.closes(), "{name}: a {code} without Connection: close");
            }
        }
        Expect::Statuses(codes) => {
            assert_eq!(statuses, codes, "{name}: {shown:?}");
            assert!(!cut, "{name}: answer cut short: {shown:?}");
        }
        Expect::Close => assert!(out.raw.is_empty(), "{name}: expected a close, got {shown:?}"),
    }
    w.assert_serves(worker, name);
}

/// No log line says that the front or a handler panicked.
fn assert_no_panic(w: &Wsgi) {
    let logs = w.inst.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}
