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
use super::zygote_link::{ZygoteLink, ZygoteLinks};
use crate::handoff::{self, Stamp, WorkerSettings};
use crate::scoreboard::Scoreboard;
use crate::sockets::Listener;
use crate::sys;

/// How long the final sweep waits for orphans it SIGKILLed to be reaped.
/// SIGKILL cannot be caught; only a process in uninterruptible sleep
/// (disk, NFS) takes longer, and exiting then is still right.
const FINAL_SWEEP: Duration = Duration::from_secs(2);

pub struct RealOs {
    /// `podmaster` itself: command workers run through it.
    pub exe: PathBuf,
    /// `podmaster-worker`: Python workers and zygotes (libpython).
    pub python_exe: PathBuf,
    pub listeners: Vec<Listener>,
    pub settings: WorkerSettings,
    pub notify_address: String,
    pub scoreboard: Scoreboard,
    /// A second reader of the master's signal pipe: SIGCHLD wakes it.
    pub sigchld: std::os::unix::net::UnixStream,
    /// Credentials workers and daemons run as (`uid`/`gid`).
    pub creds: Option<sys::Credentials>,
    /// Control sockets of the zygotes.
    pub zygotes: ZygoteLinks,
    /// What the probes see; its heartbeat beats while a fork is awaited.
    pub shared: Option<std::sync::Arc<super::state::Shared>>,
}

/// A zygote's `argv[0]`; long enough for the workers it forks to write
/// their own title over it (`podmaster: worker 1024` is 22 bytes; see
/// `sys::prefork::set_cmdline`).
fn zygote_title(generation: u64) -> String {
    format!("podmaster: zygote generation {generation}")
}

impl Os for RealOs {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn_worker(&mut self, req: &WorkerRequest) -> std::io::Result<Pid> {
        let stamp = Stamp {
            id: req.slot,
            generation: req.generation,
            numproc: req.processes,
            is_a_reload: req.respawn,
            http_row: req.http_row,
        };
        if let Some(row) = req.http_row {
            // No live process holds the row: its in-flight gauge restarts.
            self.scoreboard.http.claim(row);
        }
        if let Some(zygote) = req.zygote {
            let shared = self.shared.clone();
            // The loop is alive while it waits for the zygote: /livez stays 200.
            let beat = move || {
                if let Some(s) = &shared {
                    s.heartbeat.beat();
                }
            };
            return self.zygotes.fork(zygote, &stamp, &beat);
        }
        let spec = self.settings.spec(stamp);
        let sockets: Vec<_> = self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        let fds = handoff::fd_layout(&sockets, &self.scoreboard.fds(), self.settings.with_board);
        let exe = if spec.command.is_some() { &self.exe } else { &self.python_exe };
        sys::spawn(sys::SpawnSpec {
            exe,
            argv0: &format!("podmaster: worker {}", req.slot),
            args: &[],
            // The user's `env` first: podmaster's own variables win.
            env: [self.settings.env.clone(), handoff::environment(&spec, &self.notify_address)].concat(),
            sockets: &fds,
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
            nice: self.settings.nice,
        })
    }

    fn spawn_zygote(&mut self, generation: u64) -> std::io::Result<Pid> {
        let sockets: Vec<_> = self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        let mut fds = handoff::fd_layout(&sockets, &self.scoreboard.fds(), self.settings.with_board);
        let (ours, theirs) = ZygoteLink::pair()?;
        let control_fd = sys::LISTEN_FDS_START + fds.len() as i32;
        fds.push(theirs.as_raw_fd());
        let z = self.settings.zygote(generation, control_fd);
        let pid = sys::spawn(sys::SpawnSpec {
            exe: &self.python_exe,
            argv0: &zygote_title(generation),
            args: &[],
            env: [self.settings.env.clone(), handoff::zygote_environment(&z, &self.notify_address)].concat(),
            sockets: &fds,
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
            nice: self.settings.nice,
        })?;
        self.zygotes.add(pid, ours);
        Ok(pid)
    }

    fn retire_zygote(&mut self, pid: Pid) {
        self.zygotes.remove(pid);
        sys::signal(pid, Signal::SIGTERM);
    }

    fn zygote_gone(&mut self, pid: Pid) {
        self.zygotes.remove(pid);
    }

    fn spawn_daemon(&mut self, argv: &[String]) -> std::io::Result<Pid> {
        let args: Vec<OsString> = argv[1..].iter().map(OsString::from).collect();
        sys::spawn(sys::SpawnSpec {
            exe: &PathBuf::from(&argv[0]),
            argv0: &argv[0],
            args: &args,
            env: self.settings.env.clone(),
            sockets: &[],
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
            // Side processes keep the master's priority, as init mode's child does.
            nice: 0,
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
