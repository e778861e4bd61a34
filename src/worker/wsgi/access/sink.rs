//! Where access-log lines go: stderr, in batches. Measured on the hello
//! benchmark with stderr read through a pipe (as a container runtime
//! reads it), one `write(2)` per line cost about 20 % of the throughput:
//! not the write itself (to /dev/null it costs nothing measurable) but
//! waking the pipe's reader once per line; one write per 4 KiB still
//! cost 5-10 % (the reader woke for each). Linux wakes a pipe's reader
//! only for a write into an empty pipe, so the serving threads append
//! their lines to one buffer of up to [`BATCH`] bytes, which is written
//! as a burst of back-to-back writes: the reader wakes for the first and
//! finds the others waiting. Each write is at most `PIPE_BUF` bytes and
//! ends at a line's end, so it stays atomic on a pipe and batches never
//! interleave with other processes' lines mid-line. The buffer is
//! written when the next line would not fit, or, at the latest,
//! [`FLUSH_AFTER`] after its first line, by a flusher thread that sleeps
//! without a timer while the buffer is empty (an idle worker does not
//! wake up). Lines are written in the order they were logged; what is
//! pending is written by [`flush`] (the worker's exit, harakiri's
//! `_exit`); a worker killed by SIGKILL loses at most `FLUSH_AFTER` (or
//! `BATCH` bytes) of lines. One sink per process ([`global`]), started by
//! the first access log that can log anything.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The longest a logged line waits in the buffer: short enough to read
/// as "at once" in `kubectl logs -f`, long enough to batch a busy
/// worker's lines.
pub(super) const FLUSH_AFTER: Duration = Duration::from_millis(100);

/// Bytes written to a pipe in one `write(2)` that cannot interleave with
/// another writer's (POSIX `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// The most a batch holds: half a default pipe (64 KiB), so that a burst
/// fits in a pipe its reader keeps up with.
pub(super) const BATCH: usize = 8 * PIPE_BUF;

/// The shared buffer and the flusher's wake-up.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Buffer>,
    filled: Condvar,
    /// Held while a batch is written, taken before `pending` is let go:
    /// batches go out in the order they were taken, and threads logging
    /// meanwhile fill the next batch instead of waiting for the writes
    /// (unless that one fills too before the writes end: its writer then
    /// waits here holding `pending`, and the others wait for it).
    out: Mutex<()>,
    /// Where lines go: stderr (a pipe in tests).
    fd: RawFd,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// The flusher is counting down to its next write: a line added to
    /// an empty buffer needs no wake-up (one futex call and two context
    /// switches per batch saved under load).
    armed: bool,
}

/// A batching writer to stderr, shared by a worker's serving threads.
#[derive(Debug)]
pub(super) struct Sink {
    shared: Arc<Shared>,
    /// A flusher thread runs (else every line is written at once).
    batched: bool,
}

impl Sink {
    /// A sink writing to `fd` (which must stay open as long as the
    /// process) and its flusher thread (without a thread, when it cannot
    /// be started: then every line is written at once).
    fn new(fd: RawFd) -> Sink {
        let pending = Buffer { bytes: Vec::with_capacity(BATCH), armed: false };
        let shared = Arc::new(Shared { pending: Mutex::new(pending), filled: Condvar::new(), out: Mutex::new(()), fd });
        let flusher = Arc::clone(&shared);
        let started = std::thread::Builder::new().name("access-log".into()).spawn(move || flush_loop(&flusher));
        if let Err(e) = &started {
            tracing::warn!(error = %e, "cannot start the access log's flusher; writing each line at once");
        }
        Sink { shared, batched: started.is_ok() }
    }

    /// A sink that writes every line at once.
    #[cfg(test)]
    pub(super) fn unbatched(fd: RawFd) -> Sink {
        let shared = Shared { pending: Mutex::default(), filled: Condvar::new(), out: Mutex::new(()), fd };
        Sink { shared: Arc::new(shared), batched: false }
    }

    /// Queues one line (newline included).
    pub(super) fn push(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.batched {
            write_all(shared.fd, line);
            return;
        }
        if line.len() > PIPE_BUF {
            // Alone, after what is pending.
            let batch = std::mem::take(&mut pending.bytes);
            let _out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
            drop(pending);
            write_lines(shared.fd, &batch);
            write_all(shared.fd, line);
            return;
        }
        if pending.bytes.len() + line.len() > BATCH {
            let mut next = Vec::with_capacity(BATCH);
            next.extend_from_slice(line);
            let batch = std::mem::replace(&mut pending.bytes, next);
            // No wake-up: the flusher is counting down (`armed`) or will
            // find the buffer not empty when it next looks.
            let _out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
            drop(pending);
            write_lines(shared.fd, &batch);
            return;
        }
        let wake = pending.bytes.is_empty() && !pending.armed;
        pending.bytes.extend_from_slice(line);
        if wake {
            shared.filled.notify_one();
        }
    }

    /// Writes what is pending now.
    pub(super) fn flush(&self) {
        let shared = &*self.shared;
        let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = std::mem::take(&mut pending.bytes);
        let _out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        write_lines(shared.fd, &batch);
    }
}

static GLOBAL: std::sync::OnceLock<Sink> = std::sync::OnceLock::new();

/// The process's sink (its flusher starts with the first call).
pub(super) fn global() -> &'static Sink {
    GLOBAL.get_or_init(|| Sink::new(libc::STDERR_FILENO))
}

/// Writes what the process's sink holds, if it has one.
pub(super) fn flush() {
    if let Some(s) = GLOBAL.get() {
        s.flush();
    }
}

