//! The pod's resources, read from inside the container's own cgroup:
//! - `processes = auto`: the CPU quota is re-read every
//!   `cgroup-check-interval`; when Kubernetes resizes the pod in place, the
//!   workers are scaled to match (new workers start before anything stops
//!   when growing; the highest slots stop gracefully when shrinking);
//! - `reload-on-cgroup-memory`: while the container's working set is above
//!   the mark, the worker with the most private memory (USS) is recycled,
//!   one at a time — replacement first when a fresh worker fits under the
//!   limit, else stopped first;
//! - OOM kills: a worker that died of SIGKILL (not ours) while the cgroup's
//!   `oom_kill` counter rose is named as OOM-killed.
//!
//! Nothing is read periodically unless `processes = auto` or a memory mark
//! is set. On cgroup v1 the kernel also wakes the master when the usage
//! crosses the mark (a `cgroup.event_control` threshold), so a fast leak is
//! caught between two checks; while use stays above the mark the check
//! runs every [`OVER_MARK_RECHECK`] until it is back under.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::Master;
use super::core::Recycle;
use super::table::{ProcState, Role};
use crate::cgroup::{self, Cgroup, CpuQuota, MemoryUse};
use crate::config::{Config, MemoryMark};
use crate::sys;

/// How soon the memory check runs again while use is above the mark; it
/// also runs as soon as a recycle is over (the old worker exited).
pub const OVER_MARK_RECHECK: Duration = Duration::from_millis(250);

/// How long an OOM kill may wait to be claimed by a death we reap.
const OOM_CLAIM_WINDOW: Duration = Duration::from_secs(10);

/// What the master knows about its cgroup.
pub struct Pod {
    pub cgroup: Arc<Cgroup>,
    auto: bool,
    max_processes: Option<u32>,
    mark: Option<MemoryMark>,
    interval: Duration,
    /// When the next periodic read is due (None: nothing needs one).
    pub next: Option<Instant>,
    /// cgroup v1: readable when the usage crossed the mark; with the mark
    /// in bytes it was registered for.
    threshold: Option<(u64, OwnedFd)>,
    /// The quota `processes` was last sized from.
    quota: Option<CpuQuota>,
    /// OOM kills accounted for: claimed by a death, or forgotten.
    oom_seen: Option<u64>,
    /// When the counter was first seen above `oom_seen` (unclaimed kills).
    oom_pending_since: Option<Instant>,
    /// Each worker's RSS at the last memory check, for naming OOM kills.
    last_rss: HashMap<i32, u64>,
    /// Each worker's private memory when first sampled accepting.
    baseline: HashMap<i32, u64>,
    /// The last memory check found use above the mark.
    pub over: bool,
    /// The CPU quota could not be read at the last check (warned once).
    quota_unreadable: bool,
    /// The working set when the last memory recycle was decided, and how
    /// many recycles in a row did not bring it down (backoff, see
    /// [`Pod::recycle_pause`]).
    last_recycle: Option<(Instant, u64)>,
    fruitless: u32,
    /// The memory limit the threshold was registered for.
    limit_seen: Option<u64>,
}

impl Pod {
    pub fn new(cgroup: Cgroup, cfg: &Config) -> Pod {
        let mut pod = Pod {
            oom_seen: cgroup.oom_kills(),
            oom_pending_since: None,
            quota: cgroup.cpu_quota(),
            cgroup: Arc::new(cgroup),
            auto: false,
            max_processes: None,
            mark: None,
            interval: cfg.cgroup_check_interval,
            next: None,
            threshold: None,
            last_rss: HashMap::new(),
            baseline: HashMap::new(),
            over: false,
            quota_unreadable: false,
            last_recycle: None,
            fruitless: 0,
            limit_seen: None,
        };
        pod.configure(cfg);
        pod
    }

