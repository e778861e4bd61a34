//! Sending a file as a response body: `sendfile(2)` from the page cache
//! straight to the socket (no copy through the worker, no Python), with a
//! read-and-write fallback where the destination is not a socket (tests).
//! Used by `wsgi.file_wrapper` and static files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// Where a response goes: a byte sink that may be a socket `sendfile`
/// can write to.
pub trait Out: Write {
    /// The socket's fd, when the bytes may go by `sendfile`.
    fn sendfile_fd(&self) -> Option<RawFd> {
        None
    }
}

impl Out for Vec<u8> {}

/// A file to send: `length` bytes from `offset`.
#[derive(Debug)]
pub struct FileBody {
    pub file: File,
    pub offset: u64,
    pub length: u64,
}

impl FileBody {
    /// `file` from `offset` to its end; refused when it is not a regular
    /// file (a pipe or a device has no length to promise).
    pub fn rest_of(file: File, offset: u64) -> io::Result<FileBody> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(FileBody { length: meta.len().saturating_sub(offset), file, offset })
    }
}

/// The pace a client must keep: each [`SLICE`] of the file taken within
/// [`SLICE_TIME`] (about 17 KiB/s), however the kernel lets bytes
/// through — a wait reset by any progress would let a client reading a
/// byte a minute hold a serving thread for good (the same rule as the
/// front's `write_all`).
const SLICE: u64 = 1 << 20;
const SLICE_TIME: Duration = Duration::from_secs(60);

/// Sends `body.length` bytes of the file; Ok(sent). Fewer than promised
/// means the file shrank under us: the caller closes the connection.
pub(super) fn send(out: &mut dyn Out, body: &FileBody) -> io::Result<u64> {
    match out.sendfile_fd() {
        Some(fd) => by_sendfile(fd, body, SLICE_TIME),
        None => by_copy(out, body),
    }
}

fn by_sendfile(fd: RawFd, body: &FileBody, slice_time: Duration) -> io::Result<u64> {
    // SAFETY: the fd is the connection's, open for this call (the caller
    // holds the connection).
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut offset = i64::try_from(body.offset).map_err(|_| io::Error::other("file offset too large"))?;
    let mut sent = 0u64;
    while sent < body.length {
        let slice_end = (sent + SLICE).min(body.length);
        let deadline = Instant::now() + slice_time;
        while sent < slice_end {
            let want = usize::try_from(slice_end - sent).unwrap_or(usize::MAX);
            match nix::sys::sendfile::sendfile(sock, body.file.as_fd(), Some(&mut offset), want) {
                Ok(0) => return Ok(sent),
                Ok(n) => {
                    sent += n as u64;
                    // A blocking socket returns early at its send timeout.
                    if sent < slice_end && Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took too long to read the file",
                        ));
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => wait_writable(sock, deadline)?,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(sent)
}

/// A non-blocking socket (or one whose send timeout passed) is full:
/// wait until it takes bytes again, or give up at `deadline`.
fn wait_writable(sock: BorrowedFd<'_>, deadline: Instant) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let left = deadline.saturating_duration_since(Instant::now());
    let too_slow = || io::Error::new(io::ErrorKind::TimedOut, "the client took too long to read the file");
    if left.is_zero() {
        return Err(too_slow());
    }
    let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
        Ok(0) => Err(too_slow()),
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn by_copy(out: &mut dyn Out, body: &FileBody) -> io::Result<u64> {
    let mut file = &body.file;
    file.seek(SeekFrom::Start(body.offset))?;
    let mut rest = file.take(body.length);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            return Ok(sent);
        }
        out.write_all(&buf[..n])?;
        sent += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn file_of(len: usize) -> (FileBody, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("podmaster-sendfile-{}-{len}", std::process::id()));
        std::fs::write(&path, vec![7u8; len]).unwrap();
        (FileBody::rest_of(File::open(&path).unwrap(), 0).unwrap(), path)
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_at_the_slice_deadline() {
        let (body, path) = file_of(4 << 20);
        let (ours, _peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let err = by_sendfile(ours.as_raw_fd(), &body, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_reading_client_gets_every_byte() {
        let (body, path) = file_of(3 << 20);
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).map(|_| all.len())
        });
        assert_eq!(by_sendfile(ours.as_raw_fd(), &body, SLICE_TIME).unwrap(), 3 << 20);
        drop(ours);
        assert_eq!(reader.join().unwrap().unwrap(), 3 << 20);
        std::fs::remove_file(path).unwrap();
    }
}
