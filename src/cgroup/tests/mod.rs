//! Lookup and reading on fixture trees: a temporary directory holding
//! `proc/self/{cgroup,mountinfo}` and, under `root/`, the cgroup mounts
//! they name. `props` throws random bytes at the parsers; `machine` runs
//! against this machine's real cgroups.

mod machine;
mod props;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A fixture tree in a temporary directory, removed on drop.
struct Tree {
    base: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("podmaster-cgroup-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("proc/self")).unwrap();
        std::fs::create_dir_all(base.join("root")).unwrap();
        Tree { base }
    }

    fn roots(&self) -> Roots {
        Roots { proc_self: self.base.join("proc/self"), fs_root: self.base.join("root") }
    }

    /// Writes `proc/self/cgroup` and `proc/self/mountinfo`.
    fn proc(&self, cgroup: &str, mountinfo: &str) -> &Tree {
        std::fs::write(self.base.join("proc/self/cgroup"), cgroup).unwrap();
        std::fs::write(self.base.join("proc/self/mountinfo"), mountinfo).unwrap();
        self
    }

    /// `absolute` as seen through the tree's file system root.
    fn at(&self, absolute: &str) -> PathBuf {
        self.base.join("root").join(absolute.trim_start_matches('/'))
    }

    fn dir(&self, absolute: &str) -> &Tree {
        std::fs::create_dir_all(self.at(absolute)).unwrap();
        self
    }

    /// Writes `dir/name` for each `(name, text)`, making `dir` first.
    fn files(&self, dir: &str, files: &[(&str, &str)]) -> &Tree {
        self.dir(dir);
        for (name, text) in files {
            std::fs::write(self.at(dir).join(name), text).unwrap();
        }
        self
    }

