//! Process-level syscalls: spawning children, reaping, signalling, PID-1
//! duties and `/proc` reads. Every `unsafe` block of the master lives here.
//!
//! [`spawn`]'s child side runs between fork and exec of a multi-threaded
//! process (the probe server has threads): there it may only make
//! async-signal-safe calls — no allocation, no locks, no logging. Everything
//! it needs is prepared by the parent before the fork.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// First fd a child receives its listening sockets at (systemd protocol).
pub const LISTEN_FDS_START: RawFd = 3;

/// Everything needed to start one child. The parent builds it; only the
/// plain data in it is touched after the fork.
pub struct SpawnSpec<'a> {
    pub exe: &'a Path,
    pub argv0: &'a str,
    pub args: &'a [OsString],
    pub env: Vec<(OsString, OsString)>,
    /// Listening sockets, placed at fds 3, 4, ... in this order, followed
    /// by any extra fds (the scoreboard) right after them.
    pub sockets: &'a [RawFd],
    /// Put the child in its own process group (so a terminal's Ctrl-C
    /// reaches only the master, which then drains).
    pub new_process_group: bool,
    /// Kill the child if the master dies (checked again after arming).
    pub die_with_master: bool,
    /// Drop to these credentials before exec.
    pub creds: Option<&'a Credentials>,
}

/// Who a child runs as; resolved by the parent (name lookups allocate).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `None`: keep the current uid (only `gid` was configured).
    pub uid: Option<u32>,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Resolves the supplementary groups of `uid` (as `initgroups` would).
    pub fn resolve(uid: Option<u32>, gid: u32) -> Credentials {
        let groups = uid
            .and_then(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)).ok().flatten())
            .and_then(|user| {
                let name = std::ffi::CString::new(user.name).ok()?;
                nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok()
            })
            .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![gid]);
        Credentials { uid, gid, groups }
    }
}

/// Starts a child with default signal dispositions, an empty signal mask,
/// the listening sockets at fds 3.. and nothing else of ours inherited
/// (every other fd of the master is close-on-exec).
///
/// A plain fork + execve, not `std::process::Command`: std unblocks every
/// signal in the child before running a `pre_exec` hook, so a signal
/// arriving in that window would run the master's handler (writing to the
/// master's own signal pipe) in the child. Here the parent blocks every
/// signal around the fork; the child resets each disposition to its default
/// first and unblocks last, right before exec. Everything the child touches
/// (paths, argv, envp, scratch space) is built before the fork; failures in
/// the child travel back as a raw errno over a close-on-exec pipe, so the
/// child allocates nothing.
pub fn spawn(spec: SpawnSpec<'_>) -> io::Result<Pid> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let env = child_environment(spec.env);
    let path = cstr(resolve_program(spec.exe, &env)?.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(cstr(spec.argv0.as_bytes()))
        .chain(spec.args.iter().map(|a| cstr(a.as_bytes())))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> =
        env.iter().map(|(k, v)| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat())).collect::<io::Result<_>>()?;
    let argv_ptrs: Vec<*const libc::c_char> =
        argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp_ptrs: Vec<*const libc::c_char> =
        envp.iter().map(|e| e.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let child = ChildSetup {
        master: std::process::id() as libc::pid_t,
        sockets: spec.sockets,
        parked: vec![-1; spec.sockets.len()],
        new_process_group: spec.new_process_group,
        die_with_master: spec.die_with_master,
        creds: spec.creds,
    };
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: sigfillset/pthread_sigmask on stack-local sets; fork in a
    // multi-threaded process, after which the child only runs `exec_child`
    // (async-signal-safe: raw syscalls on data prepared above) and exits.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::fork();
        if pid == 0 {
            let errno = child.exec_child(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            let bytes = errno.to_ne_bytes();
            libc::write(err_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
        let fork_errno = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(fork_errno);
        }
        pid
    };
    drop(err_write);
    // exec closes the pipe (EOF, success) or the child reports its errno.
    let mut buf = [0u8; 4];
    let n = loop {
        match nix::unistd::read(&err_read, &mut buf) {
            Err(Errno::EINTR) => continue,
            other => break other.unwrap_or(0),
        }
    };
    if n == 4 {
        // The child has exited (127): reap it here, it was never ours to supervise.
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf)));
    }
    Ok(Pid::from_raw(pid))
}

/// The master's environment with `extra` set on top (later entries win).
fn child_environment(extra: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        std::env::vars_os().filter(|(k, _)| !extra.iter().any(|(e, _)| e == k)).collect();
    for (k, v) in extra {
        env.retain(|(e, _)| *e != k);
        env.push((k, v));
    }
    env
}

