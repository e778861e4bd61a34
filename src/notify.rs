//! The `NOTIFY_SOCKET` datagram protocol between workers and the master,
//! as systemd defines it: newline-separated `KEY=VALUE` assignments, of
//! which podmaster reads `READY=1` (the worker accepts) and `STOPPING=1`
//! (it stopped accepting), and podmaster's own (`PODMASTER_*`). The master identifies the sender by the
//! credentials the kernel attaches (`SO_PASSCRED`: pid and uid), never by
//! the payload.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::sys::{SysError, context};
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
    /// `PODMASTER_FORKED=1`: a worker forked by the zygote, now the
    /// master's child, before it runs anything of the app. A sender the
    /// master does not know is a worker whose fork request failed: killed.
    Forked,
    /// `PODMASTER_RECYCLE=max-requests`: the WSGI worker served its
    /// `max-requests`; replace it.
    MaxRequests,
    /// `PODMASTER_RECYCLE=harakiri`: a request of the WSGI worker ran past
    /// `harakiri` (the worker logged it and its stacks); replace it.
    Harakiri,
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
            b"PODMASTER_FORKED=1" => out = Some(Notice::Forked),
            b"PODMASTER_RECYCLE=max-requests" => out = Some(Notice::MaxRequests),
            b"PODMASTER_RECYCLE=harakiri" => out = Some(Notice::Harakiri),
            _ => {}
        }
    }
    out
}

/// Datagrams read in one turn of the main loop at most: a worker flooding
/// the socket cannot keep the loop from its other work (the rest is read
/// on the next turns; `poll` reports the socket readable again at once).
const MAX_PER_TURN: usize = 256;

/// The master's receiving end: a datagram socket at `notify` in a private
/// directory of the master's (mode 0700, or 0711 for workers of another
/// uid: they can reach the socket but not replace it); not a sidecar sharing the pod's
/// network namespace, which sees every abstract socket. Where no private
/// directory can be made (a read-only file system), it falls back to the
/// abstract namespace and says so. Either way a message counts only when
/// the kernel-attached credentials name the workers' uid.
pub struct NotifySocket {
    fd: OwnedFd,
    /// `@name` or a path: the value of `NOTIFY_SOCKET` given to workers.
    pub address: String,
    /// The private directory to remove on drop.
    dir: Option<std::path::PathBuf>,
    /// The uid workers run as: the only sender accepted.
    uid: u32,
}

