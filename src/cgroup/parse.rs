//! Parsers for the files the cgroup lookup reads: `/proc/self/cgroup`,
//! `/proc/self/mountinfo` and the controllers' value files. Pure functions
//! over bytes, because these files are outside input (a container runtime,
//! an old kernel, or a test's fixture wrote them): a line that does not
//! parse is skipped, a value that does not parse is `None`, nothing panics.
//! Paths stay bytes until they become `PathBuf`s: a cgroup or mount point
//! name need not be UTF-8.

/// One line of `/proc/self/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Membership {
    /// The cgroup v2 line (`0::/path`): hierarchy 0, no controller list.
    pub v2: bool,
    /// v1 controllers of the hierarchy (`cpu`, `cpuacct`, `name=systemd`).
    pub controllers: Vec<Vec<u8>>,
    /// The cgroup's path, absolute, relative to the hierarchy's root as
    /// this process's cgroup namespace sees it.
    pub path: Vec<u8>,
}

/// The part of one `/proc/self/mountinfo` line the lookup needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mount {
    /// Field 4: the directory of the file system mounted here (for a
    /// cgroup mount, the cgroup it shows), escapes decoded.
    pub root: Vec<u8>,
    /// Field 5: where it is mounted, escapes decoded.
    pub mount_point: Vec<u8>,
    /// The first field after the ` - ` separator (`cgroup`, `cgroup2`).
    pub fstype: Vec<u8>,
    /// The comma-separated super options (third field after the
    /// separator); for a v1 cgroup mount they name its controllers.
    pub super_options: Vec<Vec<u8>>,
}

/// What the kernel appends to the path of a cgroup removed while the
/// process was still reading it.
const DELETED: &[u8] = b" (deleted)";

/// Parses `/proc/self/cgroup`; lines that are not `id:controllers:/path`
/// are skipped. The path is split off last, so a `:` inside it is kept.
pub(super) fn memberships(text: &[u8]) -> Vec<Membership> {
    text.split(|b| *b == b'\n').filter_map(membership).collect()
}

fn membership(line: &[u8]) -> Option<Membership> {
    let mut parts = line.splitn(3, |b| *b == b':');
    let id = parts.next()?;
    let controllers = parts.next()?;
    let mut path = parts.next()?;
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) || !path.starts_with(b"/") {
        return None;
    }
    if let Some(stripped) = path.strip_suffix(DELETED) {
        path = stripped;
    }
    Some(Membership {
        v2: id == b"0" && controllers.is_empty(),
        controllers: controllers.split(|b| *b == b',').filter(|c| !c.is_empty()).map(<[u8]>::to_vec).collect(),
        path: path.to_vec(),
    })
}

/// Parses `/proc/self/mountinfo`. Fields are separated by single spaces
/// (spaces inside a field are escaped); after the six fixed fields come
/// zero or more optional fields (`shared:4`, `master:1`), ended by a lone
/// `-`. A line without the separator, without a file system type after it,
/// whose root or mount point is not absolute, or whose mount point has a
/// `..` component (the kernel writes none; it would lead out of the file
/// system root the caller chose) is skipped. Super options
/// missing from a truncated line are read as none.
pub(super) fn mounts(text: &[u8]) -> Vec<Mount> {
    text.split(|b| *b == b'\n').filter_map(mount).collect()
}

fn mount(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').filter(|f| !f.is_empty()).collect();
    let separator = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let fstype = fields.get(separator + 1)?;
    let super_options = fields.get(separator + 3).copied().unwrap_or_default();
    let root = unescape(fields.get(3)?);
    let mount_point = unescape(fields.get(4)?);
    if !root.starts_with(b"/") || !mount_point.starts_with(b"/") || climbs(&mount_point) {
        return None;
    }
    Some(Mount {
        root,
        mount_point,
        fstype: fstype.to_vec(),
        super_options: super_options.split(|b| *b == b',').filter(|o| !o.is_empty()).map(<[u8]>::to_vec).collect(),
    })
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). A backslash not followed by three octal
/// digits of a byte value is kept as it is.
pub(super) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let byte = field.get(i + 1..i + 4).and_then(octal_byte);
        match (field[i], byte) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut value: u32 = 0;
    for d in digits {
        if !(b'0'..=b'7').contains(d) {
            return None;
        }
        value = value * 8 + u32::from(d - b'0');
    }
    u8::try_from(value).ok()
}

