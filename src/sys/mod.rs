//! Process-level syscalls: reaping, signalling, PID-1 duties, `/proc`
//! reads, waiting with a deadline; spawning ([`spawn`]), shared memory
//! ([`shm`]), what the kernel says about our sockets (`sockinfo`), starting
//! and stopping the embedded CPython ([`python`]) in their own files. Every `unsafe` block of podmaster (outside tests) lives
//! under `sys/`, each with a `// SAFETY:` line.

pub mod cgroup;
pub mod lend;
pub mod prefork;
pub mod python;
mod shm;
mod sockinfo;
mod spawn;

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use spawn::{Credentials, LISTEN_FDS_START, SpawnSpec, spawn};

/// Reaps every child that has exited, without blocking. Loops until the
/// kernel says there is nothing more (0 or ECHILD), so one SIGCHLD for many
/// exits (they coalesce) still reaps them all.
pub fn reap_all() -> Vec<(Pid, WaitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    out.push((pid, status));
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(errno = %e, "waitpid failed");
                break;
            }
        }
    }
    out
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: Pid, sig: Signal) {
    match kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw(), signal = %sig, errno = %e, "kill failed"),
    }
}

/// Sends `sig` to the process group led by `pid` (a worker and whatever
/// it started in its group).
pub fn signal_group(pid: Pid, sig: Signal) {
    match kill(Pid::from_raw(-pid.as_raw()), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pid.as_raw(), signal = %sig, errno = %e, "kill of process group failed")
        }
    }
}

/// Makes this process the reaper of its orphaned descendants (what PID 1
/// is anyway). Returns whether that worked.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Marks every inherited fd above stderr close-on-exec, except `keep`, so
/// nothing the master was started with leaks into workers.
pub fn cloexec_inherited(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change flags; an fd that was the
        // read_dir handle itself and is now closed just returns EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Resident set size of `pid` in bytes, from `/proc/PID/statm`.
pub fn rss_bytes(pid: Pid) -> Option<u64> {
    statm(&format!("/proc/{pid}/statm")).map(|(_, rss)| rss)
}

/// What a process's memory costs, in bytes, from `/proc/PID/smaps_rollup`:
/// resident (`rss`, shared pages counted whole in every process),
/// proportional (`pss`, each shared page divided among the processes that
/// map it: the sum over a pod is what the pod uses) and unique (`uss`,
/// private pages only: what killing the process would free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub uss: u64,
}

/// [`Memory`] of `pid`; None when the process is gone or unreadable.
pub fn memory(pid: Pid) -> Option<Memory> {
    parse_smaps_rollup(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// The sums of a `smaps_rollup` file (values in kB).
fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let mut m = Memory::default();
    let mut seen = false;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(kb)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else { continue };
        let bytes = kb.saturating_mul(1024);
        match key {
            "Rss:" => (m.rss, seen) = (bytes, true),
            "Pss:" => m.pss = bytes,
            "Private_Clean:" | "Private_Dirty:" => m.uss = m.uss.saturating_add(bytes),
            _ => {}
        }
    }
    seen.then_some(m)
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn smaps_rollup_sums() {
        let text = "00400000-7ffc [rollup]\nRss:                1000 kB\nPss:                 600 kB\n\
                    Pss_Anon:            100 kB\nShared_Clean:        500 kB\nPrivate_Clean:        50 kB\n\
                    Private_Dirty:       250 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some(Memory { rss: 1_024_000, pss: 614_400, uss: 307_200 }));
        assert_eq!(parse_smaps_rollup("garbage"), None);
        let me = memory(Pid::this()).expect("our own smaps_rollup");
        assert!(me.rss > 0 && me.pss > 0 && me.pss <= me.rss && me.uss <= me.rss, "{me:?}");
    }
}

/// (virtual size, resident set size) of this process, bytes.
pub fn own_memory() -> Option<(u64, u64)> {
    statm("/proc/self/statm")
}

/// The first two fields of a `statm` file (size, resident), in bytes: the
/// kernel counts pages, of the real page size (not always 4 KiB).
fn statm(path: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (size, resident) = (it.next()??, it.next()??);
    Some((size * page_size(), resident * page_size()))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Our direct children as the kernel sees them (workers and adopted
/// orphans), read from `/proc/*/stat`.
/// The parent pid of `pid` (from `/proc/PID/stat`), if it exists.
pub fn parent_of(pid: Pid) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.split_whitespace().nth(1)?.parse().ok()
}

pub fn children() -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name: state, ppid, ...
        let after = &stat[stat.rfind(')')? + 2..];
        let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == me).then(|| Pid::from_raw(pid))
    })
    .collect()
}

