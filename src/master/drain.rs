//! The drain: readiness off at once, the workers keep serving for
//! `drain-delay`, then each gets its stop signal, SIGKILL after
//! `worker-reload-mercy`; daemons stop last; a final sweep kills and reaps
//! whatever is left. Also stopping single workers (retiring) and the
//! SIGKILL of every stopping process whose mercy ran out.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::core::{Core, MasterPhase, Os};
use super::table::{ProcState, Role};
use crate::exit;

impl<O: Os> Core<O> {
    /// Graceful drain (or, when `fast`, a fast stop). A drain already under
    /// way only escalates: graceful → fast.
    pub fn begin_drain(&mut self, fast: bool, why: &str) {
        let now = self.os.now();
        match self.phase {
            MasterPhase::Exited { .. } | MasterPhase::Draining { fast: true, .. } => {}
            MasterPhase::Draining { since, code, .. } if fast => {
                tracing::warn!(cause = why, "fast stop requested during drain");
                self.set_phase(MasterPhase::Draining { since, stop_at: None, fast: true, code }, why);
                self.stop_all(Signal::SIGINT, now);
            }
            MasterPhase::Draining { .. } => {}
            MasterPhase::Starting | MasterPhase::Running | MasterPhase::Reloading => {
                let delay = if fast { Duration::ZERO } else { self.set.drain_delay };
                tracing::info!(
                    cause = why,
                    fast,
                    drain_delay_s = delay.as_secs_f64(),
                    mercy_s = self.set.mercy.as_secs_f64(),
                    "drain started"
                );
                if self.rollout.take().is_some() {
                    tracing::info!("reload abandoned: draining");
                }
                self.set_phase(
                    MasterPhase::Draining { since: now, stop_at: Some(now + delay), fast, code: exit::OK },
                    why,
                );
                for s in &mut self.slots {
                    s.respawn_at = None;
                    s.awaiting_zygote = false;
                }
                for d in &mut self.daemons {
                    d.respawn_at = None;
                }
                // No worker will be forked any more.
                self.retire_zygotes(now, |_| true, "draining");
                self.on_deadlines(now);
            }
        }
    }

    /// A worker died before the instance was ever ready: the configuration
    /// or the app is broken. Stop everything and exit non-zero, so the
    /// container restarts with the error in its log instead of half-serving.
    pub fn fail_startup(&mut self) {
        self.fail_startup_with(exit::STARTUP_FAILED, "worker failed during startup");
    }

    /// [`Core::fail_startup`] with the exit code to end with.
    pub fn fail_startup_with(&mut self, code: u8, why: &str) {
        let now = self.os.now();
        let phase = MasterPhase::Draining { since: now, stop_at: None, fast: true, code };
        self.set_phase(phase, why);
        for s in &mut self.slots {
            s.respawn_at = None;
            s.awaiting_zygote = false;
        }
        self.retire_zygotes(now, |_| true, why);
        self.stop_all(Signal::SIGINT, now);
    }

    /// The drain-delay is over: every worker gets its stop signal. Then
    /// SIGKILL for whatever outlived its mercy.
    pub(super) fn drain_deadlines(&mut self, now: Instant) {
        if let MasterPhase::Draining { since, stop_at: Some(t), fast, code } = self.phase {
            if now >= t {
                self.set_phase(MasterPhase::Draining { since, stop_at: None, fast, code }, "drain-delay over");
                let sig = if fast { Signal::SIGINT } else { self.set.stop_signal };
                self.stop_all(sig, now);
            }
        }
        self.kill_overdue(now);
    }

