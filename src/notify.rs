//! The `NOTIFY_SOCKET` datagram protocol between workers and the master,
//! as systemd defines it: newline-separated `KEY=VALUE` assignments, of
//! which podmaster reads `READY=1` (the worker accepts) and `STOPPING=1`
//! (it stopped accepting). The master identifies the sender by the
//! credentials the kernel attaches (`SO_PASSCRED`), never by the payload.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials, bind, recvmsg,
    setsockopt, socket, sockopt,
};

/// Largest datagram read; sd_notify messages are tiny, longer ones are cut.
const MAX_DATAGRAM: usize = 4096;

/// What a worker told the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: accepting.
    Ready,
    /// `STOPPING=1`: no longer accepting.
    Stopping,
    /// `PODMASTER_RELOAD=1` (`uwsgi.reload()`): chain-reload all workers.
    Reload,
    /// `PODMASTER_STOP=1` (`uwsgi.stop()`): drain the whole instance.
    Stop,
}

/// Parses one datagram; the last recognised assignment in it wins.
pub fn parse(payload: &[u8]) -> Option<Notice> {
    let mut out = None;
    for line in payload.split(|b| *b == b'\n') {
        match line {
            b"READY=1" => out = Some(Notice::Ready),
            b"STOPPING=1" => out = Some(Notice::Stopping),
            b"PODMASTER_RELOAD=1" => out = Some(Notice::Reload),
            b"PODMASTER_STOP=1" => out = Some(Notice::Stop),
            _ => {}
        }
    }
    out
}

/// The master's receiving end, bound in the abstract namespace (no file to
/// clean up, reachable from workers whatever uid they run as).
pub struct NotifySocket {
    fd: OwnedFd,
    /// `@name`, the value of `NOTIFY_SOCKET` given to workers.
    pub address: String,
}

impl NotifySocket {
    pub fn bind() -> Result<NotifySocket, String> {
        let fd =
            socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
                .map_err(|e| format!("notify socket: socket: {}", e.desc()))?;
        setsockopt(&fd, sockopt::PassCred, &true)
            .map_err(|e| format!("notify socket: setsockopt(SO_PASSCRED): {}", e.desc()))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
        let name = format!("podmaster-notify-{}-{}", std::process::id(), nanos.unwrap_or(0));
        let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| format!("notify socket: {}", e.desc()))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| format!("notify socket: bind @{name}: {}", e.desc()))?;
        Ok(NotifySocket { fd, address: format!("@{name}") })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Reads every queued datagram without blocking: (sender pid, notice).
    pub fn drain(&self) -> Vec<(i32, Notice)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT) {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(errno = %e, "notify socket: recvmsg failed");
                    break;
                }
            };
            let pid = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            let len = msg.bytes;
            if let (Some(pid), Some(n)) = (pid, parse(&buf[..len])) {
                out.push((pid, n));
            }
        }
        out
    }
}

/// Worker side: sends one message to `$NOTIFY_SOCKET` (abstract `@name` or
/// a path), as `sd_notify` does.
pub fn send(address: &str, message: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let addr = match address.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(address)?,
    };
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sd_notify_payloads() {
        assert_eq!(parse(b"READY=1"), Some(Notice::Ready));
        assert_eq!(parse(b"STATUS=warming\nREADY=1\n"), Some(Notice::Ready));
        assert_eq!(parse(b"READY=1\nSTOPPING=1"), Some(Notice::Stopping));
        assert_eq!(parse(b"READY=0"), None);
        assert_eq!(parse(b"PODMASTER_RELOAD=1"), Some(Notice::Reload));
        assert_eq!(parse(b"PODMASTER_STOP=1\n"), Some(Notice::Stop));
        assert_eq!(parse(b"\xff\x00garbage"), None);
    }

    #[test]
    fn credentials_identify_the_sender() {
        let ns = NotifySocket::bind().unwrap();
        send(&ns.address, "READY=1").unwrap();
        send(&ns.address, "WATCHDOG=1").unwrap();
        assert_eq!(ns.drain(), vec![(std::process::id() as i32, Notice::Ready)]);
        assert!(ns.drain().is_empty());
    }
}
