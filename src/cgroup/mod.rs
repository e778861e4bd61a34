//! The container's own cgroup: where it is, v1 or v2, and what its `cpu`
//! and `memory` controllers say. The master reads it for `processes =
//! auto` (the CPU quota), the memory watermark that recycles workers
//! before the OOM killer does, naming OOM kills (the `oom_kill` counter),
//! and the Prometheus metrics.
//!
//! It finds the cgroup only through `/proc/self/cgroup` and
//! `/proc/self/mountinfo`, never by assuming a path, and takes both roots
//! as parameters ([`Roots`]) so tests point it at fixture trees. It never
//! fails: a controller, file or value it cannot find or parse is `None`.
//! It writes nothing to the cgroup except a threshold registration in v1's
//! `cgroup.event_control`, which the kernel drops when the eventfd closes.
//!
//! Layout: `parse` (the byte-level parsers), `sys` (the two raw syscalls),
//! `tests` (fixture trees, and one test on the real machine as root).

mod parse;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{SysError, context};
use parse::{Membership, Mount};

pub use crate::sys::cgroup::affinity_cpus;

/// Largest `/proc/self` file read: the mountinfo of a node with thousands
/// of mounts is a few MiB; a bound keeps a hostile file from filling memory.
const MAX_PROC_FILE: u64 = 16 << 20;

/// Largest controller file read (`memory.stat`, the longest, is a few KiB).
const MAX_VALUE_FILE: u64 = 64 << 10;

/// Where to look: normally `/proc/self` (holding `cgroup` and `mountinfo`)
/// and `/` (prefix for the mount points mountinfo names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    pub proc_self: PathBuf,
    pub fs_root: PathBuf,
}

impl Roots {
    /// This process, seen from the root of the file system.
    pub fn system() -> Roots {
        Roots { proc_self: PathBuf::from("/proc/self"), fs_root: PathBuf::from("/") }
    }
}

/// Which cgroup hierarchy a controller was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (or co-mounted group), `fstype cgroup`.
    V1,
    /// The unified hierarchy, `fstype cgroup2`.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// One controller of this process's cgroup: the directory holding its
/// files (`cpu.max`, `memory.usage_in_bytes`...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub version: Version,
    pub dir: PathBuf,
}

impl Controller {
    /// The contents of one of the controller's files, if readable.
    fn read(&self, file: &str) -> Option<Vec<u8>> {
        read(&self.dir.join(file), MAX_VALUE_FILE)
    }
}

/// The controllers podmaster reads; each `None` when not found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cgroup {
    pub cpu: Option<Controller>,
    pub memory: Option<Controller>,
}

/// A CFS bandwidth limit: `quota_us` of CPU time per `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    /// The limit in CPUs' worth of time (1.5 for 150000/100000); 0 for a
    /// zero period, which the parsers never produce.
    pub fn cores(&self) -> f64 {
        if self.period_us == 0 {
            return 0.0;
        }
        self.quota_us as f64 / self.period_us as f64
    }
}

/// The memory controller's counters, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUse {
    /// Everything charged to the cgroup, page cache included.
    pub usage: u64,
    /// Usage minus inactive file pages, as kubelet computes it for its
    /// eviction decisions: the part the kernel cannot simply drop.
    pub working_set: u64,
    /// `None`: no limit.
    pub limit: Option<u64>,
}

