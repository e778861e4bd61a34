//! The real kernel: as root on a machine with cgroup v1 `cpu` and `memory`
//! hierarchies at `/sys/fs/cgroup/{cpu,memory}`, make a cgroup in each,
//! set limits, read them back, and see a v1 memory threshold fire when a
//! child in the cgroup grows past it.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::super::*;

/// How long the threshold may take to fire after the child exits: the
/// kernel signals the eventfd while charging the child's pages, so it is
/// readable at once; 10 s covers a loaded CI machine.
const THRESHOLD_DEADLINE: Duration = Duration::from_secs(10);

/// Removes the test's cgroups, deepest last-made first, even when an
/// assertion failed. A cgroup without processes can be removed (its
/// remaining page cache is moved to the parent).
struct Rmdirs(Vec<PathBuf>);

impl Drop for Rmdirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("rmdir {}: {e}", dir.display());
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: &str) {
    let path = dir.join(file);
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
}

#[test]
#[cfg_attr(not(have_root), ignore = "needs root: makes cgroups under /sys/fs/cgroup/{cpu,memory}")]
fn real_v1_cgroup_limits_and_threshold() {
    let (cpu_root, mem_root) = (Path::new("/sys/fs/cgroup/cpu"), Path::new("/sys/fs/cgroup/memory"));
    if !cpu_root.join("cpu.cfs_quota_us").is_file() || !mem_root.join("cgroup.event_control").is_file() {
        eprintln!("skipped: no cgroup v1 cpu and memory hierarchies at /sys/fs/cgroup/{{cpu,memory}}");
        return;
    }
    let name = format!("podmaster-test-{}", std::process::id());
    let mut made = Rmdirs(Vec::new());
    for root in [cpu_root, mem_root] {
        let dir = root.join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: mkdir {}: {e} (read-only cgroup file system?)", dir.display());
            return;
        }
        made.0.push(dir);
    }
    let (cpu_dir, mem_dir) = (cpu_root.join(&name), mem_root.join(&name));
    write(&cpu_dir, "cpu.cfs_quota_us", "150000");
    write(&mem_dir, "memory.limit_in_bytes", "64M");
    let period: u64 = std::fs::read_to_string(cpu_dir.join("cpu.cfs_period_us")).unwrap().trim().parse().unwrap();
    let cg = Cgroup {
        cpu: Some(Controller { version: Version::V1, dir: cpu_dir.clone() }),
        memory: Some(Controller { version: Version::V1, dir: mem_dir.clone() }),
    };
    assert_eq!(cg.cpu_quota(), Some(CpuQuota { quota_us: 150000, period_us: period }));
    assert_eq!(cg.cpu_throttled(), Some(Duration::ZERO));
    let mem = cg.memory().expect("memory use of the new cgroup");
    assert_eq!(mem.limit, Some(64 << 20));
    assert!(mem.working_set <= mem.usage);
    assert_eq!(cg.oom_kills(), Some(0));
    if period == 100000 {
        assert_eq!(auto_processes(&cg, 8).0, 2);
    }

    let efd = cg.memory_threshold_eventfd(4 << 20).expect("threshold registered");
    // The child joins the memory cgroup, then holds 8 MiB in a shell variable.
    let procs = mem_dir.join("cgroup.procs");
    let script =
        format!("echo $$ > {} && x=$(head -c 8388608 /dev/zero | tr '\\0' a) && echo ${{#x}}", procs.display());
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8388608");

    crate::sys::poll_with_deadline(&[efd.as_fd()], &[], Some(Instant::now() + THRESHOLD_DEADLINE));
    let mut counter = [0u8; 8];
    match File::from(efd).read(&mut counter) {
        Ok(8) => assert!(u64::from_ne_bytes(counter) >= 1),
        Ok(n) => panic!("eventfd read {n} bytes"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => panic!("threshold did not fire in {THRESHOLD_DEADLINE:?}"),
        Err(e) => panic!("read eventfd: {e}"),
    }
}
