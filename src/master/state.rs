//! What the outside world may see of the master: an immutable [`Snapshot`]
//! the main loop publishes after every change, and a [`Heartbeat`] that
//! proves the loop still turns. The probe thread only reads these; it never
//! touches the master's own state. Readiness is computed from a snapshot,
//! never stored.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

/// The master's lifecycle phase, as observed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Running,
    Reloading,
    Draining,
    Exited,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Starting, Phase::Running, Phase::Reloading, Phase::Draining, Phase::Exited];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Reloading => "reloading",
            Phase::Draining => "draining",
            Phase::Exited => "exited",
        }
    }
}

/// One worker slot as seen from outside; keys follow uWSGI's stats JSON
/// (`id`, `pid`, `accepting`, `respawn_count`, `last_spawn`) plus ours.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: u32,
    /// 0 while the slot has no process (waiting to respawn).
    pub pid: i32,
    pub generation: u64,
    /// starting | accepting | stopping | down
    pub state: &'static str,
    pub accepting: u8,
    pub respawn_count: u64,
    /// Unix time of the last spawn, seconds (uWSGI: `last_spawn`).
    pub last_spawn: u64,
    pub spawns_total: u64,
    /// Consecutive starts that never reached accepting.
    pub failed_starts: u32,
    /// Exit reasons (`exit_code=N` / `signal=NAME`) and how often each was seen.
    pub exits: Vec<(String, u64)>,
    /// Exits that were the kernel's OOM killer (the cgroup's counter rose).
    pub oom_kills: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SocketView {
    pub name: String,
    pub kind: &'static str,
    pub local: String,
    pub fd: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub pid: u32,
    pub phase: Phase,
    /// Unix time the master started, seconds.
    pub started_on: u64,
    pub processes: u32,
    pub ready_target: u32,
    pub config_sources: Vec<String>,
    pub sockets: Vec<SocketView>,
    /// One entry per slot: the worker serving it.
    pub workers: Vec<WorkerView>,
    /// Processes in transition: replacements starting, old ones retiring.
    pub transitions: Vec<WorkerView>,
    pub daemons: Vec<DaemonView>,
    pub reaped_orphans: u64,
    /// Duration of the last finished drain, seconds.
    pub drain_seconds: Option<f64>,
    pub reloads_ok: u64,
    pub reloads_aborted: u64,
    pub config_reloads_ok: u64,
    pub config_reloads_failed: u64,
    /// Set when a slot exceeded `max-failed-starts`: `/livez` fails with it.
    pub crash_loop: Option<String>,
    /// The instance has been ready at least once (`/startupz`).
    pub ever_ready: bool,
    /// Python workers are forked from a zygote (not `lazy-apps`).
    pub preforked: bool,
    pub zygotes: Vec<ZygoteView>,
    /// Zygotes started again after one died.
    pub zygote_restarts: u64,
    /// Workers the kernel's OOM killer took.
    pub oom_kills: u64,
    /// Workers recycled, by reason label (`lifetime`, `rss`, `cgroup_memory`).
    pub recycles: Vec<(&'static str, u64)>,
    /// Slots whose worker has run `worker-ready-warning` without reporting
    /// accepting (named in `/readyz`).
    pub slow_starts: Vec<u32>,
    /// How `processes = auto` sized the workers.
    pub processes_source: Option<String>,
    /// The container's cgroup, read by the probe thread at scrape time.
    #[serde(skip)]
    pub cgroup: Option<std::sync::Arc<crate::cgroup::Cgroup>>,
    /// The WSGI worker serves requests: the `podmaster_http_*` metrics exist.
    #[serde(skip)]
    pub serves_http: bool,
    /// Request-metrics rows handed out so far, and (worker id, row) of
    /// every live worker process.
    #[serde(skip)]
    pub http_rows_used: u32,
    #[serde(skip)]
    pub http_rows: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonView {
    pub command: String,
    pub pid: i32,
    pub respawn_count: u64,
}

/// A zygote as seen from outside (memory is added by the probe thread).
#[derive(Debug, Clone, Serialize)]
pub struct ZygoteView {
    pub pid: i32,
    /// The code generation it imported.
    pub generation: u64,
    /// starting | ready | stopping
    pub state: &'static str,
    /// current (respawns fork from it) | next (a reload's new code) | old
    pub role: &'static str,
}

impl Snapshot {
    /// A snapshot with no workers, phase Starting (before the first publish).
    pub fn empty() -> Snapshot {
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
            transitions: vec![],
            daemons: vec![],
            reaped_orphans: 0,
            drain_seconds: None,
            reloads_ok: 0,
            reloads_aborted: 0,
            config_reloads_ok: 0,
            config_reloads_failed: 0,
            crash_loop: None,
            ever_ready: false,
            preforked: false,
            zygotes: vec![],
            zygote_restarts: 0,
            oom_kills: 0,
            recycles: Vec::new(),
            processes_source: None,
            cgroup: None,
            slow_starts: Vec::new(),
            serves_http: false,
            http_rows_used: 0,
            http_rows: Vec::new(),
        }
    }

    pub fn accepting(&self) -> u32 {
        self.workers.iter().filter(|w| w.accepting == 1).count() as u32
    }

    /// ready ⇔ Running or Reloading ∧ accepting ≥ target. The text is the
    /// `/readyz` body: the verdict and why.
    pub fn readiness(&self) -> (bool, String) {
        let n = self.accepting();
        let counts = format!("{n}/{} workers accepting", self.processes);
        match self.phase {
            Phase::Running | Phase::Reloading if n >= self.ready_target => (true, format!("ready: {counts}")),
            Phase::Running | Phase::Reloading | Phase::Starting => {
                let mut why = format!("not ready: {counts} (need {})", self.ready_target);
                if !self.slow_starts.is_empty() {
                    let ids: Vec<String> = self.slow_starts.iter().take(8).map(u32::to_string).collect();
                    why += &format!(
                        "; worker {} never reported accepting: call uwsgi.accepting() once the server listens, \
                         or set worker-ready-mode = spawn",
                        ids.join(", ")
                    );
                }
                (false, why)
            }
            Phase::Draining | Phase::Exited => (false, format!("not ready: {} ({counts})", self.phase.name())),
        }
    }
}

/// The snapshot cell: the main loop swaps in a new `Arc`, readers clone the
/// current one. The lock is held only for the pointer copy.
pub struct Shared {
    snapshot: Mutex<Arc<Snapshot>>,
    pub heartbeat: Heartbeat,
}

impl Shared {
    pub fn new(first: Snapshot, wake: OwnedFd) -> Shared {
        Shared { snapshot: Mutex::new(Arc::new(first)), heartbeat: Heartbeat::new(wake) }
    }

    pub fn publish(&self, s: Snapshot) {
        let next = Arc::new(s);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = next;
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Liveness without polling: a prober wakes the main loop through a pipe
/// and waits for the loop to count one more turn. An idle master thus
/// makes no wakeups of its own, yet a wedged loop is detected.
pub struct Heartbeat {
    turns: Mutex<u64>,
    turned: Condvar,
    wake: OwnedFd,
}

impl Heartbeat {
    fn new(wake: OwnedFd) -> Heartbeat {
        Heartbeat { turns: Mutex::new(0), turned: Condvar::new(), wake }
    }

    /// Called by the main loop once per turn.
    pub fn beat(&self) {
        *self.turns.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.turned.notify_all();
    }

    /// True when the main loop turns within `timeout` of being woken.
    pub fn ping(&self, timeout: Duration) -> bool {
        let guard = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *guard;
        // A full pipe (EAGAIN) means wakeups are already pending: fine.
        let _ = nix::unistd::write(&self.wake, b"!");
        let (_guard, res) =
            self.turned.wait_timeout_while(guard, timeout, |n| *n == seen).unwrap_or_else(|p| p.into_inner());
        !res.timed_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(phase: Phase, accepting: &[bool], target: u32) -> Snapshot {
        Snapshot {
            phase,
            processes: accepting.len() as u32,
            ready_target: target,
            workers: accepting
                .iter()
                .enumerate()
                .map(|(i, a)| WorkerView {
                    id: i as u32 + 1,
                    pid: 10 + i as i32,
                    generation: 1,
                    state: if *a { "accepting" } else { "starting" },
                    accepting: u8::from(*a),
                    respawn_count: 0,
                    last_spawn: 0,
                    spawns_total: 1,
                    failed_starts: 0,
                    exits: vec![],
                    oom_kills: 0,
                })
                .collect(),
            ..Snapshot::empty()
        }
    }

    #[test]
    fn readiness_is_phase_and_count() {
        assert_eq!(snap(Phase::Running, &[true; 4], 4).readiness(), (true, "ready: 4/4 workers accepting".into()));
        assert_eq!(
            snap(Phase::Running, &[true, true, false, false], 4).readiness(),
            (false, "not ready: 2/4 workers accepting (need 4)".into())
        );
        assert!(snap(Phase::Reloading, &[true, true, true, false], 3).readiness().0);
        assert!(!snap(Phase::Starting, &[true; 4], 4).readiness().0);
        assert_eq!(
            snap(Phase::Draining, &[true; 4], 4).readiness(),
            (false, "not ready: draining (4/4 workers accepting)".into())
        );
    }
}
