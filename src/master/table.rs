//! The process table: every child the master owns — current workers,
//! their replacements, retiring workers, daemons — is one [`Proc`] with a
//! [`Role`] and a [`ProcState`]. A pid is found in one place; every change
//! of role or state goes through [`Table::set_role`] / [`Table::set_state`],
//! which log it. A process that exits is removed (its slot's counters keep
//! the record). Only the main loop owns the table.

use std::time::{Instant, SystemTime};

use nix::unistd::Pid;

use super::state::WorkerView;

/// What a process is to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The process serving slot `slot`.
    Worker { slot: u32 },
    /// Starting to take slot `slot` over (chain reload, recycling).
    Replacement { slot: u32 },
    /// Told to stop (replaced, scaled away, a failed replacement).
    Retiring { slot: u32 },
    /// `attach-daemon` number `index`.
    Daemon { index: usize },
    /// The zygote of code generation `generation` (preforked workers).
    Zygote { generation: u64 },
}

impl Role {
    /// The worker slot, for every role but daemons.
    pub fn slot(self) -> Option<u32> {
        match self {
            Role::Worker { slot } | Role::Replacement { slot } | Role::Retiring { slot } => Some(slot),
            Role::Daemon { .. } | Role::Zygote { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProcState {
    /// Spawned, has not reported `READY=1` yet.
    Starting,
    /// A worker that reported `READY=1`.
    Accepting { since: Instant },
    /// A daemon: up, with no readiness protocol; a zygote: ready to fork.
    Running,
    /// Asked to stop; SIGKILL at `deadline` (`killed` once that happened).
    Stopping { deadline: Instant, killed: bool },
}

impl ProcState {
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Starting => "starting",
            ProcState::Accepting { .. } => "accepting",
            ProcState::Running => "running",
            ProcState::Stopping { .. } => "stopping",
        }
    }

    pub fn stopping(self) -> bool {
        matches!(self, ProcState::Stopping { .. })
    }
}

/// Accepting ⇄ not accepting transitions of one process logged at info.
const FLIPS_LOGGED: u32 = 20;

#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: Pid,
    pub role: Role,
    pub state: ProcState,
    pub generation: u64,
    pub spawned_at: SystemTime,
    pub started: Instant,
    /// Reported accepting at least once (a worker that never did and
    /// exits is a failed start).
    pub ever_accepted: bool,
    /// `max-worker-lifetime`: when to replace it.
    pub retire_at: Option<Instant>,
    /// Accepting ⇄ not accepting transitions reported so far (a worker
    /// that flaps gets its later transitions logged at debug level only).
    pub flips: u32,
    /// Warned about never reporting accepting (`worker-ready-warning`).
    pub slow_start_warned: bool,
    /// Its row in the request-metrics region (workers only).
    pub http_row: Option<u32>,
}

impl Proc {
    /// A process just started, in `state`.
    pub fn new(pid: Pid, role: Role, state: ProcState, now: Instant) -> Proc {
        Proc {
            pid,
            role,
            state,
            generation: 0,
            spawned_at: SystemTime::now(),
            started: now,
            ever_accepted: false,
            retire_at: None,
            flips: 0,
            slow_start_warned: false,
            http_row: None,
        }
    }

    pub fn accepting(&self) -> bool {
        matches!(self.state, ProcState::Accepting { .. })
    }

    /// The SIGKILL deadline of a stopping process not killed yet.
    pub fn kill_deadline(&self) -> Option<Instant> {
        match self.state {
            ProcState::Stopping { deadline, killed: false } => Some(deadline),
            _ => None,
        }
    }

    pub fn view(&self, id: u32) -> WorkerView {
        WorkerView {
            id,
            pid: self.pid.as_raw(),
            generation: self.generation,
            state: self.state.name(),
            accepting: u8::from(self.accepting()),
            respawn_count: 0,
            last_spawn: self.spawned_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            spawns_total: 0,
            failed_starts: 0,
            exits: Vec::new(),
            oom_kills: 0,
        }
    }
}

/// Every live child, in spawn order.
#[derive(Debug, Default)]
pub struct Table {
    procs: Vec<Proc>,
}

impl Table {
    pub fn insert(&mut self, p: Proc) {
        tracing::debug!(pid = p.pid.as_raw(), role = ?p.role, state = p.state.name(), "process added");
        self.procs.push(p);
    }

    /// Takes an exited process out of the table.
    pub fn remove(&mut self, pid: Pid) -> Option<Proc> {
        let i = self.procs.iter().position(|p| p.pid == pid)?;
        let p = self.procs.remove(i);
        tracing::debug!(pid = pid.as_raw(), role = ?p.role, state = p.state.name(), "process removed");
        Some(p)
    }

