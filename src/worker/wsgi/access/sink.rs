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
//! not wake up). Lines are written in the order they were logged; the
//! buffer is written when the log is dropped (the worker's normal exit);
//! a worker killed by SIGKILL loses at most `FLUSH_AFTER` of lines.

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
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Buffer>,
    filled: Condvar,
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
    /// A sink and its flusher thread (without a thread, when it cannot be
    /// started: then every line is written at once).
    pub(super) fn new() -> Sink {
        let pending = Buffer { bytes: Vec::with_capacity(PIPE_BUF), armed: false };
        let shared = Arc::new(Shared { pending: Mutex::new(pending), filled: Condvar::new() });
        let flusher = Arc::clone(&shared);
        let started = std::thread::Builder::new().name("access-log".into()).spawn(move || flush_loop(&flusher));
        if let Err(e) = &started {
            tracing::warn!(error = %e, "cannot start the access log's flusher; writing each line at once");
        }
        Sink { shared, batched: started.is_ok() }
    }

    /// A sink that writes every line at once.
    #[cfg(test)]
    pub(super) fn unbatched() -> Sink {
        Sink { shared: Arc::default(), batched: false }
    }

    /// Queues one line (newline included).
    pub(super) fn push(&self, line: &[u8]) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.batched {
            write_all(line);
            return;
        }
        if pending.bytes.len() + line.len() > PIPE_BUF {
            write_all(&pending.bytes);
            pending.bytes.clear();
        }
        if line.len() > PIPE_BUF {
            write_all(line);
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
        write_all(&pending.bytes);
        pending.bytes.clear();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.flush();
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
        write_all(&pending.bytes);
        pending.bytes.clear();
    }
}

/// Writes all of `bytes` to fd 2 (a partial write is finished; an error
/// drops the rest: logging never fails a request).
fn write_all(mut bytes: &[u8]) {
    let err = std::io::stderr();
    while !bytes.is_empty() {
        match nix::unistd::write(&err, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