    /// Takes the options of a (new) configuration.
    pub fn configure(&mut self, cfg: &Config) {
        self.auto = cfg.processes_auto;
        self.max_processes = cfg.max_processes;
        self.mark = cfg.cgroup_memory_mark;
        self.interval = cfg.cgroup_check_interval;
        let limit = self.cgroup.memory().and_then(|m| m.limit);
        let mark = self.mark.and_then(|m| m.bytes(limit));
        // Without a mark, a threshold at 90 % of the limit still samples
        // the workers' memory once when the container nears it, so an OOM
        // kill that follows is logged with the victim's size.
        let watch = mark.or_else(|| limit.map(|l| l / 10 * 9));
        self.limit_seen = limit;
        if let (Some(m), Some(l)) = (mark, limit.filter(|l| mark.is_some_and(|m| m >= *l))) {
            tracing::warn!(
                mark_bytes = m,
                limit_bytes = l,
                "reload-on-cgroup-memory is at or above the memory limit: it can never fire"
            );
        }
        if self.mark.is_some() && mark.is_none() {
            tracing::warn!(
                cgroup = self.cgroup.describe(),
                "reload-on-cgroup-memory is a share of the memory limit, and the container has none: it is inert"
            );
        }
        if self.threshold.as_ref().map(|(b, _)| *b) != watch {
            // Non-blocking and close-on-exec (see `memory_threshold_eventfd`).
            self.threshold = watch.and_then(|b| self.cgroup.memory_threshold_eventfd(b).map(|fd| (b, fd)));
        }
    }

    /// Whether anything needs the cgroup read periodically.
    fn polls(&self) -> bool {
        self.auto || self.mark.is_some()
    }

    pub fn schedule(&mut self, now: Instant, soon: bool) {
        let wait = if soon { OVER_MARK_RECHECK.min(self.interval) } else { self.interval };
        self.next = self.polls().then(|| now + wait);
    }

    /// The threshold eventfd, for the master's poll.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.threshold.as_ref().map(|(_, fd)| fd.as_fd())
    }

    /// Reads (and so clears) the threshold eventfd: true when it fired.
    pub fn drain_threshold(&mut self) -> bool {
        let Some((_, fd)) = &self.threshold else { return false };
        let mut buf = [0u8; 8];
        matches!(nix::unistd::read(fd, &mut buf), Ok(8))
    }

    /// Claims one OOM kill for a process that just died of SIGKILL: true
    /// when the cgroup's `oom_kill` counter holds an increment no earlier
    /// death took. Each death takes at most one, so two workers killed and
    /// reaped together are both named.
    fn claim_oom_kill(&mut self) -> bool {
        let Some(now) = self.cgroup.oom_kills() else { return false };
        let seen = self.oom_seen.unwrap_or(0);
        if now > seen {
            self.oom_seen = Some(seen + 1);
            true
        } else {
            self.oom_seen = Some(now);
            false
        }
    }

    /// Forgets OOM kills nobody claimed within [`OOM_CLAIM_WINDOW`] of
    /// first seeing them (a worker's own subprocess, reaped by the worker,
    /// not us), so that a later SIGKILL is not blamed on them. A victim of
    /// ours is reaped well within the window: the kernel counts the kill
    /// before the process has freed its memory and exited.
    fn settle_oom_counter(&mut self, now: Instant) {
        let Some(count) = self.cgroup.oom_kills() else { return };
        if count <= self.oom_seen.unwrap_or(0) {
            self.oom_pending_since = None;
            return;
        }
        match self.oom_pending_since {
            None => self.oom_pending_since = Some(now),
            Some(since) if now.duration_since(since) >= OOM_CLAIM_WINDOW => {
                self.oom_seen = Some(count);
                self.oom_pending_since = None;
            }
            Some(_) => {}
        }
    }

    /// Whether memory recycling is paused after recycles that freed
    /// nothing: 2^(n-1) check intervals after the n-th fruitless one in a
    /// row, at most 10 minutes.
    fn recycle_pause(&self, now: Instant) -> bool {
        let Some((at, _)) = self.last_recycle.filter(|_| self.fruitless > 0) else { return false };
        let pause = self.interval.saturating_mul(1 << (self.fruitless - 1).min(16)).min(Duration::from_secs(600));
        now < at + pause
    }
}

