//! Per-slot bookkeeping: one [`Slot`] per worker id (1..N, stable across
//! respawns) with what outlives its processes — failed starts, respawn
//! schedule and backoff, spawn and exit counts. The processes themselves
//! live in the [`super::table::Table`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::state::WorkerView;
use super::table::Proc;
use nix::sys::wait::WaitStatus;

/// First respawn delay after an unexpected exit; doubles per failure.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// A worker that accepted this long is healthy: its next crash restarts
/// the backoff from the beginning.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Slot {
    pub id: u32,
    /// Consecutive starts that never reached accepting.
    pub failed_starts: u32,
    /// When the slot is empty: when to spawn again (None: not scheduled).
    pub respawn_at: Option<Instant>,
    /// Due to spawn, waiting for a zygote to be ready.
    pub awaiting_zygote: bool,
    pub backoff: Duration,
    pub respawn_count: u64,
    pub spawns: u64,
    pub exits: BTreeMap<String, u64>,
    /// Its workers the kernel's OOM killer took.
    pub oom_kills: u64,
}

impl Slot {
    pub fn new(id: u32) -> Slot {
        Slot {
            id,
            failed_starts: 0,
            respawn_at: None,
            awaiting_zygote: false,
            backoff: BACKOFF_START,
            respawn_count: 0,
            spawns: 0,
            exits: BTreeMap::new(),
            oom_kills: 0,
        }
    }

    /// The slot as seen from outside, with its current worker if any.
    pub fn view(&self, worker: Option<&Proc>) -> WorkerView {
        let mut v = match worker {
            Some(w) => w.view(self.id),
            None => WorkerView {
                id: self.id,
                pid: 0,
                generation: 0,
                state: "down",
                accepting: 0,
                respawn_count: 0,
                last_spawn: 0,
                spawns_total: 0,
                failed_starts: 0,
                exits: Vec::new(),
                oom_kills: 0,
            },
        };
        v.respawn_count = self.respawn_count;
        v.spawns_total = self.spawns;
        v.failed_starts = self.failed_starts;
        v.exits = self.exits.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.oom_kills = self.oom_kills;
        v
    }

    /// Records an exit and returns how long to wait before respawning: no
    /// wait at all when the worker had been accepting for
    /// [`BACKOFF_RESET_AFTER`] (a healthy worker that died is replaced at
    /// once, and a failure after that starts the backoff afresh), else the
    /// backoff, doubled for the next consecutive failure up to `max`.
    pub fn note_exit(
        &mut self,
        reason: &str,
        was_accepting_since: Option<Instant>,
        now: Instant,
        max: Duration,
    ) -> Duration {
        *self.exits.entry(reason.to_owned()).or_default() += 1;
        if was_accepting_since.is_some_and(|s| now.duration_since(s) >= BACKOFF_RESET_AFTER) {
            self.backoff = BACKOFF_START;
            return Duration::ZERO;
        }
        let wait = self.backoff.min(max);
        self.backoff = (self.backoff * 2).min(max);
        wait
    }
}

/// `exit_code=N` or `signal=SIGNAME`, the label used in logs and metrics.
pub fn exit_reason(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit_code={code}"),
        WaitStatus::Signaled(_, sig, _) => format!("signal={}", sig.as_str()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut s = Slot::new(1);
        let now = Instant::now();
        let max = Duration::from_secs(30);
        let waits: Vec<_> = (0..12).map(|_| s.note_exit("exit_code=1", None, now, max).as_millis()).collect();
        assert_eq!(&waits[..4], &[100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), 30_000);
        // A worker that had been accepting for 10 s is replaced at once, and
        // the next consecutive failure starts the backoff afresh.
        let long_ago = now - Duration::from_secs(11);
        assert_eq!(s.note_exit("exit_code=1", Some(long_ago), now, max), Duration::ZERO);
        assert_eq!(s.note_exit("exit_code=1", None, now, max), BACKOFF_START);
        // Accepting, but not for long: the backoff goes on doubling.
        let lately = now - Duration::from_secs(1);
        assert_eq!(s.note_exit("exit_code=1", Some(lately), now, max), BACKOFF_START * 2);
        assert_eq!(s.exits["exit_code=1"], 15);
    }
}