/// `prog` as execvp would find it: a name with a `/` is used as is; a bare
/// name is looked up in the child's `PATH`. Not found is ENOENT; found but
/// not executable anywhere is EACCES (init mode maps them to 127 and 126).
fn resolve_program(prog: &Path, env: &[(OsString, OsString)]) -> io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if prog.as_os_str().as_bytes().contains(&b'/') {
        return Ok(prog.to_path_buf());
    }
    if prog.as_os_str().is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let candidate = if dir.as_os_str().is_empty() { Path::new(".").join(prog) } else { dir.join(prog) };
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(candidate),
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

/// What the child does between fork and exec, prepared by the parent.
struct ChildSetup<'a> {
    master: libc::pid_t,
    sockets: &'a [RawFd],
    /// Scratch space for the two-phase fd placement.
    parked: Vec<RawFd>,
    new_process_group: bool,
    die_with_master: bool,
    creds: Option<&'a Credentials>,
}

impl ChildSetup<'_> {
    /// Runs in the forked child: returns only on failure, with the errno.
    ///
    /// # Safety
    /// Only in a freshly forked child, with every signal blocked.
    unsafe fn exec_child(
        mut self,
        path: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        // SAFETY: raw async-signal-safe syscalls on data prepared by the
        // parent; nothing here allocates, locks or logs.
        unsafe {
            reset_dispositions();
            if self.new_process_group && libc::setpgid(0, 0) != 0 {
                return errno();
            }
            // Park every source above the target range first, so placing fd
            // i never overwrites a source j > i that sits at 3+i.
            let top = LISTEN_FDS_START + self.sockets.len() as RawFd;
            for (i, fd) in self.sockets.iter().enumerate() {
                self.parked[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, top);
                if self.parked[i] < 0 {
                    return errno();
                }
            }
            for (i, fd) in self.parked.iter().enumerate() {
                // dup2 leaves the new fd without FD_CLOEXEC: it survives exec.
                if libc::dup2(*fd, LISTEN_FDS_START + i as RawFd) < 0 {
                    return errno();
                }
                libc::close(*fd);
            }
            if let Some(c) = self.creds {
                if let Err(e) = drop_privileges(c) {
                    return e;
                }
            }
            // After the privilege drop: changing credentials clears the
            // parent-death signal.
            if self.die_with_master {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return errno();
                }
                // The master may have died before the signal was armed.
                if libc::getppid() != self.master {
                    return libc::ESRCH;
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(path, argv, envp);
            errno()
        }
    }
}

/// setgroups, setgid, setuid in that order, with raw syscalls: glibc's
/// wrappers broadcast to all threads of the process, machinery that is not
/// safe in a child forked from a multi-threaded parent (which has only the
/// calling thread anyway). Verified afterwards: the ids are the requested
/// ones, and root cannot be regained.
///
/// # Safety
/// Async-signal-safe; meant for a freshly forked child.
unsafe fn drop_privileges(c: &Credentials) -> Result<(), i32> {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM);
    // SAFETY: plain syscalls on plain integers and a borrowed slice.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(errno());
        }
        if libc::syscall(libc::SYS_setresgid, c.gid, c.gid, c.gid) != 0 {
            return Err(errno());
        }
        if let Some(uid) = c.uid {
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                return Err(errno());
            }
            // Verified, and root cannot be regained.
            if libc::getuid() != uid || libc::geteuid() != uid {
                return Err(libc::EPERM);
            }
            if uid != 0 && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0 {
                return Err(libc::EPERM);
            }
        }
        if libc::getgid() != c.gid || libc::getegid() != c.gid {
            return Err(libc::EPERM);
        }
    }
    Ok(())
}

