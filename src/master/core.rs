//! The master's state machine, without the world: the process table, the
//! slots, the daemons, the phase, the rollout and the counters, driven by
//! events (a signal's intent, a child's exit, a notify message, the clock)
//! and acting only through the [`Os`] trait (spawn, signal, clock). The
//! real [`super::Master`] owns the fds and the loop and plugs in
//! [`super::os::RealOs`]; the unit tests plug in a fake and start no process.
//!
//! Concerns are split over files, each an `impl Core` block: spawning
//! (`spawn.rs`), exits and notify messages (`reap.rs`), chain reload,
//! recycling and scaling (`rollout.rs`), drain (`drain.rs`). This file holds
//! the phase, readiness, deadlines and the views.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::slots::{BACKOFF_START, Slot};
use super::state::{DaemonView, Phase, WorkerView};
use super::table::Table;
use super::zygote::Zygotes;
use crate::config::{Config, ReadyMode, ReadyWorkers};

/// What the state machine needs from the operating system.
pub trait Os {
    fn now(&self) -> Instant;
    /// Starts a worker process (exec'd, or forked by `req.zygote`); the
    /// error says why not (for the log).
    fn spawn_worker(&mut self, req: &WorkerRequest) -> std::io::Result<Pid>;
    /// Starts the zygote of code generation `generation`.
    fn spawn_zygote(&mut self, generation: u64) -> std::io::Result<Pid>;
    /// Asks a zygote to exit: no more fork requests (its control socket is
    /// closed) and SIGTERM.
    fn retire_zygote(&mut self, pid: Pid);
    /// A zygote was reaped: forget it (its control socket is closed).
    fn zygote_gone(&mut self, pid: Pid);
    fn spawn_daemon(&mut self, argv: &[String]) -> std::io::Result<Pid>;
    fn signal(&mut self, pid: Pid, sig: Signal);
    /// Signals the process group `pid` leads.
    fn signal_group(&mut self, pid: Pid, sig: Signal);
    /// The drain began: tell the workers (the scoreboard's flag).
    fn draining(&mut self);
    /// The drain is over: kill and reap whatever is left of our children
    /// (orphans adopted by us). Returns (processes left, processes reaped).
    fn final_sweep(&mut self) -> (usize, u64);
}

/// One worker to start, as the state machine asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRequest {
    pub slot: u32,
    pub generation: u64,
    /// The number of worker slots now (uWSGI's `numproc`).
    pub processes: u32,
    /// The slot had a process before (a respawn or a reload).
    pub respawn: bool,
    /// The ready zygote to fork it from (None: fork+exec).
    pub zygote: Option<Pid>,
    /// Its row in the request-metrics region: one no live process holds
    /// (None when every row is held, which 2 rows per slot make rare).
    pub http_row: Option<u32>,
}

/// The configuration values the state machine decides with; rebuilt when
/// the configuration is reloaded.
#[derive(Debug, Clone)]
pub struct Settings {
    pub drain_delay: Duration,
    pub mercy: Duration,
    pub chain_reload_timeout: Duration,
    pub stop_signal: Signal,
    pub ready_workers: ReadyWorkers,
    /// `ready-mode = spawn`: a worker counts as accepting once spawned.
    pub ready_on_spawn: bool,
    pub backoff_max: Duration,
    pub max_failed_starts: u32,
    pub lifetime: Option<Duration>,
    pub lifetime_delta: Duration,
    /// Python workers are forked from a zygote (not `lazy-apps`).
    pub preforked: bool,
    /// `worker-ready-warning`: a worker starting for this long without
    /// reporting accepting is warned about once (None: never).
    pub ready_warning: Option<Duration>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            drain_delay: c.drain_delay,
            mercy: c.worker_reload_mercy,
            chain_reload_timeout: c.chain_reload_timeout,
            stop_signal: c.stop_signal(),
            ready_workers: c.ready_workers,
            ready_on_spawn: c.ready_mode == ReadyMode::Spawn,
            backoff_max: c.respawn_backoff_max,
            max_failed_starts: c.max_failed_starts,
            lifetime: c.max_worker_lifetime,
            lifetime_delta: c.max_worker_lifetime_delta,
            preforked: c.preforked(),
            ready_warning: Some(c.worker_ready_warning).filter(|d| !d.is_zero()),
        }
    }
}

