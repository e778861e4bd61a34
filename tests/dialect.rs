//! The uWSGI dialect as real files write it: aliases, `env`, `pidfile`,
//! numbers with comments, the options podmaster ignores (each with its
//! notice, exactly the README's table) or refuses (each with its own
//! message), and a worker that never calls `uwsgi.accepting()`.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// `podmaster --check-config --ini FILE`: (exit code, stdout, stderr).
fn check(text: &str) -> (i32, String, String) {
    let d = TempDir::new("dialect");
    let path = d.write("uwsgi.ini", text);
    let out = Command::new(BIN).arg("--check-config").arg("--ini").arg(&path).stdin(Stdio::null()).output().unwrap();
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), s(&out.stdout), s(&out.stderr))
}

fn base() -> String {
    format!("[uwsgi]\nsocket = 127.0.0.1:0\npython-worker-override = {}\n", example_script())
}

/// The rows of the README table that starts after `heading`: (option, text).
fn readme_table(heading: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let start = readme.find(heading).unwrap_or_else(|| panic!("README has {heading:?}"));
    readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| uWSGI option"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            (cells[0].trim().trim_matches('`').to_owned(), cells[1].trim().to_owned())
        })
        .collect()
}

#[test]
fn every_ignored_option_of_the_readme_is_accepted_with_its_notice() {
    let rows = readme_table("Accepted and ignored, each with one notice");
    assert_eq!(rows.len(), podmaster::config::options::uwsgi::IGNORED.len(), "the README lists them all");
    let mut text = base();
    for (opt, _) in &rows {
        text += &format!("{opt} = 1\n");
    }
    let (code, out, err) = check(&text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
    for (opt, instead) in &rows {
        let line = err.lines().find(|l| l.contains(&format!("option=\"{opt}\""))).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("uWSGI option accepted and ignored"), "{line}");
        assert!(line.contains(&instead.replace('`', "")) || line.contains(instead.as_str()), "{opt}: {line}");
    }
}

#[test]
fn every_refused_option_gets_its_own_message() {
    let rows = readme_table("Refused (they would change what runs)");
    assert_eq!(rows.len(), podmaster::config::options::uwsgi::REFUSED.len());
    let mut text = base();
    for (opt, _) in &rows {
        text += &format!("{opt} = 1\n");
    }
    let (code, _, err) = check(&text);
    assert_eq!(code, 78);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), rows.len(), "one line per refused option, all at once:\n{err}");
    for ((opt, why), line) in rows.iter().zip(&lines) {
        assert!(line.contains(&format!(": {opt}: uWSGI option not supported by podmaster: ")), "{line}");
        assert!(line.contains(why.as_str()), "{opt}: {line}");
    }
}

#[test]
fn aliases_comments_and_request_log_formats_as_real_files_write_them() {
    let text = format!(
        "[uwsgi]\nhttp-socket = 127.0.0.1:0\nuwsgi-socket = 127.0.0.1:0\nworkers = 3 ; per core\n\
         lazy-apps = true  # memory\nharakiri-verbose = true\nreload-mercy = 8\nplugins = python3\n\
         log-format = [pid: %(pid)] %(addr) %(method) %(uri) => %(status)\n\
         python-worker-override = {}\ndrain-delay = 2 # seconds\n",
        example_script()
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
    assert!(err.contains("http-socket 127.0.0.1:0: bound as a listening socket"), "{err}");
    assert!(err.contains("uwsgi-socket 127.0.0.1:0: bound as a listening socket"), "{err}");
    assert!(err.contains("is a uWSGI request-log format"), "{err}");
    // The running instance sees the values as uWSGI would.
    let d = TempDir::new("dialect-run");
    let (ini_text, _, probe) = ini(&example_script(), 1, 1, "workers = 3 ; per core\ndrain-delay = 0 ; none\n");
    let ini_text = ini_text.replace("\nprocesses = 1\n", "\n");
    let path = d.write("p.ini", &ini_text);
    let mut cmd = Command::new(BIN);
    cmd.arg("--ini").arg(&path);
    let mut inst = Instance::spawn(cmd, d.path().join("log"));
    inst.probe = probe;
    inst.wait_ready();
    assert_eq!(inst.status()["processes"], 3);
}

#[test]
fn env_reaches_workers_zygotes_and_daemons_but_not_config_expansion() {
    let d = TempDir::new("env");
    let marker = d.path().join("daemon-env");
    let extra = format!(
        "env = PM_GREETING=hello world\nenv = PM_EMPTY=\npyargv = $(PM_GREETING:-not-for-the-master)\n\
         attach-daemon = sh -c 'echo \"$PM_GREETING\" > {}; sleep 60'\n",
        marker.display()
    );
    let inst = Instance::start(&test_script(), 1, 1, &extra);
    inst.wait_ready();
    let addr = format!("127.0.0.1:{}", inst.ports[0]);
    assert_eq!(http_get(&addr, "/env/PM_GREETING").unwrap().body, "hello world");
    assert_eq!(http_get(&addr, "/env/PM_EMPTY").unwrap().body, "");
    let daemon = wait_for("the daemon wrote its env", DEADLINE, || std::fs::read_to_string(&marker).ok());
    assert_eq!(daemon.trim(), "hello world");
    if let Some(z) = inst.status()["zygotes"][0]["pid"].as_i64() {
        let environ = std::fs::read(format!("/proc/{z}/environ")).unwrap();
        assert!(environ.split(|b| *b == 0).any(|v| v == b"PM_GREETING=hello world"));
    }
    let master = std::fs::read(format!("/proc/{}/environ", inst.pid())).unwrap();
    assert!(!master.split(|b| *b == 0).any(|v| v.starts_with(b"PM_GREETING=")), "not the master's own");
    // `$(VAR)` in the configuration does not see `env`.
    let (_, out, _) = check(&format!("{}env = PM_X=1\npyargv = $(PM_X:-unset)\n", base()));
    assert!(out.contains("pyargv = unset"), "{out}");
    let (code, _, err) = check(&format!("{}env = NOEQUALS\n", base()));
    assert_eq!(code, 78);
    assert!(err.contains("env: expected KEY=VALUE"), "{err}");
}

#[test]
fn pidfile_is_written_once_bound_and_removed_on_exit() {
    let d = TempDir::new("pidfile");
    let pidfile = d.path().join("run/app.pid");
    std::fs::create_dir(d.path().join("run")).unwrap();
    let mut inst = Instance::start(&example_script(), 1, 1, &format!("pidfile = {}\n", pidfile.display()));
    inst.wait_ready();
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), format!("{}\n", inst.pid()));
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
    assert!(!pidfile.exists(), "removed on exit");
    let (code, _, err) = check(&format!("{}pidfile = /nonexistent-dir/x.pid\n", base()));
    assert_eq!(code, 0, "only checked when written: {err}");
}

