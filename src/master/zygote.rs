//! Zygotes, as the state machine sees them (preforked Python workers,
//! the default unless `lazy-apps = true`). A zygote is a process in the
//! table with `Role::Zygote { generation }`, where the generation is the
//! code it imported. `current` serves respawns and scaling; a full chain
//! reload first starts `next` (the code as it is now on disk), forks the
//! replacements from it and, when the rollout is over, `next` becomes
//! `current` and the old one retires. Slots that need a worker while no
//! zygote is ready wait (`Slot::awaiting_zygote`) and are forked when one
//! is. A zygote that dies is restarted with backoff; workers keep serving.

use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::core::{Core, MasterPhase, Os};
use super::slots::{BACKOFF_RESET_AFTER, BACKOFF_START, exit_reason};
use super::state::ZygoteView;
use super::table::{Proc, ProcState, Role};
use crate::exit;

/// The zygotes' bookkeeping (their processes live in the table).
#[derive(Debug)]
pub struct Zygotes {
    /// Python workers are forked from a zygote (else exec'd).
    pub enabled: bool,
    /// Code generation workers fork from (0: none started yet).
    pub current: u64,
    /// Code generation a full chain reload is preparing.
    pub next: Option<u64>,
    /// When `next` must be ready, or the reload is aborted.
    pub next_deadline: Option<Instant>,
    /// When to start `current` again after it died.
    pub restart_at: Option<Instant>,
    /// A restarted `current` not ready by then is killed (and restarted).
    pub ready_deadline: Option<Instant>,
    /// Consecutive zygotes that exited before they were ready.
    pub failed_starts: u32,
    pub backoff: Duration,
    /// Zygotes started again after one died (`podmaster_zygote_restarts_total`).
    pub restarts: u64,
    /// The last code generation handed out.
    pub generations: u64,
}

impl Zygotes {
    pub fn new(enabled: bool) -> Zygotes {
        Zygotes {
            enabled,
            current: 0,
            next: None,
            next_deadline: None,
            restart_at: None,
            ready_deadline: None,
            failed_starts: 0,
            backoff: BACKOFF_START,
            restarts: 0,
            generations: 0,
        }
    }
}

/// Where a worker for a slot comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// fork+exec of the worker binary (lazy-apps, command workers).
    Exec,
    /// Forked by this (ready) zygote.
    Zygote(Pid),
    /// The zygote it needs is not ready yet.
    Wait,
}

