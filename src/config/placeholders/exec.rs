//! `@(exec://COMMAND)`: a command's output as a value, as uWSGI reads it.
//!
//! The command runs with `/bin/sh -c` at config load (and at every reload
//! check of the master), as the master's user, with the master's
//! environment, stdin from /dev/null and stderr shared with podmaster. It
//! runs in a process group of its own, and that group is killed with
//! SIGKILL once the command is done or over its bounds, so nothing it
//! starts outlives the load. Bounds: [`EXEC_TIMEOUT`] per command,
//! [`EXEC_TOTAL`] for every command of one load together, and
//! [`MAX_EXEC_OUTPUT`] bytes of output. Never panics on what the command
//! does; every failure is a message naming what went wrong.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// One command's wall time: a config command answers at once (a secret
/// read, a hostname); five seconds leaves room for a slow disk, and a
/// stuck command cannot hold the master's loop for long.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(5);
/// Every command of one load together: a `for` loop over commands cannot
/// multiply [`EXEC_TIMEOUT`].
pub const EXEC_TOTAL: Duration = Duration::from_secs(10);
/// Output kept at most: the longest value ([`super::MAX_VALUE_BYTES`]).
pub const MAX_EXEC_OUTPUT: usize = super::MAX_VALUE_BYTES;

/// The time the commands of one load have used.
#[derive(Debug, Default)]
pub struct ExecBudget {
    spent: Duration,
}

/// Runs `command` within the budget; its output, one trailing newline dropped.
pub fn run(command: &str, budget: &mut ExecBudget) -> Result<String, String> {
    let left = EXEC_TOTAL.saturating_sub(budget.spent);
    if left.is_zero() {
        return Err(format!("the exec:// commands of this configuration ran for {EXEC_TOTAL:?} in all; not run"));
    }
    let start = Instant::now();
    let out = run_bounded(command, EXEC_TIMEOUT.min(left), MAX_EXEC_OUTPUT);
    budget.spent += start.elapsed();
    out
}

/// How reading the output ended early.
enum Cut {
    Late,
    TooLong,
    Io(String),
}

/// [`run`] with explicit bounds (tests use short ones).
pub(crate) fn run_bounded(command: &str, limit: Duration, max: usize) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let group = Pid::from_raw(child.id() as i32);
    let read = match child.stdout.take() {
        Some(out) => read_until(out, deadline, max),
        None => Err(Cut::Io("no pipe for its output".into())),
    };
    let status = match &read {
        Ok(_) => wait_until(&mut child, deadline),
        Err(_) => None,
    };
    // The command is done or over a bound: whatever it left behind in its
    // group goes too (a background job holding the pipe, a stuck child).
    crate::sys::signal_group(group, Signal::SIGKILL);
    let status = match status {
        Some(s) => s,
        // Killed above; reaping cannot block for long now.
        None => {
            let _ = child.wait();
            return Err(match read {
                Err(Cut::TooLong) => format!("printed more than {max} bytes; stopped"),
                Err(Cut::Io(e)) => e,
                _ => format!("still running after {limit:?}; killed"),
            });
        }
    };
    if !status.success() {
        return Err(describe(status));
    }
    let bytes = read.unwrap_or_default();
    let text = String::from_utf8(bytes).map_err(|_| "its output is not valid UTF-8".to_string())?;
    if text.contains('\0') {
        return Err("its output contains a NUL byte".into());
    }
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}

/// Reads `out` to its end, giving up at `deadline` or past `max` bytes.
fn read_until(mut out: std::process::ChildStdout, deadline: Instant, max: usize) -> Result<Vec<u8>, Cut> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    // Non-blocking, so a wakeup without data (a signal) cannot block the read.
    fcntl(out.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| Cut::Io(format!("fcntl: {e}")))?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() > max {
                    return Err(Cut::TooLong);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Cut::Late);
                }
                crate::sys::poll_with_deadline(&[out.as_fd()], &[], Some(deadline));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Cut::Io(format!("cannot read its output: {e}"))),
        }
    }
}

/// Waits for `child` to exit until `deadline` (`None`: still running).
/// Its output is closed by now, so it is normally exiting: the checks are
/// a few milliseconds apart.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2).min(deadline - Instant::now()))
            }
            Ok(None) => return None,
            // ECHILD: someone else reaped it; its status is lost.
            Err(e) if e.raw_os_error() == Some(Errno::ECHILD as i32) => return None,
            Err(_) => return None,
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str().to_owned()).unwrap_or_else(|_| sig.to_string());
            format!("killed by signal {name}")
        }
        _ => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(400);

    #[test]
    fn output_status_and_bounds() {
        let run = |cmd: &str| run_bounded(cmd, Duration::from_secs(5), 1024);
        assert_eq!(run("echo hello").as_deref(), Ok("hello"));
        assert_eq!(run("printf 'a\\nb\\n\\n'").as_deref(), Ok("a\nb\n"), "one trailing newline dropped");
        assert_eq!(run("printf x").as_deref(), Ok("x"));
        assert_eq!(run("true").as_deref(), Ok(""));
        assert_eq!(run("echo out; exit 3").unwrap_err(), "exited with status 3");
        assert_eq!(run("kill -TERM $$").unwrap_err(), "killed by signal SIGTERM");
        assert_eq!(run("printf '\\377'").unwrap_err(), "its output is not valid UTF-8");
        assert_eq!(run("printf 'a\\0b'").unwrap_err(), "its output contains a NUL byte");
        assert_eq!(run("head -c 5000 /dev/zero | tr '\\0' x").unwrap_err(), "printed more than 1024 bytes; stopped");
        // An endless writer is cut at the size bound, not at the deadline.
        let t = Instant::now();
        assert_eq!(run("yes").unwrap_err(), "printed more than 1024 bytes; stopped");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn a_slow_command_is_killed_with_its_group() {
        let t = Instant::now();
        let err = run_bounded("sleep 30", SHORT, 1024).unwrap_err();
        assert_eq!(err, format!("still running after {SHORT:?}; killed"));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Output closed but still running: killed at the deadline too.
        let err = run_bounded("echo hi; exec >&-; sleep 30", SHORT, 1024).unwrap_err();
        assert!(err.starts_with("still running"), "{err}");
    }

    #[test]
    fn background_jobs_do_not_outlive_the_command() {
        // The job's pid is printed, then the command exits while the job
        // (stdout closed) would sleep on.
        let out = run_bounded("sleep 30 >/dev/null & echo $!", Duration::from_secs(5), 1024).unwrap();
        let pid: i32 = out.trim().parse().unwrap();
        let gone = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for whoever reaps orphans here.
            stat.is_empty() || stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'))
        };
        let end = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone(), "background job {pid} survived");
    }

    #[test]
    fn the_budget_bounds_all_commands_together() {
        let mut b = ExecBudget { spent: EXEC_TOTAL };
        let err = run("echo never", &mut b).unwrap_err();
        assert!(err.contains("ran for 10s in all; not run"), "{err}");
        let mut b = ExecBudget::default();
        assert_eq!(run("echo ok", &mut b).as_deref(), Ok("ok"));
        assert!(b.spent > Duration::ZERO && b.spent < EXEC_TOTAL);
    }
}
