//! One connection's socket and read buffer. Every read here runs under a
//! deadline, and idle reads (waiting for the next request) wake every
//! [`super::Config::drain_poll`] to look at the drain flag: that is how a
//! thread blocked in `read` notices a drain (see the module doc of
//! [`super`]). Bytes read past a request head stay in the buffer for its
//! body or the next pipelined request.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Config;
use super::stream::Stream;

/// Bytes asked of the kernel per read: large enough that a 100 MB body
/// streams in few syscalls, small enough per connection thread.
pub(super) const READ_BUF: usize = 64 * 1024;
/// After deciding to close with input still arriving (an unread body, an
/// error answer), the write side is shut and input discarded for at most
/// this long and this much: closing with unread input makes the kernel
/// send a reset, which can destroy the response still in flight.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// The part of a response that must go out within the io timeout: a
/// client reading slower than this per io timeout (about 1 KiB/s) is cut.
pub(super) const WRITE_SLICE: usize = 64 * 1024;

/// How long an idle read looks for bytes already sent once the worker
/// drains, before it closes the connection.
const LAST_LOOK: Duration = Duration::from_millis(1);

/// How a read may wait.
#[derive(Clone, Copy, Debug)]
pub(super) enum Wait {
    /// Between requests (no byte of the next one yet): gives up quietly
    /// at the deadline, and at once when the drain flag is set.
    Idle(Instant),
    /// Inside a request head: the head's deadline.
    Head(Instant),
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
    /// Idle while draining.
    Drained,
    Io(io::Error),
}

impl From<FillError> for io::Error {
    fn from(e: FillError) -> io::Error {
        match e {
            FillError::Eof => io::Error::new(ErrorKind::UnexpectedEof, "the client closed the connection mid-body"),
            FillError::TimedOut => io::Error::new(ErrorKind::TimedOut, "the client sent no body bytes in time"),
            FillError::Drained => io::Error::new(ErrorKind::Interrupted, "the worker is draining"),
            FillError::Io(e) => e,
        }
    }
}

pub(super) struct Wire {
    stream: Box<dyn Stream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The `SO_RCVTIMEO` last set, to skip setting it again.
    read_timeout: Option<Duration>,
    drain: Arc<AtomicBool>,
    drain_poll: Duration,
    /// Each [`WRITE_SLICE`] of a response must be taken within this.
    io_timeout: Duration,
    /// The `SO_SNDTIMEO` last set.
    write_timeout: Duration,
}

impl Wire {
    /// Wraps an accepted stream; `capacity` is at least the largest head.
    pub(super) fn new(stream: Box<dyn Stream>, config: &Config, drain: Arc<AtomicBool>) -> Wire {
        // A failure here leaves writes blocking without a limit; reads
        // set their own timeouts below.
        let io_timeout = nonzero(config.io_timeout);
        let _ = stream.set_write_timeout(Some(io_timeout));
        Wire {
            stream,
            // A uwsgi packet is its 4-byte header plus up to buffer_size.
            buf: vec![0; (config.buffer_size + 4).max(READ_BUF)].into_boxed_slice(),
            start: 0,
            end: 0,
            read_timeout: None,
            drain,
            drain_poll: nonzero(config.drain_poll),
            io_timeout,
            write_timeout: io_timeout,
        }
    }

    /// The connection's fd, if it has one.
    pub(super) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.raw_fd()
    }

    /// Whether the drain flag is set.
    pub(super) fn draining(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }

    /// Bytes received and not yet consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads at least one more byte into the buffer; returns how many.
    pub(super) fn fill(&mut self, wait: Wait) -> Result<usize, FillError> {
        if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(FillError::Io(io::Error::other("read buffer full")));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let end = self.end;
        let n = read_with(
            &mut *self.stream,
            &mut self.buf[end..],
            wait,
            &mut self.read_timeout,
            &self.drain,
            self.drain_poll,
        )?;
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
            return read_with(&mut *self.stream, out, wait, &mut self.read_timeout, &self.drain, self.drain_poll);
        }
        let got = self.fill(wait)?;
        let n = got.min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        Ok(n)
    }

    /// Closes the connection. With `linger`, the write side is shut first
    /// and input discarded until the peer closes, for a bounded time and
    /// amount (see [`LINGER_TIME`]); without, it is simply dropped.
    pub(super) fn close(mut self, linger: bool) {
        let _ = self.flush();
        if !linger {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            self.start = 0;
            self.end = 0;
            match self.fill(Wait::Head(until)) {
                Ok(n) => discarded += n,
                Err(_) => break,
            }
        }
    }
}

/// File bodies go by `sendfile` on the socket (see `sendfile.rs` for its
/// pace rule, the same as `write_all`'s below).
impl super::sendfile::Out for Wire {
    fn sendfile_fd(&self) -> Option<std::os::fd::RawFd> {
        self.raw_fd()
    }
}

