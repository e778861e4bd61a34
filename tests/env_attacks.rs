//! Environment attacks (issue 12; DESIGN.md "Trust boundaries": the
//! environment gives a clear error, exit 78, or an ignored value, never a
//! panic). Every variable podmaster reads — `UWSGI_*` and `PODMASTER_*` for
//! each option and alias of the option table, the socket-activation
//! variables, `NOTIFY_SOCKET`, `RUST_LOG`, the worker hand-off — is set to
//! hostile values one at a time and all at once, and the real binary runs
//! `--check-config` (and a real short start for a subset). Each run must
//! either exit 78 with exactly one stderr line naming the variable, or
//! run normally; never exit 101 (a panic), die by a signal or hang.

mod common;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use podmaster::config::options::OPTIONS;

/// Longest one `--check-config` run may take: it reads a small file and
/// its environment, milliseconds on an idle machine.
const RUN_DEADLINE: Duration = Duration::from_secs(10);

/// The longest message a config error may print (as in config_corpus).
const MAX_LINE_CHARS: usize = 600;

/// Variables read outside the option table. Not here on purpose:
/// `PODMASTER_TEST_WEDGE_ON_USR2`, a test hook that still panics on
/// garbage and is being moved behind a build feature by another change;
/// `PODMASTER_WORKER` (the worker hand-off), which switches to worker mode
/// and is tested on its own below.
const OTHER_VARS: &[&str] = &["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "RUST_LOG"];

/// `UWSGI_*` and `PODMASTER_*` for every option and alias in the table.
fn option_vars() -> Vec<String> {
    let mut out = Vec::new();
    for o in OPTIONS {
        for name in std::iter::once(o.name).chain(o.aliases.iter().copied()) {
            let suffix = name.to_ascii_uppercase().replace('-', "_");
            out.push(format!("UWSGI_{suffix}"));
            out.push(format!("PODMASTER_{suffix}"));
        }
    }
    out
}

/// The hostile values, with a label for failure messages.
fn hostile_values() -> Vec<(&'static str, OsString)> {
    vec![
        ("garbage", "garbage;$(X)%(y)@(z) \u{1F4A9}".into()),
        ("100 KB of digits", "9".repeat(100 * 1024).into()),
        ("100 KB of text", "x".repeat(100 * 1024).into()),
        ("NaN", "NaN".into()),
        ("-1", "-1".into()),
        ("i64::MIN - 1", "-9223372036854775809".into()),
        ("1e309", "1e309".into()),
        ("inf", "inf".into()),
        ("empty", "".into()),
        ("invalid UTF-8", OsStr::from_bytes(b"\xff\xfe(\xc3").to_owned()),
        ("control characters", "\u{1}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{1b}[31m\u{7f}".into()),
    ]
}

/// A valid configuration for `--check-config`: only the environment can
/// make it fail.
fn check_ini(dir: &Path) -> PathBuf {
    let p = dir.join("base.ini");
    std::fs::write(&p, format!("[uwsgi]\nsocket = 127.0.0.1:0\npython-worker-override = {}\n", example_script()))
        .unwrap();
    p
}

/// What one run did.
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A command with no podmaster-related variable inherited from the test's
/// own environment, stdout and stderr to files in `dir`.
fn command(program: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("UWSGI_") || k.starts_with("PODMASTER_") || OTHER_VARS.contains(&k.as_ref()) {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.current_dir(dir).stdin(Stdio::null());
    cmd
}

/// Waits for `child` at most `RUN_DEADLINE`; kills it on timeout.
fn finish(mut child: Child, dir: &Path, what: &str) -> Result<Outcome, String> {
    let end = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("{what}: wait: {e}"))? {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: still running after {RUN_DEADLINE:?} (a hang)"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let read = |n: &str| String::from_utf8_lossy(&std::fs::read(dir.join(n)).unwrap_or_default()).into_owned();
    Ok(Outcome { code: status.code(), signal: status.signal(), stdout: read("stdout"), stderr: read("stderr") })
}

/// Runs `program args` with `env` set, in a fresh directory.
fn run(program: &str, args: &[&OsStr], env: &[(&str, &OsStr)], what: &str) -> Result<Outcome, String> {
    let dir = TempDir::new("env");
    let ini = check_ini(dir.path());
    let mut cmd = command(program, dir.path());
    let args: Vec<&OsStr> = args.iter().map(|a| if *a == "INI" { ini.as_os_str() } else { a }).collect();
    cmd.args(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::fs::File::create(dir.path().join("stdout")).unwrap());
    cmd.stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let child = cmd.spawn().map_err(|e| format!("{what}: spawn {program}: {e}"))?;
    finish(child, dir.path(), what)
}

/// The contract: exit 78 with one short line naming one of `vars`, or a
/// normal `--check-config` (exit 0, "configuration OK"), nothing else.
fn judge(what: &str, vars: &[&str], o: &Outcome) -> Result<(), String> {
    let head: String = o.stderr.chars().take(800).collect();
    if o.stderr.contains("panicked") {
        return Err(format!("{what}: panic:\n{head}"));
    }
    match (o.code, o.signal) {
        (Some(0), _) if o.stdout.contains("configuration OK") => Ok(()),
        // Every problem at once, one short line each; one of them names
        // the variable.
        (Some(78), _) => {
            let lines: Vec<&str> = o.stderr.lines().collect();
            if lines.is_empty() || lines.len() > 10 {
                return Err(format!("{what}: exit 78 with {} stderr lines:\n{head}", lines.len()));
            }
            if let Some(bad) =
                lines.iter().find(|l| !l.starts_with("podmaster: ") || l.chars().count() > MAX_LINE_CHARS)
            {
                return Err(format!("{what}: not a short podmaster line: {bad}"));
            }
            if !lines.iter().any(|line| vars.iter().any(|v| line.contains(v))) {
                return Err(format!("{what}: no error names the variable: {head}"));
            }
            Ok(())
        }
        (code, signal) => Err(format!("{what}: exit {code:?}, signal {signal:?}:\n{head}")),
    }
}

/// The hostile values for setting every variable at once: the 100 KB ones
/// cut to 8 KB, so that a hundred of them fit in the kernel's limit on
/// the size of an environment (ARG_MAX).
fn hostile_values_at_once() -> Vec<(&'static str, OsString)> {
    hostile_values()
        .into_iter()
        .map(
            |(label, v)| {
                if v.len() > 8192 { (label, OsStr::from_bytes(&v.as_bytes()[..8192]).to_owned()) } else { (label, v) }
            },
        )
        .collect()
}

/// One `--check-config` run: a label, the variables its error may name,
/// and the environment to set.
struct Case {
    what: String,
    vars: Vec<String>,
    env: Vec<(String, OsString)>,
}

/// Runs `cases` on two threads with
/// `podmaster --check-config --ini BASE`; returns the failures.
fn check_all(cases: Vec<Case>) -> Vec<String> {
    let (a, b) = cases.split_at(cases.len() / 2);
    let work = |part: &[Case]| {
        let mut failures = Vec::new();
        for Case { what, vars, env } in part {
            let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())).collect();
            let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
            let args = [OsStr::new("--check-config"), OsStr::new("--ini"), OsStr::new("INI")];
            if let Err(e) = run(BIN, &args, &env, what).and_then(|o| judge(what, &vars, &o)) {
                failures.push(e);
            }
        }
        failures
    };
    std::thread::scope(|s| {
        let t = s.spawn(|| work(a));
        let mut f = work(b);
        f.extend(t.join().unwrap());
        f
    })
}

