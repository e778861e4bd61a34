//! Starting children: fork + execve with a clean signal state, the
//! listening sockets placed at fds 3.., optional credentials and a
//! parent-death signal.
//!
//! The child side runs between fork and exec of a multi-threaded process
//! (the probe server has threads): there it may only make async-signal-safe
//! calls — no allocation, no locks, no logging. Everything it needs is
//! prepared by the parent before the fork.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::wait::waitpid;
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
    /// Added to the master's nice value in the child (capped at 19); 0
    /// leaves it. Never negative: a child is never given more priority.
    pub nice: i32,
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
        nice: child_nice(spec.nice),
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
    /// Absolute nice value for the child, or `None` to keep the master's.
    nice: Option<i32>,
}

/// The child's absolute nice value: the master's plus `increment`, at most
/// 19. Read here, in the parent (getpriority's -1 is ambiguous: errno says).
fn child_nice(increment: i32) -> Option<i32> {
    if increment <= 0 {
        return None;
    }
    // SAFETY: plain syscall; errno is cleared first to tell -1 from an error.
    let current = unsafe {
        *libc::__errno_location() = 0;
        let v = libc::getpriority(libc::PRIO_PROCESS, 0);
        if v == -1 && *libc::__errno_location() != 0 {
            return None;
        }
        v
    };
    Some((current + increment).min(19))
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
            // Before dropping privileges: lowering a priority needs none,
            // but the order keeps one story whatever the target uid.
            if let Some(n) = self.nice {
                if libc::setpriority(libc::PRIO_PROCESS, 0, n) != 0 {
                    return errno();
                }
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