/// Default dispositions for every catchable signal. exec resets handled
/// signals but keeps ignored ones; a master started with SIGHUP ignored
/// must not pass that on to workers. (The mask is emptied by the caller,
/// last, right before exec.)
///
/// # Safety
/// Async-signal-safe (raw syscalls only); meant for a freshly forked child.
unsafe fn reset_dispositions() {
    // SAFETY: raw rt_sigaction with an all-zero kernel sigaction (handler
    // SIG_DFL = 0, no flags, empty mask: the same bytes whatever the
    // architecture's field order). glibc's sigaction() refuses signals 32
    // and 33, which it reserves, yet they can arrive ignored from a parent;
    // the raw call resets them too. Failures (KILL, STOP) are ignored.
    unsafe {
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), 8usize);
            }
        }
    }
}

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
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Our direct children as the kernel sees them (workers and adopted
/// orphans), read from `/proc/*/stat`.
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

/// A shared memory region (a memfd mapped MAP_SHARED) seen as an array of
/// `AtomicI64`. Creator and inheritors map the same pages; every access
/// goes through atomics, so concurrent writers in other processes are
/// fine. The mapping lives as long as this value.
pub struct SharedRegion {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
    fd: Option<OwnedFd>,
}

// SAFETY: the region is only read and written through atomics, which are
// safe to share between threads (and processes).
unsafe impl Send for SharedRegion {}
// SAFETY: as above.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// A new zeroed region of `words` 64-bit words, mapped read-write here.
    /// Its size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): no
    /// process that reaches the memfd (a worker through
    /// `/proc/<master>/fd`) can truncate it under the master's mapping,
    /// which would fault the master's next access (SIGBUS). With
    /// `others_read_only`, `F_SEAL_FUTURE_WRITE` too: this mapping stays
    /// writable, every later one (a worker's) can only read.
    pub fn create(name: &str, words: usize, others_read_only: bool) -> io::Result<SharedRegion> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&fd, (words * 8) as i64).map_err(io::Error::from)?;
        let mut r = Self::map(&fd, words, true)?;
        let mut seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if others_read_only {
            seals |= libc::F_SEAL_FUTURE_WRITE;
        }
        // SAFETY: F_ADD_SEALS on our own memfd only changes its seals.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        r.fd = Some(fd);
        Ok(r)
    }

    /// Maps an inherited region fd (worker side) and closes the fd.
    pub fn adopt(raw: RawFd, words: usize, writable: bool) -> io::Result<SharedRegion> {
        // SAFETY: the master put this fd here for us to own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::map(&fd, words, writable)
    }

    fn map(fd: &OwnedFd, words: usize, writable: bool) -> io::Result<SharedRegion> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let len = std::num::NonZeroUsize::new(words * 8).ok_or_else(|| io::Error::other("empty region"))?;
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        // SAFETY: a fresh shared mapping of a memfd of at least `len` bytes;
        // nothing else aliases it as non-atomic memory.
        let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(io::Error::from)?;
        Ok(SharedRegion { ptr, words, fd: None })
    }

    /// Makes our own mapping read-only (the master's view of worker data).
    pub fn make_read_only(&self) -> io::Result<()> {
        // SAFETY: changes protection of exactly our mapping.
        unsafe { nix::sys::mman::mprotect(self.ptr, self.words * 8, nix::sys::mman::ProtFlags::PROT_READ) }
            .map_err(io::Error::from)
    }

    pub fn words(&self) -> &[std::sync::atomic::AtomicI64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned (so
        // 8-aligned), lives as long as `self`, and is only accessed through
        // these atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr() as *const std::sync::atomic::AtomicI64, self.words) }
    }

    /// The memfd, for handing to children (creator side only).
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we made; no references to
        // it outlive `self` (slices borrow from it).
        unsafe {
            let _ = nix::sys::mman::munmap(self.ptr, self.words * 8);
        }
    }
}

/// Connections waiting in the accept queue of our listening TCP socket
/// `fd`: for a socket in LISTEN state the kernel reports the current
/// queue length in `tcpi_unacked` (one getsockopt; no /proc/net/tcp scan,
/// which grows with every TIME_WAIT connection under load).
pub fn listen_queue(fd: RawFd) -> Option<u64> {
    // SAFETY: getsockopt into a zeroed tcp_info of the size we pass; a
    // non-TCP fd just fails.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        // TCP_LISTEN is state 10.
        (rc == 0 && info.tcpi_state == 10).then_some(u64::from(info.tcpi_unacked))
    }
}

/// Installs handlers for `sigs` (signal-hook) and a self-pipe every one of
/// them also writes to: a loop polls the returned stream to wake up, then
/// reads the signals from `Signals::pending()`.
pub fn signal_pipe(sigs: &[i32]) -> Result<(signal_hook::iterator::Signals, std::os::unix::net::UnixStream), String> {
    let signals = signal_hook::iterator::Signals::new(sigs).map_err(|e| format!("installing signal handlers: {e}"))?;
    let (wake, write) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
    wake.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
    write.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
    for sig in sigs {
        let w = write.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
        signal_hook::low_level::pipe::register(*sig, w).map_err(|e| format!("signal pipe: {e}"))?;
    }
    Ok((signals, wake))
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
