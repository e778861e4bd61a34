//! Spawning, as the state machine sees it: a new generation number, the
//! slot's spawn count, the entry in the process table, and the backoff when
//! a spawn fails. How a process is actually started is [`super::os`]'s.

use std::time::Instant;

use nix::unistd::Pid;

use super::core::{Core, Os, WorkerRequest, lifetime};
use super::table::{Proc, ProcState, Role};
use super::zygote::Source;

impl<O: Os> Core<O> {
    /// Starts a process for slot `i` as the slot's worker; on failure
    /// schedules the slot's respawn with backoff. A slot whose zygote is
    /// not ready waits for it.
    pub fn spawn_slot(&mut self, i: usize, now: Instant) {
        let source = self.source_for(self.slots[i].id, false);
        if source == Source::Wait {
            self.slots[i].awaiting_zygote = true;
            return;
        }
        if self.spawn_worker(i, now, false, source).is_some() {
            self.check_ready();
        } else {
            let max = self.set.backoff_max;
            let slot = &mut self.slots[i];
            let wait = slot.note_exit("spawn_failed", None, now, max);
            tracing::warn!(worker = slot.id, retry_in_s = wait.as_secs_f64(), "worker respawn scheduled");
            slot.respawn_at = Some(now + wait);
        }
    }

    /// Starts a worker process for slot `i`, as its worker or (with
    /// `replacement`) as the replacement taking it over, from `source`
    /// (not [`Source::Wait`]).
    pub fn spawn_worker(&mut self, i: usize, now: Instant, replacement: bool, source: Source) -> Option<Pid> {
        let generation = self.next_generation;
        self.next_generation += 1;
        let id = self.slots[i].id;
        let req = WorkerRequest {
            slot: id,
            generation,
            processes: self.processes(),
            respawn: self.slots[i].spawns > 0,
            zygote: match source {
                Source::Zygote(pid) => Some(pid),
                Source::Exec | Source::Wait => None,
            },
            http_row: self.free_http_row(),
        };
        let result = self.os.spawn_worker(&req).and_then(|pid| match self.table.find(pid) {
            // A zygote is app code: a pid it names must be a new process.
            Some(p) => Err(std::io::Error::other(format!("the zygote named pid {pid}, already a {:?}", p.role))),
            None => Ok(pid),
        });
        self.slots[i].spawns += 1;
        match result {
            Ok(pid) => {
                tracing::info!(
                    worker = id,
                    pid = pid.as_raw(),
                    generation,
                    forked = req.zygote.is_some(),
                    "worker spawned"
                );
                let accepting = self.set.ready_on_spawn;
                let role = if replacement { Role::Replacement { slot: id } } else { Role::Worker { slot: id } };
                let state = if accepting { ProcState::Accepting { since: now } } else { ProcState::Starting };
                let mut p = Proc::new(pid, role, state, now);
                p.generation = generation;
                p.ever_accepted = accepting;
                p.retire_at = lifetime(&self.set).map(|l| now + l);
                p.http_row = req.http_row;
                self.http_rows_used = self.http_rows_used.max(req.http_row.map_or(0, |r| r + 1));
                self.table.insert(p);
                Some(pid)
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot spawn worker");
                None
            }
        }
    }

    /// The lowest request-metrics row no live process holds. Rows are
    /// never freed for counting (their counters keep what dead workers
    /// counted); a row whose process is gone is handed out again.
    fn free_http_row(&self) -> Option<u32> {
        let held: Vec<u32> = self.table.iter().filter_map(|p| p.http_row).collect();
        let free = (0..crate::scoreboard::http::ROWS).find(|r| !held.contains(r));
        if free.is_none() {
            tracing::warn!("every request-metrics row is held by a live process: this worker's requests go uncounted");
        }
        free
    }

    pub fn spawn_daemon(&mut self, i: usize, now: Instant) {
        let result = self.os.spawn_daemon(&self.daemons[i].argv);
        let d = &mut self.daemons[i];
        match result {
            Ok(pid) => {
                tracing::info!(pid = pid.as_raw(), command = d.argv.join(" "), "daemon spawned");
                self.table.insert(Proc::new(pid, Role::Daemon { index: i }, ProcState::Running, now));
            }
            Err(e) => {
                let wait = d.backoff;
                d.backoff = (d.backoff * 2).min(self.set.backoff_max);
                tracing::error!(command = d.argv.join(" "), error = %e, retry_in_s = wait.as_secs_f64(), "cannot spawn daemon");
                d.respawn_at = Some(now + wait);
            }
        }
    }
}