/// Takes ownership of an inherited fd `n`: duplicates it close-on-exec to
/// a number >= `floor` and closes the original. `floor` must lie above
/// every inherited fd still to be taken, or a duplicate could land on one
/// of those numbers and be "taken" (and closed) a second time.
pub fn dup_inherited(n: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a number we do not own yet only reads it;
    // a closed fd yields EBADF.
    let new = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, floor.max(LISTEN_FDS_START)) };

    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` was inherited for us to adopt, and `new` is ours alone.
    unsafe {
        libc::close(n);
        Ok(OwnedFd::from_raw_fd(new))
    }
}

/// Clears the signal mask inherited from whoever started us: a master
/// started with SIGTERM blocked would otherwise never see its own
/// shutdown signal. Call before any thread exists (threads inherit it).
pub fn unblock_all_signals() {
    // SAFETY: sigemptyset/pthread_sigmask on a stack-local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub use shm::SharedRegion;

pub use sockinfo::{ListenQueue, listen_queue, since_last_receive_ms};

/// Installs handlers for `sigs` (signal-hook) and a self-pipe every one of
/// them also writes to: a loop polls the returned stream to wake up, then
/// reads the signals from `Signals::pending()`.
pub fn signal_pipe(sigs: &[i32]) -> Result<(signal_hook::iterator::Signals, std::os::unix::net::UnixStream), SysError> {
    let signals = signal_hook::iterator::Signals::new(sigs).map_err(context("installing signal handlers"))?;
    let (wake, write) = std::os::unix::net::UnixStream::pair().map_err(context("signal pipe"))?;
    wake.set_nonblocking(true).map_err(context("signal pipe"))?;
    write.set_nonblocking(true).map_err(context("signal pipe"))?;
    for sig in sigs {
        let w = write.try_clone().map_err(context("signal pipe"))?;
        signal_hook::low_level::pipe::register(*sig, w).map_err(context("signal pipe"))?;
    }
    Ok((signals, wake))
}

/// A failed call, named with what it was doing and on what:
/// `notify socket: bind /tmp/podmaster-1-2/notify: Address in use (os error 98)`.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SysError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

/// `map_err(context("what"))`: an io::Error or an errno, named.
pub fn context<E: Into<io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> SysError {
    let what = what.into();
    move |e| SysError { what, source: e.into() }
}

/// Sleeps until one of `fds` is readable or `deadline` passes (`None`: no
/// deadline), then empties those of `fds` listed in `wakeups` (self-pipes
/// whose bytes only mean "wake up"). The timeout is rounded up: waking a
/// fraction of a millisecond early would spin until the deadline. One poll
/// is capped at 60 s; callers loop anyway.
pub fn poll_with_deadline(fds: &[BorrowedFd<'_>], wakeups: &[BorrowedFd<'_>], deadline: Option<Instant>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(at) => {
            let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(60_000) as u32).unwrap_or(PollTimeout::NONE)
        }
    };
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    match poll(&mut pfds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => tracing::error!(errno = %e, "poll failed"),
    }
    let mut buf = [0u8; 256];
    for fd in wakeups {
        while matches!(nix::unistd::read(fd, &mut buf), Ok(n) if n > 0) {}
    }
}

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects fd 0.
    unsafe { libc::isatty(0) == 1 }
}

/// kill(2) with a raw signal number (real-time signals have no nix
/// `Signal` variant). A negative `pid` names a process group.
pub fn kill_raw(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    if unsafe { libc::kill(pid.as_raw(), sig) } != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Removes `remove` from and sets `set` in this process's environment.
/// Call only while the process has a single thread (before the probe
/// server or any other thread starts): the environment is not thread-safe.
pub fn edit_env_single_threaded(remove: &[&str], set: &[(&str, &str)]) {
    // SAFETY: the caller runs this before any other thread exists.
    unsafe {
        for k in remove {
            std::env::remove_var(k);
        }
        for (k, v) in set {
            std::env::set_var(k, v);
        }
    }
}

/// Asks the scheduler for a short time slice for the calling thread
/// (`sched_setattr` with `SCHED_OTHER` and `sched_runtime`, Linux ≥ 6.12's
/// EEVDF): same priority and share of the CPU, but when it wakes up it gets
/// an earlier deadline and so runs sooner, instead of waiting behind busy
/// workers' full slices. For the threads that answer probes. False when the
/// kernel does not support it (nothing changes then).
pub fn request_short_slice(slice: std::time::Duration) -> bool {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    // SAFETY: getpriority reads this thread's nice value (errno-based error
    // reporting is not needed: a failure leaves nice 0, the default).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: slice.as_nanos() as u64,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr(0 = this thread, a fully initialised attr of
    // the size it declares, flags 0).
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
}

/// The names (`comm`) of this process's threads, one per thread, the
/// calling thread included; empty if `/proc` cannot be read.
pub fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    dir.flatten()
        .map(|t| std::fs::read_to_string(t.path().join("comm")).map(|c| c.trim_end().to_owned()).unwrap_or_default())
        .collect()
}

/// SIGKILLs every child we still have (orphans adopted by us) and reaps
/// them, woken by SIGCHLD through `wake` (the signal pipe), until none is
/// left or `deadline`. Returns (children found, children reaped).
pub fn kill_and_reap_children(wake: BorrowedFd<'_>, deadline: Instant) -> (usize, u64) {
    let leftovers = children();
    for pid in &leftovers {
        signal(*pid, Signal::SIGKILL);
    }
    let mut reaped = 0;
    loop {
        reaped += reap_all().len() as u64;
        if children().is_empty() || Instant::now() >= deadline {
            break;
        }
        poll_with_deadline(&[wake], &[wake], Some(deadline));
    }
    (leftovers.len(), reaped)
}

/// Makes the master non-dumpable: its `/proc/PID/fd`, `environ`, `mem`
/// and `maps` become root's, so a worker running as the master's uid can
/// neither open the master's fds through `/proc` nor ptrace it (the price:
/// no core dump of the master). Children are dumpable again after exec.
pub fn make_undumpable() -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}

/// Raises the soft limit on open files to the hard limit (at most 65536):
/// probe connections and workers' sockets share the master's fds, and the
/// common default soft limit of 1024 is what a flood exhausts first.
/// Returns the (old, new) soft limit when it changed.
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let want = hard.min(65_536);
    (want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok()).then_some((soft, want))
}