/// The master's phase with the data each phase needs:
/// `Starting → Running ⇄ Reloading → Draining → Exited`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MasterPhase {
    /// Workers spawned, the ready target not yet reached once.
    Starting,
    Running,
    /// A chain reload of every worker is under way.
    Reloading,
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

impl MasterPhase {
    pub fn observed(self) -> Phase {
        match self {
            MasterPhase::Starting => Phase::Starting,
            MasterPhase::Running => Phase::Running,
            MasterPhase::Reloading => Phase::Reloading,
            MasterPhase::Draining { .. } => Phase::Draining,
            MasterPhase::Exited { .. } => Phase::Exited,
        }
    }
}

/// Replacing workers one slot at a time, replacement first.
#[derive(Debug)]
pub struct Rollout {
    /// Slot ids still to replace.
    pub queue: VecDeque<u32>,
    /// The slot whose replacement is starting, and its ready deadline.
    pub current: Option<(u32, Instant)>,
    /// A chain reload of every worker (phase Reloading), not a recycle.
    pub full: bool,
    /// Another reload was requested meanwhile: run once more when done.
    pub again: bool,
    pub since: Instant,
    pub reason: String,
}

/// A supervised side process (`attach-daemon`); its process, when it has
/// one, is `Role::Daemon { index }` in the table.
#[derive(Debug)]
pub struct Daemon {
    pub argv: Vec<String>,
    pub respawn_at: Option<Instant>,
    pub backoff: Duration,
    pub respawns: u64,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub reaped_orphans: u64,
    pub killed: u32,
    pub reloads_ok: u64,
    pub reloads_aborted: u64,
    /// Rollouts that ran to the end (sockets retired before can close).
    pub rollouts_finished: u64,
    /// Workers recycled, by reason ([`Recycle::label`]).
    pub recycles: [u64; Recycle::ALL.len()],
    /// Workers the kernel's OOM killer took (the cgroup's counter rose).
    pub oom_kills: u64,
}

/// Why one worker is replaced although nothing is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    /// `max-worker-lifetime`.
    Lifetime,
    /// `reload-on-rss`.
    Rss,
    /// `reload-on-cgroup-memory`.
    CgroupMemory,
    /// `max-requests`: the worker said it served its share.
    MaxRequests,
    /// `harakiri`: the worker said a request of its ran too long.
    Harakiri,
}

impl Recycle {
    pub const ALL: [Recycle; 5] =
        [Recycle::Lifetime, Recycle::Rss, Recycle::CgroupMemory, Recycle::MaxRequests, Recycle::Harakiri];

    /// The `reason` label of `podmaster_worker_recycles_total`.
    pub fn label(self) -> &'static str {
        match self {
            Recycle::Lifetime => "lifetime",
            Recycle::Rss => "rss",
            Recycle::CgroupMemory => "cgroup_memory",
            Recycle::MaxRequests => "max_requests",
            Recycle::Harakiri => "harakiri",
        }
    }

    /// The option that asked for it, for logs.
    pub fn option(self) -> &'static str {
        match self {
            Recycle::Lifetime => "max-worker-lifetime",
            Recycle::Rss => "reload-on-rss",
            Recycle::CgroupMemory => "reload-on-cgroup-memory",
            Recycle::MaxRequests => "max-requests",
            Recycle::Harakiri => "harakiri",
        }
    }
}

pub struct Core<O: Os> {
    pub os: O,
    pub set: Settings,
    pub table: Table,
    pub slots: Vec<Slot>,
    pub daemons: Vec<Daemon>,
    pub phase: MasterPhase,
    pub rollout: Option<Rollout>,
    /// A reload asked for before the instance was first ready.
    pub reload_when_ready: bool,
    pub next_generation: u64,
    pub counters: Counters,
    pub drain_seconds: Option<f64>,
    /// Request-metrics rows handed out so far (the highest + 1): the
    /// probe thread sums rows below it.
    pub http_rows_used: u32,
    pub crash_loop: Option<String>,
    pub zygotes: Zygotes,
}

