//! The master: one thread, one loop. It sleeps in `poll` on the signal
//! pipe, the notify socket, the probe wake pipe, the inotify fd (config and
//! touch files) and starting zygotes' control sockets, with a timeout
//! equal to the nearest deadline, so an idle master makes no wakeups at all
//! (unless something must be polled: RSS limits, files inotify cannot
//! watch; then once per `config-check-interval`). After each turn it
//! publishes a snapshot for the probe thread and the scoreboard.
//!
//! Signals become intents here and nowhere else (see the table in README):
//! TERM/INT → graceful drain, a second INT or QUIT → fast stop, HUP →
//! chain reload, TTIN/TTOU → scale, USR1 → status log, others → forwarded.
//!
//! Layout of `master/`:
//! - this file: [`Master`], the event loop, signals, the snapshot;
//! - [`core`]: the state machine over the [`core::Os`] trait (phase, readiness, deadlines);
//! - [`table`]: the process table (every child: role and state);
//! - [`slots`]: per-slot bookkeeping (backoff, failed starts, exits);
//! - `spawn.rs`, `reap.rs`, `rollout.rs`, `drain.rs`: the core's concerns;
//! - [`os`]: the real `Os` (spawn through `sys`, the hand-off);
//! - `watch.rs`: touch files, config sources, RSS, applying a new config;
//! - `pod.rs`: the container's cgroup (`processes = auto`, the memory
//!   watermark, OOM kills);
//! - [`state`]: what the outside sees ([`state::Snapshot`], the heartbeat).

pub mod core;
mod drain;
mod fswatch;
pub mod os;
mod pod;
mod reap;
mod rollout;
pub mod slots;
mod spawn;
pub mod state;
pub mod table;
#[cfg(test)]
mod tests;
mod watch;
pub mod zygote;
mod zygote_link;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::sys::signal::Signal;
use signal_hook::iterator::Signals;

use self::core::{Core, MasterPhase, Settings};
use crate::config::{Config, Sources};
use crate::handoff::WorkerSettings;
use crate::notify::NotifySocket;
use crate::sockets::Listener;
use crate::sys;
use os::RealOs;
use state::{Shared, Snapshot, SocketView};
use watch::Watch;

/// Signals the master handles itself or forwards; SIGCHLD only wakes it.
const HANDLED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGCHLD,
];

/// Inputs the master is built from.
pub struct MasterSetup {
    pub config: Config,
    pub listeners: Vec<Listener>,
    pub sources: Sources,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub probe: Option<crate::probes::ProbeServer>,
    /// [`config::entries_hash`] of the entries `config` was resolved from
    /// (the files are read once at startup, by the caller).
    pub config_hash: u64,
    /// `podmaster-worker`, for Python workers and zygotes (None: command
    /// workers only).
    pub python_worker: Option<PathBuf>,
    /// The container's cgroup (`processes = auto`, memory, OOM kills).
    pub cgroup: crate::cgroup::Cgroup,
}

pub struct Master {
    /// The configuration as last applied (`processes` as configured; the
    /// running count is the core's).
    cfg: Config,
    sources: Sources,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    core: Core<RealOs>,
    /// Sockets removed by a config change, closed once the rollout that
    /// replaces the workers using them is over.
    retired_listeners: Vec<Listener>,
    /// `core.counters.rollouts_finished` when `retired_listeners` was last looked at.
    rollouts_seen: u64,
    notify: NotifySocket,
    shared: Arc<Shared>,
    signals: Signals,
    signal_wake: UnixStream,
    probe_wake: OwnedFd,
    started_on: SystemTime,
    config_reloads_ok: u64,
    config_reloads_failed: u64,
    watch: Watch,
    fswatch: fswatch::FsWatch,
    pod: pod::Pod,
    /// Test hook (test builds only, see [`crate::test_hooks`]): SIGUSR2
    /// blocks the main loop this long.
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    wedge_on_usr2: Option<std::time::Duration>,
}