impl Cgroup {
    /// Finds this process's `cpu` and `memory` controllers from
    /// `<proc_self>/cgroup` and `<proc_self>/mountinfo`. Never fails: what
    /// is missing is `None`.
    ///
    /// On a hybrid machine (v1 controllers and a v2 mount) each controller
    /// comes from the hierarchy that actually has it: v2 only if the
    /// cgroup2 directory's `cgroup.controllers` lists it (a unified mount
    /// with no controllers, as systemd's hybrid mode makes, does not
    /// count), otherwise the v1 mount whose super options name it.
    ///
    /// A cgroup path maps to a directory through the mount's root `R` and
    /// mount point `M`: `M + P` if `R` is `/`, `M` if the path is `R` or
    /// `/` (inside a cgroup namespace), `M + rest` if it is below `R`. When
    /// that directory does not exist — the path belongs to another cgroup
    /// namespace, or the runtime mounted only the container's own cgroup —
    /// `M` itself is used, as the JVM and the Go runtime do.
    pub fn discover(roots: &Roots) -> Cgroup {
        let members =
            read(&roots.proc_self.join("cgroup"), MAX_PROC_FILE).map(|t| parse::memberships(&t)).unwrap_or_default();
        let mounts =
            read(&roots.proc_self.join("mountinfo"), MAX_PROC_FILE).map(|t| parse::mounts(&t)).unwrap_or_default();
        Cgroup {
            cpu: find(&roots.fs_root, &members, &mounts, "cpu"),
            memory: find(&roots.fs_root, &members, &mounts, "memory"),
        }
    }

    /// The CPU limit: v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
    /// `cpu.cfs_period_us`. `None` without a cpu controller, without a
    /// limit (`max`, `-1`), or when the files are missing or unreadable.
    pub fn cpu_quota(&self) -> Option<CpuQuota> {
        let cpu = self.cpu.as_ref()?;
        let (quota_us, period_us) = match cpu.version {
            Version::V2 => parse::cpu_max(&cpu.read("cpu.max")?)?,
            Version::V1 => {
                let quota = parse::cfs_quota(&cpu.read("cpu.cfs_quota_us")?)?;
                (quota, parse::number(&cpu.read("cpu.cfs_period_us")?).filter(|p| *p > 0)?)
            }
        };
        Some(CpuQuota { quota_us, period_us })
    }

    /// The CPU limit as a resize decision needs it: `Ok(None)` when the
    /// cgroup has none (v2 `max`, v1 a negative quota), `Err(())` when it
    /// cannot be read (no controller, a file gone or garbled), so a caller
    /// keeps what it had instead of taking "no limit" for every CPU.
    #[allow(clippy::result_unit_err)]
    pub fn cpu_limit(&self) -> Result<Option<CpuQuota>, ()> {
        let cpu = self.cpu.as_ref().ok_or(())?;
        match cpu.version {
            Version::V2 => {
                let text = cpu.read("cpu.max").ok_or(())?;
                if text.split(u8::is_ascii_whitespace).next() == Some(b"max".as_slice()) {
                    return Ok(None);
                }
                let (quota_us, period_us) = parse::cpu_max(&text).ok_or(())?;
                Ok(Some(CpuQuota { quota_us, period_us }))
            }
            Version::V1 => {
                let text = cpu.read("cpu.cfs_quota_us").ok_or(())?;
                let quota: i64 = std::str::from_utf8(text.trim_ascii()).ok().and_then(|t| t.parse().ok()).ok_or(())?;
                if quota < 0 {
                    return Ok(None);
                }
                self.cpu_quota().map(Some).ok_or(())
            }
        }
    }

    /// Total time the cgroup was throttled by its quota, from `cpu.stat`
    /// (v2 `throttled_usec`, v1 `throttled_time` in nanoseconds).
    pub fn cpu_throttled(&self) -> Option<Duration> {
        let cpu = self.cpu.as_ref()?;
        let stat = cpu.read("cpu.stat")?;
        match cpu.version {
            Version::V2 => parse::keyed(&stat, b"throttled_usec").map(Duration::from_micros),
            Version::V1 => parse::keyed(&stat, b"throttled_time").map(Duration::from_nanos),
        }
    }

    /// Usage, working set and limit. `None` without a memory controller,
    /// or when the usage or limit file is missing or unreadable (the v2
    /// root cgroup has neither). A missing `memory.stat` only makes the
    /// working set equal to the usage: overstating it recycles a worker
    /// early, which is safer than late.
    pub fn memory(&self) -> Option<MemoryUse> {
        let mem = self.memory.as_ref()?;
        let (usage_file, limit_file, inactive_key) = match mem.version {
            Version::V2 => ("memory.current", "memory.max", &b"inactive_file"[..]),
            Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes", &b"total_inactive_file"[..]),
        };
        let usage = parse::number(&mem.read(usage_file)?)?;
        let limit = parse::memory_limit(&mem.read(limit_file)?)?;
        let inactive = mem.read("memory.stat").and_then(|s| parse::keyed(&s, inactive_key)).unwrap_or(0);
        Some(MemoryUse { usage, working_set: usage.saturating_sub(inactive), limit })
    }

