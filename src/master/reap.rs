//! What children tell the master: exits (found by pid in the process
//! table: an old worker, a failed replacement, a slot's worker, a daemon,
//! or an orphan we adopted) and notify messages (`READY=1`, `STOPPING=1`,
//! reload and stop requests from `uwsgi.reload()` / `uwsgi.stop()`).

use std::time::Instant;

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::core::{Core, MasterPhase, Os, Recycle};
use super::slots::exit_reason;
use super::table::{Proc, ProcState, Role};
use crate::notify::Notice;

impl<O: Os> Core<O> {
    /// One reaped child. Returns false when it was none of ours (an orphan).
    pub fn on_exit(&mut self, pid: Pid, status: &WaitStatus, now: Instant) -> bool {
        let Some(p) = self.table.remove(pid) else { return false };
        match p.role {
            Role::Retiring { slot } => {
                tracing::info!(
                    worker = slot,
                    pid = pid.as_raw(),
                    status = exit_reason(status),
                    runtime_s = now.duration_since(p.started).as_secs_f64(),
                    "old worker exited"
                );
                self.refill(slot, now);
            }
            Role::Replacement { slot } => {
                let reason = exit_reason(status);
                if let Some(i) = self.slot_index(slot) {
                    *self.slots[i].exits.entry(reason.clone()).or_default() += 1;
                }
                self.abort_rollout(slot, &format!("replacement exited before accepting ({reason})"), now);
            }
            Role::Worker { slot } => self.on_worker_exit(slot, p, status, now),
            Role::Zygote { generation } => {
                self.os.zygote_gone(pid);
                self.on_zygote_exit(p, generation, status, now)
            }
            Role::Daemon { index } => {
                let d = &mut self.daemons[index];
                if matches!(self.phase, MasterPhase::Draining { .. } | MasterPhase::Exited { .. }) {
                    tracing::info!(pid = pid.as_raw(), status = exit_reason(status), "daemon exited");
                } else {
                    let wait = d.backoff;
                    d.backoff = (d.backoff * 2).min(self.set.backoff_max);
                    d.respawn_at = Some(now + wait);
                    tracing::warn!(
                        pid = pid.as_raw(),
                        command = d.argv.join(" "),
                        status = exit_reason(status),
                        respawn_in_s = wait.as_secs_f64(),
                        "daemon exited"
                    );
                }
            }
        }
        true
    }

    /// A slot left without any process (its worker was stopped before a
    /// replacement started: a stop-first recycle) starts one at once. A
    /// slot scaled away no longer exists; a drain is not serving.
    fn refill(&mut self, id: u32, now: Instant) {
        let Some(i) = self.slot_index(id) else { return };
        let empty = self.table.worker(id).is_none() && self.table.replacement(id).is_none();
        if self.serving() && empty && self.slots[i].respawn_at.is_none() && !self.slots[i].awaiting_zygote {
            self.slots[i].respawn_at = Some(now);
        }
    }

    fn on_worker_exit(&mut self, id: u32, w: Proc, status: &WaitStatus, now: Instant) {
        let Some(i) = self.slot_index(id) else { return };
        let reason = exit_reason(status);
        let runtime = now.duration_since(w.started).as_secs_f64();
        let accepting_since = match w.state {
            ProcState::Accepting { since } => Some(since),
            _ => None,
        };
        let (pid, status_s) = (w.pid.as_raw(), reason.as_str());
        let wait = self.slots[i].note_exit(&reason, accepting_since, now, self.set.backoff_max);
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
                if failed >= self.set.max_failed_starts && self.crash_loop.is_none() {
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
                if self.table.replacement(id).is_none() {
                    self.slots[i].respawn_at = Some(now + wait);
                }
            }
        }
    }

    /// A worker asked to be replaced (`max-requests`, `harakiri`): once
    /// per worker, replacement first. Asking is harmless (a worker can
    /// always exit), so the message needs no more trust than the others.
    fn recycle_asked(&mut self, id: u32, pid: Pid, why: Recycle) {
        let queued =
            self.rollout.as_ref().is_some_and(|r| r.queue.contains(&id) || r.current.is_some_and(|(c, _)| c == id));
        if queued || self.table.replacement(id).is_some() {
            tracing::debug!(worker = id, pid = pid.as_raw(), cause = why.option(), "already being replaced");
            return;
        }
        self.recycle(id, why);
    }

    /// A notify message from process `pid` (checked by its credentials).
    pub fn on_notice(&mut self, pid: i32, notice: Notice) {
        let now = self.os.now();
        let pid = Pid::from_raw(pid);
        if notice == Notice::Forked {
            // Known: the zygote's answer came first, as it should. Unknown:
            // forked by a request that failed (the zygote died or was too
            // slow), so nothing supervises it; it must not serve.
            if self.table.find(pid).is_none() {
                tracing::warn!(pid = pid.as_raw(), "a worker forked by a failed request is not ours; killing it");
                self.os.signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            return;
        }
        let (id, is_next) = match self.table.find(pid).map(|p| p.role) {
            Some(Role::Worker { slot }) => (slot, false),
            Some(Role::Replacement { slot }) => (slot, true),
            Some(Role::Retiring { .. }) => return,
            Some(Role::Daemon { .. } | Role::Zygote { .. }) | None => {
                tracing::debug!(
                    pid = pid.as_raw(),
                    ?notice,
                    "notify message from a process that is not a worker; ignored"
                );
                return;
            }
        };
        match notice {
            Notice::Reload => self.request_reload("uwsgi.reload()"),
            Notice::Stop => self.begin_drain(false, "uwsgi.stop()"),
            Notice::Ready => {
                if let Some(p) = self.table.find(pid).filter(|p| p.state == ProcState::Starting) {
                    let generation = p.generation;
                    self.table.set_state(pid, ProcState::Accepting { since: now });
                    self.table.set_ever_accepted(pid);
                    if self.table.note_flip(pid) {
                        tracing::info!(worker = id, pid = pid.as_raw(), generation, "worker accepting");
                    } else {
                        tracing::debug!(worker = id, pid = pid.as_raw(), generation, "worker accepting");
                    }
                    if !is_next {
                        if let Some(i) = self.slot_index(id) {
                            self.slots[i].failed_starts = 0;
                        }
                    }
                }
                if is_next {
                    self.promote(id, now);
                    self.rollout_step(now);
                }
                self.end_crash_loop_if_over();
            }
            Notice::Forked => {}
            Notice::MaxRequests if !is_next => self.recycle_asked(id, pid, Recycle::MaxRequests),
            Notice::Harakiri if !is_next => self.recycle_asked(id, pid, Recycle::Harakiri),
            // A replacement is replaced once it has taken over.
            Notice::MaxRequests | Notice::Harakiri => {}
            Notice::Stopping => {
                if self.table.find(pid).is_some_and(Proc::accepting) {
                    self.table.set_state(pid, ProcState::Starting);
                    if self.table.note_flip(pid) {
                        tracing::info!(worker = id, pid = pid.as_raw(), "worker stopped accepting");
                    } else {
                        tracing::debug!(worker = id, pid = pid.as_raw(), "worker stopped accepting");
                    }
                }
            }
        }
        self.check_ready();
    }
}