impl<O: Os> Core<O> {
    /// Starts a zygote for a new code generation: `current` (startup, a
    /// restart) or, with `for_reload`, `next`. False if it could not start.
    pub fn start_zygote(&mut self, now: Instant, for_reload: bool) -> bool {
        let generation = self.zygotes.generations + 1;
        self.zygotes.generations = generation;
        match self.os.spawn_zygote(generation) {
            Ok(pid) => {
                tracing::info!(zygote = generation, pid = pid.as_raw(), "zygote spawned");
                self.table.insert(Proc::new(pid, Role::Zygote { generation }, ProcState::Starting, now));
                if for_reload {
                    self.zygotes.next = Some(generation);
                    self.zygotes.next_deadline = Some(now + self.set.chain_reload_timeout);
                } else {
                    self.zygotes.current = generation;
                    // A restart is bounded like a reload; the first start is
                    // not (as a worker's first start is not: startupProbe).
                    if self.phase != MasterPhase::Starting {
                        self.zygotes.ready_deadline = Some(now + self.set.chain_reload_timeout);
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(zygote = generation, error = %e, "cannot spawn zygote");
                if !for_reload {
                    self.schedule_zygote_restart(now, false);
                }
                false
            }
        }
    }

    /// The pid of generation `g`'s zygote when it is ready to fork.
    fn ready_zygote(&self, g: u64) -> Option<Pid> {
        self.table
            .iter()
            .find(|p| p.role == Role::Zygote { generation: g } && p.state == ProcState::Running)
            .map(|p| p.pid)
    }

    /// Where slot `id`'s next worker comes from: in a full chain reload,
    /// replacements (and respawns of slots already replaced) fork from the
    /// new code; everything else from the current zygote.
    pub fn source_for(&self, id: u32, replacement: bool) -> Source {
        if !self.zygotes.enabled {
            return Source::Exec;
        }
        let reloaded = self.rollout.as_ref().filter(|r| r.full).is_some_and(|r| !r.queue.contains(&id));
        let generation = match self.zygotes.next {
            Some(n) if replacement || reloaded => n,
            _ => self.zygotes.current,
        };
        self.ready_zygote(generation).map_or(Source::Wait, Source::Zygote)
    }

    /// The zygote `pid` said it is ready: fork what waited for it.
    pub fn on_zygote_ready(&mut self, pid: Pid) {
        let now = self.os.now();
        let Some(Role::Zygote { generation }) =
            self.table.find(pid).filter(|p| p.state == ProcState::Starting).map(|p| p.role)
        else {
            return;
        };
        self.table.set_state(pid, ProcState::Running);
        self.table.set_ever_accepted(pid);
        self.table.restart_clock(pid, now);
        tracing::info!(zygote = generation, pid = pid.as_raw(), "zygote ready to fork workers");
        if generation == self.zygotes.current {
            self.zygotes.ready_deadline = None;
            self.zygotes.failed_starts = 0;
            self.end_crash_loop_if_over();
            self.spawn_awaiting(now);
        }
        if Some(generation) == self.zygotes.next {
            self.zygotes.next_deadline = None;
        }
        self.settle(now);
    }

    /// A zygote exited (it was in the table as `p`).
    pub fn on_zygote_exit(&mut self, p: Proc, generation: u64, status: &WaitStatus, now: Instant) {
        let (pid, reason) = (p.pid.as_raw(), exit_reason(status));
        if p.state.stopping() || self.stopping() {
            tracing::info!(zygote = generation, pid, status = reason.as_str(), "zygote exited");
            return;
        }
        if Some(generation) == self.zygotes.next {
            self.zygotes.next = None;
            self.zygotes.next_deadline = None;
            let why = format!("the new code's zygote exited ({reason}; its error is above)");
            let slot = self.rollout.as_ref().and_then(|r| r.current.map(|(id, _)| id)).unwrap_or(0);
            self.abort_rollout(slot, &why, now);
            return;
        }
        if generation != self.zygotes.current {
            tracing::info!(zygote = generation, pid, status = reason.as_str(), "old zygote exited");
            return;
        }
        if self.phase == MasterPhase::Starting {
            // As for a worker that dies before the instance was ever ready:
            // the app or its environment is broken; stop with its error.
            let when = if p.ever_accepted { "during startup" } else { "before it was ready, during startup" };
            tracing::error!(
                zygote = generation,
                pid,
                status = reason.as_str(),
                "zygote exited {when}; stopping (see its output above)"
            );
            let code = if matches!(status, WaitStatus::Exited(_, 78)) { exit::CONFIG } else { exit::STARTUP_FAILED };
            self.fail_startup_with(code, "zygote failed during startup");
            return;
        }
        self.zygotes.ready_deadline = None;
        if !p.ever_accepted {
            self.zygotes.failed_starts += 1;
            let failed = self.zygotes.failed_starts;
            if failed >= self.set.max_failed_starts && self.crash_loop.is_none() {
                tracing::error!(failed_starts = failed, "crash loop: /livez now fails so the pod is restarted");
                self.crash_loop = Some(format!(
                    "the zygote failed to start {failed} times in a row (max-failed-starts); last: {reason}"
                ));
            }
        }
        let healthy = p.ever_accepted && now.duration_since(p.started) >= BACKOFF_RESET_AFTER;
        let wait = self.schedule_zygote_restart(now, healthy);
        tracing::warn!(
            zygote = generation,
            pid,
            status = reason.as_str(),
            restart_in_s = wait.as_secs_f64(),
            "zygote exited; workers keep serving, respawns wait for its restart"
        );
    }

    /// Schedules the restart of the current zygote: at once after a
    /// healthy one died, else with doubling backoff.
    fn schedule_zygote_restart(&mut self, now: Instant, healthy: bool) -> Duration {
        let z = &mut self.zygotes;
        let wait = if healthy {
            z.backoff = BACKOFF_START;
            Duration::ZERO
        } else {
            let w = z.backoff.min(self.set.backoff_max);
            z.backoff = (z.backoff * 2).min(self.set.backoff_max);
            w
        };
        z.restart_at = Some(now + wait);
        wait
    }

    /// Slots that waited for the current zygote get their workers.
    fn spawn_awaiting(&mut self, now: Instant) {
        if self.stopping() {
            return;
        }
        for i in 0..self.slots.len() {
            if std::mem::take(&mut self.slots[i].awaiting_zygote) {
                self.spawn_slot(i, now);
            }
        }
    }

    /// Clears the crash loop once no slot and no zygote is failing.
    pub fn end_crash_loop_if_over(&mut self) {
        let max = self.set.max_failed_starts;
        if self.crash_loop.is_some()
            && self.zygotes.failed_starts < max
            && self.slots.iter().all(|s| s.failed_starts < max)
        {
            tracing::info!("crash loop over: every slot and the zygote have started");
            self.crash_loop = None;
        }
    }

    /// Due zygote deadlines: a restart, or a reload's zygote that is late.
    pub(super) fn zygote_deadlines(&mut self, now: Instant) {
        if self.zygotes.ready_deadline.is_some_and(|t| now >= t) {
            self.zygotes.ready_deadline = None;
            let late = self.table.iter().find(|p| {
                p.role == Role::Zygote { generation: self.zygotes.current } && p.state == ProcState::Starting
            });
            if let Some(pid) = late.map(|p| p.pid) {
                let secs = self.set.chain_reload_timeout.as_secs_f64();
                tracing::error!(
                    pid = pid.as_raw(),
                    "zygote not ready within {secs} s (chain-reload-timeout); killing it"
                );
                self.os.signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if self.zygotes.restart_at.is_some_and(|t| now >= t) && !self.stopping() {
            self.zygotes.restart_at = None;
            self.zygotes.restarts += 1;
            self.start_zygote(now, false);
        }
        if self.zygotes.next_deadline.is_some_and(|t| now >= t) {
            let secs = self.set.chain_reload_timeout.as_secs_f64();
            let slot = self.rollout.as_ref().and_then(|r| r.current.map(|(id, _)| id)).unwrap_or(0);
            self.abort_rollout(
                slot,
                &format!("the new code's zygote was not ready within {secs} s (chain-reload-timeout)"),
                now,
            );
        }
    }

    /// Every zygote in the table, for `/status` and `/metrics`.
    pub fn zygote_views(&self) -> Vec<ZygoteView> {
        self.table
            .iter()
            .filter_map(|p| match p.role {
                Role::Zygote { generation } => Some(ZygoteView {
                    pid: p.pid.as_raw(),
                    generation,
                    state: match p.state {
                        ProcState::Starting => "starting",
                        ProcState::Stopping { .. } => "stopping",
                        _ => "ready",
                    },
                    role: if generation == self.zygotes.current {
                        "current"
                    } else if Some(generation) == self.zygotes.next {
                        "next"
                    } else {
                        "old"
                    },
                }),
                _ => None,
            })
            .collect()
    }

    /// Nearest zygote deadline.
    pub(super) fn zygote_deadline(&self) -> Option<Instant> {
        [self.zygotes.restart_at, self.zygotes.next_deadline, self.zygotes.ready_deadline].into_iter().flatten().min()
    }

    /// A full chain reload in preforked mode starts with the new code's zygote.
    pub(super) fn prepare_reload_zygote(&mut self, now: Instant) {
        if self.zygotes.enabled && self.zygotes.next.is_none() {
            self.start_zygote(now, true);
        }
    }

    /// The reload's zygote, if any, is not needed any more.
    pub(super) fn drop_next_zygote(&mut self, now: Instant) {
        self.zygotes.next_deadline = None;
        if let Some(g) = self.zygotes.next.take() {
            self.retire_zygotes(now, |z| z == g, "reload aborted");
        }
    }

    /// A full chain reload finished: the new code's zygote becomes current.
    pub(super) fn promote_next_zygote(&mut self, now: Instant) {
        if let Some(g) = self.zygotes.next.take() {
            let z = &mut self.zygotes;
            z.current = g;
            z.next_deadline = None;
            // A restart of the old code's zygote that was still pending is moot.
            z.restart_at = None;
            z.ready_deadline = None;
            z.backoff = BACKOFF_START;
            z.failed_starts = 0;
            self.retire_zygotes(now, |z| z != g, "replaced by the new code's zygote");
            self.end_crash_loop_if_over();
            // Slots that waited for the old zygote fork from the new one.
            self.spawn_awaiting(now);
        }
    }

    /// Stops every zygote whose generation matches: its control socket is
    /// closed (it exits on EOF) and it gets SIGTERM; SIGKILL after mercy.
    pub fn retire_zygotes(&mut self, now: Instant, which: impl Fn(u64) -> bool, why: &str) {
        let pids: Vec<(Pid, u64)> = self
            .table
            .iter()
            .filter_map(|p| match p.role {
                Role::Zygote { generation } if which(generation) && !p.state.stopping() => Some((p.pid, generation)),
                _ => None,
            })
            .collect();
        for (pid, generation) in pids {
            tracing::info!(zygote = generation, pid = pid.as_raw(), cause = why, "stopping zygote");
            self.os.retire_zygote(pid);
            self.table.set_state(pid, ProcState::Stopping { deadline: now + self.set.mercy, killed: false });
        }
        if self.stopping() {
            self.zygotes.restart_at = None;
        }
    }
}
