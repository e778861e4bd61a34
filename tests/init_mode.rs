//! Init mode (`podmaster -- COMMAND`) against what tini and dumb-init
//! document: exit codes pass through, signals are forwarded, zombies are
//! reaped, the child's signal state is clean, exec failures are 126/127.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn init(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--").args(args).stdin(Stdio::null());
    c
}

#[test]
fn exit_codes_pass_through() {
    for code in [0, 1, 2, 3, 42, 126, 127, 128, 200, 255] {
        let st = init(&["sh", "-c", &format!("exit {code}")]).status().unwrap();
        assert_eq!(st.code(), Some(code), "exit {code}");
    }
}

/// Starts `podmaster -- sh -c 'echo ready; exec sleep 100'`-like children
/// and waits until the child runs (it prints a line to a file).
fn start_sleeper(d: &TempDir, extra: &[&str]) -> (Instance, std::path::PathBuf) {
    let mark = d.path().join("started");
    let script = format!("echo $$ > {}; exec sleep 100", mark.display());
    let mut cmd = Command::new(BIN);
    cmd.args(extra).arg("--").args(["sh", "-c", &script]);
    let inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    wait_for("child running", DEADLINE, || std::fs::read_to_string(&mark).ok().filter(|s| s.ends_with('\n')));
    (inst, mark)
}

#[test]
fn signals_kill_a_default_disposition_child_and_give_128_plus_n() {
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGUSR1, 138), (libc::SIGUSR2, 140), (libc::SIGHUP, 129)] {
        let d = TempDir::new("sig");
        let (mut inst, _) = start_sleeper(&d, &[]);
        inst.signal(sig);
        assert_eq!(inst.wait_exit(DEADLINE).code(), Some(code), "signal {sig}");
    }
}

#[test]
fn forward_to_group_reaches_grandchildren() {
    let d = TempDir::new("group");
    let out = d.path().join("pids");
    // The shell starts a background sleeper in its group, records both pids, waits.
    let script = format!("sleep 100 & echo \"$$ $!\" > {}; wait", out.display());
    let mut cmd = Command::new(BIN);
    cmd.args(["--forward-to-group", "--", "sh", "-c", &script]);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    let pids: Vec<i32> = wait_for("pids", DEADLINE, || {
        let t = std::fs::read_to_string(&out).ok()?;
        let v: Vec<i32> = t.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        (v.len() == 2).then_some(v)
    });
    inst.signal(libc::SIGTERM);
    let st = inst.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(143));
    wait_for("grandchild gone", DEADLINE, || (!pid_alive(pids[1])).then_some(()));
}

#[test]
fn hundred_background_sleepers_are_all_reaped() {
    let d = TempDir::new("reap");
    let out = d.path().join("pids");
    // The helper leaves 100 short sleepers behind and exits at once; they are
    // orphaned to podmaster (subreaper), which must reap every one.
    let script = format!("for i in $(seq 1 100); do sleep 0.3 & echo $! >> {}; done; exit 7", out.display());
    let mut cmd = Command::new(BIN);
    cmd.args(["--exit-grace", "10", "--", "sh", "-c", &script]);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    let master = inst.pid();
    let t0 = Instant::now();
    let st = inst.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(7));
    assert!(t0.elapsed() < Duration::from_secs(9), "exit-grace ends early once nothing is left");
    let pids: Vec<i32> =
        std::fs::read_to_string(&out).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 100);
    for p in pids {
        // Not alive, and not a zombie under anyone.
        assert!(!pid_alive(p) || proc_state(p) != Some('Z'), "sleeper {p} left as zombie");
    }
    let _ = master;
}

#[test]
fn exit_grace_zero_does_not_wait_for_descendants() {
    let t0 = Instant::now();
    let st = init(&["sh", "-c", "sleep 30 & exit 5"]).status().unwrap();
    assert_eq!(st.code(), Some(5));
    assert!(t0.elapsed() < Duration::from_secs(10), "a container stop never hangs on leftovers");
}

#[test]
fn ignored_and_blocked_signals_of_the_parent_do_not_leak_to_the_child() {
    let d = TempDir::new("clean");
    let out = d.path().join("status");
    // `exec`: the child itself reads its status. A forked grep would race
    // dash, which blocks every signal around its vfork until the child execs.
    let script = format!("exec grep -E 'SigBlk|SigIgn' /proc/$$/status > {}", out.display());
    let st = Command::new("python3")
        .arg("-c")
        .arg(
            "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); signal.signal(signal.SIGUSR1, signal.SIG_IGN); \
             signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2}); os.execv(sys.argv[1], sys.argv[1:])",
        )
        .args([BIN, "--", "sh", "-c", &script])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
}

#[test]
fn exec_failures_are_127_and_126_with_one_line() {
    let out = init(&["/nonexistent/program"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("podmaster: cannot run /nonexistent/program"), "{err}");

    let d = TempDir::new("noexec");
    let f = d.write("script.sh", "#!/bin/sh\necho hi\n");
    let out = init(&[f.to_str().unwrap()]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn init_mode_refuses_worker_options() {
    let out = Command::new(BIN).args(["--socket", ":0", "--", "true"]).stderr(Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("init mode"));
}

#[test]
#[cfg_attr(not(have_pidns), ignore = "needs root and PID namespaces (unshare --pid): run cargo test as root")]
fn as_pid1_in_a_namespace_sigterm_reaches_the_child() {
    let d = TempDir::new("ns");
    let mark = d.path().join("started");
    let script = format!("trap 'exit 42' TERM; echo go > {}; while :; do sleep 0.1; done", mark.display());
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN, "--", "sh", "-c", &script]);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    wait_for("child running", DEADLINE, || std::fs::read_to_string(&mark).ok());
    let master = wait_for("podmaster pid", DEADLINE, || {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", inst.pid())).ok()?;
        kids.split_whitespace().next()?.parse::<i32>().ok()
    });
    // SAFETY: kill(2) of the podmaster we started.
    unsafe { libc::kill(master, libc::SIGTERM) };
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(42));
}
