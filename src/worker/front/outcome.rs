//! What became of one request, as the front tells the handler once the
//! response is written ([`super::Handler::done`]): the status actually
//! sent, the bytes written, how long it took and whether the connection
//! stays open. Access logs and request metrics are made from it, after
//! the write, so that they cost the client nothing.

use std::time::{Duration, Instant};

use super::response::Written;

/// One finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status sent; 0 when nothing was (the client went away, or
    /// stalled, before its response could be written).
    pub status: u16,
    /// Bytes of the response head written (status line, headers, blank line).
    pub head_bytes: u64,
    /// Body bytes written (without chunk framing).
    pub body_bytes: u64,
    /// Header fields the response carried (the app's and the front's framing ones).
    pub headers: u32,
    /// When the request head was complete (parsed).
    pub arrived: Instant,
    /// From `arrived` to the end of the response's write.
    pub duration: Duration,
    /// The connection carries on to another request.
    pub keep_alive: bool,
}

impl Outcome {
    /// The outcome of a response written as `written`, now.
    pub(super) fn new(written: &Written, arrived: Instant) -> Outcome {
        Outcome {
            status: written.status,
            head_bytes: written.head_bytes,
            body_bytes: written.body_bytes,
            headers: written.headers,
            arrived,
            duration: arrived.elapsed(),
            keep_alive: written.keep_alive,
        }
    }
}