#[test]
fn set_placeholder_defines_a_placeholder_never_an_option() {
    let d = TempDir::new("setph");
    let path = d.write("p.ini", &format!("{}drain-delay = %(grace)\n", base()));
    let out = Command::new(BIN)
        .args(["--set-ph", "grace=7", "--set-ph", "processes=9", "--check-config", "--ini"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("drain-delay = 7"), "{text}");
    assert!(text.contains("processes = 1  # default"), "a placeholder named like an option is not one: {text}");
}

/// A script that never calls `uwsgi.accepting()` (its gate never opens) is
/// named in the log and in `/readyz`; `worker-ready-mode = spawn` makes the
/// same script count as ready.
#[test]
fn a_worker_that_never_calls_accepting_is_named_and_spawn_mode_is_the_way_out() {
    let d = TempDir::new("never");
    let gate = d.path().join("never-created");
    let gate_s = gate.to_str().unwrap();
    let inst =
        Instance::start_with(&test_script(), 2, 1, "worker-ready-warning = 0.3\n", &[("APP_GATE", gate_s)], |c| c);
    let r = wait_for("/readyz names the worker", DEADLINE, || {
        inst.probe_get("/readyz").filter(|r| r.body.contains("never reported accepting"))
    });
    assert_eq!(r.status, 503);
    assert!(
        r.body.starts_with("not ready: 0/2 workers accepting (need 2); worker 1, 2 never reported accepting"),
        "{}",
        r.body
    );
    let logs = inst.logs();
    assert_eq!(logs.matches("worker has not reported accepting").count(), 2, "once per worker: {logs}");
    drop(inst);
    let inst =
        Instance::start_with(&test_script(), 2, 1, "worker-ready-mode = spawn\n", &[("APP_GATE", gate_s)], |c| c);
    inst.wait_ready();
}

/// uWSGI files written the way real deployments write them
/// (tests/uwsgi_corpus/*.ini): each passes `--check-config` with exactly
/// the notices its `.expect` file lists (`notice OPTION`), and no error.
#[test]
fn the_corpus_of_real_world_style_files_checks_with_exactly_the_expected_notices() {
    let dir = std::path::Path::new(ROOT).join("tests/uwsgi_corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ini"))
        .collect();
    files.sort();
    assert!(files.len() >= 4);
    for ini in files {
        let out = Command::new(BIN)
            .arg("--check-config")
            .arg("--ini")
            .arg(&ini)
            .env_remove("PODMASTER_CORPUS_DEBUG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", ini.display());
        let mut noticed: Vec<String> = err
            .lines()
            .filter(|l| l.contains(" INFO ") && !l.contains("processes = auto"))
            .filter_map(|l| l.split("option=\"").nth(1)?.split('"').next().map(str::to_owned))
            .collect();
        let mut expected: Vec<String> = std::fs::read_to_string(ini.with_extension("expect"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("notice ").map(str::to_owned))
            .collect();
        noticed.sort();
        expected.sort();
        assert_eq!(noticed, expected, "{}:\n{err}", ini.display());
    }
}

/// `--ini -` and `--yaml -` read the configuration from standard input
/// (a framework that generates uWSGI command lines pipes it in); errors
/// name `<stdin>` and the line.
#[test]
fn configuration_from_standard_input() {
    use std::io::Write;
    let run = |args: &[&str], text: &str| {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, out) = run(&["--ini", "-", "--check-config"], &format!("{}processes = 3\n", base()));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("processes = 3  # <stdin>:4"), "{out}");
    let (code, out) = run(&["--ini", "-", "--check-config"], &format!("{}procesess = 3\n", base()));
    assert_eq!(code, Some(78));
    assert!(out.contains("podmaster: <stdin>:4: procesess: unknown option"), "{out}");
    let yaml = format!("uwsgi:\n  socket: 127.0.0.1:0\n  python-worker-override: {}\n  workers: 2\n", example_script());
    let (code, out) = run(&["--yaml", "-", "--check-config"], &yaml);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("processes = 2"), "{out}");
}
