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
    /// The cgroup's `oom_kill` counter when last read.
    oom_seen: Option<u64>,
    /// Each worker's RSS at the last memory check, for naming OOM kills.
    last_rss: HashMap<i32, u64>,
    /// The last memory check found use above the mark.
    pub over: bool,
}

impl Pod {
    pub fn new(cgroup: Cgroup, cfg: &Config) -> Pod {
        let mut pod = Pod {
            oom_seen: cgroup.oom_kills(),
            quota: cgroup.cpu_quota(),
            cgroup: Arc::new(cgroup),
            auto: false,
            max_processes: None,
            mark: None,
            interval: cfg.cgroup_check_interval,
            next: None,
            threshold: None,
            last_rss: HashMap::new(),
            over: false,
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

    /// Reads the oom_kill counter; true when it rose since the last read.
    fn oom_counter_rose(&mut self) -> bool {
        let now = self.cgroup.oom_kills();
        let rose =
            matches!((self.oom_seen, now), (Some(a), Some(b)) if b > a) || (self.oom_seen.is_none() && now > Some(0));
        if now.is_some() {
            self.oom_seen = now;
        }
        rose
    }
}

impl Master {
    /// The periodic (or threshold-woken) look at the cgroup.
    pub(super) fn check_pod(&mut self, now: Instant) {
        if !self.core.serving() {
            self.pod.schedule(now, false);
            return;
        }
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

    /// `processes = auto` and the quota changed: scale to the new size.
    fn follow_cpu_quota(&mut self) {
        let quota = self.pod.cgroup.cpu_quota();
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
    /// unless a recycle or rollout is still under way. Returns whether use
    /// is above the mark.
    fn check_memory(&mut self, mark: MemoryMark, now: Instant) -> bool {
        let Some(m) = self.pod.cgroup.memory() else { return false };
        let Some(mark_bytes) = mark.bytes(m.limit) else { return false };
        // Only serving workers (not replacements, not retiring, not still
        // starting) are candidates: a worker just forked has almost no
        // private memory yet, so it is neither worth recycling nor a
        // measure of what a fresh worker costs.
        let sampled = self.sample_workers();
        let table = &self.core.table;
        let sizes: Vec<(u32, Pid, sys::Memory)> = sampled
            .into_iter()
            .filter_map(|(role, pid, mem)| match role {
                Role::Worker { slot } if table.find(pid).is_some_and(|p| p.accepting()) => Some((slot, pid, mem)),
                _ => None,
            })
            .collect();
        if m.working_set < mark_bytes {
            return false;
        }
        let busy = self.core.rollout.is_some() || self.core.table.retiring().next().is_some();
        let Some(&(id, pid, big)) = sizes.iter().filter(|_| !busy).max_by_key(|(_, _, mem)| mem.uss) else {
            return true;
        };
        // A fresh worker costs about the smallest one's private memory.
        let fresh = sizes.iter().map(|(_, _, mem)| mem.uss).min().unwrap_or(0);
        let room = m.limit.is_some_and(|l| l.saturating_sub(m.working_set) > fresh);
        log_recycle(id, pid, big.uss, &m, mark_bytes, room);
        if room {
            self.core.recycle(id, Recycle::CgroupMemory);
        } else {
            self.core.recycle_stop_first(id, Recycle::CgroupMemory, now);
        }
        true
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
        self.pod.last_rss.extend(sampled.iter().map(|(_, pid, mem)| (pid.as_raw(), mem.rss)));
        sampled
    }

    /// Before the core hears of an exit: a worker killed by SIGKILL that
    /// we did not send, while the cgroup's OOM-kill counter rose, is named.
    pub(super) fn note_oom_kill(&mut self, pid: Pid, status: &WaitStatus) {
        if !matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _)) {
            return;
        }
        let Some(p) = self.core.table.find(pid) else { return };
        let ours = matches!(p.state, ProcState::Stopping { killed: true, .. });
        let last_rss = self.pod.last_rss.remove(&pid.as_raw());
        let Some(id) = p.role.slot() else { return };
        if ours || !self.pod.oom_counter_rose() {
            return;
        }
        self.core.counters.oom_kills += 1;
        if let Some(i) = self.core.slot_index(id) {
            self.core.slots[i].oom_kills += 1;
        }
        let m = self.pod.cgroup.memory();
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