fn report(failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} runs broke the contract:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n---\n")
    );
}

/// One case per variable and hostile value, each variable set alone.
fn alone(vars: impl IntoIterator<Item = String>) -> Vec<Case> {
    let mut cases = Vec::new();
    for var in vars {
        for (label, value) in hostile_values() {
            cases.push(Case {
                what: format!("{var}={label}"),
                vars: vec![var.clone()],
                env: vec![(var.clone(), value)],
            });
        }
    }
    cases
}

#[test]
fn each_option_variable_alone() {
    let cases = alone(option_vars());
    let n = cases.len();
    assert!(n > 500, "only {n} cases: is the option table reachable?");
    report(check_all(cases), n);
}

#[test]
fn each_other_variable_alone() {
    let cases = alone(OTHER_VARS.iter().map(|v| v.to_string()));
    let n = cases.len();
    report(check_all(cases), n);
}

#[test]
fn every_variable_at_once() {
    let mut all: Vec<String> = option_vars();
    all.extend(OTHER_VARS.iter().map(|v| v.to_string()));
    let mut cases = Vec::new();
    for (label, value) in hostile_values_at_once() {
        let env = all.iter().map(|v| (v.clone(), value.clone())).collect();
        cases.push(Case { what: format!("every variable={label}"), vars: all.clone(), env });
    }
    let n = cases.len();
    report(check_all(cases), n);
}

