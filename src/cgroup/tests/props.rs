//! Random input at the parsers and at a whole lookup: nothing panics, and
//! what parses is well formed (absolute paths, a non-zero period). Besides
//! plain random bytes, lines are built from the tokens real files hold, so
//! cases get past the first check of each parser.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::*;
use super::{BASE_MOUNTS, Tree};

const MOUNT_TOKENS: &[&str] = &[
    "30",
    "0:26",
    "/",
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/memory",
    "/a",
    "/a/b",
    "/..",
    "\\040",
    "x\\0",
    "\\",
    "rw",
    "shared:4",
    "-",
    "cgroup",
    "cgroup2",
    "rw,cpu,cpuacct",
    "rw,memory",
    ",",
    "",
    "\u{ff}",
];

const CGROUP_TOKENS: &[&str] = &["0", "4", "", "cpu,cpuacct", "memory", "/", "/a", "/a/b", "/..", "/a (deleted)", ","];

/// Value files a lookup reads, given random contents.
const VALUE_FILES: &[&str] = &[
    "cgroup.controllers",
    "cpu.max",
    "cpu.stat",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "memory.current",
    "memory.max",
    "memory.stat",
    "memory.events",
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.oom_control",
];

/// Up to 8 lines of up to 12 tokens joined by `sep`.
fn token_lines(tokens: &'static [&'static str], sep: &'static str) -> impl Strategy<Value = Vec<u8>> {
    vec(vec(select(tokens), 0..12), 0..8)
        .prop_map(move |lines| lines.iter().map(|l| l.join(sep)).collect::<Vec<_>>().join("\n").into_bytes())
}

fn check_parsers(cgroup: &[u8], mountinfo: &[u8]) -> Result<(), TestCaseError> {
    for m in parse::memberships(cgroup) {
        prop_assert!(m.path.starts_with(b"/"));
        prop_assert!(!m.v2 || m.controllers.is_empty());
    }
    for m in parse::mounts(mountinfo) {
        prop_assert!(m.root.starts_with(b"/") && m.mount_point.starts_with(b"/"));
        prop_assert!(!m.fstype.is_empty());
        if let Some(rest) = parse::below(&m.root, &m.mount_point) {
            prop_assert!(!rest.starts_with(b"/") && !rest.split(|b| *b == b'/').any(|c| c == b".."));
        }
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn parsers_take_any_bytes(cgroup in vec(any::<u8>(), 0..400), mountinfo in vec(any::<u8>(), 0..400)) {
        check_parsers(&cgroup, &mountinfo)?;
        let _ = parse::unescape(&mountinfo);
        prop_assert!(parse::cpu_max(&cgroup).is_none_or(|(_, period)| period > 0));
        let _ = (parse::number(&cgroup), parse::cfs_quota(&cgroup), parse::memory_limit(&cgroup));
        let _ = (parse::keyed(&cgroup, b"oom_kill"), parse::lists(&cgroup, "cpu"));
    }

    #[test]
    fn parsers_take_lines_of_real_tokens(
        cgroup in token_lines(CGROUP_TOKENS, ":"),
        mountinfo in token_lines(MOUNT_TOKENS, " "),
    ) {
        check_parsers(&cgroup, &mountinfo)?;
    }
}

proptest! {
    // Each case writes a fixture tree: fewer of them.
    #![proptest_config(config(64))]

    #[test]
    fn lookup_takes_any_files(
        cgroup in token_lines(CGROUP_TOKENS, ":"),
        mountinfo in token_lines(MOUNT_TOKENS, " "),
        values in vec(vec(any::<u8>(), 0..40), VALUE_FILES.len()),
    ) {
        let tree = Tree::new("prop");
        std::fs::write(tree.roots().proc_self.join("cgroup"), &cgroup).unwrap();
        let mut mounts = BASE_MOUNTS.as_bytes().to_vec();
        mounts.extend_from_slice(&mountinfo);
        std::fs::write(tree.roots().proc_self.join("mountinfo"), &mounts).unwrap();
        for dir in ["/sys/fs/cgroup", "/sys/fs/cgroup/a/b", "/sys/fs/cgroup/memory/a", "/a/b"] {
            tree.dir(dir);
            for (name, text) in VALUE_FILES.iter().zip(&values) {
                std::fs::write(tree.at(dir).join(name), text).unwrap();
            }
        }
        let cg = tree.discover();
        for c in [&cg.cpu, &cg.memory].into_iter().flatten() {
            prop_assert!(c.dir.starts_with(tree.at("/")) && c.dir.is_dir(), "{:?}", c);
        }
        let _ = (cg.cpu_quota(), cg.cpu_throttled(), cg.memory(), cg.oom_kills(), cg.describe());
        prop_assert!(auto_processes(&cg, 4).0 >= 1);
        if let Some(m) = cg.memory() {
            prop_assert!(m.working_set <= m.usage);
        }
    }
}
