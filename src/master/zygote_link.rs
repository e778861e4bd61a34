//! The master's end of each zygote's control socket (a `SOCK_SEQPACKET`
//! socketpair: one message per request or reply, never split or merged).
//! A starting zygote's socket is polled by the main loop until it says
//! `Ready`; after that the master only writes a fork request and waits,
//! bounded, for the reply. The zygote runs app code as the workers' uid,
//! so what it says is checked like anything else a worker says: a reply
//! must parse, arrive in time, and name a process that is the master's
//! child; anything else and the zygote is killed (the master restarts it).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::Pid;

use crate::handoff::{CONTROL_MAX, Stamp, ZygoteReply};
use crate::sys;

/// How long the master waits for a zygote to answer a fork request (a
/// fork takes milliseconds, even of a large process; the app's at-fork
/// hooks run in it too). The main loop waits, so this is kept short.
const FORK_REPLY_WITHIN: Duration = Duration::from_secs(2);

/// The wait is sliced so the heartbeat keeps beating (`/livez`).
const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Starting,
    Ready,
    /// Closed or misbehaved: never polled again (its exit is reaped).
    Dead,
}

/// One zygote's control socket.
#[derive(Debug)]
pub struct ZygoteLink {
    pid: Pid,
    fd: OwnedFd,
    state: LinkState,
}

impl ZygoteLink {
    /// A connected pair: (the master's end, the zygote's end). Both are
    /// close-on-exec; the spawn places the zygote's at a fixed fd. The
    /// master never blocks on its end (every call is `MSG_DONTWAIT`).
    pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let flags = SockFlag::SOCK_CLOEXEC;
        Ok(nix::sys::socket::socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)?)
    }
}

/// Every zygote's link, by pid.
#[derive(Debug, Default)]
pub struct ZygoteLinks {
    links: Vec<ZygoteLink>,
}

/// What one non-blocking read of a link gave.
enum Read {
    Message(Option<ZygoteReply>),
    Nothing,
    Closed,
}

fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Read {
    loop {
        match nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
            Ok(0) => return Read::Closed,
            // MSG_TRUNC: the real length, so an oversized message is seen as such.
            Ok(n) if n > buf.len() => return Read::Message(None),
            Ok(n) => return Read::Message(ZygoteReply::decode(&buf[..n])),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Read::Nothing,
            Err(_) => return Read::Closed,
        }
    }
}

impl ZygoteLinks {
    pub fn add(&mut self, pid: Pid, fd: OwnedFd) {
        self.links.push(ZygoteLink { pid, fd, state: LinkState::Starting });
    }

    /// Closes the link (the zygote reads EOF and exits).
    pub fn remove(&mut self, pid: Pid) {
        self.links.retain(|l| l.pid != pid);
    }

    /// The sockets of zygotes that have not said `Ready` yet.
    pub fn starting_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.links.iter().filter(|l| l.state == LinkState::Starting).map(|l| l.fd.as_fd()).collect()
    }

    /// Reads what starting zygotes said; returns those now ready. A zygote
    /// that sends anything else is killed.
    pub fn poll_ready(&mut self) -> Vec<Pid> {
        let mut ready = Vec::new();
        let mut buf = vec![0u8; CONTROL_MAX];
        for l in self.links.iter_mut().filter(|l| l.state == LinkState::Starting) {
            match read(l.fd.as_fd(), &mut buf) {
                Read::Nothing => {}
                Read::Closed => l.state = LinkState::Dead,
                Read::Message(Some(ZygoteReply::Ready)) => {
                    l.state = LinkState::Ready;
                    ready.push(l.pid);
                }
                Read::Message(other) => {
                    tracing::error!(pid = l.pid.as_raw(), message = ?other, "zygote sent something other than Ready; killing it");
                    sys::signal(l.pid, Signal::SIGKILL);
                    l.state = LinkState::Dead;
                }
            }
        }
        ready
    }

    /// Asks zygote `pid` to fork a worker for `stamp`; returns the worker's
    /// pid once it is the master's child. On a refusal the zygote stays (it
    /// exits by itself if it must); on silence, garbage or a pid that is not
    /// our child it is killed.
    pub fn fork(&mut self, pid: Pid, stamp: &Stamp, beat: &dyn Fn()) -> io::Result<Pid> {
        let Some(l) = self.links.iter_mut().find(|l| l.pid == pid && l.state == LinkState::Ready) else {
            return Err(io::Error::other("the zygote is gone"));
        };
        let mut buf = vec![0u8; CONTROL_MAX];
        // Nothing is pending between requests; discard whatever is.
        while let Read::Message(_) = read(l.fd.as_fd(), &mut buf) {}
        let request = serde_json::to_vec(stamp).map_err(io::Error::other)?;
        let (result, kill) = match send(l.fd.as_fd(), &request) {
            Err(e) => (Err(e), true),
            Ok(()) => await_reply(l.fd.as_fd(), &mut buf, beat),
        };
        if let Err(e) = &result {
            if kill {
                tracing::error!(pid = pid.as_raw(), error = %e, "zygote failed a fork request; killing it");
                sys::signal(pid, Signal::SIGKILL);
                l.state = LinkState::Dead;
            }
        }
        result
    }
}