    fn discover(&self) -> Cgroup {
        Cgroup::discover(&self.roots())
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The mountinfo lines every machine has besides the cgroups.
const BASE_MOUNTS: &str = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
    25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:3 - tmpfs tmpfs ro,mode=755\n";

fn v2_mount(root: &str, at: &str) -> String {
    format!("30 25 0:26 {root} {at} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
}

fn v1_mount(id: u32, root: &str, at: &str, controllers: &str) -> String {
    format!("{id} 25 0:{id} {root} {at} rw,nosuid,nodev,noexec,relatime shared:{id} - cgroup cgroup rw,{controllers}\n")
}

fn v1(tree: &Tree, dir: &str) -> Controller {
    Controller { version: Version::V1, dir: tree.at(dir) }
}

fn v2(tree: &Tree, dir: &str) -> Controller {
    Controller { version: Version::V2, dir: tree.at(dir) }
}

const V2_FILES: &[(&str, &str)] = &[
    ("cgroup.controllers", "cpuset cpu io memory hugetlb pids\n"),
    ("cpu.max", "150000 100000\n"),
    ("cpu.stat", "usage_usec 100\nnr_periods 4\nnr_throttled 2\nthrottled_usec 2500\n"),
    ("memory.current", "1000000\n"),
    ("memory.max", "536870912\n"),
    ("memory.stat", "anon 600000\nfile 400000\nactive_file 100000\ninactive_file 300000\n"),
    ("memory.events", "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n"),
];

fn v2_tree(tag: &str, cgroup_line: &str, mount_root: &str, files_at: &str) -> Tree {
    let tree = Tree::new(tag);
    tree.proc(cgroup_line, &format!("{BASE_MOUNTS}{}", v2_mount(mount_root, "/sys/fs/cgroup")));
    tree.files("/sys/fs/cgroup", &[("cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")]);
    tree.files(files_at, V2_FILES);
    tree
}

#[test]
fn v2_root_cgroup_has_no_limit_files() {
    let tree = Tree::new("v2root");
    tree.proc("0::/\n", &format!("{BASE_MOUNTS}{}", v2_mount("/", "/sys/fs/cgroup")));
    tree.files("/sys/fs/cgroup", &[("cgroup.controllers", "cpu memory\n"), ("cpu.stat", "usage_usec 5\n")]);
    let cg = tree.discover();
    assert_eq!(cg, Cgroup { cpu: Some(v2(&tree, "/sys/fs/cgroup")), memory: Some(v2(&tree, "/sys/fs/cgroup")) });
    assert_eq!((cg.cpu_quota(), cg.memory(), cg.oom_kills(), cg.cpu_throttled()), (None, None, None, None));
    let (n, why) = auto_processes(&cg, 3);
    assert_eq!(n, 3);
    assert!(why.starts_with("no CPU quota (cgroup v2 ") && why.ends_with("): 3 CPUs in the affinity mask"), "{why}");
}

#[test]
fn v2_nested_kubepods() {
    let path = "/kubepods/burstable/pod1/ctr";
    let tree = v2_tree("v2nested", &format!("0::{path}\n"), "/", &format!("/sys/fs/cgroup{path}"));
    let cg = tree.discover();
    let dir = format!("/sys/fs/cgroup{path}");
    assert_eq!(cg, Cgroup { cpu: Some(v2(&tree, &dir)), memory: Some(v2(&tree, &dir)) });
    assert_eq!(cg.cpu_quota(), Some(CpuQuota { quota_us: 150000, period_us: 100000 }));
    assert_eq!(cg.cpu_throttled(), Some(Duration::from_micros(2500)));
    assert_eq!(cg.memory(), Some(MemoryUse { usage: 1000000, working_set: 700000, limit: Some(536870912) }));
    assert_eq!(cg.oom_kills(), Some(2));
    let shown = tree.at(&dir).display().to_string();
    assert_eq!(cg.describe(), format!("cgroup v2 cpu {shown}, memory {shown}"));
}

#[test]
fn v2_in_a_cgroup_namespace_is_the_mount_point() {
    // Inside a namespace the kernel shows the path as `/`; the mount's
    // root may print as `/` or, for a mount made outside, as a climb.
    for mount_root in ["/", "/../../kubepods/pod1"] {
        let tree = v2_tree("v2ns", "0::/\n", mount_root, "/sys/fs/cgroup");
        let cg = tree.discover();
        assert_eq!(cg.cpu, Some(v2(&tree, "/sys/fs/cgroup")), "{mount_root}");
        assert_eq!(cg.memory().map(|m| m.limit), Some(Some(536870912)));
    }
}

#[test]
fn v2_path_of_another_namespace_falls_back_to_the_mount_point() {
    for line in ["0::/kubepods/elsewhere\n", "0::/../../elsewhere\n", "0::/x (deleted)\n"] {
        let tree = v2_tree("v2fallback", line, "/", "/sys/fs/cgroup");
        tree.dir("/elsewhere"); // a `..` must not lead out of the mount
        assert_eq!(tree.discover().memory, Some(v2(&tree, "/sys/fs/cgroup")), "{line}");
    }
}

#[test]
fn v2_controller_not_delegated_is_not_read_from_an_ancestor() {
    let tree = v2_tree("v2undelegated", "0::/ctr\n", "/", "/sys/fs/cgroup/ctr");
    tree.files("/sys/fs/cgroup/ctr", &[("cgroup.controllers", "cpu pids\n")]);
    let cg = tree.discover();
    assert_eq!(cg, Cgroup { cpu: Some(v2(&tree, "/sys/fs/cgroup/ctr")), memory: None });
}

#[test]
fn v2_unlimited_cpu_and_memory() {
    let tree = v2_tree("v2max", "0::/ctr\n", "/", "/sys/fs/cgroup/ctr");
    tree.files("/sys/fs/cgroup/ctr", &[("cpu.max", "max 100000\n"), ("memory.max", "max\n")]);
    let cg = tree.discover();
    assert_eq!(cg.cpu_quota(), None);
    assert_eq!(cg.memory(), Some(MemoryUse { usage: 1000000, working_set: 700000, limit: None }));
    assert_eq!(auto_processes(&cg, 2).0, 2);
}

#[test]
fn v1_docker_mount_root_is_the_path() {
    let tree = Tree::new("v1docker");
    let id = "/docker/0123abcd";
    let mounts = format!(
        "{BASE_MOUNTS}{}{}",
        v1_mount(33, id, "/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct"),
        v1_mount(34, id, "/sys/fs/cgroup/memory", "memory")
    );
    tree.proc(&format!("12:pids:{id}\n4:memory:{id}\n3:cpu,cpuacct:{id}\n1:name=systemd:{id}\n"), &mounts);
    tree.files(
        "/sys/fs/cgroup/cpu,cpuacct",
        &[
            ("cpu.cfs_quota_us", "150000\n"),
            ("cpu.cfs_period_us", "100000\n"),
            ("cpu.stat", "nr_periods 10\nnr_throttled 1\nthrottled_time 5000000\n"),
        ],
    );
    tree.files(
        "/sys/fs/cgroup/memory",
        &[
            ("memory.usage_in_bytes", "2000000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.stat", "cache 5\ninactive_file 1\ntotal_inactive_file 500000\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"),
        ],
    );
    let cg = tree.discover();
    let expected =
        Cgroup { cpu: Some(v1(&tree, "/sys/fs/cgroup/cpu,cpuacct")), memory: Some(v1(&tree, "/sys/fs/cgroup/memory")) };
    assert_eq!(cg, expected);
    assert_eq!(cg.cpu_quota(), Some(CpuQuota { quota_us: 150000, period_us: 100000 }));
    assert_eq!(cg.cpu_throttled(), Some(Duration::from_millis(5)));
    assert_eq!(cg.memory(), Some(MemoryUse { usage: 2000000, working_set: 1500000, limit: None }));
    assert_eq!(cg.oom_kills(), Some(1));
    let (cpu, mem) = (tree.at("/sys/fs/cgroup/cpu,cpuacct"), tree.at("/sys/fs/cgroup/memory"));
    assert_eq!(cg.describe(), format!("cgroup v1 cpu {}, memory {}", cpu.display(), mem.display()));
}

#[test]
fn v1_nested_below_the_hierarchy_root() {
    let tree = Tree::new("v1nested");
    let path = "/kubepods/burstable/pod1/ctr";
    let mounts = format!(
        "{BASE_MOUNTS}{}{}",
        v1_mount(33, "/", "/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct"),
        v1_mount(34, "/kubepods", "/sys/fs/cgroup/memory", "memory")
    );
    tree.proc(&format!("4:memory:{path}\n3:cpuacct,cpu:{path}\n"), &mounts);
    let cpu_dir = format!("/sys/fs/cgroup/cpu,cpuacct{path}");
    tree.files(&cpu_dir, &[("cpu.cfs_quota_us", "-1\n"), ("cpu.cfs_period_us", "100000\n")]);
    let mem_dir = "/sys/fs/cgroup/memory/burstable/pod1/ctr";
    tree.files(mem_dir, &[("memory.usage_in_bytes", "10\n"), ("memory.limit_in_bytes", "4611686018427387903\n")]);
    let cg = tree.discover();
    assert_eq!(cg, Cgroup { cpu: Some(v1(&tree, &cpu_dir)), memory: Some(v1(&tree, mem_dir)) });
    assert_eq!(cg.cpu_quota(), None);
    // Just under 2^62 is still a limit; no memory.stat: working set = usage.
    assert_eq!(cg.memory(), Some(MemoryUse { usage: 10, working_set: 10, limit: Some(4611686018427387903) }));
    assert_eq!(cg.oom_kills(), None);
    assert!(auto_processes(&cg, 4).1.starts_with("no CPU quota (cgroup v1 "));
}

#[test]
fn v1_mount_root_must_be_a_whole_path_prefix() {
    let tree = Tree::new("v1prefix");
    tree.proc("4:memory:/kubepods/x\n", &format!("{BASE_MOUNTS}{}", v1_mount(34, "/kube", "/mem", "memory")));
    tree.dir("/mem/pods/x"); // what a byte-prefix match would pick
    assert_eq!(tree.discover().memory, Some(v1(&tree, "/mem")));
}

/// This machine's layout: one v1 hierarchy per controller, systemd's named
/// one, and an empty unified hierarchy with `0::/`.
#[test]
fn hybrid_takes_controllers_from_v1_when_unified_is_empty() {
    let tree = Tree::new("hybrid");
    let mut mounts = String::from(BASE_MOUNTS);
    for (id, name) in [(32, "cpu"), (33, "cpuacct"), (35, "memory")] {
        mounts.push_str(&v1_mount(id, "/", &format!("/sys/fs/cgroup/{name}"), name));
    }
    mounts.push_str(&v1_mount(40, "/", "/sys/fs/cgroup/systemd", "name=systemd"));
    mounts.push_str(&v2_mount("/", "/sys/fs/cgroup/unified"));
    tree.proc("9:name=systemd:/\n4:memory:/process_api/1df7\n2:cpuacct:/\n1:cpu:/\n0::/\n", &mounts);
    tree.files("/sys/fs/cgroup/unified", &[("cgroup.controllers", "\n"), ("memory.max", "max\n")]);
    tree.files("/sys/fs/cgroup/cpu", &[("cpu.cfs_quota_us", "50000\n"), ("cpu.cfs_period_us", "100000\n")]);
    tree.dir("/sys/fs/cgroup/memory/process_api/1df7");
    let cg = tree.discover();
    let expected = Cgroup {
        cpu: Some(v1(&tree, "/sys/fs/cgroup/cpu")),
        memory: Some(v1(&tree, "/sys/fs/cgroup/memory/process_api/1df7")),
    };
    assert_eq!(cg, expected);
    assert_eq!(cg.cpu_quota(), Some(CpuQuota { quota_us: 50000, period_us: 100000 }));
}

#[test]
fn hybrid_takes_a_controller_from_v2_when_unified_has_it() {
    let tree = Tree::new("hybrid2");
    let mounts = format!(
        "{BASE_MOUNTS}{}{}",
        v1_mount(35, "/", "/sys/fs/cgroup/memory", "memory"),
        v2_mount("/", "/sys/fs/cgroup/unified")
    );
    tree.proc("4:memory:/a\n0::/a\n", &mounts);
    tree.files("/sys/fs/cgroup/unified/a", &[("cgroup.controllers", "cpu pids\n"), ("cpu.max", "250000 100000")]);
    tree.dir("/sys/fs/cgroup/memory/a");
    let cg = tree.discover();
    let expected =
        Cgroup { cpu: Some(v2(&tree, "/sys/fs/cgroup/unified/a")), memory: Some(v1(&tree, "/sys/fs/cgroup/memory/a")) };
    assert_eq!(cg, expected);
    let (cpu, mem) = (tree.at("/sys/fs/cgroup/unified/a"), tree.at("/sys/fs/cgroup/memory/a"));
    assert_eq!(cg.describe(), format!("cgroup v2 cpu {}, v1 memory {}", cpu.display(), mem.display()));
    assert_eq!(auto_processes(&cg, 8).0, 3);
}

#[test]
fn missing_files_are_none() {
    let tree = Tree::new("missing");
    assert_eq!(tree.discover(), Cgroup::default());
    assert_eq!(Cgroup::default().describe(), "no cgroup cpu or memory controller found");
    assert_eq!(
        auto_processes(&Cgroup::default(), 2),
        (2, "no CPU quota (no cpu cgroup found): 2 CPUs in the affinity mask".into())
    );
    // Membership but no mounts; then a mount whose mount point is absent.
    tree.proc("0::/a\n4:memory:/a\n", BASE_MOUNTS);
    assert_eq!(tree.discover(), Cgroup::default());
    tree.proc(
        "0::/a\n4:memory:/a\n",
        &format!("{BASE_MOUNTS}{}", v1_mount(34, "/", "/sys/fs/cgroup/memory", "memory")),
    );
    assert_eq!(tree.discover(), Cgroup::default());
    // The directories, none of the files (cpu pointed at the same empty one).
    tree.dir("/sys/fs/cgroup/memory/a");
    let cg = Cgroup { cpu: Some(v2(&tree, "/sys/fs/cgroup/memory/a")), ..tree.discover() };
    assert_eq!(cg.memory, Some(v1(&tree, "/sys/fs/cgroup/memory/a")));
    assert_eq!((cg.cpu_quota(), cg.cpu_throttled(), cg.memory(), cg.oom_kills()), (None, None, None, None));
    let shown = tree.at("/sys/fs/cgroup/memory/a").display().to_string();
    assert_eq!(cg.describe(), format!("cgroup v2 cpu {shown}, v1 memory {shown}"));
    assert!(cg.memory_threshold_eventfd(1 << 20).is_none(), "no cgroup.event_control in the fixture");
    let only_cpu = Cgroup { memory: None, ..cg };
    assert!(only_cpu.describe().ends_with(", no memory controller"), "{}", only_cpu.describe());
}

#[test]
fn garbage_values_are_none() {
    let tree = Tree::new("garbage");
    let dir = "/cg";
    let cg = Cgroup { cpu: Some(v2(&tree, dir)), memory: Some(v2(&tree, dir)) };
    let cg1 = Cgroup { cpu: Some(v1(&tree, dir)), memory: Some(v1(&tree, dir)) };
    for cpu_max in ["", "max", "lots of garbage", "150000 0", "-5 100000", "1 2 3", "150000 1e5", "\u{0}\u{ff}"] {
        tree.files(dir, &[("cpu.max", cpu_max)]);
        assert_eq!(cg.cpu_quota(), None, "{cpu_max:?}");
    }
    for (quota, period) in [("150000", "0"), ("x", "100000"), ("150000", ""), ("99999999999999999999", "1")] {
        tree.files(dir, &[("cpu.cfs_quota_us", quota), ("cpu.cfs_period_us", period)]);
        assert_eq!(cg1.cpu_quota(), None, "{quota:?} {period:?}");
    }
    tree.files(
        dir,
        &[
            ("memory.current", "12abc"),
            ("memory.max", "max"),
            ("memory.events", "oom_kill\noom_kill x\n"),
            ("cpu.stat", "throttled_usec -1\n"),
        ],
    );
    assert_eq!((cg.memory(), cg.oom_kills(), cg.cpu_throttled()), (None, None, None));
    tree.files(dir, &[("memory.current", "100"), ("memory.max", "-1"), ("memory.stat", "inactive_file 5000\n")]);
    assert_eq!(cg.memory(), None, "a limit that does not parse");
    tree.files(dir, &[("memory.max", " 200 \n")]);
    assert_eq!(cg.memory(), Some(MemoryUse { usage: 100, working_set: 0, limit: Some(200) }), "saturates at 0");
}

#[test]
fn garbage_in_proc_files_skips_lines() {
    let tree = Tree::new("garbageproc");
    let junk_mounts = "\n-\n1 2 3 4 5 6 - cgroup2\n30 25 0:26 / /sys/fs/cgroup rw shared:4 -\n\
        30 25 0:26 relative /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n30 25 0:26 / /sys/fs/cgroup rw cgroup2 cgroup2\n\u{0}\u{1}\n";
    let junk_cgroup = "\nx::/a\n:memory:/a\n0::relative\n4:memory\n4:memory:/a\n\u{0}:\n";
    tree.proc(junk_cgroup, &format!("{junk_mounts}{}", v1_mount(34, "/", "/sys/fs/cgroup/memory", "memory")));
    tree.dir("/sys/fs/cgroup/memory/a").files("/sys/fs/cgroup", &[("cgroup.controllers", "memory")]);
    assert_eq!(tree.discover(), Cgroup { cpu: None, memory: Some(v1(&tree, "/sys/fs/cgroup/memory/a")) });
}

#[test]
fn mountinfo_escapes_are_decoded() {
    let tree = Tree::new("escapes");
    tree.proc("0::/my\\ctr\n", &format!("{BASE_MOUNTS}{}", v2_mount("/", "/sys/fs/cgroup\\040v2")));
    tree.files("/sys/fs/cgroup v2/my\\ctr", &[("cgroup.controllers", "memory\n")]);
    assert_eq!(tree.discover().memory, Some(v2(&tree, "/sys/fs/cgroup v2/my\\ctr")));
    for (raw, decoded) in [
        (&b"a\\040b"[..], &b"a b"[..]),
        (b"\\011\\012\\134", b"\t\n\\"),
        (b"\\9ab\\777\\04", b"\\9ab\\777\\04"),
        (b"\\", b"\\"),
        (b"\\0401", b" 1"),
    ] {
        assert_eq!(parse::unescape(raw), decoded, "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn cgroup_lines_keep_colons_and_drop_deleted() {
    let lines = parse::memberships(b"5:cpu,cpuacct:/a:b\n0::/x (deleted)\n");
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].v2, &lines[0].path[..]), (false, &b"/a:b"[..]));
    assert_eq!(lines[0].controllers, [b"cpu".to_vec(), b"cpuacct".to_vec()]);
    assert_eq!((lines[1].v2, &lines[1].path[..]), (true, &b"/x"[..]));
}

#[test]
fn paths_map_below_mount_roots() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/", "/a/b", Some("a/b")),
        ("/", "/", Some("")),
        ("/a/b", "/a/b", Some("")),
        ("/a", "/a/b/c", Some("b/c")),
        ("/a", "/ab/c", None),
        ("/a/b", "/", Some("")),
        ("/a", "/a/../etc", None),
        ("/", "/..", None),
    ];
    for (root, path, rest) in cases {
        let got = parse::below(root.as_bytes(), path.as_bytes());
        assert_eq!(got, rest.map(str::as_bytes), "root {root} path {path}");
    }
}