impl Master {
    /// Sets up signal delivery and the notify socket. Must run before any
    /// worker exists, so no signal is missed.
    pub fn new(setup: MasterSetup) -> Result<Master, sys::SysError> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let (signals, signal_wake) = sys::signal_pipe(HANDLED)?;
        let (probe_wake, probe_write) = nonblocking_pipe()?;
        let cfg = setup.config;
        let creds = cfg.creds.map(|c| sys::Credentials::resolve((c.uid != u32::MAX).then_some(c.uid), c.gid));
        let notify = NotifySocket::bind(creds.as_ref().and_then(|c| c.uid), &std::env::temp_dir())?;
        let scoreboard = crate::scoreboard::Scoreboard::create(cfg.metrics.clone())?;
        let watch = Watch::new(setup.config_hash);
        let started_on = SystemTime::now();
        let names = setup.listeners.iter().map(|l| l.name.clone()).collect();
        let os = RealOs {
            python_exe: setup.python_worker.unwrap_or_else(|| exe.clone()),
            exe,
            settings: WorkerSettings::new(&cfg, creds.as_ref(), names, started_on),
            listeners: setup.listeners,
            notify_address: notify.address.clone(),
            scoreboard,
            sigchld: signal_wake.try_clone().map_err(sys::context("signal pipe"))?,
            creds,
            zygotes: Default::default(),
            shared: None,
        };
        let mut m = Master {
            core: Core::new(os, Settings::from_config(&cfg), cfg.processes, &cfg.attach_daemons),
            retired_listeners: Vec::new(),
            rollouts_seen: 0,
            notify,
            shared: Arc::new(Shared::new(Snapshot::empty(), probe_write)),
            signals,
            signal_wake,
            probe_wake,
            started_on,
            config_reloads_ok: 0,
            config_reloads_failed: 0,
            watch,
            fswatch: fswatch::FsWatch::new(),
            pod: pod::Pod::new(setup.cgroup, &cfg),
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            wedge_on_usr2: crate::test_hooks::wedge_on_usr2(),
            sources: setup.sources,
            env: setup.env,
            cwd: setup.cwd,
            cfg,
        };
        m.core.os.shared = Some(m.shared.clone());
        m.shared.publish(m.snapshot());
        if let Some(probe) = setup.probe {
            probe
                .start(m.shared.clone(), m.core.os.scoreboard.metrics_reader(), m.cfg.liveness_timeout)
                .map_err(sys::context("probe server thread"))?;
        }
        Ok(m)
    }

    /// Runs until the drain completes; returns the process exit code.
    pub fn run(mut self) -> u8 {
        tracing::info!(
            sources = ?self.sources.files.iter().map(ToString::to_string).collect::<Vec<_>>(),
            processes = self.cfg.processes,
            sockets = ?self.core.os.listeners.iter().map(|l| &l.local).collect::<Vec<_>>(),
            "master starting"
        );
        self.core.start();
        let now = Instant::now();
        self.watch.touch = self.cfg.touch_reload.iter().map(|p| (p.clone(), watch::mtime(p))).collect();
        self.refresh_watches();
        self.schedule_watch(now);
        self.pod.schedule(now, false);
        loop {
            self.close_retired_listeners();
            self.publish();
            if let MasterPhase::Exited { code } = self.core.phase {
                return code;
            }
            self.wait();
            self.shared.heartbeat.beat();
            if self.fswatch.drain() {
                self.on_file_event(Instant::now());
            }
            for sig in self.signals.pending().collect::<Vec<_>>() {
                self.on_signal(sig);
            }
            self.reap();
            for pid in self.core.os.zygotes.poll_ready() {
                self.core.on_zygote_ready(pid);
            }
            for (pid, notice) in self.notify.drain() {
                self.core.on_notice(pid, notice);
            }
            // After reaping: a worker the OOM killer took in this turn
            // claims its kill before the check settles the counter.
            if self.pod.drain_threshold() {
                tracing::debug!("the container's memory use crossed the memory threshold");
                self.check_pod(Instant::now());
            }
            self.on_deadlines(Instant::now());
        }
    }

    /// Sleeps until a signal, a notify datagram, a probe wake-up or the
    /// nearest deadline, then drains the wake-up pipes.
    fn wait(&mut self) {
        let mut deadline = self.core.next_deadline();
        if matches!(self.core.phase, MasterPhase::Starting) || self.core.serving() {
            deadline = [deadline, self.watch.next].into_iter().flatten().min();
        }
        // The cgroup is checked only while serving (`on_deadlines`): a due
        // check while Starting would be a zero timeout on every turn.
        if self.core.serving() {
            deadline = [deadline, self.pod.next].into_iter().flatten().min();
        }
        let wakeups = [self.signal_wake.as_fd(), self.probe_wake.as_fd()];
        let mut fds = vec![wakeups[0], self.notify.fd().as_fd(), wakeups[1]];
        // Starting zygotes: their `Ready`.
        fds.extend(self.core.os.zygotes.starting_fds());
        fds.extend(self.fswatch.fd());
        fds.extend(self.pod.fd());
        sys::poll_with_deadline(&fds, &wakeups, deadline);
    }

    fn on_signal(&mut self, sig: i32) {
        let Ok(signal) = Signal::try_from(sig) else { return };
        let core = &mut self.core;
        match signal {
            Signal::SIGCHLD => {} // reaping follows every turn
            Signal::SIGTERM => core.begin_drain(false, signal.as_str()),
            Signal::SIGINT => {
                let fast = matches!(core.phase, MasterPhase::Draining { .. });
                core.begin_drain(fast, signal.as_str());
            }
            Signal::SIGQUIT => core.begin_drain(true, signal.as_str()),
            Signal::SIGHUP => core.request_reload("SIGHUP"),
            Signal::SIGTTIN => core.scale_up(),
            Signal::SIGTTOU => core.scale_down(),
            Signal::SIGUSR1 => self.log_status(),
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            Signal::SIGUSR2 if self.wedge_on_usr2.is_some() => {
                // Test-only fault injection: a wedged main loop (see `wedge_on_usr2`).
                let d = self.wedge_on_usr2.unwrap_or_default();
                tracing::warn!(seconds = d.as_secs_f64(), "PODMASTER_TEST_WEDGE_ON_USR2: blocking the main loop");
                std::thread::sleep(d);
            }
            other => core.forward(other),
        }
    }

    /// Reaps every exited child and hands each to the core.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut orphans = 0u64;
        for (pid, status) in sys::reap_all() {
            self.note_oom_kill(pid, &status);
            if !self.core.on_exit(pid, &status, now) {
                orphans += 1;
                tracing::debug!(pid = pid.as_raw(), status = slots::exit_reason(&status), "orphan reaped");
            }
        }
        if orphans > 0 {
            // One line per batch, not per pid: an orphan storm stays readable.
            self.core.counters.reaped_orphans += orphans;
            tracing::info!(count = orphans, total = self.core.counters.reaped_orphans, "orphans reaped");
        }
        self.core.settle(now);
        self.after_recycle(now);
    }

    fn on_deadlines(&mut self, now: Instant) {
        self.core.on_deadlines(now);
        let watching = matches!(self.core.phase, MasterPhase::Starting) || self.core.serving();
        if watching && self.watch.next.is_some_and(|t| now >= t) {
            self.check_watched(now);
            // Symlinks swapped, files created or included anew: watch what is there now.
            self.refresh_watches();
            self.schedule_watch(now);
            self.core.settle(now);
        }
        if self.core.serving() && self.pod.next.is_some_and(|t| now >= t) {
            self.check_pod(now);
        }
    }

    /// Closes the sockets a config change removed once a rollout finished.
    fn close_retired_listeners(&mut self) {
        if self.core.counters.rollouts_finished != self.rollouts_seen {
            self.rollouts_seen = self.core.counters.rollouts_finished;
            self.retired_listeners.clear();
        }
    }

    /// Publishes the snapshot (probe thread) and the board (workers).
    fn publish(&self) {
        let snap = self.snapshot();
        let records: Vec<crate::scoreboard::SlotRecord> = snap
            .workers
            .iter()
            .map(|w| crate::scoreboard::SlotRecord {
                id: w.id,
                pid: w.pid,
                accepting: w.accepting == 1,
                respawn_count: w.respawn_count,
                last_spawn: w.last_spawn,
                generation: w.generation,
            })
            .collect();
        self.core.os.scoreboard.publish(&records);
        self.shared.publish(snap);
    }

    fn log_status(&self) {
        let s = self.snapshot();
        tracing::info!(phase = s.phase.name(), accepting = s.accepting(), processes = s.processes, "status");
        for v in s.workers.iter().chain(s.transitions.iter()) {
            tracing::info!(
                worker = v.id,
                pid = v.pid,
                generation = v.generation,
                state = v.state,
                respawn_count = v.respawn_count,
                "status"
            );
        }
    }

    fn snapshot(&self) -> Snapshot {
        let core = &self.core;
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            phase: core.phase.observed(),
            started_on: self.started_on.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            processes: core.processes(),
            ready_target: core.ready_target(),
            config_sources: self.sources.files.iter().map(ToString::to_string).collect(),
            sockets: core
                .os
                .listeners
                .iter()
                .map(|l| SocketView {
                    name: l.name.clone(),
                    kind: l.kind,
                    local: l.local.clone(),
                    fd: l.fd.as_raw_fd(),
                })
                .collect(),
            workers: core.worker_views(),
            transitions: core.transition_views(),
            daemons: core.daemon_views(),
            reaped_orphans: core.counters.reaped_orphans,
            drain_seconds: core.drain_seconds,
            reloads_ok: core.counters.reloads_ok,
            reloads_aborted: core.counters.reloads_aborted,
            config_reloads_ok: self.config_reloads_ok,
            config_reloads_failed: self.config_reloads_failed,
            crash_loop: core.crash_loop.clone(),
            ever_ready: core.phase != MasterPhase::Starting,
            preforked: core.zygotes.enabled,
            zygotes: core.zygote_views(),
            zygote_restarts: core.zygotes.restarts,
            oom_kills: core.counters.oom_kills,
            recycles: core::Recycle::ALL.map(|r| (r.label(), core.counters.recycles[r as usize])).to_vec(),
            processes_source: self.cfg.processes_source.clone(),
            cgroup: Some(self.pod.cgroup.clone()),
            slow_starts: core
                .table
                .iter()
                .filter(|p| p.slow_start_warned && p.state == table::ProcState::Starting)
                .filter_map(|p| p.role.slot())
                .collect(),
            serves_http: self.cfg.serves_wsgi(),
            http_rows_used: core.http_rows_used,
            http_rows: core.table.iter().filter_map(|p| Some((p.role.slot()?, p.http_row?))).collect(),
        }
    }
}

fn nonblocking_pipe() -> Result<(OwnedFd, OwnedFd), sys::SysError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).map_err(sys::context("pipe2"))
}