impl Master {
    /// The periodic (or threshold-woken) look at the cgroup.
    pub(super) fn check_pod(&mut self, now: Instant) {
        if !self.core.serving() {
            self.pod.schedule(now, false);
            return;
        }
        self.pod.settle_oom_counter(now);
        if self.pod.auto {
            self.follow_cpu_quota();
        }
        let over = match self.pod.mark {
            Some(mark) => self.check_memory(mark, now),
            None => {
                self.sample_workers();
                false
            }
        };
        self.pod.over = over;
        self.pod.schedule(now, over);
        self.core.settle(now);
    }

    /// Over the mark and the last recycle is done: look again at once
    /// rather than at the next scheduled check.
    pub(super) fn after_recycle(&mut self, now: Instant) {
        if self.pod.over && self.core.rollout.is_none() && self.core.table.retiring().next().is_none() {
            self.check_pod(now);
        }
    }

    /// `processes = auto` and the quota changed: scale to the new size. A
    /// quota that cannot be read (the cgroup moved or vanished) keeps the
    /// workers as they are: it is not "no limit".
    fn follow_cpu_quota(&mut self) {
        let Ok(quota) = self.pod.cgroup.cpu_limit() else {
            if !self.pod.quota_unreadable {
                self.pod.quota_unreadable = true;
                tracing::warn!(
                    cgroup = self.pod.cgroup.describe(),
                    "cannot read the CPU quota; keeping the workers as they are"
                );
            }
            return;
        };
        self.pod.quota_unreadable = false;
        if quota == self.pod.quota {
            return;
        }
        self.pod.quota = quota;
        let (n, why) = cgroup::auto_processes(&self.pod.cgroup, cgroup::affinity_cpus());
        let target = self.pod.max_processes.map_or(n, |m| n.min(m));
        let from = self.core.processes();
        if target != from {
            tracing::info!(from, to = target, source = why.as_str(), "the CPU quota changed: resizing the workers");
        }
        self.cfg.processes = target;
        self.cfg.processes_source = Some(why);
        self.scale_to(target);
    }

    /// Over the mark: recycle the worker with the most private memory,
    /// unless a recycle or rollout is still under way, recycling is paused
    /// (the last ones freed nothing), or no worker holds clearly more than
    /// a fresh one (the memory is elsewhere: a daemon, files in tmpfs).
    /// Returns whether use is above the mark.
    fn check_memory(&mut self, mark: MemoryMark, now: Instant) -> bool {
        let Some(m) = self.pod.cgroup.memory() else { return false };
        if m.limit != self.pod.limit_seen {
            // Resized in place: the threshold follows the new limit.
            self.pod.limit_seen = m.limit;
            let cfg = self.cfg.clone();
            self.pod.configure(&cfg);
        }
        let Some(mark_bytes) = mark.bytes(m.limit) else { return false };
        let sizes = self.sample_candidates();
        if m.working_set < mark_bytes {
            self.pod.fruitless = 0;
            return false;
        }
        self.judge_last_recycle(m.working_set);
        let busy = self.core.rollout.is_some() || self.core.table.retiring().next().is_some();
        if busy || self.pod.recycle_pause(now) {
            return true;
        }
        // A fresh worker costs about the least any worker held once it
        // accepted; a candidate holds clearly more (twice that, and 8 MiB).
        let fresh = sizes.iter().map(|c| c.baseline).min().unwrap_or(0);
        let grown = |uss: u64| uss > fresh.saturating_mul(2).max(fresh + (8 << 20));
        let Some(big) = sizes.iter().filter(|c| grown(c.uss)).max_by_key(|c| c.uss).copied() else {
            self.note_memory_elsewhere(&m, mark_bytes, fresh);
            return true;
        };
        // Room for a replacement next to it: a starting worker maps more
        // than it keeps (about twice its private memory), plus a margin.
        let room = m.limit.is_some_and(|l| l.saturating_sub(m.working_set) > fresh.saturating_mul(2) + (8 << 20));
        let started = if room {
            self.core.recycle(big.slot, Recycle::CgroupMemory)
        } else {
            self.core.recycle_stop_first(big.slot, Recycle::CgroupMemory, now)
        };
        if started {
            log_recycle(big.slot, big.pid, big.uss, &m, mark_bytes, room);
            self.pod.last_recycle = Some((now, m.working_set.saturating_sub(big.uss / 2)));
        }
        true
    }

