//! One connection's socket and read buffer. The socket is non-blocking:
//! between requests nothing waits on it (the connection is parked in the
//! worker's epoll set, see `serve`), and inside a request — its body, its
//! response — every wait for the socket is a `poll` under a deadline.
//!
//! The read buffer is large (a 100 MB body streams in few syscalls), so a
//! connection holds one only while a thread serves it: the buffer belongs
//! to the serving thread and is [attached](Wire::attach) for the time of
//! the service; bytes still unread when the connection is parked (a part
//! of a request head) are kept in a small spare vector. Bytes read past a
//! request head stay in the buffer for its body or the next pipelined
//! request.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::stream::Stream;

/// Bytes asked of the kernel per read: large enough that a 100 MB body
/// streams in few syscalls, small enough per serving thread.
pub(super) const READ_BUF: usize = 64 * 1024;

/// How a read may wait for the socket.
#[derive(Clone, Copy, Debug)]
pub(super) enum Wait {
    /// Inside a body: each read must make progress within this long.
    Progress(Duration),
}

/// Why a read returned no bytes.
#[derive(Debug)]
pub(super) enum FillError {
    /// The peer closed its side.
    Eof,
    /// The deadline of the [`Wait`] passed.
    TimedOut,
    Io(io::Error),
}

impl From<FillError> for io::Error {
    fn from(e: FillError) -> io::Error {
        match e {
            FillError::Eof => io::Error::new(ErrorKind::UnexpectedEof, "the client closed the connection mid-body"),
            FillError::TimedOut => io::Error::new(ErrorKind::TimedOut, "the client sent no body bytes in time"),
            FillError::Io(e) => e,
        }
    }
}

pub(super) struct Wire {
    stream: Box<dyn Stream>,
    /// The serving thread's buffer while attached; empty while parked.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Unread bytes kept while no buffer is attached.
    spare: Vec<u8>,
    /// The last read filled all the room it was given: the socket may
    /// hold more. An edge-triggered connection must not be parked before
    /// a read has come back short (see `hub`).
    full_read: bool,
    /// Longest wait for one write (or one body read) to make progress.
    io_timeout: Duration,
}

/// The size of a read buffer for `buffer_size`: a uwsgi packet is its
/// 4-byte header plus up to `buffer_size`.
pub(super) fn buffer_len(buffer_size: usize) -> usize {
    (buffer_size + 4).max(READ_BUF)
}

impl Wire {
    /// Wraps an accepted (non-blocking) stream; no buffer attached yet.
    pub(super) fn new(stream: Box<dyn Stream>, io_timeout: Duration) -> Wire {
        Wire { stream, buf: Box::default(), start: 0, end: 0, spare: Vec::new(), full_read: false, io_timeout }
    }

    pub(super) fn stream(&self) -> &dyn Stream {
        &*self.stream
    }

    /// The connection's fd, if it has one (harakiri's 504, sendfile).
    pub(super) fn is_tcp(&self) -> bool {
        self.stream.is_tcp()
    }