/// Responses are written straight to the socket. `write_all` gives each
/// [`WRITE_SLICE`] of the bytes the io timeout in all: a timeout per
/// `write` call alone is reset by any progress, and a client that never
/// reads still lets the kernel take a few bytes now and then (a test saw
/// one hold a thread for three timeouts), or a client can read a byte a
/// minute on purpose and hold a thread for good.
impl Write for Wire {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.write(bytes)
    }
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        for slice in bytes.chunks(WRITE_SLICE) {
            let deadline = Instant::now() + self.io_timeout;
            let mut rest = slice;
            // A blocking write returns early only at its timeout or on a
            // signal; the whole timeout is set again only after that, so a
            // response that goes out whole costs no extra syscall.
            let mut timeout = self.io_timeout;
            while !rest.is_empty() {
                if timeout != self.write_timeout {
                    self.stream.set_write_timeout(Some(timeout))?;
                    self.write_timeout = timeout;
                }
                match self.stream.write(rest) {
                    Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "the connection took no bytes")),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if !rest.is_empty() && left.is_zero() {
                    return Err(io::Error::new(ErrorKind::TimedOut, "the client took too long to read the response"));
                }
                timeout = nonzero(left);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// One read under `wait`: retries the timeout slices until a byte comes,
/// the deadline passes, or (idle) the drain flag is set.
fn read_with(
    stream: &mut dyn Stream,
    out: &mut [u8],
    wait: Wait,
    current: &mut Option<Duration>,
    drain: &AtomicBool,
    drain_poll: Duration,
) -> Result<usize, FillError> {
    let started = Instant::now();
    let mut last_look = false;
    loop {
        let now = Instant::now();
        let slice = match wait {
            // Draining: bytes of a next request that arrived already are
            // taken (the request is answered, with `Connection: close`)
            // rather than reset under the client by closing; one short
            // read looks for them. A chain reload under keep-alive load
            // lost requests that way.
            Wait::Idle(_) if drain.load(Ordering::Relaxed) && last_look => return Err(FillError::Drained),
            Wait::Idle(_) if drain.load(Ordering::Relaxed) => {
                last_look = true;
                LAST_LOOK
            }
            Wait::Idle(until) => {
                if now >= until {
                    return Err(FillError::TimedOut);
                }
                (until - now).min(drain_poll)
            }
            Wait::Head(until) if now >= until => return Err(FillError::TimedOut),
            Wait::Head(until) => until - now,
            Wait::Progress(limit) if now.duration_since(started) >= limit => return Err(FillError::TimedOut),
            // The whole limit each time (not what is left of it), so that
            // the socket option is set once for a whole body; a read
            // interrupted late may wait up to twice the limit.
            Wait::Progress(limit) => limit,
        };
        let slice = Some(nonzero(slice));
        if *current != slice {
            stream.set_read_timeout(slice).map_err(FillError::Io)?;
            *current = slice;
        }
        match stream.read(out) {
            Ok(0) => return Err(FillError::Eof),
            Ok(n) => return Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(FillError::Io(e)),
        }
    }
}

/// `set_read_timeout(Some(0))` is an error; the shortest real timeout is
/// a millisecond.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn wire(stream: UnixStream, drain: &Arc<AtomicBool>) -> Wire {
        Wire::new(Box::new(stream), &Config::default(), Arc::clone(drain))
    }

    #[test]
    fn a_draining_idle_read_takes_bytes_already_sent_then_gives_up() {
        let drain = Arc::new(AtomicBool::new(true));
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut w = wire(ours, &drain);
        theirs.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(w.fill(Wait::Idle(far)).ok(), Some(16), "the request already sent is read");
        let t = Instant::now();
        assert!(matches!(w.fill(Wait::Idle(far)), Err(FillError::Drained)));
        assert!(t.elapsed() < Duration::from_millis(200), "gave up after {:?}", t.elapsed());
    }

    /// (bytes the reader got, how write_all ended, how long it took) for
    /// 8 MiB written to a reader taking `step` bytes every `pause`.
    fn write_to_reader(step: usize, pause: Duration) -> (usize, io::Result<()>, Duration) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let config = Config { io_timeout: Duration::from_millis(300), ..Config::default() };
        let mut w = Wire::new(Box::new(ours), &config, Arc::new(AtomicBool::new(false)));
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf) = (0, vec![0u8; step]);
            while let Ok(n @ 1..) = io::Read::read(&mut theirs, &mut buf) {
                got += n;
                std::thread::sleep(pause);
            }
            got
        });
        let t = Instant::now();
        let result = w.write_all(&vec![7u8; 8 << 20]);
        let took = t.elapsed();
        drop(w);
        (reader.join().unwrap(), result, took)
    }

    #[test]
    fn a_response_write_needs_each_slice_taken_within_the_io_timeout() {
        let (got, result, _) = write_to_reader(1 << 20, Duration::ZERO);
        assert!(result.is_ok() && got == 8 << 20, "a fast reader gets everything: {got} {result:?}");
        // 4 KiB every 50 ms: progress all the time, 64 KiB in 0.8 s.
        let (_, result, took) = write_to_reader(4096, Duration::from_millis(50));
        assert_eq!(result.map_err(|e| e.kind()), Err(ErrorKind::TimedOut));
        assert!(took < Duration::from_secs(3), "a slow reader held the write for {took:?}");
    }
}