impl<O: Os> Core<O> {
    pub fn new(os: O, set: Settings, processes: u32, daemons: &[Vec<String>]) -> Core<O> {
        Core {
            os,
            zygotes: Zygotes::new(set.preforked),
            set,
            table: Table::default(),
            slots: (1..=processes).map(Slot::new).collect(),
            daemons: daemons
                .iter()
                .map(|argv| Daemon { argv: argv.clone(), respawn_at: None, backoff: BACKOFF_START, respawns: 0 })
                .collect(),
            phase: MasterPhase::Starting,
            rollout: None,
            reload_when_ready: false,
            next_generation: 1,
            counters: Counters::default(),
            drain_seconds: None,
            http_rows_used: 0,
            crash_loop: None,
        }
    }

    /// Spawns every slot's worker (preforked: the zygote first; the
    /// workers once it is ready) and every daemon.
    pub fn start(&mut self) {
        let now = self.os.now();
        if self.zygotes.enabled {
            self.start_zygote(now, false);
        }
        for i in 0..self.slots.len() {
            self.spawn_slot(i, now);
        }
        for i in 0..self.daemons.len() {
            self.spawn_daemon(i, now);
        }
    }

    /// The one place the phase changes; each change of the observable
    /// phase is logged as one event.
    pub fn set_phase(&mut self, to: MasterPhase, cause: &str) {
        let from = std::mem::replace(&mut self.phase, to);
        if from.observed() != to.observed() {
            tracing::info!(from = from.observed().name(), to = to.observed().name(), cause, "phase");
            if matches!(to, MasterPhase::Draining { .. }) {
                self.os.draining();
            }
        }
    }

    /// Running or Reloading: serving, and open to reloads and recycling.
    pub fn serving(&self) -> bool {
        matches!(self.phase, MasterPhase::Running | MasterPhase::Reloading)
    }

    pub fn stopping(&self) -> bool {
        matches!(self.phase, MasterPhase::Draining { .. } | MasterPhase::Exited { .. })
    }

