//! The master: one thread, one loop, owning every piece of mutable state
//! (the worker table, the phase, the rollout, the deadlines). It sleeps in
//! `poll` on three fds — the signal pipe, the notify socket, the probe wake
//! pipe — with a timeout equal to the nearest deadline, so an idle master
//! makes no wakeups at all (unless something must be polled: touch files,
//! config sources, RSS limits; then once per `config-check-interval`).
//! After each turn it publishes a snapshot for the probe thread.
//!
//! Signals become intents here and nowhere else (see the table in README):
//! TERM/INT → graceful drain, a second INT or QUIT → fast stop, HUP →
//! chain reload, TTIN/TTOU → scale, USR1 → status log, others → forwarded.
//!
//! A chain reload (and recycling one worker) is a [`Rollout`]: for one slot
//! at a time, start the replacement, wait (bounded) until it accepts, then
//! stop the old one and wait for it to exit before the next slot, so
//! accepting capacity never dips and at most one extra process exists.

pub mod state;
pub mod workers;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use signal_hook::iterator::Signals;

use crate::config::{self, Config, ReadyMode, Sources};
use crate::exit;
use crate::notify::{Notice, NotifySocket};
use crate::sockets::{self, Listener};
use crate::sys;
use crate::worker::WorkerSpec;
use state::{DaemonView, Phase, Shared, Snapshot, SocketView};
use workers::{BACKOFF_START, Slot, Worker, WorkerState, exit_reason};

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

/// How long the final sweep waits for orphans it SIGKILLed to be reaped.
/// SIGKILL cannot be caught; only a process in uninterruptible sleep
/// (disk, NFS) takes longer, and exiting then is still right.
const FINAL_SWEEP: Duration = Duration::from_secs(2);

/// The master's phase with the data each phase needs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MasterPhase {
    /// Workers spawned, the ready target not yet reached once.
    Starting,
    Running,
    /// Readiness is off. Until `stop_at` the workers keep serving
    /// (drain-delay); then each gets its stop signal (`fast`: SIGINT).
    Draining {
        since: Instant,
        stop_at: Option<Instant>,
        fast: bool,
        code: u8,
    },
    Exited {
        code: u8,
    },
}

/// Replacing workers one slot at a time, replacement first.
#[derive(Debug)]
struct Rollout {
    /// Slot ids still to replace.
    queue: VecDeque<u32>,
    /// The slot whose replacement is starting, and its ready deadline.
    current: Option<(u32, Instant)>,
    /// A chain reload of every worker (phase Reloading), not a recycle.
    full: bool,
    /// Another reload was requested meanwhile: run once more when done.
    again: bool,
    since: Instant,
    reason: String,
}

/// A supervised side process (`attach-daemon`).
#[derive(Debug)]
struct Daemon {
    argv: Vec<String>,
    pid: Option<Pid>,
    respawn_at: Option<Instant>,
    backoff: Duration,
    respawns: u64,
    /// SIGKILL deadline once asked to stop.
    stop_deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    reaped_orphans: u64,
    killed: u32,
    reloads_ok: u64,
    reloads_aborted: u64,
    config_reloads_ok: u64,
    config_reloads_failed: u64,
}

/// What the periodic check looks at.
#[derive(Debug)]
struct Watch {
    next: Option<Instant>,
    touch: Vec<(PathBuf, Option<SystemTime>)>,
    /// Hash of the effective entries last seen (valid or not).
    config_hash: u64,
}

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
}

pub struct Master {
    cfg: Config,
    sources: Sources,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    exe: PathBuf,
    listeners: Vec<Listener>,
    /// Sockets removed by a config change, closed once the rollout that
    /// replaces the workers using them is over.
    retired_listeners: Vec<Listener>,
    notify: NotifySocket,
    shared: Arc<Shared>,
    signals: Signals,
    signal_wake: UnixStream,
    probe_wake: OwnedFd,
    slots: Vec<Slot>,
    /// Old workers told to stop (replaced or scaled away): (slot id, worker).
    retiring: Vec<(u32, Worker)>,
    daemons: Vec<Daemon>,
    phase: MasterPhase,
    rollout: Option<Rollout>,
    /// A reload asked for before the instance was first ready.
    reload_when_ready: bool,
    next_generation: u64,
    started_on: SystemTime,
    counters: Counters,
    drain_seconds: Option<f64>,
    crash_loop: Option<String>,
    watch: Watch,
    /// Credentials workers and daemons run as (`uid`/`gid`).
    creds: Option<sys::Credentials>,
    scoreboard: crate::scoreboard::Scoreboard,
    /// Test hook (test builds only, see [`crate::test_hooks`]): SIGUSR2
    /// blocks the main loop this long.
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    wedge_on_usr2: Option<Duration>,
}

fn hash_entries(entries: &[config::Entry]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in entries {
        (&e.key, &e.value).hash(&mut h);
    }
    h.finish()
}