    /// Processes the OOM killer killed in this cgroup and below: v2
    /// `memory.events` `oom_kill`, v1 `memory.oom_control` `oom_kill` (a
    /// line kernels before 4.13 lack: `None` there).
    pub fn oom_kills(&self) -> Option<u64> {
        let mem = self.memory.as_ref()?;
        let file = match mem.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        parse::keyed(&mem.read(file)?, b"oom_kill")
    }

    /// One line for logs and `--check-config`:
    /// `cgroup v1 cpu /sys/fs/cgroup/cpu/kubepods/x, memory /sys/fs/cgroup/memory/kubepods/x`
    /// (the version is repeated only where it changes).
    pub fn describe(&self) -> String {
        if self.cpu.is_none() && self.memory.is_none() {
            return "no cgroup cpu or memory controller found".to_owned();
        }
        let mut out = String::from("cgroup");
        let mut last = None;
        for (name, controller) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            if last.is_some() {
                out.push(',');
            }
            match controller {
                Some(c) if last == Some(Some(c.version)) => out.push_str(&format!(" {name} {}", c.dir.display())),
                Some(c) => out.push_str(&format!(" {} {name} {}", c.version, c.dir.display())),
                None => out.push_str(&format!(" no {name} controller")),
            }
            last = Some(controller.as_ref().map(|c| c.version));
        }
        out
    }

    /// cgroup v1 only: an eventfd (close-on-exec, non-blocking) that
    /// becomes readable each time `memory.usage_in_bytes` crosses `bytes`,
    /// upwards or downwards, registered as `<eventfd> <fd of
    /// memory.usage_in_bytes> <bytes>` in `cgroup.event_control`. Closing
    /// the eventfd unregisters it. A notification instead of polling: the
    /// kernel checks thresholds as it charges pages. `None` on v2 (which
    /// has no such interface) or on failure, logged with its errno.
    pub fn memory_threshold_eventfd(&self, bytes: u64) -> Option<OwnedFd> {
        let mem = self.memory.as_ref().filter(|m| m.version == Version::V1)?;
        register_threshold(&mem.dir, bytes)
            .inspect_err(|e| tracing::warn!(error = %e, bytes, "cannot register a cgroup v1 memory threshold"))
            .ok()
    }
}

fn register_threshold(dir: &Path, bytes: u64) -> Result<OwnedFd, SysError> {
    let efd = crate::sys::cgroup::eventfd().map_err(context("eventfd"))?;
    let usage_path = dir.join("memory.usage_in_bytes");
    let usage = File::open(&usage_path).map_err(context(format!("open {}", usage_path.display())))?;
    let control_path = dir.join("cgroup.event_control");
    // One write: the kernel parses each write(2) as a whole registration.
    let line = format!("{} {} {bytes}", efd.as_raw_fd(), usage.as_raw_fd());
    OpenOptions::new()
        .write(true)
        .open(&control_path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(context(format!("write {:?} to {}", line, control_path.display())))?;
    // The kernel keeps what it needs of `usage`; closing it here is fine.
    Ok(efd)
}

/// `processes = auto`: the CPU quota rounded up (a fraction of a core
/// still deserves a worker), capped by `affinity` (a quota larger than the
/// CPUs this process may run on buys nothing), at least 1; without a quota,
/// `affinity`. Also returns a sentence saying where the number came from,
/// for the startup log and `--check-config`.
pub fn auto_processes(cgroup: &Cgroup, affinity: usize) -> (u32, String) {
    let affinity = u32::try_from(affinity).unwrap_or(u32::MAX).max(1);
    let cpus = format!("{affinity} CPU{} in the affinity mask", if affinity == 1 { "" } else { "s" });
    let where_ = match &cgroup.cpu {
        Some(c) => format!("cgroup {} {}", c.version, c.dir.display()),
        None => "no cpu cgroup found".to_owned(),
    };
    let Some(q) = cgroup.cpu_quota().filter(|q| q.period_us > 0) else {
        return (affinity, format!("no CPU quota ({where_}): {cpus}"));
    };
    let whole = q.quota_us.div_ceil(q.period_us).max(1);
    let n = u32::try_from(whole).unwrap_or(u32::MAX).min(affinity);
    let unit = if q.quota_us == q.period_us { "core" } else { "cores" };
    let how = if u64::from(n) < whole {
        format!(", capped by the {cpus}")
    } else if q.quota_us % q.period_us != 0 || q.quota_us == 0 {
        format!(", rounded up to {n}")
    } else {
        String::new()
    };
    let cores = format!("{:.3}", q.cores());
    let cores = cores.trim_end_matches('0').trim_end_matches('.');
    (n, format!("CPU quota {}/{} µs = {cores} {unit}{how} ({where_})", q.quota_us, q.period_us))
}

/// Reads at most `max` bytes of `path`; `None` if it cannot be read.
fn read(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path).ok()?.take(max).read_to_end(&mut out).ok()?;
    Some(out)
}

