//! Bad input at startup: one clear line naming the file/key, a distinct
//! exit code, no panic, and no process left behind.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs podmaster to completion (bounded) and returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = TempDir::new("bad");
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
    let st = inst.wait_exit(DEADLINE);
    let err = inst.logs();
    assert!(!err.contains("panicked"), "panic: {err}");
    (st.code().expect("exited by signal"), err)
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line, got:\n{err}");
    lines[0]
}

#[test]
fn missing_ini_file() {
    let (code, err) = run(&["--ini", "/nonexistent/app.ini"], &[]);
    assert_eq!(code, 78);
    assert_eq!(
        one_line(&err),
        "podmaster: /nonexistent/app.ini: cannot read config file: No such file or directory (os error 2)"
    );
}

#[test]
fn missing_section() {
    let d = TempDir::new("sec");
    let p = d.write("a.ini", "[uwsgi]\nprocesses = 2\n");
    let spec = format!("{}:prod", p.display());
    let (code, err) = run(&["--ini", &spec], &[]);
    assert_eq!(code, 78);
    assert_eq!(one_line(&err), format!("podmaster: {}:0: no [prod] section in this file", p.display()));
}

#[test]
fn processes_not_a_number() {
    let d = TempDir::new("abc");
    let p = d.write(
        "a.ini",
        &format!("[uwsgi]\nsocket = :0\npython-worker-override = {}\nprocesses = abc\n", example_script()),
    );
    let (code, err) = run(&["--ini", p.to_str().unwrap()], &[]);
    assert_eq!(code, 78);
    assert_eq!(
        one_line(&err),
        format!("podmaster: {}:4: processes: expected a whole number or `auto`, found \"abc\"", p.display())
    );
}

#[test]
fn env_and_cli_errors_name_their_origin() {
    let (code, err) =
        run(&["--socket", ":0", "--python-worker-override", &example_script()], &[("UWSGI_PROCESSES", "x")]);
    assert_eq!(code, 78);
    assert_eq!(
        one_line(&err),
        "podmaster: env UWSGI_PROCESSES: processes: expected a whole number or `auto`, found \"x\""
    );
    let (code, err) =
        run(&["--socket", ":0", "--python-worker-override", &example_script(), "--drain-delay", "soon"], &[]);
    assert_eq!(code, 78);
    assert_eq!(
        one_line(&err),
        "podmaster: --drain-delay: drain-delay: expected seconds (e.g. 5 or 0.5), found \"soon\""
    );
    let (code, err) = run(&["--procesess", "2"], &[]);
    assert_eq!(code, 78);
    assert!(one_line(&err).contains("--procesess"), "{err}");
}

#[test]
fn socket_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, err) = run(&["--socket", &addr, "--python-worker-override", &example_script()], &[]);
    assert_eq!(code, 78);
    assert_eq!(one_line(&err), format!("podmaster: socket {addr}: bind {addr}: Address already in use"));
}

#[test]
fn probe_socket_in_use() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, err) =
        run(&["--socket", "127.0.0.1:0", "--python-worker-override", &example_script(), "--probe-socket", &addr], &[]);
    assert_eq!(code, 78);
    let line = one_line(&err);
    assert_eq!(line, format!("podmaster: probe-socket {addr}: bind {addr}: Address already in use"));
}

#[test]
fn missing_or_unusable_worker_script() {
    let (code, err) = run(&["--socket", "127.0.0.1:0", "--python-worker-override", "/nonexistent/w.py"], &[]);
    assert_eq!(code, 78);
    assert_eq!(
        one_line(&err),
        "podmaster: --python-worker-override: python-worker-override: worker script /nonexistent/w.py: No such file or directory (os error 2)"
    );
    let d = TempDir::new("dir");
    let (code, err) = run(&["--socket", "127.0.0.1:0", "--python-worker-override", d.path().to_str().unwrap()], &[]);
    assert_eq!(code, 78);
    assert!(one_line(&err).ends_with("is not a regular file"), "{err}");
}

#[test]
fn script_raising_at_import_stops_everything() {
    let port = free_port();
    let sock = format!("127.0.0.1:{port}");
    let (code, err) = run(
        &["--socket", &sock, "--processes", "3", "--python-worker-override", &test_script()],
        &[("APP_RAISE_AT_IMPORT", "1")],
    );
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("RuntimeError: boom at import"), "traceback shown: {err}");
    assert!(err.contains("worker exited before it was ready, during startup"), "{err}");
    let pids = spawned_pids(&err);
    assert_eq!(pids.len(), 3, "{err}");
    for p in pids {
        assert!(!pid_alive(p), "worker {p} left behind");
    }
    // Nothing stays bound either.
    wait_for("socket released", Duration::from_secs(5), || std::net::TcpListener::bind(&sock).ok());
}

/// `std::env::args` panicked on an argument that is not UTF-8.
#[test]
fn argument_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("argutf8");
    let mut cmd = Command::new(BIN);
    cmd.arg("--ini").arg(std::ffi::OsStr::from_bytes(b"caf\xe9.ini")).stdin(Stdio::null());
    let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
    let st = inst.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(78));
    assert_eq!(one_line(&inst.logs()), r#"podmaster: argument "caf\xE9.ini" is not valid UTF-8"#);
}

/// Every problem of a configuration in one run, one line each in the
/// order of the file (the checks of the whole configuration last), the
/// same at startup and with `--check-config`; a value refused once is not
/// reported again by the checks that follow.
#[test]
fn every_problem_is_reported_at_once() {
    let d = TempDir::new("many");
    let ini = d.write(
        "app.ini",
        "[uwsgi]\nsocket = :99999\nprocesses = lots\nprocesess = 4\nworker-nice = 30\n\
         python-worker-override = /nonexistent/w.py\nchdir = /nonexistent-dir\ndrain-delay = -1\n",
    );
    let p = ini.display();
    let expected = [
        format!("podmaster: {p}:2: socket: :99999: port \"99999\" is not a number from 0 to 65535"),
        format!("podmaster: {p}:3: processes: expected a whole number or `auto`, found \"lots\""),
        format!("podmaster: {p}:4: procesess: unknown option; did you mean `processes`?"),
        format!("podmaster: {p}:5: worker-nice: expected a nice increment from 0 to 19, found 30"),
        format!("podmaster: {p}:8: drain-delay: expected seconds (e.g. 5 or 0.5), found \"-1\""),
        format!("podmaster: {p}:7: chdir: /nonexistent-dir: No such file or directory (os error 2)"),
        format!(
            "podmaster: {p}:6: python-worker-override: worker script /nonexistent/w.py: No such file or directory (os error 2)"
        ),
    ];
    for args in [vec!["--ini", ini.to_str().unwrap()], vec!["--check-config", "--ini", ini.to_str().unwrap()]] {
        let (code, err) = run(&args, &[]);
        assert_eq!(code, 78, "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines, expected, "{args:?}");
    }
}
