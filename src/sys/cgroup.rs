//! The two syscalls the cgroup code (`crate::cgroup`) needs that neither
//! std nor the nix features podmaster enables wrap: `sched_getaffinity`
//! and `eventfd`.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{FromRawFd, OwnedFd};

/// Mask size tried first, in 64-bit words: 1024 CPUs, glibc's `cpu_set_t`.
const FIRST_MASK_WORDS: usize = 16;

/// Largest mask tried, in 64-bit words: 65536 CPUs. The kernel answers
/// EINVAL while the buffer is smaller than its mask (`nr_cpu_ids` bits), so
/// the buffer doubles up to this; no machine comes near it, and the bound
/// keeps the retries finite.
const MAX_MASK_WORDS: usize = 1024;

/// CPUs in the calling thread's affinity mask (`sched_getaffinity(0)`), at
/// least 1. Called from the master's main thread, that is the mask the
/// workers inherit (`taskset`, a cpuset cgroup, Kubernetes' static CPU
/// manager all set it). If the call fails (it does not, short of seccomp),
/// the answer is std's `available_parallelism`, logged once.
pub fn affinity_cpus() -> usize {
    let mut words = FIRST_MASK_WORDS;
    loop {
        let mut mask = vec![0u64; words];
        // SAFETY: `mask` is a live, writable, 8-byte-aligned buffer of
        // exactly `words * 8` bytes, the size passed; the kernel (and
        // glibc, which zeroes the tail) write at most that many bytes.
        // `cpu_set_t` is an array of unsigned longs, so the cast pointer
        // is suitably aligned. pid 0 is the calling thread.
        let rc = unsafe { libc::sched_getaffinity(0, words * 8, mask.as_mut_ptr().cast::<libc::cpu_set_t>()) };
        if rc == 0 {
            let cpus: u32 = mask.iter().map(|w| w.count_ones()).sum();
            return usize::try_from(cpus).unwrap_or(usize::MAX).max(1);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && words < MAX_MASK_WORDS {
            words *= 2;
            continue;
        }
        let fallback = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        tracing::warn!(errno = %err, fallback, "sched_getaffinity failed; counting CPUs as std does");
        return fallback;
    }
}

/// A new eventfd with counter 0, close-on-exec (no worker inherits it) and
/// non-blocking (a read after a spurious wake-up cannot stall the loop
/// that polls it).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd: open, and owned by nothing
    // else, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