    /// After a recycle: if use did not come down by at least half the
    /// recycled worker's private memory, the recycle was fruitless.
    fn judge_last_recycle(&mut self, working_set: u64) {
        let Some((at, target)) = self.pod.last_recycle.filter(|(_, t)| *t != u64::MAX) else { return };
        if working_set > target {
            self.pod.fruitless += 1;
            tracing::warn!(
                fruitless = self.pod.fruitless,
                working_set_bytes = working_set,
                "recycling a worker did not bring the container's memory down: pausing memory recycles"
            );
        } else {
            self.pod.fruitless = 0;
        }
        // Judged once.
        self.pod.last_recycle = Some((at, u64::MAX));
    }

    /// Over the mark, yet no worker holds clearly more than a fresh one:
    /// said once per stretch above the mark.
    fn note_memory_elsewhere(&mut self, m: &MemoryUse, mark: u64, fresh: u64) {
        if !self.pod.over {
            tracing::warn!(
                working_set_bytes = m.working_set,
                mark_bytes = mark,
                fresh_worker_uss_bytes = fresh,
                "container memory over reload-on-cgroup-memory, but no worker holds much more than a fresh one: \
                 recycling would not help (the memory is elsewhere: a daemon, a subprocess, files in tmpfs)"
            );
        }
    }

    /// Accepting workers (not replacements, not retiring, not still
    /// starting: a worker just forked has almost no private memory yet),
    /// each with its memory now and its first sample once accepting.
    fn sample_candidates(&mut self) -> Vec<Candidate> {
        let sampled = self.sample_workers();
        let mut out = Vec::new();
        for (role, pid, mem) in sampled {
            let Role::Worker { slot } = role else { continue };
            if !self.core.table.find(pid).is_some_and(|p| p.accepting()) {
                continue;
            }
            let baseline = *self.pod.baseline.entry(pid.as_raw()).or_insert(mem.uss);
            out.push(Candidate { slot, pid, uss: mem.uss, baseline });
        }
        out
    }

    /// Every worker process's memory, remembered for naming OOM kills.
    fn sample_workers(&mut self) -> Vec<(Role, Pid, sys::Memory)> {
        let all: Vec<(Role, Pid)> = self.core.table.workers().map(|p| (p.role, p.pid)).collect();
        let sampled: Vec<(Role, Pid, sys::Memory)> =
            all.into_iter().filter_map(|(role, pid)| Some((role, pid, sys::memory(pid)?))).collect();
        // A worker the OOM killer just took is a zombie until reaped: its
        // memory can no longer be read, and its last sample must stay.
        let table = &self.core.table;
        self.pod.last_rss.retain(|pid, _| table.find(Pid::from_raw(*pid)).is_some());
        self.pod.baseline.retain(|pid, _| table.find(Pid::from_raw(*pid)).is_some());
        self.pod.last_rss.extend(sampled.iter().map(|(_, pid, mem)| (pid.as_raw(), mem.rss)));
        sampled
    }