    pub fn find(&self, pid: Pid) -> Option<&Proc> {
        self.procs.iter().find(|p| p.pid == pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter()
    }

    /// Worker processes in every role (not daemons).
    pub fn workers(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.role.slot().is_some())
    }

    fn with_role(&self, role: Role) -> Option<&Proc> {
        self.procs.iter().find(|p| p.role == role)
    }

    pub fn worker(&self, slot: u32) -> Option<&Proc> {
        self.with_role(Role::Worker { slot })
    }

    pub fn replacement(&self, slot: u32) -> Option<&Proc> {
        self.with_role(Role::Replacement { slot })
    }

    pub fn daemon(&self, index: usize) -> Option<&Proc> {
        self.with_role(Role::Daemon { index })
    }

    pub fn retiring(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| matches!(p.role, Role::Retiring { .. }))
    }

    fn get_mut(&mut self, pid: Pid) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.pid == pid)
    }

    /// Moves `pid` to `state`; returns the state it left.
    pub fn set_state(&mut self, pid: Pid, state: ProcState) -> Option<ProcState> {
        let p = self.get_mut(pid)?;
        let old = std::mem::replace(&mut p.state, state);
        if old.name() != state.name() {
            tracing::debug!(pid = pid.as_raw(), role = ?p.role, from = old.name(), to = state.name(), "process state");
        }
        Some(old)
    }

    pub fn set_role(&mut self, pid: Pid, role: Role) {
        if let Some(p) = self.get_mut(pid) {
            tracing::debug!(pid = pid.as_raw(), from = ?p.role, to = ?role, "process role");
            p.role = role;
        }
    }

    /// Counts one accepting ⇄ not accepting transition; true while the
    /// process has made few enough of them to be logged at info level.
    pub fn note_flip(&mut self, pid: Pid) -> bool {
        let Some(p) = self.get_mut(pid) else { return false };
        p.flips = p.flips.saturating_add(1);
        if p.flips == FLIPS_LOGGED + 1 {
            tracing::warn!(
                pid = pid.as_raw(),
                transitions = FLIPS_LOGGED,
                "worker keeps switching between accepting and not; further switches are logged at debug level"
            );
        }
        p.flips <= FLIPS_LOGGED
    }

    pub fn set_ever_accepted(&mut self, pid: Pid) {
        if let Some(p) = self.get_mut(pid) {
            p.ever_accepted = true;
        }
    }

    /// Restarts the clock `started` counts from (a zygote: once ready).
    pub fn restart_clock(&mut self, pid: Pid, now: Instant) {
        if let Some(p) = self.get_mut(pid) {
            p.started = now;
        }
    }

    pub fn set_slow_start_warned(&mut self, pid: Pid) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.pid == pid) {
            p.slow_start_warned = true;
        }
    }

    pub fn clear_retire_at(&mut self, pid: Pid) {
        if let Some(p) = self.get_mut(pid) {
            p.retire_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: i32, role: Role) -> Proc {
        Proc {
            pid: Pid::from_raw(pid),
            role,
            state: ProcState::Starting,
            generation: 1,
            spawned_at: SystemTime::now(),
            started: Instant::now(),
            ever_accepted: false,
            flips: 0,
            retire_at: None,
            slow_start_warned: false,
            http_row: None,
        }
    }

    #[test]
    fn one_lookup_per_role() {
        let mut t = Table::default();
        t.insert(proc(10, Role::Worker { slot: 1 }));
        t.insert(proc(11, Role::Replacement { slot: 1 }));
        t.insert(proc(12, Role::Daemon { index: 0 }));
        assert_eq!(t.worker(1).map(|p| p.pid.as_raw()), Some(10));
        assert_eq!(t.replacement(1).map(|p| p.pid.as_raw()), Some(11));
        assert_eq!(t.workers().count(), 2);
        t.set_role(Pid::from_raw(10), Role::Retiring { slot: 1 });
        t.set_role(Pid::from_raw(11), Role::Worker { slot: 1 });
        assert_eq!(t.worker(1).map(|p| p.pid.as_raw()), Some(11));
        assert_eq!(t.retiring().count(), 1);
        assert!(t.remove(Pid::from_raw(10)).is_some());
        assert!(t.find(Pid::from_raw(10)).is_none());
        assert_eq!(t.daemon(0).map(|p| p.pid.as_raw()), Some(12));
    }
}
