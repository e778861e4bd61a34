//! The master: one thread, one loop, owning every piece of mutable state
//! (the worker table, the phase, the deadlines). It sleeps in `poll` on
//! three fds — the signal pipe, the notify socket, the probe wake pipe —
//! with a timeout equal to the nearest deadline, so an idle master makes
//! no wakeups at all. After each turn it publishes a snapshot for the probe
//! thread.
//!
//! Signals become intents here and nowhere else (see the table in README):
//! TERM/INT → graceful drain, a second INT or QUIT → fast stop, HUP →
//! graceful restart of the workers, TTIN/TTOU → scale, USR1 → status log,
//! anything else → forwarded to the workers.

pub mod state;
pub mod workers;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::exit;
use crate::notify::{Notice, NotifySocket};
use crate::sockets::Listener;
use crate::sys;
use crate::worker::WorkerSpec;
use state::{Phase, Shared, Snapshot, SocketView};
use workers::{Slot, Worker, WorkerState, exit_reason};

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

/// Inputs the master is built from (resolved config, bound sockets).
pub struct MasterSetup {
    pub config: Config,
    pub listeners: Vec<Listener>,
    pub config_sources: Vec<String>,
    pub probe: Option<crate::probes::ProbeServer>,
}

pub struct Master {
    cfg: Config,
    exe: PathBuf,
    listeners: Vec<Listener>,
    socket_fds: Vec<RawFd>,
    notify: NotifySocket,
    shared: Arc<Shared>,
    signals: Signals,
    signal_wake: UnixStream,
    probe_wake: OwnedFd,
    slots: Vec<Slot>,
    phase: MasterPhase,
    next_generation: u64,
    started_on: SystemTime,
    reaped_orphans: u64,
    killed: u32,
    drain_seconds: Option<f64>,
    config_sources: Vec<String>,
}

