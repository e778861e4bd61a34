//! Init mode, `podmaster [OPTIONS] -- COMMAND ARGS...`: a drop-in for tini
//! or dumb-init as a container ENTRYPOINT. One child, every catchable
//! signal forwarded to it (or its process group), every zombie reaped, and
//! the child's exit status passed on (`128+N` when killed by signal N).
//!
//! Setup order as in tini: signal handlers before the child exists (so no
//! signal is lost), subreaper when not PID 1, spawn with a clean signal
//! state, then one loop that waits, forwards and reaps.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::exit;
use crate::sys;

/// Every signal a process may catch, minus SIGCHLD (ours) and the ones
/// signal-hook refuses to handle (synchronous faults: ILL, FPE, SEGV).
fn forwardable() -> Vec<i32> {
    let mut v: Vec<i32> = (1..=31)
        .filter(|s| {
            ![libc::SIGKILL, libc::SIGSTOP, libc::SIGILL, libc::SIGFPE, libc::SIGSEGV, libc::SIGCHLD].contains(s)
        })
        .collect();
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v
}

pub struct InitOptions {
    pub argv: Vec<String>,
    /// Send forwarded signals to the child's process group.
    pub forward_to_group: bool,
    /// After the child exits, wait this long for remaining descendants.
    pub exit_grace: Duration,
}

/// Runs init mode; returns the exit code (the child's, 128+N, 126/127).
pub fn run(opts: InitOptions) -> u8 {
    let sigs = forwardable();
    let mut all = sigs.clone();
    all.push(libc::SIGCHLD);
    let (mut signals, wake) = match sys::signal_pipe(&all) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("podmaster: {e}");
            return exit::SOFTWARE;
        }
    };
    if std::process::id() != 1 {
        if let Err(e) = sys::become_subreaper() {
            eprintln!(
                "podmaster: warning: cannot become child subreaper ({e}); zombies of orphaned descendants will not be \
                 reaped. Run podmaster as PID 1 (ENTRYPOINT) or on Linux >= 3.4."
            );
        }
    }
    // In its own process group unless attached to a terminal (job control
    // and Ctrl-C then work as the user expects).
    let tty = sys::stdin_is_tty();
    let args: Vec<OsString> = opts.argv[1..].iter().map(OsString::from).collect();
    let exe = PathBuf::from(&opts.argv[0]);
    let child = match sys::spawn(sys::SpawnSpec {
        exe: &exe,
        argv0: &opts.argv[0],
        args: &args,
        env: Vec::new(),
        sockets: &[],
        new_process_group: !tty,
        die_with_master: false,
        creds: None,
        nice: 0,
    }) {
        Ok(pid) => pid,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound { exit::NOT_FOUND } else { exit::NOT_EXECUTABLE };
            eprintln!("podmaster: cannot run {}: {e}", opts.argv[0]);
            return code;
        }
    };
    let group = opts.forward_to_group && !tty;
    let mut code: Option<u8> = None;
    let mut grace_end: Option<Instant> = None;
    loop {
        sys::poll_with_deadline(&[wake.as_fd()], &[wake.as_fd()], grace_end);
        for sig in signals.pending() {
            if sig == libc::SIGCHLD || code.is_some() {
                continue;
            }
            forward(child, sig, group);
        }
        for (pid, status) in sys::reap_all() {
            if pid == child {
                code = Some(status_code(&status));
                if !opts.exit_grace.is_zero() {
                    grace_end = Some(Instant::now() + opts.exit_grace);
                }
            }
        }
        if let Some(c) = code {
            // Exit now, or once nothing is left to wait for, or at the grace deadline.
            if grace_end.is_none_or(|t| Instant::now() >= t) || sys::children().is_empty() {
                sys::reap_all();
                return c;
            }
        }
    }
}

fn forward(child: Pid, sig: i32, group: bool) {
    let target = if group { Pid::from_raw(-child.as_raw()) } else { child };
    if let Err(e) = sys::kill_raw(target, sig) {
        if e.raw_os_error() != Some(libc::ESRCH) {
            eprintln!("podmaster: forwarding signal {sig} to {target}: {e}");
        }
    }
}

/// The shell convention: the exit code, or 128+N for death by signal N.
pub fn status_code(status: &WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, c) => (*c & 0xff) as u8,
        WaitStatus::Signaled(_, sig, _) => 128u8.wrapping_add(*sig as i32 as u8),
        _ => exit::SOFTWARE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn codes_follow_the_shell_convention() {
        let p = Pid::from_raw(1);
        assert_eq!(status_code(&WaitStatus::Exited(p, 0)), 0);
        assert_eq!(status_code(&WaitStatus::Exited(p, 255)), 255);
        assert_eq!(status_code(&WaitStatus::Signaled(p, Signal::SIGTERM, false)), 143);
        assert_eq!(status_code(&WaitStatus::Signaled(p, Signal::SIGKILL, true)), 137);
    }

    #[test]
    fn forwards_everything_catchable_but_chld() {
        let f = forwardable();
        assert!(f.contains(&libc::SIGTERM) && f.contains(&libc::SIGUSR1) && f.contains(&libc::SIGWINCH));
        assert!(!f.contains(&libc::SIGCHLD) && !f.contains(&libc::SIGKILL) && !f.contains(&libc::SIGSTOP));
        assert!(f.contains(&libc::SIGRTMIN()));
    }
}