impl Master {
    /// Sets up signal delivery and the notify socket. Must run before any
    /// worker exists, so no signal is missed.
    pub fn new(setup: MasterSetup) -> Result<Master, String> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let (signals, signal_wake) = sys::signal_pipe(HANDLED)?;
        let (probe_wake, probe_write) = nonblocking_pipe()?;
        let cfg = setup.config;
        let creds = cfg.creds.map(|c| sys::Credentials::resolve((c.uid != u32::MAX).then_some(c.uid), c.gid));
        let notify = NotifySocket::bind(creds.as_ref().and_then(|c| c.uid), &std::env::temp_dir())?;
        let scoreboard = crate::scoreboard::Scoreboard::create(cfg.metrics.clone())?;
        let config_hash = setup.config_hash;
        let m = Master {
            exe,
            listeners: setup.listeners,
            retired_listeners: Vec::new(),
            notify,
            shared: Arc::new(Shared::new(Snapshot::empty(), probe_write)),
            signals,
            signal_wake,
            probe_wake,
            slots: (1..=cfg.processes).map(Slot::new).collect(),
            retiring: Vec::new(),
            daemons: cfg
                .attach_daemons
                .iter()
                .map(|argv| Daemon {
                    argv: argv.clone(),
                    pid: None,
                    respawn_at: None,
                    backoff: BACKOFF_START,
                    respawns: 0,
                    stop_deadline: None,
                })
                .collect(),
            phase: MasterPhase::Starting,
            rollout: None,
            reload_when_ready: false,
            next_generation: 1,
            started_on: SystemTime::now(),
            counters: Counters::default(),
            drain_seconds: None,
            crash_loop: None,
            watch: Watch { next: None, touch: Vec::new(), config_hash },
            creds,
            scoreboard,
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            wedge_on_usr2: crate::test_hooks::wedge_on_usr2(),

            sources: setup.sources,
            env: setup.env,
            cwd: setup.cwd,
            cfg,
        };
        m.shared.publish(m.snapshot());
        if let Some(probe) = setup.probe {
            probe
                .start(m.shared.clone(), m.scoreboard.metrics_reader(), m.cfg.liveness_timeout)
                .map_err(|e| format!("probe server thread: {e}"))?;
        }
        Ok(m)
    }

    /// Runs until the drain completes; returns the process exit code.
    pub fn run(mut self) -> u8 {
        tracing::info!(
            sources = ?self.sources.files.iter().map(ToString::to_string).collect::<Vec<_>>(),
            processes = self.cfg.processes,
            sockets = ?self.listeners.iter().map(|l| &l.local).collect::<Vec<_>>(),
            "master starting"
        );
        let now = Instant::now();
        for i in 0..self.slots.len() {
            self.spawn_slot(i, now);
        }
        for i in 0..self.daemons.len() {
            self.spawn_daemon(i, now);
        }
        self.watch.touch = self.cfg.touch_reload.iter().map(|p| (p.clone(), mtime(p))).collect();
        self.schedule_watch(now);
        loop {
            self.publish();
            if let MasterPhase::Exited { code } = self.phase {
                return code;
            }
            self.wait();
            self.shared.heartbeat.beat();
            for sig in self.signals.pending().collect::<Vec<_>>() {
                self.on_signal(sig);
            }
            self.reap();
            for (pid, notice) in self.notify.drain() {
                self.on_notice(pid, notice);
            }
            self.on_deadlines(Instant::now());
        }
    }

    /// Sleeps until a signal, a notify datagram, a probe wake-up or the
    /// nearest deadline, then drains the wake-up pipes.
    fn wait(&mut self) {
        let timeout = match self.next_deadline() {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up: waking a fraction of a millisecond early would
                // spin until the deadline.
                let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(60_000) as u32).unwrap_or(PollTimeout::NONE)
            }
        };
        let mut fds = [
            PollFd::new(self.signal_wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.notify.fd().as_fd(), PollFlags::POLLIN),
            PollFd::new(self.probe_wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => tracing::error!(errno = %e, "poll failed"),
        }
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(&self.signal_wake, &mut buf), Ok(n) if n > 0) {}
        while matches!(nix::unistd::read(&self.probe_wake, &mut buf), Ok(n) if n > 0) {}
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let stop_deadline = |w: &Worker| match w.state {
            WorkerState::Stopping { deadline, killed: false } => Some(deadline),
            _ => None,
        };
        for s in &self.slots {
            consider(s.respawn_at);
            for w in s.worker.iter().chain(s.next.iter()) {
                consider(stop_deadline(w));
                if matches!(self.phase, MasterPhase::Running) {
                    consider(w.retire_at);
                }
            }
        }
        for (_, w) in &self.retiring {
            consider(stop_deadline(w));
        }
        for d in &self.daemons {
            consider(d.respawn_at);
            consider(d.stop_deadline);
        }
        if let MasterPhase::Draining { stop_at, .. } = self.phase {
            consider(stop_at);
        }
        if let Some(r) = &self.rollout {
            consider(r.current.map(|(_, t)| t));
        }
        if matches!(self.phase, MasterPhase::Running | MasterPhase::Starting) {
            consider(self.watch.next);
        }
        next
    }

    fn on_signal(&mut self, sig: i32) {
        let Ok(signal) = Signal::try_from(sig) else { return };
        match signal {
            Signal::SIGCHLD => {} // reaping follows every turn
            Signal::SIGTERM => self.begin_drain(false, signal.as_str()),
            Signal::SIGINT => {
                let fast = matches!(self.phase, MasterPhase::Draining { .. });
                self.begin_drain(fast, signal.as_str());
            }
            Signal::SIGQUIT => self.begin_drain(true, signal.as_str()),
            Signal::SIGHUP => self.request_reload("SIGHUP"),
            Signal::SIGTTIN => self.scale_up(),
            Signal::SIGTTOU => self.scale_down(),
            Signal::SIGUSR1 => self.log_status(),
            #[cfg(any(debug_assertions, feature = "test-hooks"))]
            Signal::SIGUSR2 if self.wedge_on_usr2.is_some() => {
                // Test-only fault injection: a wedged main loop (see `wedge_on_usr2`).
                let d = self.wedge_on_usr2.unwrap_or_default();
                tracing::warn!(seconds = d.as_secs_f64(), "PODMASTER_TEST_WEDGE_ON_USR2: blocking the main loop");
                std::thread::sleep(d);
            }
            other => {
                tracing::info!(signal = other.as_str(), "forwarding signal to workers");
                for pid in self.all_worker_pids() {
                    sys::signal(pid, other);
                }
            }
        }
    }

    /// Every worker process with its slot id: current, replacements, retiring.
    fn processes_mut(&mut self) -> Vec<(u32, &mut Worker)> {
        let mut procs: Vec<(u32, &mut Worker)> = Vec::new();
        for s in &mut self.slots {
            let id = s.id;
            procs.extend(s.worker.iter_mut().chain(s.next.iter_mut()).map(|w| (id, w)));
        }
        procs.extend(self.retiring.iter_mut().map(|(id, w)| (*id, w)));
        procs
    }

    fn all_worker_pids(&self) -> Vec<Pid> {
        let mut v: Vec<Pid> =
            self.slots.iter().flat_map(|s| s.worker.iter().chain(s.next.iter())).map(|w| w.pid).collect();
        v.extend(self.retiring.iter().map(|(_, w)| w.pid));
        v
    }

    // ---- drain -------------------------------------------------------

    /// Graceful drain (or, when `fast`, a fast stop). A drain already under
    /// way only escalates: graceful → fast.
    fn begin_drain(&mut self, fast: bool, why: &str) {
        let now = Instant::now();
        match self.phase {
            MasterPhase::Exited { .. } | MasterPhase::Draining { fast: true, .. } => {}
            MasterPhase::Draining { since, code, .. } if fast => {
                tracing::warn!(cause = why, "fast stop requested during drain");
                self.phase = MasterPhase::Draining { since, stop_at: None, fast: true, code };
                self.stop_all(Signal::SIGINT, now);
            }
            MasterPhase::Draining { .. } => {}
            MasterPhase::Starting | MasterPhase::Running => {
                let delay = if fast { Duration::ZERO } else { self.cfg.drain_delay };
                tracing::info!(
                    cause = why,
                    fast,
                    drain_delay_s = delay.as_secs_f64(),
                    mercy_s = self.cfg.worker_reload_mercy.as_secs_f64(),
                    "drain started"
                );
                if self.rollout.take().is_some() {
                    tracing::info!("reload abandoned: draining");
                }
                self.phase = MasterPhase::Draining { since: now, stop_at: Some(now + delay), fast, code: exit::OK };
                self.scoreboard.set_draining(true);

                for s in &mut self.slots {
                    s.respawn_at = None;
                }
                for d in &mut self.daemons {
                    d.respawn_at = None;
                }
                self.on_deadlines(now);
            }
        }
    }

    /// Sends `sig` to every worker process (current, replacement, retiring)
    /// and starts its mercy deadline if it was not stopping yet. SIGINT (fast
    /// stop) is sent even to those already stopping.
    fn stop_all(&mut self, sig: Signal, now: Instant) {
        let deadline = now + self.cfg.worker_reload_mercy;
        for (id, w) in self.processes_mut() {
            let already = matches!(w.state, WorkerState::Stopping { .. });
            if !already || sig == Signal::SIGINT {
                sys::signal(w.pid, sig);
                tracing::info!(worker = id, pid = w.pid.as_raw(), signal = sig.as_str(), "stopping worker");
            }
            if !already {
                w.state = WorkerState::Stopping { deadline, killed: false };
            }
        }
    }

    /// Asks one worker to stop gracefully and returns it, now stopping.
    fn retire(&self, id: u32, mut w: Worker, now: Instant, why: &str) -> Worker {
        if !matches!(w.state, WorkerState::Stopping { .. }) {
            let sig = self.cfg.stop_signal();
            sys::signal(w.pid, sig);
            tracing::info!(worker = id, pid = w.pid.as_raw(), signal = sig.as_str(), cause = why, "stopping worker");
            w.state = WorkerState::Stopping { deadline: now + self.cfg.worker_reload_mercy, killed: false };
        }
        w
    }

    fn maybe_finish_drain(&mut self, now: Instant) {
        let MasterPhase::Draining { since, stop_at: None, code, fast } = self.phase else { return };
        let workers_alive =
            self.slots.iter().any(|s| s.worker.is_some() || s.next.is_some()) || !self.retiring.is_empty();
        if workers_alive {
            return;
        }
        // Side processes stop last: the workers may have needed them.
        let mercy = self.cfg.worker_reload_mercy;
        let mut daemons_alive = false;
        for d in &mut self.daemons {
            if let Some(pid) = d.pid {
                daemons_alive = true;
                if d.stop_deadline.is_none() {
                    let sig = if fast { Signal::SIGINT } else { Signal::SIGTERM };
                    sys::signal(pid, sig);
                    d.stop_deadline = Some(now + mercy);
                    tracing::info!(pid = pid.as_raw(), command = d.argv.join(" "), "stopping daemon");
                }
            }
        }
        if daemons_alive {
            return;
        }
        // Whatever the workers left behind (orphans adopted by us) must not
        // outlive the master.
        let leftovers = sys::children();
        for pid in &leftovers {
            sys::signal(*pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + FINAL_SWEEP;
        while !sys::children().is_empty() && Instant::now() < deadline {
            self.counters.reaped_orphans += sys::reap_all().len() as u64;
            std::thread::yield_now();
        }
        self.counters.reaped_orphans += sys::reap_all().len() as u64;
        let secs = now.duration_since(since).as_secs_f64();
        self.drain_seconds = Some(secs);
        let code = if self.counters.killed > 0 && code == exit::OK { exit::KILLED } else { code };
        tracing::info!(
            duration_s = secs,
            killed = self.counters.killed,
            leftover_processes = leftovers.len(),
            exit_code = code,
            "drain finished"
        );
        self.phase = MasterPhase::Exited { code };
    }

    // ---- deadlines -----------------------------------------------------

    fn on_deadlines(&mut self, now: Instant) {
        if let MasterPhase::Draining { since, stop_at: Some(t), fast, code } = self.phase {
            if now >= t {
                self.phase = MasterPhase::Draining { since, stop_at: None, fast, code };
                let sig = if fast { Signal::SIGINT } else { self.cfg.stop_signal() };
                self.stop_all(sig, now);
            }
        }
        self.kill_overdue(now);
        let draining = matches!(self.phase, MasterPhase::Draining { .. } | MasterPhase::Exited { .. });
        if !draining {
            for i in 0..self.slots.len() {
                if self.slots[i].respawn_at.is_some_and(|t| now >= t) {
                    self.slots[i].respawn_at = None;
                    self.slots[i].respawn_count += 1;
                    self.spawn_slot(i, now);
                }
            }
            for i in 0..self.daemons.len() {
                if self.daemons[i].respawn_at.is_some_and(|t| now >= t) {
                    self.daemons[i].respawn_at = None;
                    self.daemons[i].respawns += 1;
                    self.spawn_daemon(i, now);
                }
            }
        }
        if matches!(self.phase, MasterPhase::Running) {
            let overdue: Vec<u32> = self
                .slots
                .iter()
                .filter(|s| {
                    s.next.is_none() && s.worker.as_ref().is_some_and(|w| w.retire_at.is_some_and(|t| now >= t))
                })
                .map(|s| s.id)
                .collect();
            for id in overdue {
                if let Some(w) = self.slot_mut(id).and_then(|s| s.worker.as_mut()) {
                    w.retire_at = None;
                }
                self.request_replace(id, "max-worker-lifetime");
            }
        }
        if let Some((id, deadline)) = self.rollout.as_ref().and_then(|r| r.current) {
            if now >= deadline {
                let secs = self.cfg.chain_reload_timeout.as_secs_f64();
                self.abort_rollout(
                    id,
                    &format!("replacement did not report accepting within {secs} s (chain-reload-timeout)"),
                    now,
                );
            }
        }
        if self.watch.next.is_some_and(|t| now >= t)
            && matches!(self.phase, MasterPhase::Running | MasterPhase::Starting)
        {
            self.check_watched(now);
            self.schedule_watch(now);
        }
        self.rollout_step(now);
        self.maybe_finish_drain(now);
    }

    /// SIGKILL for every stopping process whose mercy ran out.
    fn kill_overdue(&mut self, now: Instant) {
        let mercy = self.cfg.worker_reload_mercy.as_secs_f64();
        let mut killed = 0;
        for (id, w) in self.processes_mut() {
            if let WorkerState::Stopping { deadline, killed: false } = w.state {
                if now >= deadline {
                    tracing::warn!(
                        worker = id,
                        pid = w.pid.as_raw(),
                        mercy_s = mercy,
                        "worker did not stop within worker-reload-mercy; sending SIGKILL"
                    );
                    sys::signal_group(w.pid, Signal::SIGKILL);
                    sys::signal(w.pid, Signal::SIGKILL);
                    w.state = WorkerState::Stopping { deadline, killed: true };
                    killed += 1;
                }
            }
        }
        self.counters.killed += killed;
        for d in &mut self.daemons {
            if let (Some(pid), Some(t)) = (d.pid, d.stop_deadline) {
                if now >= t {
                    tracing::warn!(
                        pid = pid.as_raw(),
                        "daemon did not stop within worker-reload-mercy; sending SIGKILL"
                    );
                    sys::signal_group(pid, Signal::SIGKILL);
                    sys::signal(pid, Signal::SIGKILL);
                    d.stop_deadline = Some(t + Duration::from_secs(3600));
                    self.counters.killed += 1;
                }
            }
        }
    }

    // ---- rollouts (chain reload, recycling) ----------------------------

    /// HUP, a touched reload file, `uwsgi.reload()`, a config change.
    fn request_reload(&mut self, why: &str) {
        match self.phase {
            MasterPhase::Draining { .. } | MasterPhase::Exited { .. } => return,
            MasterPhase::Starting => {
                tracing::info!(cause = why, "reload requested before the instance was ready; it runs once ready");
                self.reload_when_ready = true;
                return;
            }
            MasterPhase::Running => {}
        }
        let now = Instant::now();
        let all: VecDeque<u32> = self.slots.iter().map(|s| s.id).collect();
        match &mut self.rollout {
            Some(r) if r.full => {
                // Coalesce: one more full pass after this one, however many requests.
                tracing::info!(cause = why, "reload requested during a reload; it will run again once");
                r.again = true;
            }
            Some(r) => {
                // A recycle in progress becomes a full reload.
                let current = r.current.map(|(id, _)| id);
                r.queue = all.into_iter().filter(|id| Some(*id) != current).collect();
                r.full = true;
                r.reason = why.to_owned();
                tracing::info!(cause = why, workers = self.slots.len(), "chain reload started");
            }
            None => {
                tracing::info!(cause = why, workers = self.slots.len(), "chain reload started");
                self.rollout = Some(Rollout {
                    queue: all,
                    current: None,
                    full: true,
                    again: false,
                    since: now,
                    reason: why.to_owned(),
                });
            }
        }
        self.rollout_step(now);
    }

    /// Replace one worker the chain-reload way (recycling).
    fn request_replace(&mut self, id: u32, why: &str) {
        if !matches!(self.phase, MasterPhase::Running) {
            return;
        }
        tracing::info!(worker = id, cause = why, "replacing worker");
        match &mut self.rollout {
            Some(r) => {
                if !r.queue.contains(&id) && r.current.map(|(c, _)| c) != Some(id) {
                    r.queue.push_back(id);
                }
            }
            None => {
                self.rollout = Some(Rollout {
                    queue: VecDeque::from([id]),
                    current: None,
                    full: false,
                    again: false,
                    since: Instant::now(),
                    reason: why.to_owned(),
                })
            }
        }
    }

    /// Advances the rollout: nothing while a replacement is starting or an
    /// old worker is still stopping; else the next slot; else finished.
    fn rollout_step(&mut self, now: Instant) {
        if !matches!(self.phase, MasterPhase::Running) {
            return;
        }
        loop {
            let Some(r) = &mut self.rollout else { return };
            if r.current.is_some() || !self.retiring.is_empty() {
                return;
            }
            let Some(id) = r.queue.pop_front() else { break };
            let Some(i) = self.slots.iter().position(|s| s.id == id) else { continue };
            // A slot that is down gets current code when it respawns anyway.
            if self.slots[i].worker.is_none() {
                continue;
            }
            let deadline = now + self.cfg.chain_reload_timeout;
            if let Some(r) = &mut self.rollout {
                r.current = Some((id, deadline));
            }
            match self.spawn_worker(i, now) {
                Some(w) => {
                    let ready = w.accepting();
                    self.slots[i].next = Some(w);
                    if ready {
                        self.promote(i, now);
                    }
                }
                None => {
                    self.abort_rollout(id, "cannot spawn the replacement", now);
                    return;
                }
            }
        }
        // Queue empty, nothing starting, nothing retiring: done.
        let Some(r) = self.rollout.take() else { return };
        self.retired_listeners.clear();
        if r.full {
            self.counters.reloads_ok += 1;
            tracing::info!(
                cause = r.reason.as_str(),
                duration_s = now.duration_since(r.since).as_secs_f64(),
                workers = self.slots.len(),
                "chain reload finished"
            );
            if r.again {
                self.request_reload("reload requested during the previous one");
            }
        }
    }

    /// The replacement in slot `i` accepts: it takes over, the old worker
    /// retires.
    fn promote(&mut self, i: usize, now: Instant) {
        let Some(next) = self.slots[i].next.take() else { return };
        let id = self.slots[i].id;
        tracing::info!(
            worker = id,
            pid = next.pid.as_raw(),
            generation = next.generation,
            "replacement accepting; retiring the old worker"
        );
        if let Some(old) = self.slots[i].worker.replace(next) {
            let old = self.retire(id, old, now, "replaced");
            self.retiring.push((id, old));
        }
        self.slots[i].failed_starts = 0;
        if let Some(r) = &mut self.rollout {
            if r.current.map(|(c, _)| c) == Some(id) {
                r.current = None;
            }
        }
    }

    /// The replacement for slot `id` failed: stop it, keep the old
    /// workers, count and log the abort.
    fn abort_rollout(&mut self, id: u32, why: &str, now: Instant) {
        let Some(r) = self.rollout.take() else { return };
        if let Some(i) = self.slots.iter().position(|s| s.id == id) {
            if let Some(next) = self.slots[i].next.take() {
                let next = self.retire(id, next, now, "replacement failed");
                self.retiring.push((id, next));
            }
        }
        if r.full {
            self.counters.reloads_aborted += 1;
        }
        tracing::error!(
            worker = id,
            cause = r.reason.as_str(),
            error = why,
            "reload aborted; the old workers keep serving"
        );
    }

    // ---- scaling ----------------------------------------------------------

    fn scale_up(&mut self) {
        if !matches!(self.phase, MasterPhase::Running | MasterPhase::Starting) {
            return;
        }
        if self.slots.len() >= crate::scoreboard::MAX_SLOTS {
            tracing::warn!(
                processes = self.slots.len(),
                max = crate::scoreboard::MAX_SLOTS,
                "not scaling up: the scoreboard has room for no more workers"
            );
            return;
        }
        let id = self.slots.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        self.slots.push(Slot::new(id));
        self.cfg.processes += 1;
        tracing::info!(worker = id, processes = self.cfg.processes, "scaling up (SIGTTIN)");
        self.spawn_slot(self.slots.len() - 1, Instant::now());
    }

    fn scale_down(&mut self) {
        if !matches!(self.phase, MasterPhase::Running | MasterPhase::Starting) || self.slots.len() <= 1 {
            return;
        }
        let now = Instant::now();
        let Some(slot) = self.slots.pop() else { return };
        self.cfg.processes -= 1;
        tracing::info!(worker = slot.id, processes = self.cfg.processes, "scaling down (SIGTTOU)");
        for w in slot.worker.into_iter().chain(slot.next) {
            let w = self.retire(slot.id, w, now, "scaled down");
            self.retiring.push((slot.id, w));
        }
        if let Some(r) = &mut self.rollout {
            r.queue.retain(|id| *id != slot.id);
            if r.current.map(|(c, _)| c) == Some(slot.id) {
                r.current = None;
            }
        }
    }

    // ---- spawning -----------------------------------------------------------

    /// Starts a process for slot `i` and installs it as the slot's worker;
    /// on failure schedules the slot's respawn with backoff.
    fn spawn_slot(&mut self, i: usize, now: Instant) {
        match self.spawn_worker(i, now) {
            Some(w) => {
                self.slots[i].worker = Some(w);
                self.check_ready(now);
            }
            None => {
                let max = self.cfg.respawn_backoff_max;
                let slot = &mut self.slots[i];
                let wait = slot.note_exit("spawn_failed", None, now, max);
                tracing::warn!(worker = slot.id, retry_in_s = wait.as_secs_f64(), "worker respawn scheduled");
                slot.respawn_at = Some(now + wait);
            }
        }
    }

    /// Starts a worker process for slot `i` (not installed anywhere yet).
    fn spawn_worker(&mut self, i: usize, now: Instant) -> Option<Worker> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let id = self.slots[i].id;
        let spec = WorkerSpec {
            id,
            generation,
            numproc: self.cfg.processes,
            master_pid: std::process::id() as i32,
            started_on: self.started_on.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            script: self.cfg.script.clone().unwrap_or_default(),
            command: self.cfg.command.clone(),
            chdir: self.cfg.chdir.clone(),
            virtualenv: self.cfg.virtualenv.clone(),
            pythonpath: self.cfg.pythonpath.clone(),
            log_format: self.cfg.log_format,
            log_level: self.cfg.log_level.clone(),
            opt: self.cfg.opt.clone(),
            uid: self.creds.as_ref().and_then(|c| c.uid),
            board_fd: self.cfg.script.is_some().then_some(sys::LISTEN_FDS_START + self.listeners.len() as i32),
            metrics: self.cfg.metrics.clone(),
            pyargv: self.cfg.pyargv.clone(),
            sockets: self.listeners.iter().map(|l| l.name.clone()).collect(),
            is_a_reload: self.slots[i].spawns > 0,
        };
        let env = vec![
            (OsString::from("LISTEN_FDS"), OsString::from(self.listeners.len().to_string())),
            (OsString::from("LISTEN_FDNAMES"), OsString::from(crate::worker::fdnames(&spec.sockets))),
            (OsString::from("NOTIFY_SOCKET"), OsString::from(&self.notify.address)),
            (OsString::from(crate::worker::SPEC_ENV), OsString::from(spec.encode())),
        ];
        let argv0 = format!("podmaster: worker {id}");
        let mut fds: Vec<RawFd> = self.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        if self.cfg.script.is_some() {
            fds.extend(self.scoreboard.fds());
        }
        let result = sys::spawn(sys::SpawnSpec {
            exe: &self.exe,
            argv0: &argv0,
            args: &[],
            env,
            sockets: &fds,
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
        });
        let lifetime = self.lifetime();
        let slot = &mut self.slots[i];
        slot.spawns += 1;
        match result {
            Ok(pid) => {
                tracing::info!(worker = id, pid = pid.as_raw(), generation, "worker spawned");
                let accepting = self.cfg.ready_mode == ReadyMode::Spawn;
                Some(Worker {
                    pid,
                    generation,
                    spawned_at: SystemTime::now(),
                    started: now,
                    state: if accepting { WorkerState::Accepting { since: now } } else { WorkerState::Starting },
                    ever_accepted: accepting,
                    retire_at: lifetime.map(|l| now + l),
                })
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot spawn worker");
                None
            }
        }
    }

    /// `max-worker-lifetime` plus a random share of the delta, so workers
    /// started together are not all replaced at the same moment.
    fn lifetime(&self) -> Option<Duration> {
        let base = self.cfg.max_worker_lifetime?;
        let delta = self.cfg.max_worker_lifetime_delta;
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let jitter = delta.mul_f64(f64::from(nanos % 1000) / 1000.0);
        Some(base + jitter)
    }

    fn spawn_daemon(&mut self, i: usize, now: Instant) {
        let d = &mut self.daemons[i];
        let exe = PathBuf::from(&d.argv[0]);
        let args: Vec<OsString> = d.argv[1..].iter().map(OsString::from).collect();
        let argv0 = d.argv[0].clone();
        match sys::spawn(sys::SpawnSpec {
            exe: &exe,
            argv0: &argv0,
            args: &args,
            env: Vec::new(),
            sockets: &[],
            new_process_group: true,
            die_with_master: true,
            creds: self.creds.as_ref(),
        }) {
            Ok(pid) => {
                tracing::info!(pid = pid.as_raw(), command = d.argv.join(" "), "daemon spawned");
                d.pid = Some(pid);
            }
            Err(e) => {
                let wait = d.backoff;
                d.backoff = (d.backoff * 2).min(self.cfg.respawn_backoff_max);
                tracing::error!(command = d.argv.join(" "), error = %e, retry_in_s = wait.as_secs_f64(), "cannot spawn daemon");
                d.respawn_at = Some(now + wait);
            }
        }
    }

    // ---- child exits ------------------------------------------------------

    fn reap(&mut self) {
        let now = Instant::now();
        let mut orphans = 0u64;
        for (pid, status) in sys::reap_all() {
            if let Some(k) = self.retiring.iter().position(|(_, w)| w.pid == pid) {
                let (id, w) = self.retiring.swap_remove(k);
                tracing::info!(
                    worker = id,
                    pid = pid.as_raw(),
                    status = exit_reason(&status),
                    runtime_s = now.duration_since(w.started).as_secs_f64(),
                    "old worker exited"
                );
            } else if let Some(i) = self.slots.iter().position(|s| s.next.as_ref().is_some_and(|w| w.pid == pid)) {
                self.slots[i].next = None;
                let id = self.slots[i].id;
                let reason = exit_reason(&status);
                *self.slots[i].exits.entry(reason.clone()).or_default() += 1;
                self.abort_rollout(id, &format!("replacement exited before accepting ({reason})"), now);
            } else if let Some(i) = self.slots.iter().position(|s| s.worker.as_ref().is_some_and(|w| w.pid == pid)) {
                self.on_worker_exit(i, status, now);
            } else if let Some(d) = self.daemons.iter_mut().find(|d| d.pid == Some(pid)) {
                d.pid = None;
                d.stop_deadline = None;
                let draining = matches!(self.phase, MasterPhase::Draining { .. } | MasterPhase::Exited { .. });
                if draining {
                    tracing::info!(pid = pid.as_raw(), status = exit_reason(&status), "daemon exited");
                } else {
                    let wait = d.backoff;
                    d.backoff = (d.backoff * 2).min(self.cfg.respawn_backoff_max);
                    d.respawn_at = Some(now + wait);
                    tracing::warn!(
                        pid = pid.as_raw(),
                        command = d.argv.join(" "),
                        status = exit_reason(&status),
                        respawn_in_s = wait.as_secs_f64(),
                        "daemon exited"
                    );
                }
            } else {
                orphans += 1;
                tracing::debug!(pid = pid.as_raw(), status = exit_reason(&status), "orphan reaped");
            }
        }
        if orphans > 0 {
            // One line per batch, not per pid: an orphan storm stays readable.
            self.counters.reaped_orphans += orphans;
            tracing::info!(count = orphans, total = self.counters.reaped_orphans, "orphans reaped");
        }

        self.rollout_step(now);
        self.maybe_finish_drain(now);
    }

    fn on_worker_exit(&mut self, i: usize, status: WaitStatus, now: Instant) {
        let Some(w) = self.slots[i].worker.take() else { return };
        let reason = exit_reason(&status);
        let runtime = now.duration_since(w.started).as_secs_f64();
        let id = self.slots[i].id;
        let accepting_since = match w.state {
            WorkerState::Accepting { since } => Some(since),
            _ => None,
        };
        let (pid, status_s) = (w.pid.as_raw(), reason.as_str());
        let wait = self.slots[i].note_exit(&reason, accepting_since, now, self.cfg.respawn_backoff_max);
        match self.phase {
            MasterPhase::Draining { .. } | MasterPhase::Exited { .. } => {
                tracing::info!(worker = id, pid, status = status_s, runtime_s = runtime, "worker exited");
            }
            MasterPhase::Starting if !w.ever_accepted => {
                tracing::error!(
                    worker = id,
                    pid,
                    status = status_s,
                    "worker exited before it was ready, during startup; stopping (see the worker's output above)"
                );
                self.fail_startup();
            }
            _ => {
                if !w.ever_accepted {
                    self.slots[i].failed_starts += 1;
                }
                let failed = self.slots[i].failed_starts;
                tracing::warn!(
                    worker = id,
                    pid,
                    status = status_s,
                    runtime_s = runtime,
                    failed_starts = failed,
                    respawn_in_s = wait.as_secs_f64(),
                    "worker exited unexpectedly"
                );
                if failed >= self.cfg.max_failed_starts && self.crash_loop.is_none() {
                    let msg = format!(
                        "worker {id} failed to start {failed} times in a row (max-failed-starts); last: {reason}"
                    );
                    tracing::error!(
                        worker = id,
                        failed_starts = failed,
                        "crash loop: /livez now fails so the pod is restarted"
                    );
                    self.crash_loop = Some(msg);
                }
                // A replacement already on its way takes the slot over.
                if self.slots[i].next.is_none() {
                    self.slots[i].respawn_at = Some(now + wait);
                }
            }
        }
    }

    /// A worker died before the instance was ever ready: the configuration
    /// or the app is broken. Stop everything and exit non-zero, so the
    /// container restarts with the error in its log instead of half-serving.
    fn fail_startup(&mut self) {
        let now = Instant::now();
        self.phase = MasterPhase::Draining { since: now, stop_at: None, fast: true, code: exit::STARTUP_FAILED };
        for s in &mut self.slots {
            s.respawn_at = None;
        }
        self.stop_all(Signal::SIGINT, now);
    }

    fn on_notice(&mut self, pid: i32, notice: Notice) {
        let now = Instant::now();
        let Some(i) =
            self.slots.iter().position(|s| s.worker.iter().chain(s.next.iter()).any(|w| w.pid.as_raw() == pid))
        else {
            if !self.retiring.iter().any(|(_, w)| w.pid.as_raw() == pid) {
                tracing::debug!(pid, ?notice, "notify message from a process that is not a worker; ignored");
            }
            return;
        };
        let id = self.slots[i].id;
        let is_next = self.slots[i].next.as_ref().is_some_and(|w| w.pid.as_raw() == pid);
        match notice {
            Notice::Reload => self.request_reload("uwsgi.reload()"),
            Notice::Stop => self.begin_drain(false, "uwsgi.stop()"),
            Notice::Ready => {
                let slot = &mut self.slots[i];
                let w = if is_next { slot.next.as_mut() } else { slot.worker.as_mut() };
                let Some(w) = w else { return };
                if w.state == WorkerState::Starting {
                    w.state = WorkerState::Accepting { since: now };
                    w.ever_accepted = true;
                    tracing::info!(worker = id, pid, generation = w.generation, "worker accepting");
                    if !is_next {
                        slot.failed_starts = 0;
                    }
                }
                if is_next {
                    self.promote(i, now);
                    self.rollout_step(now);
                }
                if self.crash_loop.is_some() && self.slots.iter().all(|s| s.failed_starts < self.cfg.max_failed_starts)
                {
                    tracing::info!("crash loop over: every slot has started");
                    self.crash_loop = None;
                }
            }
            Notice::Stopping => {
                let slot = &mut self.slots[i];
                let w = if is_next { slot.next.as_mut() } else { slot.worker.as_mut() };
                if let Some(w) = w {
                    if matches!(w.state, WorkerState::Accepting { .. }) {
                        w.state = WorkerState::Starting;
                        tracing::info!(worker = id, pid, "worker stopped accepting");
                    }
                }
            }
        }
        self.check_ready(now);
    }

    /// Starting → Running once the ready target is first reached.
    fn check_ready(&mut self, now: Instant) {
        if self.phase != MasterPhase::Starting {
            return;
        }
        let n = self.slots.iter().filter(|s| s.worker.as_ref().is_some_and(Worker::accepting)).count() as u32;
        if n >= self.cfg.ready_target() {
            tracing::info!(accepting = n, processes = self.cfg.processes, "instance ready");
            self.phase = MasterPhase::Running;
            if std::mem::take(&mut self.reload_when_ready) {
                self.request_reload("reload requested during startup");
            }
            let _ = now;
        }
    }

    // ---- watching files -----------------------------------------------------

    fn needs_watch(&self) -> bool {
        !self.watch.touch.is_empty()
            || self.cfg.reload_on_rss.is_some()
            || (self.cfg.reload_on_config_change && !self.sources.files.is_empty())
    }

    fn schedule_watch(&mut self, now: Instant) {
        self.watch.next = self.needs_watch().then(|| now + self.cfg.config_check_interval);
    }

    /// The periodic check: touch files, config sources, worker RSS.
    fn check_watched(&mut self, now: Instant) {
        let mut touched = None;
        for (path, seen) in &mut self.watch.touch {
            let m = mtime(path);
            if m.is_some() && m != *seen {
                touched = Some(path.display().to_string());
            }
            *seen = m;
        }
        if let Some(p) = touched {
            self.request_reload(&format!("touch-reload {p}"));
        }
        if let Some(limit) = self.cfg.reload_on_rss {
            let over: Vec<(u32, u64)> = self
                .slots
                .iter()
                .filter(|s| s.next.is_none())
                .filter_map(|s| {
                    let w = s.worker.as_ref()?;
                    let rss = sys::rss_bytes(w.pid)?;
                    (w.accepting() && rss > limit).then_some((s.id, rss))
                })
                .collect();
            for (id, rss) in over {
                tracing::warn!(worker = id, rss_bytes = rss, limit_bytes = limit, "worker over reload-on-rss");
                self.request_replace(id, "reload-on-rss");
            }
        }
        if self.cfg.reload_on_config_change && !self.sources.files.is_empty() {
            self.check_config(now);
        }
    }

    /// Re-reads the config sources; on a change, validates and applies it
    /// with a chain reload, or logs the error and keeps the running config.
    fn check_config(&mut self, _now: Instant) {
        let loaded = config::load(&self.sources, self.env.iter().cloned());
        let hash = match &loaded {
            Ok(e) => hash_entries(e),
            Err(e) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                e.to_string().hash(&mut h);
                h.finish()
            }
        };
        if hash == self.watch.config_hash {
            return;
        }
        self.watch.config_hash = hash;
        let result = loaded.and_then(|e| Config::resolve(&e)).and_then(|mut c| {
            c.finalize(&self.cwd)?;
            Ok(c)
        });
        match result {
            Err(e) => {
                self.counters.config_reloads_failed += 1;
                tracing::error!(error = %e, "config changed but is invalid; keeping the running configuration");
            }
            Ok(new) => {
                if let Err(e) = self.apply_config(new) {
                    self.counters.config_reloads_failed += 1;
                    tracing::error!(error = %e, "config changed but cannot be applied; keeping the running configuration");
                } else {
                    self.counters.config_reloads_ok += 1;
                }
            }
        }
    }

    fn apply_config(&mut self, mut new: Config) -> Result<(), String> {
        let names = |c: &Config| c.sockets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        // Inherited sockets are adopted once, at startup: a reload that
        // names an fd could otherwise close one the master owns.
        if let Some(s) = new.sockets.iter().find(|s| {
            matches!(s.spec, sockets::SocketSpec::Fd(_) | sockets::SocketSpec::Sd(_))
                && !self.listeners.iter().any(|l| l.name == s.name)
        }) {
            return Err(format!(
                "socket {}: fd:// and sd:// sockets are taken over only at startup; restart the instance to add one",
                s.name
            ));
        }
        if names(&new) != self.listeners.iter().map(|l| l.name.clone()).collect::<Vec<_>>() {
            // Keep sockets that stay (same fd, no gap for clients), bind new ones.
            let mut kept: Vec<Option<Listener>> = std::mem::take(&mut self.listeners).into_iter().map(Some).collect();
            let mut next = Vec::new();
            let mut to_bind = Vec::new();
            for s in &new.sockets {
                match kept.iter_mut().find(|l| l.as_ref().is_some_and(|l| l.name == s.name)).and_then(Option::take) {
                    Some(l) => next.push(Some(l)),
                    None => {
                        to_bind.push((s.name.clone(), s.spec.clone()));
                        next.push(None);
                    }
                }
            }
            let bound = match sockets::bind_all(&to_bind, &new.bind_options(), &mut sockets::Adopted::default()) {
                Ok((b, notices)) => {
                    for n in notices {
                        tracing::info!("{n}");
                    }
                    b
                }
                Err(e) => {
                    // Every listener we had, whether matched (in `next`) or not.
                    self.listeners = next.into_iter().chain(kept).flatten().collect();
                    // Restore configuration order of the kept listeners.
                    let order = names(&self.cfg);
                    self.listeners.sort_by_key(|l| order.iter().position(|n| *n == l.name));
                    return Err(e);
                }
            };
            let mut bound = bound.into_iter();
            self.listeners =
                next.into_iter().map(|l| l.or_else(|| bound.next())).collect::<Option<Vec<_>>>().unwrap_or_default();
            for l in &self.listeners {
                tracing::info!(socket = l.name.as_str(), local = l.local.as_str(), "socket in use");
            }
            self.retired_listeners.extend(kept.into_iter().flatten());
        }
        if new.probe_socket != self.cfg.probe_socket || new.log_format != self.cfg.log_format {
            tracing::warn!("probe-socket and log-format changes take effect at the next restart");
        }
        if new.processes != self.cfg.processes {
            tracing::info!(from = self.cfg.processes, to = new.processes, "config changes the number of workers");
        }
        let target = new.processes;
        // Keep the running values that cannot change live.
        new.probe_socket = self.cfg.probe_socket.clone();
        new.log_format = self.cfg.log_format;
        new.processes = self.cfg.processes;
        self.watch.touch = new.touch_reload.iter().map(|p| (p.clone(), mtime(p))).collect();
        self.cfg = new;
        while self.cfg.processes < target {
            self.scale_up();
        }
        while self.cfg.processes > target {
            self.scale_down();
        }
        tracing::info!("configuration reloaded");
        self.request_reload("config change");
        Ok(())
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
        self.scoreboard.publish(&records);
        self.shared.publish(snap);
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
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
        let phase = match self.phase {
            MasterPhase::Starting => Phase::Starting,
            MasterPhase::Running if self.rollout.as_ref().is_some_and(|r| r.full) => Phase::Reloading,
            MasterPhase::Running => Phase::Running,
            MasterPhase::Draining { .. } => Phase::Draining,
            MasterPhase::Exited { .. } => Phase::Exited,
        };
        let mut transitions: Vec<_> = self.slots.iter().filter_map(|s| s.next.as_ref().map(|w| w.view(s.id))).collect();
        transitions.extend(self.retiring.iter().map(|(id, w)| w.view(*id)));
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            phase,
            started_on: self.started_on.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            processes: self.cfg.processes,
            ready_target: self.cfg.ready_target(),
            config_sources: self.sources.files.iter().map(ToString::to_string).collect(),
            sockets: self
                .listeners
                .iter()
                .map(|l| SocketView {
                    name: l.name.clone(),
                    kind: l.kind,
                    local: l.local.clone(),
                    fd: l.fd.as_raw_fd(),
                })
                .collect(),
            workers: self.slots.iter().map(Slot::view).collect(),
            transitions,
            daemons: self
                .daemons
                .iter()
                .map(|d| DaemonView {
                    // argv[0] only: arguments may carry secrets (`env TOKEN=... cmd`).
                    command: d.argv.first().cloned().unwrap_or_default(),
                    pid: d.pid.map_or(0, Pid::as_raw),
                    respawn_count: d.respawns,
                })
                .collect(),
            reaped_orphans: self.counters.reaped_orphans,
            drain_seconds: self.drain_seconds,
            reloads_ok: self.counters.reloads_ok,
            reloads_aborted: self.counters.reloads_aborted,
            config_reloads_ok: self.counters.config_reloads_ok,
            config_reloads_failed: self.counters.config_reloads_failed,
            crash_loop: self.crash_loop.clone(),
            ever_ready: self.phase != MasterPhase::Starting,
        }
    }
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn nonblocking_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| format!("pipe2: {}", e.desc()))
}