    pub fn processes(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn ready_target(&self) -> u32 {
        self.set.ready_workers.target(self.processes())
    }

    pub fn slot_index(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// Slots whose current worker accepts.
    pub fn accepting(&self) -> u32 {
        self.slots.iter().filter(|s| self.table.worker(s.id).is_some_and(|w| w.accepting())).count() as u32
    }

    /// Starting → Running once the ready target is first reached.
    pub fn check_ready(&mut self) {
        if self.phase != MasterPhase::Starting {
            return;
        }
        let n = self.accepting();
        if n >= self.ready_target() {
            tracing::info!(accepting = n, processes = self.processes(), "instance ready");
            self.set_phase(MasterPhase::Running, "ready target reached");
            if std::mem::take(&mut self.reload_when_ready) {
                self.request_reload("reload requested during startup");
            }
        }
    }

    /// Forwards a signal the master does not handle to every worker process.
    pub fn forward(&mut self, sig: Signal) {
        tracing::info!(signal = sig.as_str(), "forwarding signal to workers");
        let pids: Vec<Pid> = self.table.workers().map(|p| p.pid).collect();
        for pid in pids {
            self.os.signal(pid, sig);
        }
    }

    /// The nearest moment something is due (None: nothing is).
    pub fn next_deadline(&self) -> Option<Instant> {
        let retire_due = self.serving();
        let procs = self.table.iter().flat_map(|p| {
            let retire = matches!(p.role, super::table::Role::Worker { .. } | super::table::Role::Replacement { .. })
                && retire_due;
            [p.kill_deadline(), p.retire_at.filter(|_| retire), self.slow_start_deadline(p)]
        });
        let drain = match self.phase {
            MasterPhase::Draining { stop_at, .. } => stop_at,
            _ => None,
        };
        procs
            .chain(self.slots.iter().map(|s| s.respawn_at))
            .chain(self.daemons.iter().map(|d| d.respawn_at))
            .chain([drain, self.rollout.as_ref().and_then(|r| r.current.map(|(_, t)| t)), self.zygote_deadline()])
            .flatten()
            .min()
    }

    /// When worker `p` is due a warning for never reporting accepting.
    fn slow_start_deadline(&self, p: &super::table::Proc) -> Option<Instant> {
        let slot = matches!(p.role, super::table::Role::Worker { .. } | super::table::Role::Replacement { .. });
        let waiting = slot && p.state == super::table::ProcState::Starting && !p.slow_start_warned;
        self.set.ready_warning.filter(|_| waiting).map(|d| p.started + d)
    }

    /// Warns once about each worker that has run `worker-ready-warning`
    /// without reporting accepting: the usual cause is a script that never
    /// calls `uwsgi.accepting()`, which leaves the pod unready for good.
    fn warn_slow_starts(&mut self, now: Instant) {
        let due: Vec<(Pid, u32)> = self
            .table
            .iter()
            .filter(|p| self.slow_start_deadline(p).is_some_and(|t| now >= t))
            .map(|p| (p.pid, p.role.slot().unwrap_or_default()))
            .collect();
        for (pid, id) in due {
            self.table.set_slow_start_warned(pid);
            let secs = self.set.ready_warning.map_or(0, |d| d.as_secs());
            tracing::warn!(
                worker = id,
                pid = pid.as_raw(),
                seconds = secs,
                "worker has not reported accepting: call uwsgi.accepting() once your server listens \
                 (or send READY=1), or set worker-ready-mode = spawn to count workers as ready when they start"
            );
        }
    }

    /// Everything due at `now`: drain stop, SIGKILLs, respawns, recycling
    /// by lifetime, the reload timeout; then the rollout and drain advance.
    pub fn on_deadlines(&mut self, now: Instant) {
        self.warn_slow_starts(now);
        self.drain_deadlines(now);
        self.zygote_deadlines(now);
        if !self.stopping() {
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
        if self.serving() {
            let overdue: Vec<(u32, Pid)> = self
                .slots
                .iter()
                .filter(|s| self.table.replacement(s.id).is_none())
                .filter_map(|s| self.table.worker(s.id).filter(|w| w.retire_at.is_some_and(|t| now >= t)))
                .map(|w| (w.role.slot().unwrap_or_default(), w.pid))
                .collect();
            for (id, pid) in overdue {
                self.table.clear_retire_at(pid);
                self.recycle(id, Recycle::Lifetime);
            }
        }
        if let Some((id, deadline)) = self.rollout.as_ref().and_then(|r| r.current) {
            if now >= deadline {
                let secs = self.set.chain_reload_timeout.as_secs_f64();
                self.abort_rollout(
                    id,
                    &format!("replacement did not report accepting within {secs} s (chain-reload-timeout)"),
                    now,
                );
            }
        }
        self.settle(now);
    }

    /// Lets the rollout and the drain advance after any change.
    pub fn settle(&mut self, now: Instant) {
        self.rollout_step(now);
        self.maybe_finish_drain(now);
    }

    /// One entry per slot: the worker serving it.
    pub fn worker_views(&self) -> Vec<WorkerView> {
        self.slots.iter().map(|s| s.view(self.table.worker(s.id))).collect()
    }

    /// Replacements starting, then old workers retiring.
    pub fn transition_views(&self) -> Vec<WorkerView> {
        let mut v: Vec<WorkerView> =
            self.slots.iter().filter_map(|s| self.table.replacement(s.id).map(|w| w.view(s.id))).collect();
        v.extend(self.table.retiring().map(|w| w.view(w.role.slot().unwrap_or_default())));
        v
    }

    pub fn daemon_views(&self) -> Vec<DaemonView> {
        self.daemons
            .iter()
            .enumerate()
            .map(|(i, d)| DaemonView {
                command: daemon_name(&d.argv),
                pid: self.table.daemon(i).map_or(0, |p| p.pid.as_raw()),
                respawn_count: d.respawns,
            })
            .collect()
    }
}

/// `max-worker-lifetime` plus a random share of the delta, so workers
/// started together are not all replaced at the same moment.
pub fn lifetime(set: &Settings) -> Option<Duration> {
    let base = set.lifetime?;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Some(base + set.lifetime_delta.mul_f64(f64::from(nanos % 1000) / 1000.0))
}

/// What `/status` shows of a daemon's command: `argv[0]` only, since
/// arguments may carry secrets (`env TOKEN=... cmd`), and not even that
/// when it is an assignment (`TOKEN=... cmd`, as shells write it).
fn daemon_name(argv: &[String]) -> String {
    match argv.first() {
        Some(a) if a.contains('=') => format!("{}=<hidden>", a.split('=').next().unwrap_or_default()),
        Some(a) => a.clone(),
        None => String::new(),
    }
}
