//! Options about the pod's resources: sizing the workers from the
//! container's CPU quota (`processes = auto`, `max-processes`), recycling
//! them before the kernel's OOM killer (`reload-on-cgroup-memory`), and how
//! often the cgroup is re-read when one of them is on.

use super::{Kind, OptDef};
use crate::config::values::{positive_seconds, whole_in};
use crate::config::{Config, ConfigError, Entry, MemoryMark};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "max-processes",
        Kind::Uint,
        "cap for `processes = auto` (and for live resizes); an explicit `processes` above it is an error",
        |c, e| whole_in(e, 1..=1024, "1 to 1024 workers").map(|n| c.max_processes = Some(n as u32)),
    ),
    OptDef::new(
        "reload-on-cgroup-memory",
        Kind::Text,
        "recycle the worker with the most private memory while the container's working set is above \
         this share of its memory limit (P%) or this size (900M, 2G; K/M/G/T are powers of 1024)",
        cgroup_memory,
    ),
    OptDef::new(
        "cgroup-check-interval",
        Kind::Seconds,
        "seconds between reads of the container's cgroup, only while `processes = auto` or \
         `reload-on-cgroup-memory` needs them",
        |c, e| {
            let d = positive_seconds(e)?;
            if d < std::time::Duration::from_millis(50) {
                return Err(ConfigError::at(e, "must be at least 0.05 seconds"));
            }
            c.cgroup_check_interval = d;
            Ok(())
        },
    )
    .default("10"),
];

fn cgroup_memory(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    let mark = if let Some(p) = v.strip_suffix('%') {
        match p.trim().parse::<u32>() {
            Ok(p) if (1..=99).contains(&p) => MemoryMark::Percent(p),
            _ => return Err(ConfigError::at(e, format!("expected a percentage 1%..99% or a size, found {v:?}"))),
        }
    } else {
        match parse_size(v) {
            Some(b) if b >= 1 << 20 => MemoryMark::Bytes(b),
            _ => {
                return Err(ConfigError::at(
                    e,
                    format!("expected a percentage (80%) or a size of at least 1M (900M, 2G), found {v:?}"),
                ));
            }
        }
    };
    c.cgroup_memory_mark = Some(mark);
    Ok(())
}

/// `123`, `900K`, `900M`, `2G`, `1T` (also `Ki`/`Mi`/`Gi`/`Ti`, as
/// Kubernetes writes them; every suffix is a power of 1024), in bytes.
/// None on anything else, and on overflow.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(v.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = v[..digits].parse().ok()?;
    let shift = match &v[digits..] {
        "" => 0,
        "K" | "k" | "Ki" | "KB" => 10,
        "M" | "Mi" | "MB" => 20,
        "G" | "Gi" | "GB" => 30,
        "T" | "Ti" | "TB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;
    use proptest::prelude::*;

    #[test]
    fn sizes_in_powers_of_1024() {
        assert_eq!(parse_size("900M"), Some(900 << 20));
        assert_eq!(parse_size("2Gi"), Some(2 << 30));
        assert_eq!(parse_size(" 1048576 "), Some(1 << 20));
        assert_eq!(parse_size("1k"), Some(1024));
        for bad in ["", "M", "1.5G", "-1M", "1 G", "1P", "18446744073709551615K", "12MBB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Any text: a size or None, never a panic; digits with a known
        /// suffix always parse unless they overflow.
        #[test]
        fn any_text_is_a_size_or_none(s in ".{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn numbers_with_suffixes_round_trip(n in 0u64..1 << 20, i in 0usize..5) {
            let (suffix, shift) = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("Ti", 40)][i];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), n.checked_mul(1 << shift));
        }
    }
}
