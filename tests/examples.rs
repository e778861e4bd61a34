//! The shipped examples, run for real so they never rot. (examples/hello is
//! run by tests/skeleton.rs with the README command.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// A venv with aiohttp, made once (pip from PyPI) and reused by later runs.
fn aiohttp_venv() -> PathBuf {
    let venv = PathBuf::from(ROOT).join("target/test-venv-aiohttp");
    let ok = |v: &PathBuf| {
        Command::new(v.join("bin/python3")).args(["-c", "import aiohttp"]).status().is_ok_and(|s| s.success())
    };
    if !ok(&venv) {
        let _ = std::fs::remove_dir_all(&venv);
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
        assert!(st.success(), "python3 -m venv");
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r", &format!("{ROOT}/examples/aiohttp/requirements.txt")])
            .status()
            .unwrap();
        assert!(st.success(), "pip install aiohttp");
    }
    venv
}

fn run_example(ini: &str, env: &[(&str, String)]) -> Instance {
    let d = TempDir::new("example");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(ROOT).args(["--ini", ini]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    std::mem::forget(d); // the log must outlive this function
    inst.probe = format!("127.0.0.1:{}", env.iter().find(|(k, _)| *k == "PROBE_PORT").unwrap().1);
    inst
}

#[test]
#[cfg_attr(
    not(have_venv),
    ignore = "needs python3 -m venv (Debian: python3-venv; bash scripts/test-deps.sh installs it) to install aiohttp from PyPI"
)]
fn aiohttp_example_serves_http_and_websockets_and_drains_politely() {
    let venv = aiohttp_venv();
    let (port, probe) = (free_port(), free_port());
    let env = [
        ("PORT", port.to_string()),
        ("PROBE_PORT", probe.to_string()),
        ("VENV", venv.display().to_string()),
        ("WORKERS", "2".to_string()),
    ];
    let mut inst = run_example("examples/aiohttp/podmaster.ini", &env);
    inst.wait_ready();
    let r = http_get(&format!("127.0.0.1:{port}"), "/World").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World"));

    let client = format!("{ROOT}/tests/scripts/ws_client.py");
    let url = format!("http://127.0.0.1:{port}/echo");
    let out = Command::new(venv.join("bin/python3")).args([&client, &url, "echo"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, World\n0001\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An open websocket during SIGTERM is closed politely (1001), exit 0.
    let mut held =
        Command::new(venv.join("bin/python3")).args([&client, &url, "hold"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(held.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "Hello, World");
    assert_eq!(lines.next().unwrap().unwrap(), "0001");
    assert_eq!(lines.next().unwrap().unwrap(), "holding");
    wait_for("websocket gauge", DEADLINE, || {
        (metric(&inst.metrics(), "podmaster_app_websockets")? == 1.0).then_some(())
    });
    assert!(metric(&inst.metrics(), "podmaster_app_requests_total").unwrap() >= 3.0);
    inst.signal(libc::SIGTERM);
    assert_eq!(lines.next().unwrap().unwrap(), "closed 1001 CLOSE");
    assert!(held.wait().unwrap().success());
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
    let logs = inst.logs();
    assert!(logs.contains("GET /World -> 200 worker="), "uwsgi.log per request: {logs}");
    assert!(logs.contains("drained worker="), "{logs}");
}

#[test]
fn metrics_example_counts_requests() {
    let (port, probe) = (free_port(), free_port());
    let env = [("PORT", port.to_string()), ("PROBE_PORT", probe.to_string())];
    let mut inst = run_example("examples/metrics/podmaster.ini", &env);
    inst.wait_ready();
    for _ in 0..3 {
        assert!(http_get(&format!("127.0.0.1:{port}"), "/").unwrap().body.contains("requests so far"));
    }
    let m = wait_for("3 requests", DEADLINE, || {
        let m = inst.metrics();
        (metric(&m, "podmaster_app_requests_total")? == 3.0).then_some(m)
    });
    assert!(metric(&m, "podmaster_app_bytes_sent_total").unwrap() > 60.0);
    assert_eq!(metric(&m, "podmaster_app_inflight"), Some(0.0));
    assert!(metric(&m, "podmaster_app_slowest_us").unwrap() > 0.0);
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn wsgi_example_serves_http_and_uwsgi_and_drains() {
    let (port, uport, probe) = (free_port(), free_port(), free_port());
    let env = [("PORT", port.to_string()), ("UWSGI_PORT", uport.to_string()), ("PROBE_PORT", probe.to_string())];
    let mut inst = run_example("examples/wsgi/uwsgi.ini", &env);
    inst.wait_ready();
    let r = http_get(&format!("127.0.0.1:{port}"), "/World").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World\n"), "{}", inst.logs());
    // The same app over the uwsgi protocol, as nginx's uwsgi_pass sends it.
    let vars: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/nginx"),
        (b"PATH_INFO", b"/nginx"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"80"),
    ];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", uport)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(&mut s, &podmaster::worker::front::uwsgi::encode_packet(vars)).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("Hello, nginx\n"), "{out}");
    // --check-config accepts the file as its users wrote it.
    let check = Command::new(BIN)
        .current_dir(ROOT)
        .args(["--check-config", "--ini", "examples/wsgi/uwsgi.ini"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
}

/// Every configuration under examples/ is accepted by `--check-config` as
/// shipped, with only the environment its comments name (ports, a venv):
/// no example may hold an option podmaster refuses or does not know.
#[test]
fn every_example_config_passes_check_config() {
    let venv = TempDir::new("example-venv");
    std::fs::create_dir_all(venv.path().join("bin")).unwrap();
    venv.write("bin/python3", "");
    let mut checked = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(format!("{ROOT}/examples")).unwrap().flatten().map(|e| e.path()).collect();
    dirs.sort();
    for file in dirs.iter().flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path())) {
        if file.extension().is_none_or(|e| e != "ini") {
            continue;
        }
        let out = Command::new(BIN)
            .current_dir(file.parent().unwrap())
            .arg("--check-config")
            .arg("--ini")
            .arg(&file)
            .envs([("PORT", "8000"), ("SOCKET_PORT", "3031"), ("UWSGI_PORT", "3031"), ("PROBE_PORT", "9191")])
            .env("VENV", venv.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        assert!(!stderr.contains("not supported") && !stderr.contains("WARN"), "{}: {stderr}", file.display());
        checked.push(file.strip_prefix(ROOT).unwrap().display().to_string());
    }
    for want in ["flask/uwsgi.ini", "django/uwsgi.ini", "fastapi/uwsgi.ini", "wsgi/uwsgi.ini", "hello/podmaster.ini"] {
        assert!(checked.iter().any(|c| c.ends_with(want)), "examples/{want} not checked: {checked:?}");
    }
}