/// A variable podmaster never reads, not UTF-8: ignored (it used to
/// panic `std::env::vars`, whatever the variable).
#[test]
fn unrelated_variable_not_utf8_is_ignored() {
    let bad = OsStr::from_bytes(b"caf\xe9");
    let args = [OsStr::new("--check-config"), OsStr::new("--ini"), OsStr::new("INI")];
    let o = run(BIN, &args, &[("HOME", bad), ("LANG_NOT_UTF8", bad)], "HOME=latin-1").unwrap();
    judge("HOME=latin-1", &[], &o).unwrap();
}

/// `LISTEN_FDS` and `LISTEN_FDNAMES` are only read when `LISTEN_PID` is
/// this process: the launcher (like systemd-socket-activate) sets it to
/// its own pid and execs podmaster, with one real listening socket at fd 3.
#[test]
fn activation_variables_for_this_process() {
    let launcher = format!("{ROOT}/tests/scripts/activate.py");
    let mut failures = Vec::new();
    let mut total = 0;
    for (label, value) in hostile_values() {
        let port = free_port().to_string();
        // LISTEN_FDS: the launcher's --fds sets it (bytes kept as given).
        let what = format!("LISTEN_FDS={label}");
        // The launcher's port, then podmaster's command line.
        let tail = [&port, "--", BIN, "--check-config", "--ini", "INI"].map(OsStr::new);
        let args: Vec<&OsStr> =
            [OsStr::new(&launcher), OsStr::new("--fds"), value.as_os_str()].into_iter().chain(tail).collect();
        total += 1;
        if let Err(e) = run("python3", &args, &[], &what).and_then(|o| judge(&what, &["LISTEN_FDS"], &o)) {
            failures.push(e);
        }
        // LISTEN_FDNAMES: inherited through the launcher unchanged.
        let what = format!("LISTEN_FDNAMES={label}");
        let args: Vec<&OsStr> = std::iter::once(OsStr::new(&launcher)).chain(tail).collect();
        total += 1;
        let env = [("LISTEN_FDNAMES", value.as_os_str())];
        if let Err(e) = run("python3", &args, &env, &what).and_then(|o| judge(&what, &["LISTEN_FDNAMES"], &o)) {
            failures.push(e);
        }
    }
    report(failures, total);
}

/// The worker hand-off variable, set from outside: worker mode refuses it
/// with one line naming it.
#[test]
fn worker_handoff_variable() {
    let mut failures = Vec::new();
    let values = hostile_values();
    for (label, value) in &values {
        let what = format!("PODMASTER_WORKER={label}");
        let args = [OsStr::new("--check-config"), OsStr::new("--ini"), OsStr::new("INI")];
        let r = run(BIN, &args, &[("PODMASTER_WORKER", value)], &what);
        match r {
            Ok(o) if o.code == Some(78) => {
                if let Err(e) = judge(&what, &["PODMASTER_WORKER"], &o) {
                    failures.push(e);
                }
            }
            Ok(o) => failures.push(format!("{what}: exit {:?} signal {:?}: {}", o.code, o.signal, o.stderr)),
            Err(e) => failures.push(e),
        }
    }
    report(failures, values.len());
}

// ---------------------------------------------------------------------------
// Real short starts

/// The command worker of the real starts: reports READY=1 (so the
/// instance is ready only once a worker got through its start), then
/// waits; SIGTERM's default action ends it at once.
const READY_WORKER: &str = "import os, signal, socket\n\
    a = os.environ['NOTIFY_SOCKET']\n\
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
    s.sendto(b'READY=1', '\\0' + a[1:] if a.startswith('@') else a)\n\
    signal.pause()\n";

