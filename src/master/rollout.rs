//! Rollouts — chain reload and recycling — and scaling. A rollout replaces
//! one slot at a time: start the replacement, wait (bounded by
//! `chain-reload-timeout`) until it accepts, then stop the old worker and
//! wait for it to exit before the next slot, so accepting capacity never
//! dips and at most one extra process exists. A replacement that fails
//! aborts the rollout and the old workers stay. A full chain reload is the
//! phase `Reloading`; recycling one worker is not.

use std::collections::VecDeque;
use std::time::Instant;

use super::core::{Core, MasterPhase, Os, Recycle, Rollout};
use super::slots::Slot;
use super::table::Role;
use super::zygote::Source;

impl<O: Os> Core<O> {
    /// HUP, a touched reload file, `uwsgi.reload()`, a config change.
    pub fn request_reload(&mut self, why: &str) {
        match self.phase {
            MasterPhase::Draining { .. } | MasterPhase::Exited { .. } => return,
            MasterPhase::Starting => {
                tracing::info!(cause = why, "reload requested before the instance was ready; it runs once ready");
                self.reload_when_ready = true;
                return;
            }
            MasterPhase::Running | MasterPhase::Reloading => {}
        }
        let now = self.os.now();
        let all: VecDeque<u32> = self.slots.iter().map(|s| s.id).collect();
        let workers = self.slots.len();
        match &mut self.rollout {
            Some(r) if r.full => {
                // Coalesce: one more full pass after this one, however many requests.
                tracing::info!(cause = why, "reload requested during a reload; it will run again once");
                r.again = true;
            }
            Some(r) => {
                // A recycle in progress becomes a full reload. The slot being
                // replaced is queued again: its replacement was started from
                // the code as it was before this request.
                r.queue = all;
                r.full = true;
                r.reason = why.to_owned();
                tracing::info!(cause = why, workers, "chain reload started");
            }
            None => {
                tracing::info!(cause = why, workers, "chain reload started");
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
        self.set_phase(MasterPhase::Reloading, why);
        self.prepare_reload_zygote(now);
        self.rollout_step(now);
    }

    /// Replace one worker the chain-reload way (recycling).
    pub fn request_replace(&mut self, id: u32, why: &str) {
        if !self.serving() {
            return;
        }
        tracing::info!(worker = id, cause = why, "replacing worker");
        let now = self.os.now();
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
                    since: now,
                    reason: why.to_owned(),
                })
            }
        }
    }

    /// Recycles slot `id`'s worker, replacement first, and counts it.
    /// Returns whether it was started.
    pub fn recycle(&mut self, id: u32, why: Recycle) -> bool {
        if !self.serving() {
            return false;
        }
        self.counters.recycles[why as usize] += 1;
        self.request_replace(id, why.option());
        true
    }

    /// Recycles slot `id`'s worker when there is no room for a replacement
    /// next to it: it is stopped gracefully first, and the slot respawns
    /// once it has exited ([`Core::on_exit`] of a retiring process whose
    /// slot is empty). Capacity dips by one worker meanwhile.
    /// Returns whether it was started.
    pub fn recycle_stop_first(&mut self, id: u32, why: Recycle, now: Instant) -> bool {
        // One at a time: not during a rollout, nor while one stops.
        if !self.serving() || self.rollout.is_some() || self.table.retiring().next().is_some() {
            return false;
        }
        let Some(pid) = self.table.worker(id).map(|w| w.pid) else { return false };
        self.counters.recycles[why as usize] += 1;
        self.retire(pid, now, &format!("{} (no room for a replacement first)", why.option()));
        true
    }

    /// Advances the rollout: nothing while a replacement is starting or an
    /// old worker is still stopping; else the next slot; else finished.
    pub fn rollout_step(&mut self, now: Instant) {
        if !self.serving() {
            return;
        }
        loop {
            let Some(r) = &mut self.rollout else { return };
            if r.current.is_some() || self.table.retiring().next().is_some() {
                return;
            }
            let full = r.full;
            let Some(&id) = r.queue.front() else { break };
            // A full reload in preforked mode forks from the new code's
            // zygote: nothing starts before it is ready.
            if full && self.zygotes.enabled && self.zygotes.next.is_none() {
                break;
            }
            let source = self.source_for(id, true);
            if source == Source::Wait {
                return;
            }
            if let Some(r) = &mut self.rollout {
                r.queue.pop_front();
            }
            let Some(i) = self.slot_index(id) else { continue };
            // A slot that is down gets current code when it respawns anyway.
            if self.table.worker(id).is_none() {
                continue;
            }
            let deadline = now + self.set.chain_reload_timeout;
            if let Some(r) = &mut self.rollout {
                r.current = Some((id, deadline));
            }
            match self.spawn_worker(i, now, true, source) {
                Some(pid) => {
                    if self.table.find(pid).is_some_and(|p| p.accepting()) {
                        self.promote(id, now);
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
        self.counters.rollouts_finished += 1;
        if r.full && self.zygotes.enabled && self.zygotes.next.is_none() {
            // The new code's zygote never started (its spawn failed).
            self.counters.reloads_aborted += 1;
            tracing::error!(
                cause = r.reason.as_str(),
                "reload aborted: no zygote for the new code; the old workers keep serving"
            );
            self.set_phase(MasterPhase::Running, "reload aborted");
            return;
        }
        if r.full {
            self.promote_next_zygote(now);
            self.counters.reloads_ok += 1;
            tracing::info!(
                cause = r.reason.as_str(),
                duration_s = now.duration_since(r.since).as_secs_f64(),
                workers = self.slots.len(),
                "chain reload finished"
            );
            self.set_phase(MasterPhase::Running, "chain reload finished");
            if r.again {
                self.request_reload("reload requested during the previous one");
            }
        }
    }

    /// The replacement for slot `id` accepts: it takes over, the old
    /// worker retires.
    pub fn promote(&mut self, id: u32, now: Instant) {
        let Some(next) = self.table.replacement(id) else { return };
        let (pid, generation) = (next.pid, next.generation);
        tracing::info!(worker = id, pid = pid.as_raw(), generation, "replacement accepting; retiring the old worker");
        if let Some(old) = self.table.worker(id).map(|w| w.pid) {
            self.retire(old, now, "replaced");
        }
        self.table.set_role(pid, Role::Worker { slot: id });
        if let Some(i) = self.slot_index(id) {
            self.slots[i].failed_starts = 0;
        }
        if let Some(r) = &mut self.rollout {
            if r.current.map(|(c, _)| c) == Some(id) {
                r.current = None;
            }
        }
    }

    /// The replacement for slot `id` failed: stop it, keep the old
    /// workers, count and log the abort.
    pub fn abort_rollout(&mut self, id: u32, why: &str, now: Instant) {
        let Some(r) = self.rollout.take() else { return };
        if let Some(next) = self.table.replacement(id).map(|p| p.pid) {
            self.retire(next, now, "replacement failed");
        }
        if r.full {
            self.counters.reloads_aborted += 1;
            self.drop_next_zygote(now);
        }
        tracing::error!(
            worker = id,
            cause = r.reason.as_str(),
            error = why,
            "reload aborted; the old workers keep serving"
        );
        if r.full {
            self.set_phase(MasterPhase::Running, "reload aborted");
        }
    }

    pub fn scale_up(&mut self) {
        if !matches!(self.phase, MasterPhase::Starting) && !self.serving() {
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
        tracing::info!(worker = id, processes = self.processes(), "scaling up");
        let now = self.os.now();
        self.spawn_slot(self.slots.len() - 1, now);
    }

    pub fn scale_down(&mut self) {
        if (!matches!(self.phase, MasterPhase::Starting) && !self.serving()) || self.slots.len() <= 1 {
            return;
        }
        let now = self.os.now();
        let Some(slot) = self.slots.pop() else { return };
        tracing::info!(worker = slot.id, processes = self.processes(), "scaling down");
        let procs = [self.table.worker(slot.id), self.table.replacement(slot.id)];
        for pid in procs.into_iter().flatten().map(|p| p.pid).collect::<Vec<_>>() {
            self.retire(pid, now, "scaled down");
        }
        if let Some(r) = &mut self.rollout {
            r.queue.retain(|id| *id != slot.id);
            if r.current.map(|(c, _)| c) == Some(slot.id) {
                r.current = None;
            }
        }
    }
}