/// `base` joined with an absolute path from a kernel file (`/sys/fs/cgroup`
/// under `fs_root`, a cgroup path under a mount point).
fn under(base: &Path, absolute: &[u8]) -> PathBuf {
    let relative = &absolute[absolute.iter().take_while(|b| **b == b'/').count()..];
    if relative.is_empty() { base.to_path_buf() } else { base.join(OsStr::from_bytes(relative)) }
}

/// The directory of `name` (`cpu`, `memory`): v2 if the unified hierarchy
/// has that controller, else v1 (see [`Cgroup::discover`]).
fn find(fs_root: &Path, members: &[Membership], mounts: &[Mount], name: &str) -> Option<Controller> {
    let name_bytes = name.as_bytes();
    let v2 = members.iter().find(|m| m.v2).and_then(|m| {
        let cgroup2 = mounts.iter().filter(|e| e.fstype == b"cgroup2");
        pick(fs_root, cgroup2, &m.path, |dir| {
            read(&dir.join("cgroup.controllers"), MAX_VALUE_FILE).is_some_and(|t| parse::lists(&t, name))
        })
    });
    if let Some(dir) = v2 {
        return Some(Controller { version: Version::V2, dir });
    }
    let member = members.iter().find(|m| !m.v2 && m.controllers.iter().any(|c| c == name_bytes))?;
    let cgroup1 = mounts.iter().filter(|e| e.fstype == b"cgroup" && e.super_options.iter().any(|o| o == name_bytes));
    pick(fs_root, cgroup1, &member.path, |_| true).map(|dir| Controller { version: Version::V1, dir })
}

/// Among the mounts of one hierarchy, the first that shows the cgroup
/// `path` itself and passes `accept`; failing that, the first mount point
/// of a mount that does not show the cgroup and passes `accept` (the
/// fallback of [`Cgroup::discover`]). A mount point missing under
/// `fs_root` is skipped.
fn pick<'m>(
    fs_root: &Path,
    mounts: impl Iterator<Item = &'m Mount>,
    path: &[u8],
    accept: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut fallback = None;
    for mount in mounts {
        let mount_dir = under(fs_root, &mount.mount_point);
        if !mount_dir.is_dir() {
            continue;
        }
        match parse::below(&mount.root, path).map(|rest| under(&mount_dir, rest)).filter(|d| d.is_dir()) {
            // The cgroup's own directory has the last word for this mount:
            // a v2 cgroup whose parent did not delegate `memory` must not
            // be read through an ancestor that has it.
            Some(dir) if accept(&dir) => return Some(dir),
            Some(_) => {}
            None if fallback.is_none() && accept(&mount_dir) => fallback = Some(mount_dir),
            None => {}
        }
    }
    fallback
}