/// The reply to a fork request, and whether a failure means the zygote
/// must be killed (anything but a refusal).
fn await_reply(fd: BorrowedFd<'_>, buf: &mut [u8], beat: &dyn Fn()) -> (io::Result<Pid>, bool) {
    let deadline = Instant::now() + FORK_REPLY_WITHIN;
    loop {
        sys::poll_with_deadline(&[fd], &[], Some(deadline.min(Instant::now() + SLICE)));
        beat();
        let fail = |msg: String| (Err(io::Error::other(msg)), true);
        match read(fd, buf) {
            Read::Message(Some(ZygoteReply::Forked { pid })) => {
                return match checked_child(pid) {
                    Ok(p) => (Ok(p), false),
                    Err(e) => (Err(e), true),
                };
            }
            Read::Message(Some(ZygoteReply::Refused { reason })) => {
                return (Err(io::Error::other(format!("the zygote refused: {reason}"))), false);
            }
            Read::Message(other) => return fail(format!("unexpected reply {other:?}")),
            Read::Closed => return fail("the zygote closed its control socket".into()),
            Read::Nothing if Instant::now() >= deadline => {
                return fail(format!("no answer within {FORK_REPLY_WITHIN:?}"));
            }
            Read::Nothing => {}
        }
    }
}

fn send(fd: BorrowedFd<'_>, msg: &[u8]) -> io::Result<()> {
    loop {
        match nix::sys::socket::send(fd.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A forked worker's pid as the zygote reported it, accepted only if the
/// process exists and its parent is the master.
fn checked_child(worker: i32) -> io::Result<Pid> {
    let pid = Pid::from_raw(worker);
    let me = std::process::id() as i32;
    match sys::parent_of(pid) {
        Some(parent) if worker > 0 && parent == me => Ok(pid),
        parent => Err(io::Error::other(format!("reported pid {worker} is not the master's child (parent {parent:?})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_child_of_the_master_is_taken_as_a_forked_worker() {
        assert!(checked_child(1).is_err(), "init is nobody's child");
        assert!(checked_child(std::process::id() as i32).is_err(), "the master itself");
        assert!(checked_child(0).is_err() && checked_child(-1).is_err() && checked_child(i32::MAX).is_err());
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(checked_child(child.id() as i32).ok(), Some(Pid::from_raw(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_silent_or_garbling_zygote_fails_the_fork_and_is_marked_dead() {
        let mut links = ZygoteLinks::default();
        let (ours, theirs) = ZygoteLink::pair().unwrap();
        // A stand-in process to kill: the "zygote".
        let mut z = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let zpid = Pid::from_raw(z.id() as i32);
        links.add(zpid, ours);
        assert!(links.poll_ready().is_empty());
        nix::sys::socket::send(theirs.as_raw_fd(), b"\"Ready\"", MsgFlags::empty()).unwrap();
        assert_eq!(links.poll_ready(), vec![zpid]);
        nix::sys::socket::send(theirs.as_raw_fd(), b"not json", MsgFlags::empty()).unwrap();
        let stamp = Stamp { id: 1, generation: 1, numproc: 1, is_a_reload: false, http_row: None };
        // The stale garbage is discarded; then a reply that is not JSON.
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let n = nix::sys::socket::recv(theirs.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            assert!(serde_json::from_slice::<Stamp>(&buf[..n]).is_ok());
            nix::sys::socket::send(theirs.as_raw_fd(), &[0xff; 64], MsgFlags::empty()).unwrap();
            theirs
        });
        let err = links.fork(zpid, &stamp, &|| {}).unwrap_err().to_string();
        assert!(err.starts_with("unexpected reply"), "{err}");
        let _theirs = t.join().unwrap();
        // Killed, and never asked again.
        assert!(z.wait().unwrap().code().is_none());
        assert!(links.fork(zpid, &stamp, &|| {}).unwrap_err().to_string().contains("gone"));
    }
}