#[test]
fn auto_processes_rounds_up_and_caps() {
    let tree = Tree::new("auto");
    let cg = Cgroup { cpu: Some(v2(&tree, "/cg")), memory: None };
    let dir = tree.at("/cg").display().to_string();
    for (cpu_max, affinity, n, how) in [
        ("150000 100000", 8, 2, "= 1.5 cores, rounded up to 2"),
        ("10000 100000", 8, 1, "= 0.1 cores, rounded up to 1"),
        ("200000 100000", 8, 2, "= 2 cores ("),
        ("100000 100000", 8, 1, "= 1 core ("),
        ("400000 100000", 2, 2, "= 4 cores, capped by the 2 CPUs in the affinity mask"),
        ("1000 1000000", 1, 1, "= 0.001 cores, rounded up to 1"),
        ("100000 100000", 0, 1, "= 1 core ("),
    ] {
        tree.files("/cg", &[("cpu.max", cpu_max)]);
        let (got, why) = auto_processes(&cg, affinity);
        assert_eq!(got, n, "{cpu_max} {affinity}: {why}");
        assert!(why.contains(how) && why.ends_with(&format!("(cgroup v2 {dir})")), "{why}");
    }
    tree.files("/cg", &[("cpu.max", "max 100000")]);
    assert_eq!(auto_processes(&cg, 4), (4, format!("no CPU quota (cgroup v2 {dir}): 4 CPUs in the affinity mask")));
    assert_eq!(auto_processes(&cg, 0).0, 1);
    assert_eq!(CpuQuota { quota_us: 150000, period_us: 100000 }.cores(), 1.5);
    assert_eq!(CpuQuota { quota_us: 150000, period_us: 0 }.cores(), 0.0);
}