    /// Sends `sig` to every worker process (current, replacement, retiring)
    /// and starts its mercy deadline if it was not stopping yet. SIGINT (fast
    /// stop) is sent even to those already stopping.
    pub fn stop_all(&mut self, sig: Signal, now: Instant) {
        let deadline = now + self.set.mercy;
        let procs: Vec<(u32, Pid, bool)> =
            self.table.workers().map(|p| (p.role.slot().unwrap_or_default(), p.pid, p.state.stopping())).collect();
        for (id, pid, already) in procs {
            if !already || sig == Signal::SIGINT {
                self.os.signal(pid, sig);
                tracing::info!(worker = id, pid = pid.as_raw(), signal = sig.as_str(), "stopping worker");
            }
            if !already {
                self.table.set_state(pid, ProcState::Stopping { deadline, killed: false });
            }
        }
    }

    /// Asks one worker to stop gracefully; it becomes `Retiring`.
    pub fn retire(&mut self, pid: Pid, now: Instant, why: &str) {
        let Some(p) = self.table.find(pid) else { return };
        let id = p.role.slot().unwrap_or_default();
        if !p.state.stopping() {
            let sig = self.set.stop_signal;
            self.os.signal(pid, sig);
            tracing::info!(worker = id, pid = pid.as_raw(), signal = sig.as_str(), cause = why, "stopping worker");
            self.table.set_state(pid, ProcState::Stopping { deadline: now + self.set.mercy, killed: false });
        }
        self.table.set_role(pid, Role::Retiring { slot: id });
    }

    /// SIGKILL for every stopping process whose mercy ran out.
    fn kill_overdue(&mut self, now: Instant) {
        let mercy = self.set.mercy.as_secs_f64();
        let overdue: Vec<(Role, Pid, Instant)> = self
            .table
            .iter()
            .filter_map(|p| p.kill_deadline().filter(|t| now >= *t).map(|t| (p.role, p.pid, t)))
            .collect();
        for (role, pid, deadline) in overdue {
            let what = match role {
                Role::Zygote { .. } => "zygote",
                Role::Daemon { .. } => "daemon",
                _ => "worker",
            };
            tracing::warn!(
                worker = role.slot(),
                pid = pid.as_raw(),
                mercy_s = mercy,
                "{what} did not stop within worker-reload-mercy; sending SIGKILL"
            );
            self.os.signal_group(pid, Signal::SIGKILL);
            self.os.signal(pid, Signal::SIGKILL);
            self.table.set_state(pid, ProcState::Stopping { deadline, killed: true });
            self.counters.killed += 1;
        }
    }

    /// Once every worker is gone: daemons stop, then the final sweep, then
    /// the phase is Exited with the drain's exit code.
    pub(super) fn maybe_finish_drain(&mut self, now: Instant) {
        let MasterPhase::Draining { since, stop_at: None, code, fast } = self.phase else { return };
        if self.table.workers().next().is_some() {
            return;
        }
        // Side processes stop last: the workers may have needed them.
        let running: Vec<(Pid, Role)> =
            self.table.iter().filter(|p| !p.state.stopping()).map(|p| (p.pid, p.role)).collect();
        for (pid, role) in running {
            let sig = if fast { Signal::SIGINT } else { Signal::SIGTERM };
            self.os.signal(pid, sig);
            self.table.set_state(pid, ProcState::Stopping { deadline: now + self.set.mercy, killed: false });
            if let Role::Daemon { index } = role {
                tracing::info!(pid = pid.as_raw(), command = self.daemons[index].argv.join(" "), "stopping daemon");
            }
        }
        if self.table.iter().next().is_some() {
            return;
        }
        let (leftovers, reaped) = self.os.final_sweep();
        self.counters.reaped_orphans += reaped;
        let secs = now.duration_since(since).as_secs_f64();
        self.drain_seconds = Some(secs);
        let code = if self.counters.killed > 0 && code == exit::OK { exit::KILLED } else { code };
        tracing::info!(
            duration_s = secs,
            killed = self.counters.killed,
            leftover_processes = leftovers,
            exit_code = code,
            "drain finished"
        );
        self.set_phase(MasterPhase::Exited { code }, "every process has exited");
    }
}
