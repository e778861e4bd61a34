//! The request body as the handler reads it: a `Read` + `BufRead` over the
//! connection that stops at the body's end, whatever its framing
//! (`Content-Length`, chunked, none). It streams: data goes from the socket
//! (or the bytes already read past the head) to the reader's buffer, and
//! nothing holds the whole body. `Expect: 100-continue` is answered on the
//! first read, so a handler that never reads never makes the client send.
//! `limit-post` is enforced here for chunked bodies (declared lengths were
//! refused with the head). A failure — a framing error, the limit, a
//! timeout, a closed connection — is sticky: every later read returns it,
//! and the connection answers for it once the handler returns.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::time::Duration;

use super::chunked::{ChunkError, Chunked};
use super::wire::{FillError, Wait, Wire};

/// What went wrong while reading a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    /// A chunked body grew past `limit-post`: 413.
    TooLarge,
    /// Malformed chunked framing: 400.
    BadFraming(&'static str),
    /// The client sent nothing for `io_timeout`: 408.
    TimedOut,
    /// The client closed the connection or the socket failed: no answer.
    Closed,
}

impl BodyFailure {
    fn to_io(self) -> io::Error {
        match self {
            BodyFailure::TooLarge => io::Error::new(ErrorKind::InvalidData, "request body larger than limit-post"),
            BodyFailure::BadFraming(why) => io::Error::new(ErrorKind::InvalidData, why),
            BodyFailure::TimedOut => io::Error::new(ErrorKind::TimedOut, "the client sent no body bytes in time"),
            BodyFailure::Closed => {
                io::Error::new(ErrorKind::UnexpectedEof, "the client closed the connection mid-body")
            }
        }
    }
}

#[derive(Debug)]
enum Kind {
    Length(u64),
    Chunked(Chunked),
}

/// The body of one request; see the module doc.
pub struct RequestBody<'c> {
    wire: &'c mut Wire,
    kind: Kind,
    /// Body bytes delivered so far.
    taken: u64,
    limit: Option<u64>,
    /// `Expect: 100-continue` still to be answered.
    continue_pending: bool,
    io_timeout: Duration,
    failure: Option<BodyFailure>,
}

/// How a body is delimited, for [`RequestBody::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

impl<'c> RequestBody<'c> {
    pub(super) fn new(
        wire: &'c mut Wire,
        framing: Framing,
        limit: Option<u64>,
        expect_continue: bool,
        io_timeout: Duration,
    ) -> RequestBody<'c> {
        let kind = match framing {
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked(Chunked::default()),
        };
        let empty = matches!(kind, Kind::Length(0));
        RequestBody {
            wire,
            kind,
            taken: 0,
            limit,
            continue_pending: expect_continue && !empty,
            io_timeout,
            failure: None,
        }
    }

    /// Body bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.taken
    }

    /// The whole body has been read.
    pub fn is_finished(&self) -> bool {
        match &self.kind {
            Kind::Length(left) => *left == 0,
            Kind::Chunked(c) => c.is_done(),
        }
    }

    /// What went wrong, if reading failed.
    pub fn failure(&self) -> Option<BodyFailure> {
        self.failure
    }

    /// The client asked for `100 Continue` and has not had it: it may not
    /// have sent the body at all.
    pub(super) fn awaiting_continue(&self) -> bool {
        self.continue_pending
    }

    /// Reads and drops what is left of the body, up to `max` bytes: true
    /// when the body is then finished (the connection can carry another
    /// request). Never answers a pending `100-continue`: a client that
    /// has not sent its body is not asked to send it just to be dropped.
    pub(super) fn discard(&mut self, max: u64) -> bool {
        if self.continue_pending || self.failure.is_some() {
            return self.is_finished() && self.failure.is_none();
        }
        let limit = self.limit.take();
        let start = self.taken;
        let mut scratch = [0u8; 8192];
        while !self.is_finished() && self.taken - start < max {
            match self.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.limit = limit;
        self.is_finished() && self.failure.is_none()
    }

    fn fail<T>(&mut self, f: BodyFailure) -> io::Result<T> {
        self.failure = Some(f);
        Err(f.to_io())
    }

    fn fail_fill<T>(&mut self, e: FillError) -> io::Result<T> {
        match e {
            FillError::TimedOut => self.fail(BodyFailure::TimedOut),
            _ => self.fail(BodyFailure::Closed),
        }
    }

    /// Sends `100 Continue` if it is still owed.
    fn answer_continue(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            if self.wire.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| self.wire.flush()).is_err() {
                return self.fail(BodyFailure::Closed);
            }
        }
        Ok(())
    }

    /// Chunk data bytes available next (0: the body is over), reading
    /// framing as needed; also enforces the limit.
    fn chunk_data_ahead(&mut self) -> io::Result<u64> {
        loop {
            let Kind::Chunked(dec) = &mut self.kind else { return Ok(0) };
            if dec.is_done() {
                return Ok(0);
            }
            let left = dec.data_left();
            if left > 0 {
                return match self.limit {
                    Some(limit) if self.taken >= limit => self.fail(BodyFailure::TooLarge),
                    Some(limit) => Ok(left.min(limit - self.taken)),
                    None => Ok(left),
                };
            }
            if self.wire.buffered().is_empty() {
                if let Err(e) = self.wire.fill(Wait::Progress(self.io_timeout)) {
                    return self.fail_fill(e);
                }
            }
            match dec.feed(self.wire.buffered()) {
                Ok(used) => self.wire.consume(used),
                Err(e) => return self.fail(BodyFailure::BadFraming(ChunkError::why(e))),
            }
        }
    }

    /// Bytes that may be delivered next without crossing the body's end.
    fn ahead(&mut self) -> io::Result<u64> {
        if let Some(f) = self.failure {
            return Err(f.to_io());
        }
        if self.is_finished() {
            return Ok(0);
        }
        self.answer_continue()?;
        match self.kind {
            Kind::Length(left) => Ok(left),
            Kind::Chunked(_) => self.chunk_data_ahead(),
        }
    }

    fn took(&mut self, n: usize) {
        let n = n as u64;
        self.taken += n;
        match &mut self.kind {
            Kind::Length(left) => *left = left.saturating_sub(n),
            Kind::Chunked(dec) => dec.took_data(n),
        }
    }
}

impl Read for RequestBody<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let ahead = self.ahead()?;
        if ahead == 0 {
            return Ok(0);
        }
        let want = usize::try_from(ahead).unwrap_or(usize::MAX).min(out.len());
        match self.wire.read_into(&mut out[..want], Wait::Progress(self.io_timeout)) {
            Ok(n) => {
                self.took(n);
                Ok(n)
            }
            Err(e) => self.fail_fill(e),
        }
    }
}

impl BufRead for RequestBody<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let ahead = self.ahead()?;
        if ahead == 0 {
            return Ok(&[]);
        }
        if self.wire.buffered().is_empty() {
            if let Err(e) = self.wire.fill(Wait::Progress(self.io_timeout)) {
                return self.fail_fill(e);
            }
        }
        let have = self.wire.buffered();
        let n = usize::try_from(ahead).unwrap_or(usize::MAX).min(have.len());
        Ok(&have[..n])
    }

    fn consume(&mut self, amt: usize) {
        // `amt` is at most what fill_buf returned, which never crosses
        // the body's end or the limit.
        self.wire.consume(amt);
        self.took(amt);
    }
}

impl std::fmt::Debug for RequestBody<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").field("kind", &self.kind).field("taken", &self.taken).finish()
    }
}
