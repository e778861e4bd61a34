//! The real [`Os`]: starts workers and daemons through [`sys::spawn`] with
//! the hand-off of [`crate::handoff`], signals through [`sys`], reads the
//! monotonic clock. It owns what a spawn needs: the listening sockets, the
//! worker settings of the current configuration, the scoreboard, the
//! credentials.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::core::{Os, WorkerRequest};
use crate::handoff::{self, Stamp, WorkerSettings};
use crate::scoreboard::Scoreboard;
use crate::sockets::Listener;
use crate::sys;

/// How long the final sweep waits for orphans it SIGKILLed to be reaped.
/// SIGKILL cannot be caught; only a process in uninterruptible sleep
/// (disk, NFS) takes longer, and exiting then is still right.
const FINAL_SWEEP: Duration = Duration::from_secs(2);

pub struct RealOs {
    pub exe: PathBuf,
    pub listeners: Vec<Listener>,
    pub settings: WorkerSettings,
    pub notify_address: String,
    pub scoreboard: Scoreboard,
    /// A second reader of the master's signal pipe: SIGCHLD wakes it.
    pub sigchld: std::os::unix::net::UnixStream,
    /// Credentials workers and daemons run as (`uid`/`gid`).
    pub creds: Option<sys::Credentials>,
}

impl Os for RealOs {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn_worker(&mut self, req: &WorkerRequest) -> std::io::Result<Pid> {
        let spec = self.settings.spec(Stamp {
            id: req.slot,
            generation: req.generation,
            numproc: req.processes,
            is_a_reload: req.respawn,
        });
        let sockets: Vec<_> = self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        let fds = handoff::fd_layout(&sockets, &self.scoreboard.fds(), self.settings.with_board);
        sys::spawn(sys::SpawnSpec {
            exe: &self.exe,
            argv0: &format!("podmaster: worker {}", req.slot),
            args: &[],
            env: handoff::environment(&spec, &self.notify_address),
            sockets: &fds,
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
        })
    }

    fn spawn_daemon(&mut self, argv: &[String]) -> std::io::Result<Pid> {
        let args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        sys::spawn(sys::SpawnSpec {
            exe: &PathBuf::from(&argv[0]),
            argv0: &argv[0],
            args: &args,
            env: Vec::new(),
            sockets: &[],
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
        })
    }

    fn signal(&mut self, pid: Pid, sig: Signal) {
        sys::signal(pid, sig);
    }

    fn signal_group(&mut self, pid: Pid, sig: Signal) {
        sys::signal_group(pid, sig);
    }

    fn draining(&mut self) {
        self.scoreboard.set_draining(true);
    }

    fn final_sweep(&mut self) -> (usize, u64) {
        // Whatever the workers left behind (orphans adopted by us) must not
        // outlive the master. SIGCHLD wakes the wait (the signal pipe).
        sys::kill_and_reap_children(self.sigchld.as_fd(), Instant::now() + FINAL_SWEEP)
    }
}