impl NotifySocket {
    /// Binds the socket for workers running as `worker_uid` (None: the
    /// master's own uid). `runtime_dir` holds the private directory.
    pub fn bind(worker_uid: Option<u32>, runtime_dir: &std::path::Path) -> Result<NotifySocket, SysError> {
        let fd =
            socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
                .map_err(context("notify socket: socket"))?;
        setsockopt(&fd, sockopt::PassCred, &true).map_err(context("notify socket: setsockopt(SO_PASSCRED)"))?;
        let me = nix::unistd::geteuid().as_raw();
        let uid = worker_uid.unwrap_or(me);
        match private_dir(runtime_dir, uid != me) {
            Ok(dir) => {
                let path = dir.join("notify");
                let bound = UnixAddr::new(&path)
                    .and_then(|addr| bind(fd.as_raw_fd(), &addr))
                    .map_err(context(format!("notify socket: bind {}", path.display())));
                match bound.and_then(|()| {
                    // The directory is the gate; the socket must be writable for the workers' uid.
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                        .map_err(context(format!("notify socket: chmod {}", path.display())))
                }) {
                    Ok(()) => {
                        let address = path.display().to_string();
                        return Ok(NotifySocket { fd, address, dir: Some(dir), uid });
                    }
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        tracing::warn!(error = %e, "notify socket: falling back to an abstract socket");
                    }
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "notify socket: no private directory; using an abstract socket, reachable from the pod's network \
                 namespace (only messages from the workers' uid are accepted)"
            ),
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
        let name = format!("podmaster-notify-{}-{}", std::process::id(), nanos.unwrap_or(0));
        let addr = UnixAddr::new_abstract(name.as_bytes()).map_err(context("notify socket: address"))?;
        bind(fd.as_raw_fd(), &addr).map_err(context(format!("notify socket: bind @{name}")))?;
        Ok(NotifySocket { fd, address: format!("@{name}"), dir: None, uid })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Reads the queued datagrams without blocking (at most
    /// [`MAX_PER_TURN`]): (sender pid, notice). Datagrams without
    /// credentials, from another uid, cut short or not understood are
    /// dropped.
    pub fn drain(&self) -> Vec<(i32, Notice)> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        for _ in 0..MAX_PER_TURN {
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
            if msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
                continue;
            }
            let cred = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some((cred.pid(), cred.uid())),
                    _ => None,
                })
            });
            let len = msg.bytes;
            match (cred, parse(&buf[..len])) {
                (Some((pid, uid)), Some(n)) if uid == self.uid => out.push((pid, n)),
                (Some((pid, uid)), Some(_)) => {
                    tracing::debug!(pid, uid, "notify message from another uid; ignored")
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A new directory `podmaster-<pid>-<n>` under `parent`, owned by the
/// master: mode 0700, or 0711 when workers run as another uid (they may
/// pass through to the socket, not list, unlink or replace it).
fn private_dir(parent: &std::path::Path, other_uid: bool) -> Result<std::path::PathBuf, SysError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !parent.is_absolute() {
        let relative = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an absolute path");
        return Err(context(parent.display().to_string())(relative));
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let dir = parent.join(format!("podmaster-{}-{}", std::process::id(), nanos.unwrap_or(0)));
    // create (not create_all): fails if the name exists, so nobody can
    // have prepared it for us.
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(context(format!("mkdir {}", dir.display())))?;
    if other_uid {
        if let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)) {
            let _ = std::fs::remove_dir(&dir);
            return Err(context(format!("chmod {}", dir.display()))(e));
        }
    }
    Ok(dir)
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
        assert_eq!(parse(b"PODMASTER_FORKED=1"), Some(Notice::Forked));
        assert_eq!(parse(b"\xff\x00garbage"), None);
    }

    #[test]
    fn credentials_identify_the_sender() {
        let ns = NotifySocket::bind(None, &std::env::temp_dir()).unwrap();
        assert!(ns.address.starts_with('/'), "{}", ns.address);
        let dir = std::path::Path::new(&ns.address).parent().unwrap().to_owned();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        // A relative runtime directory is refused (the abstract fallback).
        let rel = NotifySocket::bind(None, std::path::Path::new("relative/dir")).unwrap();
        assert!(rel.address.starts_with('@'), "{}", rel.address);
        send(&ns.address, "READY=1").unwrap();
        send(&ns.address, "WATCHDOG=1").unwrap();
        // Cut short: dropped, not parsed from its first 4 KiB.
        send(&ns.address, &format!("READY=1\n{}", "x".repeat(MAX_DATAGRAM * 2))).unwrap();
        assert_eq!(ns.drain(), vec![(std::process::id() as i32, Notice::Ready)]);
        assert!(ns.drain().is_empty());
        drop(ns);
        assert!(!dir.exists(), "the private directory is removed");
    }

    #[test]
    fn other_uids_and_floods_are_bounded() {
        // Expecting uid 4242: our own messages (another uid) are ignored.
        let ns =
            NotifySocket::bind(Some(4242).filter(|_| nix::unistd::geteuid().is_root()), &std::env::temp_dir()).unwrap();
        if nix::unistd::geteuid().is_root() {
            send(&ns.address, "READY=1").unwrap();
            assert!(ns.drain().is_empty(), "a message from another uid was accepted");
        }
        let ns = NotifySocket::bind(None, std::path::Path::new("/nonexistent-dir")).unwrap();
        assert!(ns.address.starts_with('@'), "falls back to an abstract socket: {}", ns.address);
        let flood = UnixDatagram::unbound().unwrap();
        flood.set_nonblocking(true).unwrap();
        let addr = SocketAddr::from_abstract_name(&ns.address.as_bytes()[1..]).unwrap();
        for _ in 0..MAX_PER_TURN + 10 {
            if flood.send_to_addr(b"READY=1", &addr).is_err() {
                break; // the receive queue is full: fine
            }
        }
        assert!(ns.drain().len() <= MAX_PER_TURN);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any datagram: no panic, and a notice only from a line that is
            /// exactly one of the four assignments.
            #[test]
            fn datagrams(payload in proptest::collection::vec(any::<u8>(), 0..MAX_DATAGRAM)) {
                let known: [&[u8]; 4] = [b"READY=1", b"STOPPING=1", b"PODMASTER_RELOAD=1", b"PODMASTER_STOP=1"];
                let has_known = payload.split(|b| *b == b'\n').any(|l| known.contains(&l));
                prop_assert_eq!(parse(&payload).is_some(), has_known);
            }

            #[test]
            fn assignments_among_noise(noise in "[A-Z_=0-9\n]{0,200}", pick in 0usize..4) {
                let lines = ["READY=1", "STOPPING=1", "PODMASTER_RELOAD=1", "PODMASTER_STOP=1"];
                let want = [Notice::Ready, Notice::Stopping, Notice::Reload, Notice::Stop][pick];
                let payload = format!("{noise}\n{}", lines[pick]);
                prop_assert_eq!(parse(payload.as_bytes()), Some(want));
            }
        }
    }
}