/// The flusher: waits (no timer) for a first line, gives the buffer
/// [`FLUSH_AFTER`] to fill, writes what is there.
fn flush_loop(shared: &Shared) {
    let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        while pending.bytes.is_empty() {
            pending = shared.filled.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        // Lines that arrive meanwhile (full batches go out from `push`)
        // ride on this countdown; the wait ends at its deadline only.
        pending.armed = true;
        let deadline = std::time::Instant::now() + FLUSH_AFTER;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero()) {
            pending = shared.filled.wait_timeout(pending, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        pending.armed = false;
        let batch = std::mem::replace(&mut pending.bytes, Vec::with_capacity(BATCH));
        let out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        write_lines(shared.fd, &batch);
        drop(out);
        pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

/// Writes a batch of whole lines (each at most `PIPE_BUF` bytes) as
/// back-to-back writes of as many whole lines as fit in `PIPE_BUF`.
fn write_lines(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let cut = if bytes.len() <= PIPE_BUF {
            bytes.len()
        } else {
            // A line is never longer than PIPE_BUF here; a batch that does
            // not hold newlines (it cannot) goes out in PIPE_BUF pieces.
            bytes[..PIPE_BUF].iter().rposition(|&b| b == b'\n').map_or(PIPE_BUF, |i| i + 1)
        };
        write_all(fd, &bytes[..cut]);
        bytes = &bytes[cut..];
    }
}

/// Writes all of `bytes` to `fd` (a partial write is finished; an error
/// drops the rest: logging never fails a request).
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    // SAFETY: the sink's fd is stderr (or a test's pipe), open for the
    // process's life.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    use std::time::Instant;

    /// A batching sink writing into a pipe, and the pipe's read end.
    fn piped() -> (Sink, std::fs::File) {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        // Room for several batches: the test reads only after pushing.
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).unwrap();
        // The write end lives as long as the test process (as stderr does).
        (Sink::new(w.into_raw_fd()), std::fs::File::from(r))
    }

    /// Reads what is there now; `writes` counts the reads that got bytes.
    fn drain(r: &mut std::fs::File, got: &mut Vec<u8>) -> usize {
        let mut buf = [0u8; 65536];
        let mut reads = 0;
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            reads += 1;
        }
        reads
    }

    /// A batch goes out as writes of whole lines, each at most PIPE_BUF
    /// bytes (a SOCK_SEQPACKET pair shows each write as one packet).
    #[test]
    fn a_batch_is_written_in_atomic_pieces_that_end_lines() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_NONBLOCK).unwrap();
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &(1 << 20)).unwrap();
        // Lines of 1 to 300 bytes, and one of exactly PIPE_BUF.
        let mut batch = Vec::new();
        let mut lines = Vec::new();
        for i in 0..400usize {
            let len = if i == 200 { PIPE_BUF } else { 1 + i * 7919 % 300 };
            let mut l = vec![b'a' + (i % 26) as u8; len - 1];
            l.push(b'\n');
            batch.extend_from_slice(&l);
            lines.push(l);
        }
        write_lines(std::os::fd::AsRawFd::as_raw_fd(&a), &batch);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2 * PIPE_BUF];
        let mut writes = 0;
        while let Ok(n) =
            nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&b), &mut buf, nix::sys::socket::MsgFlags::empty())
        {
            assert!(n > 0 && n <= PIPE_BUF, "a write of {n} bytes");
            assert_eq!(buf[n - 1], b'\n', "a write that ends mid-line");
            got.extend_from_slice(&buf[..n]);
            writes += 1;
        }
        assert_eq!(got, batch);
        assert!(writes < lines.len() / 4, "{writes} writes for {} lines", lines.len());
    }

    #[test]
    fn lines_wait_for_a_full_batch_or_the_deadline_in_order() {
        let (sink, mut r) = piped();
        let mut got = Vec::new();
        let t0 = Instant::now();
        sink.push(b"first\n");
        sink.push(b"second\n");
        let early = drain(&mut r, &mut got);
        // (Unless this thread was descheduled past the deadline meanwhile.)
        assert!(early == 0 || t0.elapsed() >= FLUSH_AFTER, "nothing yet: batched");
        while got.is_empty() {
            assert!(t0.elapsed() < FLUSH_AFTER * 20, "the flusher never wrote");
            std::thread::sleep(FLUSH_AFTER / 10);
            drain(&mut r, &mut got);
        }
        assert!(t0.elapsed() >= FLUSH_AFTER / 2, "{:?}", t0.elapsed());
        assert_eq!(got, b"first\nsecond\n");
        // 100-byte lines: a batch goes out whenever the next line would not fit.
        got.clear();
        let line = |i: usize| format!("{i:099}\n").into_bytes();
        let per_batch = BATCH / 100;
        let n = 2 * per_batch + 50;
        for i in 0..n {
            sink.push(&line(i));
        }
        let batches = drain(&mut r, &mut got);
        // At most a batch pending and one going out, whole lines (the flusher's
        // deadline may have cut a batch short on a slow machine, and a
        // burst may still be going out: each write ends a line).
        assert!(got.len() % 100 == 0 && got.len() + 2 * BATCH >= n * 100, "{}", got.len());
        assert!(batches >= 1);
        sink.flush();
        drain(&mut r, &mut got);
        let want: Vec<u8> = (0..n).flat_map(line).collect();
        assert_eq!(got, want, "every line once, in order");
        // A line longer than a batch goes out whole, after what was pending.
        got.clear();
        sink.push(b"small\n");
        let big = vec![b'x'; PIPE_BUF + 10];
        sink.push(&big);
        drain(&mut r, &mut got);
        assert_eq!(got.len(), 6 + big.len());
        assert!(got.starts_with(b"small\n"));
    }
}