    /// Before the core hears of an exit: a process that died of SIGKILL
    /// (not sent by us) while the cgroup's `oom_kill` counter holds an
    /// unclaimed increment was the OOM killer's. A worker is named, logged
    /// and counted; a daemon, zygote or orphan is logged, and takes its
    /// increment so that no worker is blamed for it.
    pub(super) fn note_oom_kill(&mut self, pid: Pid, status: &WaitStatus) {
        if !matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
            return;
        }
        let p = self.core.table.find(pid);
        let ours = p.is_some_and(|p| matches!(p.state, ProcState::Stopping { killed: true, .. }));
        let (slot, role) = (p.and_then(|p| p.role.slot()), p.map(|p| p.role));
        let last_rss = self.pod.last_rss.remove(&pid.as_raw());
        if ours || !self.pod.claim_oom_kill() {
            return;
        }
        let m = self.pod.cgroup.memory();
        let Some(id) = slot else {
            let what = match role {
                Some(Role::Daemon { .. }) => "an attach-daemon",
                Some(Role::Zygote { .. }) => "the zygote",
                _ => "an orphaned descendant",
            };
            tracing::error!(pid = pid.as_raw(), what, "killed by the kernel's OOM killer");
            return;
        };
        self.core.counters.oom_kills += 1;
        if let Some(i) = self.core.slot_index(id) {
            self.core.slots[i].oom_kills += 1;
        }
        tracing::error!(
            worker = id,
            pid = pid.as_raw(),
            last_rss_bytes = last_rss,
            memory_usage_bytes = m.map(|m| m.usage),
            memory_limit_bytes = m.and_then(|m| m.limit),
            total = self.core.counters.oom_kills,
            "worker killed by the kernel's OOM killer: the container hit its memory limit \
             (reload-on-cgroup-memory recycles workers before that)"
        );
    }
}

/// A worker that may be recycled for memory.
#[derive(Clone, Copy)]
struct Candidate {
    slot: u32,
    pid: Pid,
    uss: u64,
    /// Its private memory when first sampled accepting.
    baseline: u64,
}

fn log_recycle(id: u32, pid: Pid, uss: u64, m: &MemoryUse, mark: u64, room: bool) {
    tracing::warn!(
        worker = id,
        pid = pid.as_raw(),
        uss_bytes = uss,
        working_set_bytes = m.working_set,
        limit_bytes = m.limit,
        mark_bytes = mark,
        order = if room { "replacement first" } else { "stop first" },
        "container memory over reload-on-cgroup-memory: recycling the worker with the most private memory"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{Controller, Version};

    /// A v1 memory controller in a temp dir whose `oom_kill` the test sets.
    struct FakeOom(std::path::PathBuf);

    impl FakeOom {
        fn new() -> FakeOom {
            let dir = std::env::temp_dir().join(format!("podmaster-pod-oom-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let f = FakeOom(dir);
            f.set(0);
            f
        }
        fn set(&self, n: u64) {
            std::fs::write(
                self.0.join("memory.oom_control"),
                format!("oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"),
            )
            .unwrap();
        }
        fn pod(&self) -> Pod {
            let cg = Cgroup { cpu: None, memory: Some(Controller { version: Version::V1, dir: self.0.clone() }) };
            Pod::new(cg, &Config::resolve(&[]).unwrap())
        }
    }

    impl Drop for FakeOom {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn each_oom_kill_is_claimed_once_and_stale_ones_are_forgotten() {
        let f = FakeOom::new();
        let mut pod = f.pod();
        assert!(!pod.claim_oom_kill(), "nothing counted yet");
        f.set(2);
        assert!(pod.claim_oom_kill() && pod.claim_oom_kill(), "two kills, two victims named");
        assert!(!pod.claim_oom_kill(), "a third SIGKILL is not the OOM killer's");
        // A kill nobody of ours claims (a worker's own subprocess) is
        // forgotten once the claim window has passed.
        f.set(3);
        let t0 = Instant::now();
        pod.settle_oom_counter(t0);
        pod.settle_oom_counter(t0 + Duration::from_secs(1));
        assert_eq!(pod.oom_seen, Some(2), "still claimable within the window");
        pod.settle_oom_counter(t0 + OOM_CLAIM_WINDOW);
        assert!(!pod.claim_oom_kill(), "an operator's kill -9 later is not blamed on it");
    }
}