#[test]
fn affinity_counts_the_allowed_cpus() {
    let n = affinity_cpus();
    assert!(n >= 1);
    // /proc/self/status names the same mask as ranges: `0-3,6`.
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    let count: usize = list
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(n, count, "{list}");
}

#[test]
fn threshold_eventfd_is_v1_only() {
    let tree = v2_tree("thresholdv2", "0::/\n", "/", "/sys/fs/cgroup");
    assert!(tree.discover().memory_threshold_eventfd(1 << 20).is_none());
    assert!(Cgroup::default().memory_threshold_eventfd(1 << 20).is_none());
}

#[test]
fn discovers_this_machine_without_panicking() {
    let cg = Cgroup::discover(&Roots::system());
    for c in [&cg.cpu, &cg.memory].into_iter().flatten() {
        assert!(c.dir.is_dir(), "{}", cg.describe());
    }
    eprintln!("{}; {}", cg.describe(), auto_processes(&cg, affinity_cpus()).1);
}

/// A resize needs "no limit" and "cannot read" told apart: the first
/// sizes to every CPU, the second keeps the workers as they are.
#[test]
fn cpu_limit_tells_no_limit_from_unreadable() {
    let tree = Tree::new("cpulimit");
    let cpu = v1(&tree, "/sys/fs/cgroup/cpu");
    tree.files("/sys/fs/cgroup/cpu", &[("cpu.cfs_quota_us", "-1\n"), ("cpu.cfs_period_us", "100000\n")]);
    let cg = Cgroup { cpu: Some(cpu.clone()), memory: None };
    assert_eq!(cg.cpu_limit(), Ok(None));
    tree.files("/sys/fs/cgroup/cpu", &[("cpu.cfs_quota_us", "50000\n")]);
    assert_eq!(cg.cpu_limit(), Ok(Some(CpuQuota { quota_us: 50000, period_us: 100000 })));
    tree.files("/sys/fs/cgroup/cpu", &[("cpu.cfs_quota_us", "garbage\n")]);
    assert_eq!(cg.cpu_limit(), Err(()));
    std::fs::remove_file(tree.at("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")).unwrap();
    assert_eq!(cg.cpu_limit(), Err(()));
    assert_eq!(Cgroup::default().cpu_limit(), Err(()));
    let v2dir = v2(&tree, "/sys/fs/cgroup/unified");
    tree.files("/sys/fs/cgroup/unified", &[("cpu.max", "max 100000\n")]);
    let cg2 = Cgroup { cpu: Some(v2dir), memory: None };
    assert_eq!(cg2.cpu_limit(), Ok(None));
    tree.files("/sys/fs/cgroup/unified", &[("cpu.max", "150000 100000\n")]);
    assert_eq!(cg2.cpu_limit(), Ok(Some(CpuQuota { quota_us: 150000, period_us: 100000 })));
}