/// Whether `path` names a `..` component. A cgroup path with one (a cgroup
/// outside this process's cgroup namespace, shown relative to it) would
/// lead out of the mount, so it is never joined to one.
fn climbs(path: &[u8]) -> bool {
    path.split(|b| *b == b'/').any(|c| c == b"..")
}

/// Where the cgroup `path` lies below a mount of its hierarchy whose root
/// is `root`: the relative rest (empty: the mount point itself), or `None`
/// when the mount does not show that cgroup.
///
/// `/` as the path is the root of this process's cgroup namespace: the
/// mount made inside the namespace shows it at its mount point, whatever
/// root the kernel prints for it.
pub(super) fn below<'p>(root: &[u8], path: &'p [u8]) -> Option<&'p [u8]> {
    if climbs(path) {
        return None;
    }
    if path == b"/" {
        return Some(&[]);
    }
    if root == b"/" {
        return path.strip_prefix(b"/");
    }
    if path == root {
        return Some(&[]);
    }
    path.strip_prefix(root)?.strip_prefix(b"/")
}

/// An unsigned number, surrounding whitespace (the trailing newline)
/// ignored.
pub(super) fn number(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text.trim_ascii()).ok()?.parse().ok()
}

/// cgroup v2 `cpu.max`: `$QUOTA $PERIOD`, `max` as the quota meaning no
/// limit (`None`). A zero period is refused: the quota in cores would
/// divide by it.
pub(super) fn cpu_max(text: &[u8]) -> Option<(u64, u64)> {
    let mut words = text.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    let quota = words.next()?;
    let period = number(words.next()?).filter(|p| *p > 0)?;
    if words.next().is_some() {
        return None;
    }
    Some((number(quota)?, period))
}

/// cgroup v1 `cpu.cfs_quota_us`: microseconds per period, `-1` (any
/// negative number) for no limit.
pub(super) fn cfs_quota(text: &[u8]) -> Option<u64> {
    let quota: i64 = std::str::from_utf8(text.trim_ascii()).ok()?.parse().ok()?;
    u64::try_from(quota).ok()
}

/// Smallest v1 `memory.limit_in_bytes` taken as "no limit": writing `-1`
/// stores the page counter's maximum, which reads back as
/// 9223372036854771712 (2^63 rounded down to a page); no real limit comes
/// near 2^62 bytes.
pub(super) const V1_UNLIMITED: u64 = 1 << 62;

/// A memory limit: `Some(None)` for no limit (v2 `max`, or a v1 value at
/// or above [`V1_UNLIMITED`]), `None` if it does not parse.
pub(super) fn memory_limit(text: &[u8]) -> Option<Option<u64>> {
    if text.trim_ascii() == b"max" {
        return Some(None);
    }
    let limit = number(text)?;
    Some((limit < V1_UNLIMITED).then_some(limit))
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`,
/// `memory.events`, v1 `memory.oom_control`): lines of `key value`.
pub(super) fn keyed(text: &[u8], key: &[u8]) -> Option<u64> {
    text.split(|b| *b == b'\n').find_map(|line| {
        let mut words = line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
        if words.next()? != key {
            return None;
        }
        number(words.next()?)
    })
}

/// Whether the space-separated list (v2 `cgroup.controllers`) names
/// `controller`.
pub(super) fn lists(text: &[u8], controller: &str) -> bool {
    text.split(u8::is_ascii_whitespace).any(|w| w == controller.as_bytes())
}