    pub(super) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.fd().map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd))
    }

    /// Attaches a thread's read buffer (a fresh one if `buf` is smaller
    /// than `len`, e.g. lost to a panic), with the spare bytes first.
    pub(super) fn attach(&mut self, buf: Box<[u8]>, len: usize) {
        self.buf = if buf.len() >= len.max(self.spare.len()) { buf } else { vec![0; len].into_boxed_slice() };
        self.buf[..self.spare.len()].copy_from_slice(&self.spare);
        self.start = 0;
        self.end = self.spare.len();
        self.spare.clear();
        if self.spare.capacity() > 16 * 1024 {
            self.spare = Vec::new();
        }
    }

    /// Hands the buffer back, keeping the unread bytes in the spare.
    pub(super) fn detach(&mut self) -> Box<[u8]> {
        self.spare.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
        std::mem::take(&mut self.buf)
    }

    /// Bytes received and not yet consumed (while attached), or kept.
    pub(super) fn buffered(&self) -> &[u8] {
        if self.buf.is_empty() { &self.spare } else { &self.buf[self.start..self.end] }
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every buffered byte (a lingering close discards input).
    pub(super) fn discard_buffered(&mut self) {
        self.start = 0;
        self.end = 0;
        self.spare.clear();
    }

    /// Room at the end of the buffer, moving unread bytes to its start
    /// when the end is reached.
    fn room(&mut self) -> Result<(), FillError> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(FillError::Io(io::Error::other("read buffer full")));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(())
    }

    /// Whether the socket may hold bytes not read yet (the last read
    /// filled all its room).
    pub(super) fn may_have_more(&self) -> bool {
        self.full_read
    }

    /// One read of what the socket has, without waiting: `Ok(None)` when
    /// it has nothing now.
    pub(super) fn fill_now(&mut self) -> Result<Option<usize>, FillError> {
        self.room()?;
        loop {
            let room = self.buf.len() - self.end;
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(FillError::Eof),
                Ok(n) => {
                    self.end += n;
                    self.full_read = n == room;
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.full_read = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(FillError::Io(e)),
            }
        }
    }

    /// Reads at least one more byte into the buffer, waiting as `wait`
    /// allows; returns how many.
    pub(super) fn fill(&mut self, wait: Wait) -> Result<usize, FillError> {
        self.room()?;
        let end = self.end;
        let n = read_with(&mut *self.stream, &mut self.buf[end..], wait)?;
        self.full_read = n == self.buf.len() - end;
        self.end += n;
        Ok(n)
    }

    /// Reads into `out` from the buffer, or straight from the socket when
    /// the buffer is empty (a large body never passes through the buffer).
    pub(super) fn read_into(&mut self, out: &mut [u8], wait: Wait) -> Result<usize, FillError> {
        let have = self.end - self.start;
        if have > 0 {
            let n = have.min(out.len());
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.consume(n);
            return Ok(n);
        }
        if out.len() >= self.buf.len() / 2 {
            let n = read_with(&mut *self.stream, out, wait)?;
            self.full_read = n == out.len();
            return Ok(n);
        }
        let got = self.fill(wait)?;
        let n = got.min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        Ok(n)
    }

    /// Writes what the socket takes now, without waiting (an answer to a
    /// connection being dropped must not hold the thread).
    /// Whether all of `bytes` went.
    pub(super) fn send_now(&mut self, bytes: &[u8]) -> bool {
        matches!(self.stream.write(bytes), Ok(n) if n == bytes.len())
    }

    /// Shuts the write side: the start of a lingering close.
    pub(super) fn shutdown_write(&mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// File bodies go by `sendfile` on the socket (see `sendfile.rs` for its
/// pace rule, the same as `write_all`'s below).
impl super::sendfile::Out for Wire {
    fn sendfile_fd(&self) -> Option<std::os::fd::RawFd> {
        self.raw_fd()
    }
}

/// The part of a response that must go out within the io timeout: a
/// client reading slower than this per io timeout (about 1 KiB/s) is cut.
pub(super) const WRITE_SLICE: usize = 64 * 1024;

/// Responses are written straight to the (non-blocking) socket.
/// `write_all` gives each [`WRITE_SLICE`] of the bytes the io timeout in
/// all: a wait per `write` call alone is reset by any progress, and a
/// client that never reads still lets the kernel take a few bytes now and
/// then (a test saw one hold a thread for three timeouts), or a client
/// can read a byte a minute on purpose and hold a thread for good.
impl Write for Wire {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.write(bytes) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.stream.wait(true, self.io_timeout)? {
                        return Err(io::Error::new(ErrorKind::TimedOut, "the client took no response bytes in time"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        for slice in bytes.chunks(WRITE_SLICE) {
            let deadline = Instant::now() + self.io_timeout;
            let mut rest = slice;
            while !rest.is_empty() {
                match self.stream.write(rest) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "the connection took no bytes")),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || !self.stream.wait(true, left)? {
                            let why = "the client took too long to read the response";
                            return Err(io::Error::new(ErrorKind::TimedOut, why));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// One read under `wait`: waits for the socket until a byte comes or the
/// deadline passes.
fn read_with(stream: &mut dyn Stream, out: &mut [u8], wait: Wait) -> Result<usize, FillError> {
    let started = Instant::now();
    loop {
        match stream.read(out) {
            Ok(0) => return Err(FillError::Eof),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(FillError::Io(e)),
        }
        let Wait::Progress(limit) = wait;
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(FillError::TimedOut);
        }
        stream.wait(false, left).map_err(FillError::Io)?;
    }
}
