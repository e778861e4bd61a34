//! Where access-log lines go: stderr, in batches. Measured on the hello
//! benchmark with stderr read through a pipe (as a container runtime
//! reads it), one `write(2)` per line cost about 20 % of the throughput:
//! not the write itself (to /dev/null it costs nothing measurable) but
//! waking the pipe's reader once per line. So the serving threads append
//! their lines to one buffer, and it is written when the next line would
//! not fit in `PIPE_BUF` bytes — each write stays atomic on a pipe, so
//! batches never interleave with other processes' lines — or, at the
//! latest, [`FLUSH_AFTER`] after its first line, by a flusher thread that
//! sleeps without a timer while the buffer is empty (an idle worker does
//! not wake up). Lines are written in the order they were logged; what
//! is pending is written by [`flush`] (the worker's exit, harakiri's
//! `_exit`); a worker killed by SIGKILL loses at most `FLUSH_AFTER` of
//! lines. One sink per process ([`global`]), started by the first access
//! log that can log anything.

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

/// The shared buffer and the flusher's wake-up.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Buffer>,
    filled: Condvar,
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
        let pending = Buffer { bytes: Vec::with_capacity(PIPE_BUF), armed: false };
        let shared = Arc::new(Shared { pending: Mutex::new(pending), filled: Condvar::new(), fd });
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
        let shared = Shared { pending: Mutex::default(), filled: Condvar::new(), fd };
        Sink { shared: Arc::new(shared), batched: false }
    }

    /// Queues one line (newline included).
    pub(super) fn push(&self, line: &[u8]) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.batched {
            write_all(self.shared.fd, line);
            return;
        }
        if pending.bytes.len() + line.len() > PIPE_BUF {
            write_all(self.shared.fd, &pending.bytes);
            pending.bytes.clear();
        }
        if line.len() > PIPE_BUF {
            write_all(self.shared.fd, line);
            return;
        }
        let wake = pending.bytes.is_empty() && !pending.armed;
        pending.bytes.extend_from_slice(line);
        if wake {
            self.shared.filled.notify_one();
        }
    }

    /// Writes what is pending now.
    pub(super) fn flush(&self) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        write_all(self.shared.fd, &pending.bytes);
        pending.bytes.clear();
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
        write_all(shared.fd, &pending.bytes);
        pending.bytes.clear();
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
        for i in 0..100 {
            sink.push(&line(i));
        }
        let batches = drain(&mut r, &mut got);
        // Two full batches of 40 lines, the rest pending (or flushed by the
        // deadline, on a machine slow enough to take it).
        assert!(got.len() == 8000 || got.len() == 10_000, "{}", got.len());
        assert!(batches >= 1);
        sink.flush();
        drain(&mut r, &mut got);
        let want: Vec<u8> = (0..100).flat_map(line).collect();
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