/// A real start with `env`: the master either refuses (exit 78, one line
/// naming one of `vars`) or comes up (/readyz 200) and stops cleanly on
/// SIGTERM. The worker is [`READY_WORKER`], a command worker: "ready"
/// means it got through its start (chdir, exec) and runs, and no Python
/// interpreter is embedded, so a start takes tens of milliseconds.
fn start_and_stop(what: &str, vars: &[&str], env: &[(String, OsString)]) -> Result<(), String> {
    let dir = TempDir::new("envstart");
    let probe = format!("127.0.0.1:{}", free_port());
    let worker = dir.path().join("ready.py");
    std::fs::write(&worker, READY_WORKER).unwrap();
    let ini = dir.path().join("start.ini");
    std::fs::write(
        &ini,
        format!(
            "[uwsgi]\nsocket = 127.0.0.1:0\nworker-exec = python3 -S {}\nprocesses = 1\nprobe-socket = {probe}\n",
            worker.display()
        ),
    )
    .unwrap();
    let mut cmd = command(BIN, dir.path());
    cmd.arg("--ini").arg(&ini);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::fs::File::create(dir.path().join("stdout")).unwrap());
    cmd.stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mut child = cmd.spawn().map_err(|e| format!("{what}: spawn: {e}"))?;
    let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    // Ready, or exited on its own, within the deadline.
    let end = Instant::now() + RUN_DEADLINE;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            let o = finish(child, dir.path(), what)?;
            // A refusal must be the config error contract.
            return match o.code {
                Some(78) => judge(what, vars, &o),
                _ => {
                    Err(format!("{what}: exited before ready: exit {:?} signal {:?}:\n{}", o.code, o.signal, o.stderr))
                }
            };
        }
        if http_get(&probe, "/readyz").is_ok_and(|r| r.status == 200) {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: neither ready nor exited after {RUN_DEADLINE:?}:\n{}", stderr()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = finish(child, dir.path(), what)?;
    if o.code != Some(0) || o.stderr.contains("panicked") {
        return Err(format!("{what}: SIGTERM after ready: exit {:?} signal {:?}:\n{}", o.code, o.signal, o.stderr));
    }
    Ok(())
}

#[test]
fn real_start_with_each_variable_garbage() {
    let (_, garbage) = hostile_values().swap_remove(0);
    let mut vars = option_vars();
    vars.extend(OTHER_VARS.iter().map(|v| v.to_string()));
    let (a, b) = vars.split_at(vars.len() / 2);
    let work = |part: &[String]| {
        part.iter()
            .filter_map(|v| start_and_stop(&format!("start {v}=garbage"), &[v], &[(v.clone(), garbage.clone())]).err())
            .collect::<Vec<_>>()
    };
    let failures = std::thread::scope(|s| {
        let t = s.spawn(|| work(a));
        let mut f = work(b);
        f.extend(t.join().unwrap());
        f
    });
    report(failures, vars.len());
}

#[test]
fn real_start_with_every_variable_at_once() {
    let mut all = option_vars();
    all.extend(OTHER_VARS.iter().map(|v| v.to_string()));
    let names: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    let values = hostile_values_at_once();
    for (label, value) in &values {
        let env: Vec<(String, OsString)> = all.iter().map(|v| (v.clone(), value.clone())).collect();
        if let Err(e) = start_and_stop(&format!("start every variable={label}"), &names, &env) {
            failures.push(e);
        }
    }
    report(failures, values.len());
}

/// NOTIFY_SOCKET and RUST_LOG are not the master's to act on (it makes its
/// own notify socket for the workers; a bad filter falls back to
/// `log-level`): any value, and the instance still starts and stops.
#[test]
fn real_start_with_notify_socket_and_rust_log_hostile() {
    let mut failures = Vec::new();
    let values = hostile_values();
    for var in ["NOTIFY_SOCKET", "RUST_LOG"] {
        for (label, value) in &values {
            if let Err(e) = start_and_stop(&format!("start {var}={label}"), &[var], &[(var.into(), value.clone())]) {
                failures.push(e);
            }
        }
    }
    report(failures, 2 * values.len());
}