impl Master {
    /// Sets up signal delivery and the notify socket. Must run before any
    /// worker exists, so no signal is missed.
    pub fn new(setup: MasterSetup) -> Result<Master, String> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let signals = Signals::new(HANDLED).map_err(|e| format!("installing signal handlers: {e}"))?;
        let (signal_wake, signal_write) = UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
        signal_wake.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
        signal_write.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
        for sig in HANDLED {
            let w = signal_write.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
            signal_hook::low_level::pipe::register(*sig, w).map_err(|e| format!("signal pipe: {e}"))?;
        }
        let (probe_wake, probe_write) = nonblocking_pipe()?;
        let notify = NotifySocket::bind()?;
        let started_on = SystemTime::now();
        let cfg = setup.config;
        let slots = (1..=cfg.processes).map(Slot::new).collect();
        let socket_fds = setup.listeners.iter().map(|l| l.fd.as_raw_fd()).collect();
        let m = Master {
            exe,
            listeners: setup.listeners,
            socket_fds,
            notify,
            shared: Arc::new(Shared::new(placeholder_snapshot(), probe_write)),
            signals,
            signal_wake,
            probe_wake,
            slots,
            phase: MasterPhase::Starting,
            next_generation: 1,
            started_on,
            reaped_orphans: 0,
            killed: 0,
            drain_seconds: None,
            config_sources: setup.config_sources,
            cfg,
        };
        m.shared.publish(m.snapshot());
        if let Some(probe) = setup.probe {
            probe.start(m.shared.clone()).map_err(|e| format!("probe server thread: {e}"))?;
        }
        Ok(m)
    }

    /// Runs until the drain completes; returns the process exit code.
    pub fn run(mut self) -> u8 {
        tracing::info!(
            sources = ?self.config_sources,
            processes = self.cfg.processes,
            sockets = ?self.listeners.iter().map(|l| &l.local).collect::<Vec<_>>(),
            "master starting"
        );
        let now = Instant::now();
        for i in 0..self.slots.len() {
            self.spawn(i, now);
        }
        loop {
            self.shared.publish(self.snapshot());
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
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for s in &self.slots {
            if let Some(t) = s.respawn_at {
                consider(t);
            }
            if let Some(Worker { state: WorkerState::Stopping { deadline, killed: false }, .. }) = &s.worker {
                consider(*deadline);
            }
        }
        if let MasterPhase::Draining { stop_at: Some(t), .. } = self.phase {
            consider(t);
        }
        next
    }

    fn on_signal(&mut self, sig: i32) {
        let Ok(signal) = Signal::try_from(sig) else {
            return;
        };
        match signal {
            Signal::SIGCHLD => {} // reaping follows every turn
            Signal::SIGTERM => self.begin_drain(false, signal),
            Signal::SIGINT => {
                let fast = matches!(self.phase, MasterPhase::Draining { .. });
                self.begin_drain(fast, signal);
            }
            Signal::SIGQUIT => self.begin_drain(true, signal),
            Signal::SIGHUP => self.restart_workers(),
            Signal::SIGUSR1 => self.log_status(),
            other => {
                tracing::info!(signal = other.as_str(), "forwarding signal to workers");
                for w in self.slots.iter().filter_map(|s| s.worker.as_ref()) {
                    sys::signal(w.pid, other);
                }
            }
        }
    }

    /// Graceful drain (or, when `fast`, a fast stop). A drain already under
    /// way only escalates: graceful → fast.
    fn begin_drain(&mut self, fast: bool, signal: Signal) {
        let now = Instant::now();
        match self.phase {
            MasterPhase::Exited { .. } => {}
            MasterPhase::Draining { fast: true, .. } => {}
            MasterPhase::Draining { since, code, .. } if fast => {
                tracing::warn!(signal = signal.as_str(), "fast stop requested during drain");
                self.phase = MasterPhase::Draining { since, stop_at: None, fast: true, code };
                self.stop_workers(Signal::SIGINT, now);
            }
            MasterPhase::Draining { .. } => {}
            MasterPhase::Starting | MasterPhase::Running => {
                let delay = if fast { Duration::ZERO } else { self.cfg.drain_delay };
                tracing::info!(
                    signal = signal.as_str(),
                    fast,
                    drain_delay_s = delay.as_secs_f64(),
                    mercy_s = self.cfg.worker_reload_mercy.as_secs_f64(),
                    "drain started"
                );
                self.phase = MasterPhase::Draining { since: now, stop_at: Some(now + delay), fast, code: exit::OK };
                for s in &mut self.slots {
                    s.respawn_at = None;
                }
                self.on_deadlines(now);
            }
        }
    }

    /// Sends `sig` to every live worker not yet stopping and starts its
    /// mercy deadline.
    fn stop_workers(&mut self, sig: Signal, now: Instant) {
        let deadline = now + self.cfg.worker_reload_mercy;
        for s in &mut self.slots {
            if let Some(w) = &mut s.worker {
                let already = matches!(w.state, WorkerState::Stopping { .. });
                if !already || sig == Signal::SIGINT {
                    sys::signal(w.pid, sig);
                    tracing::info!(worker = s.id, pid = w.pid.as_raw(), signal = sig.as_str(), "stopping worker");
                }
                if !already {
                    w.state = WorkerState::Stopping { deadline, killed: false };
                }
            }
        }
    }

    fn stop_signal(&self) -> Signal {
        // Python override workers stop on SIGHUP, as under uWSGI.
        self.cfg.worker_stop_signal.unwrap_or(Signal::SIGHUP)
    }

    /// HUP: replace every worker. The chain reload (replacement first)
    /// is the supervision issue's; until then each worker is stopped
    /// gracefully and respawned in its slot.
    fn restart_workers(&mut self) {
        if !matches!(self.phase, MasterPhase::Running | MasterPhase::Starting) {
            return;
        }
        tracing::info!("graceful restart of all workers requested (SIGHUP)");
        let sig = self.stop_signal();
        let now = Instant::now();
        let deadline = now + self.cfg.worker_reload_mercy;
        for s in &mut self.slots {
            if let Some(w) = &mut s.worker {
                if !matches!(w.state, WorkerState::Stopping { .. }) {
                    sys::signal(w.pid, sig);
                    w.state = WorkerState::Stopping { deadline, killed: false };
                }
            }
        }
    }

    fn on_deadlines(&mut self, now: Instant) {
        if let MasterPhase::Draining { since, stop_at: Some(t), fast, code } = self.phase {
            if now >= t {
                self.phase = MasterPhase::Draining { since, stop_at: None, fast, code };
                let sig = if fast { Signal::SIGINT } else { self.stop_signal() };
                self.stop_workers(sig, now);
            }
        }
        for s in &mut self.slots {
            if let Some(w) = &mut s.worker {
                if let WorkerState::Stopping { deadline, killed: false } = w.state {
                    if now >= deadline {
                        tracing::warn!(
                            worker = s.id,
                            pid = w.pid.as_raw(),
                            mercy_s = self.cfg.worker_reload_mercy.as_secs_f64(),
                            "worker did not stop within worker-reload-mercy; sending SIGKILL"
                        );
                        sys::signal_group(w.pid, Signal::SIGKILL);
                        sys::signal(w.pid, Signal::SIGKILL);
                        w.state = WorkerState::Stopping { deadline, killed: true };
                        self.killed += 1;
                    }
                }
            }
        }
        let draining = matches!(self.phase, MasterPhase::Draining { .. });
        for i in 0..self.slots.len() {
            if self.slots[i].respawn_at.is_some_and(|t| now >= t) && !draining {
                self.slots[i].respawn_at = None;
                self.slots[i].respawn_count += 1;
                self.spawn(i, now);
            }
        }
        self.maybe_finish_drain(now);
    }

    fn maybe_finish_drain(&mut self, now: Instant) {
        let MasterPhase::Draining { since, stop_at: None, code, .. } = self.phase else {
            return;
        };
        if self.slots.iter().any(|s| s.worker.is_some()) {
            return;
        }
        // Workers are gone; whatever they left behind (orphans adopted by
        // us) must not outlive the master.
        let leftovers = sys::children();
        for pid in &leftovers {
            sys::signal(*pid, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !sys::children().is_empty() && Instant::now() < deadline {
            self.reaped_orphans += sys::reap_all().len() as u64;
            std::thread::yield_now();
        }
        self.reaped_orphans += sys::reap_all().len() as u64;
        let secs = now.duration_since(since).as_secs_f64();
        self.drain_seconds = Some(secs);
        let code = if self.killed > 0 && code == exit::OK { exit::KILLED } else { code };
        tracing::info!(
            duration_s = secs,
            killed = self.killed,
            leftover_processes = leftovers.len(),
            exit_code = code,
            "drain finished"
        );
        self.phase = MasterPhase::Exited { code };
    }

    fn spawn(&mut self, i: usize, now: Instant) {
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
            chdir: self.cfg.chdir.clone(),
            virtualenv: self.cfg.virtualenv.clone(),
            pythonpath: self.cfg.pythonpath.clone(),
            log_format: self.cfg.log_format,
            opt: self.cfg.opt.clone(),
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
        let result = sys::spawn(sys::SpawnSpec {
            exe: &self.exe,
            argv0: &argv0,
            args: &[],
            env,
            sockets: &self.socket_fds,
            new_process_group: true,
            die_with_master: true,
        });
        let slot = &mut self.slots[i];
        slot.spawns += 1;
        match result {
            Ok(pid) => {
                tracing::info!(worker = id, pid = pid.as_raw(), generation, "worker spawned");
                slot.worker =
                    Some(Worker { pid, generation, spawned_at: SystemTime::now(), state: WorkerState::Starting });
            }
            Err(e) => {
                let wait = slot.note_exit("spawn_failed", None, now);
                tracing::error!(worker = id, error = %e, retry_in_s = wait.as_secs_f64(), "cannot spawn worker");
                slot.respawn_at = Some(now + wait);
            }
        }
    }

    fn reap(&mut self) {
        let now = Instant::now();
        for (pid, status) in sys::reap_all() {
            match self.slots.iter().position(|s| s.worker.as_ref().is_some_and(|w| w.pid == pid)) {
                Some(i) => self.on_worker_exit(i, status, now),
                None => {
                    self.reaped_orphans += 1;
                    tracing::debug!(pid = pid.as_raw(), status = exit_reason(&status), "orphan reaped");
                }
            }
        }
        self.maybe_finish_drain(now);
    }

    fn on_worker_exit(&mut self, i: usize, status: WaitStatus, now: Instant) {
        let Some(w) = self.slots[i].worker.take() else {
            return;
        };
        let reason = exit_reason(&status);
        let runtime = w.spawned_at.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let id = self.slots[i].id;
        let accepting_since = match w.state {
            WorkerState::Accepting { since } => Some(since),
            _ => None,
        };
        let expected = matches!(w.state, WorkerState::Stopping { .. });
        let wait = self.slots[i].note_exit(&reason, accepting_since, now);
        let fields = (id, w.pid.as_raw(), reason.as_str(), runtime);
        match self.phase {
            MasterPhase::Draining { .. } | MasterPhase::Exited { .. } => {
                tracing::info!(
                    worker = fields.0,
                    pid = fields.1,
                    status = fields.2,
                    runtime_s = fields.3,
                    "worker exited"
                );
            }
            MasterPhase::Starting if !expected && accepting_since.is_none() => {
                tracing::error!(
                    worker = fields.0,
                    pid = fields.1,
                    status = fields.2,
                    "worker exited before it was ready, during startup; stopping (see the worker's output above)"
                );
                self.fail_startup();
            }
            _ if expected => {
                tracing::info!(
                    worker = fields.0,
                    pid = fields.1,
                    status = fields.2,
                    runtime_s = fields.3,
                    "worker exited; respawning"
                );
                self.slots[i].respawn_count += 1;
                self.spawn(i, now);
            }
            _ => {
                tracing::warn!(
                    worker = fields.0,
                    pid = fields.1,
                    status = fields.2,
                    runtime_s = fields.3,
                    respawn_in_s = wait.as_secs_f64(),
                    "worker exited unexpectedly"
                );
                self.slots[i].respawn_at = Some(now + wait);
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
        self.stop_workers(Signal::SIGINT, now);
    }

    fn on_notice(&mut self, pid: i32, notice: Notice) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.worker.as_ref().is_some_and(|w| w.pid.as_raw() == pid))
        else {
            tracing::debug!(pid, ?notice, "notify message from a process that is not a worker; ignored");
            return;
        };
        let id = slot.id;
        let Some(w) = slot.worker.as_mut() else {
            return;
        };
        match (notice, w.state) {
            (Notice::Ready, WorkerState::Starting) => {
                w.state = WorkerState::Accepting { since: Instant::now() };
                tracing::info!(worker = id, pid, generation = w.generation, "worker accepting");
            }
            (Notice::Stopping, WorkerState::Accepting { .. }) => {
                w.state = WorkerState::Starting;
                tracing::info!(worker = id, pid, "worker stopped accepting");
            }
            _ => {}
        }
        if self.phase == MasterPhase::Starting {
            let n = self.slots.iter().filter(|s| s.worker.as_ref().is_some_and(Worker::accepting)).count() as u32;
            if n >= self.cfg.ready_target() {
                tracing::info!(accepting = n, processes = self.cfg.processes, "instance ready");
                self.phase = MasterPhase::Running;
            }
        }
    }

    fn log_status(&self) {
        for s in &self.slots {
            let v = s.view();
            tracing::info!(worker = v.id, pid = v.pid, state = v.state, respawn_count = v.respawn_count, "status");
        }
    }

    fn snapshot(&self) -> Snapshot {
        let phase = match self.phase {
            MasterPhase::Starting => Phase::Starting,
            MasterPhase::Running => Phase::Running,
            MasterPhase::Draining { .. } => Phase::Draining,
            MasterPhase::Exited { .. } => Phase::Exited,
        };
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            phase,
            started_on: self.started_on.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            processes: self.cfg.processes,
            ready_target: self.cfg.ready_target(),
            config_sources: self.config_sources.clone(),
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
            reaped_orphans: self.reaped_orphans,
            drain_seconds: self.drain_seconds,
        }
    }
}

fn placeholder_snapshot() -> Snapshot {
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        phase: Phase::Starting,
        started_on: 0,
        processes: 0,
        ready_target: 0,
        config_sources: vec![],
        sockets: vec![],
        workers: vec![],
        reaped_orphans: 0,
        drain_seconds: None,
    }
}

fn nonblocking_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| format!("pipe2: {}", e.desc()))
}
