//! The sockets the front serves: one small trait over `TcpStream` and
//! `UnixStream` (non-blocking IO, with a bounded wait for readiness), the
//! listeners they come from, and what a connection knows of its peer. No
//! `unsafe`: a listening fd handed over by the master becomes a listener
//! through `From<OwnedFd>`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A connected socket the front reads requests from and writes responses
/// to. Non-blocking: a read or write that cannot proceed returns
/// `WouldBlock`, and the caller either parks the connection (between
/// requests) or [`waits`](Stream::wait) for it under a deadline.
pub trait Stream: Read + Write + Send {
    /// Waits up to `timeout` for the socket to become readable (or, with
    /// `write`, writable); false when the time ran out first.
    fn wait(&self, write: bool, timeout: Duration) -> io::Result<bool>;
    /// Shuts one or both directions (a lingering close shuts `Write`).
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// The socket, for the worker's epoll set; None for a stream that is
    /// no socket (tests), which is then never parked.
    fn fd(&self) -> Option<BorrowedFd<'_>>;
    /// A TCP connection (its `TCP_INFO` can be read).
    fn is_tcp(&self) -> bool {
        false
    }
}

/// [`Stream::wait`] for any socket.
fn wait_fd(fd: BorrowedFd<'_>, write: bool, timeout: Duration) -> io::Result<bool> {
    let flags = if write { PollFlags::POLLOUT } else { PollFlags::POLLIN };
    let mut fds = [PollFd::new(fd, flags)];
    // Rounded up to a whole millisecond, so that a short wait is a wait.
    let ms = timeout.as_micros().div_ceil(1000);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Stream for TcpStream {
    fn wait(&self, write: bool, timeout: Duration) -> io::Result<bool> {
        wait_fd(self.as_fd(), write, timeout)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
    fn is_tcp(&self) -> bool {
        true
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Stream for UnixStream {
    fn wait(&self, write: bool, timeout: Duration) -> io::Result<bool> {
        wait_fd(self.as_fd(), write, timeout)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// A listening socket: TCP (v4 or v6) or Unix.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Takes a listening fd (as the master hands them over at fds 3..),
    /// telling TCP from Unix by its address family.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Listener> {
        use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
        let addr: SockaddrStorage = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(io::Error::from)?;
        match addr.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => Ok(Listener::Tcp(TcpListener::from(fd))),
            Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd))),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listening fd has address family {other:?}: the front serves TCP and Unix sockets"),
            )),
        }
    }

    /// Marks the listener non-blocking. The flag belongs to the open file
    /// description, which every worker process sharing the socket sees:
    /// all of them wait in epoll first and take `WouldBlock` from `accept`
    /// as "another thread or process took that connection" (uWSGI's
    /// workers share non-blocking listeners the same way).
    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    /// Accepts one connection (non-blocking: `WouldBlock` when none
    /// waits), itself non-blocking.
    pub(crate) fn accept(&self) -> io::Result<(Box<dyn Stream>, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nonblocking(true)?;
                // Responses are written in few large writes; Nagle would
                // only delay the last segment of each.
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), Peer::from_addr(addr)))
            }
            Listener::Unix(l) => {
                // Non-blocking from the accept (one syscall, not two): behind
                // nginx every request is a new connection.
                let flags = nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC;
                let s = UnixStream::from(nix::sys::socket::accept4(l, flags).map_err(io::Error::from)?);
                Ok((Box::new(s), Peer::default()))
            }
        }
    }

    /// `SERVER_NAME` and `SERVER_PORT` for HTTP requests on this socket:
    /// the local address and port; for a Unix socket `localhost` and an
    /// empty port (there is no port; PEP 3333 still wants the keys).
    pub fn server_name_port(&self) -> (String, String) {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => ("localhost".to_owned(), String::new()),
            },
            Listener::Unix(_) => ("localhost".to_owned(), String::new()),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// The client end of an HTTP connection as text, once per connection:
/// `REMOTE_ADDR` and `REMOTE_PORT`. Empty for Unix sockets (no address).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub addr: String,
    pub port: String,
}

impl Peer {
    pub fn from_addr(addr: SocketAddr) -> Peer {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; apps
        // expect the dotted form.
        Peer { addr: addr.ip().to_canonical().to_string(), port: addr.port().to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_from_fds_by_family() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let l = Listener::from_fd(OwnedFd::from(tcp)).unwrap();
        assert!(matches!(l, Listener::Tcp(_)));
        assert_eq!(l.server_name_port(), ("127.0.0.1".to_owned(), port.to_string()));

        let dir = std::env::temp_dir().join(format!("podmaster-front-stream-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        let l = Listener::from_fd(OwnedFd::from(unix)).unwrap();
        assert!(matches!(l, Listener::Unix(_)));
        assert_eq!(l.server_name_port(), ("localhost".to_owned(), String::new()));
        let _ = std::fs::remove_dir_all(&dir);

        let (a, _) = UnixStream::pair().unwrap();
        // A socketpair is AF_UNIX too; a pipe is no socket at all.
        assert!(Listener::from_fd(OwnedFd::from(a)).is_ok());
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(Listener::from_fd(r).is_err());
    }

    #[test]
    fn mapped_ipv4_peers_are_dotted() {
        let addr: SocketAddr = "[::ffff:10.1.2.3]:8080".parse().unwrap();
        assert_eq!(Peer::from_addr(addr), Peer { addr: "10.1.2.3".into(), port: "8080".into() });
    }
}
