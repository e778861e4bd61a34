//! Forking workers from the zygote so that the master is their parent.
//!
//! The issue suggests `clone(CLONE_PARENT)`. We do not use it: a raw
//! `clone` bypasses glibc's `fork`, which leaves the child's thread
//! descriptor with the zygote's thread id (recursive and robust mutexes
//! key on it) and skips every `pthread_atfork` handler (OpenSSL reseeds
//! its random generator in one; thread pools of numerical libraries
//! restart in theirs). Two workers sharing OpenSSL's random state would be
//! a security bug, not a slowdown. Instead:
//!
//! 1. the zygote runs CPython's pre-fork hooks and calls glibc's `fork`
//!    (every atfork handler runs, once, as for any fork);
//! 2. that intermediate child calls `_Fork` (glibc ≥ 2.34: a real fork
//!    with a correct thread id, without running the handlers a second
//!    time), reports the worker's pid on a pipe and exits;
//! 3. the worker, orphaned, is re-parented to the nearest child subreaper:
//!    the master (PID 1 in a container, or `PR_SET_CHILD_SUBREAPER`);
//! 4. the zygote reaps the intermediate before it answers the master, so
//!    when the master learns the pid the worker is already its child.
//!
//! The worker then runs CPython's after-fork child hooks (so
//! `os.register_at_fork(after_in_child=...)` handlers run and `random` is
//! reseeded) and [`become_worker`] finishes the hand-off: own process
//! group, the master as parent (waited for), parent-death signal armed,
//! empty signal mask.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use pyo3::Python;
use pyo3::ffi;

unsafe extern "C" {
    /// glibc ≥ 2.34: `fork` without the atfork handlers, safe to call
    /// where only async-signal-safe functions may run.
    fn _Fork() -> libc::pid_t;
}

/// Which side of [`fork_worker`] this process is on.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    /// Still the zygote; the worker's pid.
    Zygote(Pid),
    /// The new worker (CPython's child hooks have run).
    Worker,
}

/// Why [`fork_worker`] did not fork.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// More than one thread right before the fork (after the app's
    /// `os.register_at_fork(before=...)` hooks ran): forking would copy
    /// locks other threads may hold.
    #[error("{0} threads")]
    Threads(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Forks a worker (see the module comment). The caller holds the GIL
/// (`py`). The process must be single-threaded at the moment of the fork,
/// which is checked after CPython's pre-fork hooks (app code) have run.
pub fn fork_worker(py: Python<'_>) -> Result<Forked, ForkError> {
    let _ = py;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: the GIL is held (`py`), as the PyOS_*Fork functions require;
    // each PyOS_BeforeFork is matched by exactly one AfterFork call on each
    // side. The intermediate child only calls _Fork, write and _exit
    // (async-signal-safe) on data that exists before the fork.
    unsafe {
        ffi::PyOS_BeforeFork();
        let threads = super::thread_names().len();
        if threads > 1 {
            ffi::PyOS_AfterFork_Parent();
            return Err(ForkError::Threads(threads));
        }
        let mid = libc::fork();
        if mid == 0 {
            let worker = _Fork();
            if worker == 0 {
                ffi::PyOS_AfterFork_Child();
                return Ok(Forked::Worker);
            }
            let report: i32 = if worker < 0 { -*libc::__errno_location() } else { worker };
            let bytes = report.to_ne_bytes();
            libc::write(write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
        let fork_error = io::Error::last_os_error();
        ffi::PyOS_AfterFork_Parent();
        if mid < 0 {
            return Err(fork_error.into());
        }
        drop(write);
        let mut buf = [0u8; 4];
        let n = loop {
            match nix::unistd::read(&read, &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.unwrap_or(0),
            }
        };
        // The intermediate has exited or is about to: reap it, so the
        // worker is re-parented before the master hears of it.
        loop {
            let r = libc::waitpid(mid, std::ptr::null_mut(), 0);
            if r >= 0 || *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        let report = i32::from_ne_bytes(buf);
        match (n, report) {
            (4, pid) if pid > 0 => Ok(Forked::Zygote(Pid::from_raw(pid))),
            (4, errno) => Err(io::Error::from_raw_os_error(-errno).into()),
            _ => Err(io::Error::other("the intermediate process exited without reporting a pid").into()),
        }
    }
}

/// Why a forked worker could not take its place under the master.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("not re-parented to the master (pid {master}) within {0:?}; parent is {1}", master = .2)]
    NotReparented(Duration, i32, i32),
    #[error("{0}: {1}")]
    Sys(&'static str, nix::errno::Errno),
}

/// In a freshly forked worker: its own process group, wait until the
/// master is its parent (bounded by `within`), arm the parent-death
/// signal (checked again after arming: the master may have died just
/// before), empty signal mask — what an exec'd worker gets from
/// [`super::spawn`]. `control` is the zygote's end of its control socket,
/// closed here.
pub fn become_worker(master: i32, control: RawFd, within: Duration) -> Result<(), HandoffError> {
    let deadline = Instant::now() + within;
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(|e| HandoffError::Sys("setpgid", e))?;
    let _ = nix::unistd::close(control);
    loop {
        let parent = nix::unistd::getppid().as_raw();
        if parent == master {
            break;
        }
        if Instant::now() >= deadline {
            return Err(HandoffError::NotReparented(within, parent, master));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| HandoffError::Sys("PR_SET_PDEATHSIG", e))?;
    let parent = nix::unistd::getppid().as_raw();
    if parent != master {
        return Err(HandoffError::NotReparented(within, parent, master));
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| HandoffError::Sys("sigprocmask", e))
}

/// Rewrites this process's command line as `ps` and `/proc/PID/cmdline`
/// show it, within the space the original arguments took (the zygote is
/// exec'd with a long enough `argv[0]`); the rest is zero-filled. False
/// when it does not fit or `/proc` is unreadable.
pub fn set_cmdline(title: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return false };
    // Fields after the command name (which may hold spaces): field 3 first.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) =
        (fields.get(45).and_then(|v| v.parse::<usize>().ok()), fields.get(46).and_then(|v| v.parse::<usize>().ok()))
    else {
        return false;
    };
    let bytes = title.as_bytes();
    if start == 0 || end <= start || bytes.len() + 1 > end - start || bytes.contains(&0) {
        return false;
    }
    // SAFETY: [start, end) is this process's own argument area (the
    // kernel's arg_start/arg_end for it), mapped and writable; nothing
    // else in the worker reads it (sys.argv is a copy).
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
        area.fill(0);
        area[..bytes.len()].copy_from_slice(bytes);
    }
    true
}
