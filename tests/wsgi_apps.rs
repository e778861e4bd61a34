//! Real apps from PyPI, started from their own `uwsgi.ini` exactly as the
//! examples ship it: Flask (`examples/flask`, `module = app:app` over
//! `http-socket`), Django (`examples/django`, a `startproject` project with
//! `chdir`, `module = mysite.wsgi:application` and `env`, over HTTP and the
//! uwsgi protocol) and FastAPI (`examples/fastapi`, uvicorn on
//! `uwsgi.sockets` through `python-worker-override`). What only podmaster
//! has comes from the command line, as in the examples' Dockerfiles:
//! `--virtualenv` (the test venv) and `--probe-socket`; the ports come from
//! the `$(PORT)` the files read.
//!
//! The frameworks are pinned in scripts/test-requirements.txt and installed
//! into .tools/venv by scripts/test-deps.sh; without them (a fresh clone)
//! these tests are reported ignored with that reason (build.rs:
//! `have_wsgi_apps`). CI runs this suite twice, preforked and with
//! `UWSGI_LAZY_APPS=true`.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The venv scripts/test-deps.sh fills (absolute: a relative `virtualenv`
/// is taken in the ini's `chdir`).
fn venv() -> String {
    format!("{ROOT}/.tools/venv")
}

/// podmaster started in `examples/NAME` with `--ini uwsgi.ini`, the test
/// venv, a probe socket and `env` (the ports the ini reads); ready.
fn start_example(name: &str, env: &[(&str, String)]) -> Instance {
    let dir = TempDir::new(&format!("app-{name}"));
    let probe = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(BIN);
    cmd.current_dir(format!("{ROOT}/examples/{name}"));
    cmd.args(["--ini", "uwsgi.ini", "--virtualenv", &venv(), "--probe-socket", &probe]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
    std::mem::forget(dir); // the log must outlive this function
    inst.probe = probe;
    inst
}

/// Parses the ~2 KB catalogue page every example serves and checks it.
fn check_catalogue(r: &Response, framework: &str) {
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("Content-Type").is_some_and(|v| v.starts_with("application/json")), "{r:?}");
    assert!((1500..3000).contains(&r.body.len()), "about 2 KB: {} bytes", r.body.len());
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(v["total"], 16);
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 16);
    assert_eq!(items[0]["sku"], "SKU-00001");
    assert_eq!(items[15]["price_cents"], 199 + 37 * 16);
    assert_eq!(items[2]["in_stock"], false);
    assert_eq!(items[0]["tags"][1], framework);
}

/// SIGTERM while a slow request (1.5 s) is in flight: the request is
/// answered in full and podmaster exits 0 after waiting for it.
fn graceful_stop_finishes(mut inst: Instance, addr: &str, path: &str, want: &str) {
    let pids: Vec<i32> = inst.worker_pids().into_iter().map(|(_, pid)| pid).collect();
    let client = start_request(addr, path);
    // Accepted by a worker: from then on the request is that worker's.
    wait_for("a worker to accept the slow request", DEADLINE, || accepted_by(&client, &pids));
    let t0 = Instant::now();
    inst.signal(libc::SIGTERM);
    let r = finish_request(client).unwrap_or_else(|e| panic!("{e}\n{}", inst.logs()));
    assert_eq!((r.status, r.body.as_str()), (200, want), "{}", inst.logs());
    let st = inst.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", inst.logs());
    assert!(t0.elapsed() >= Duration::from_millis(1000), "the drain waited for the request: {:?}", t0.elapsed());
}

#[test]
#[cfg_attr(
    not(have_wsgi_apps),
    ignore = "needs Flask, Django, FastAPI and uvicorn in .tools/venv: run bash scripts/test-deps.sh"
)]
fn flask_app_runs_from_its_uwsgi_ini() {
    let port = free_port();
    let inst = start_example("flask", &[("PORT", port.to_string())]);
    inst.wait_ready();
    // The ini's `processes = 4`, each with `threads = 2`.
    let ready = inst.probe_get("/readyz").unwrap();
    assert!(ready.body.contains("4/4 workers accepting"), "{ready:?}");
    let addr = format!("127.0.0.1:{port}");

    let r = http_get(&addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"), "{}", inst.logs());
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(http_get(&addr, "/hello/podmaster").unwrap().body, "Hello, podmaster!");
    check_catalogue(&http_get(&addr, "/api/items").unwrap(), "flask");
    let missing = http_get(&addr, "/no/such/page").unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Not Found"), "Werkzeug's 404 page: {missing:?}");
    // Every option of the file is accepted (the ignored ones with a notice).
    let logs = inst.logs();
    assert!(!logs.contains("ERROR") && !logs.contains("WARN"), "{logs}");
    assert!(logs.contains("option=\"vacuum\""), "{logs}");
    graceful_stop_finishes(inst, &addr, "/slow?s=1.5", "slept 1.5");
}

#[test]
#[cfg_attr(
    not(have_wsgi_apps),
    ignore = "needs Flask, Django, FastAPI and uvicorn in .tools/venv: run bash scripts/test-deps.sh"
)]
fn django_project_runs_from_its_uwsgi_ini_over_http_and_uwsgi() {
    let db = Path::new(ROOT).join("examples/django/db.sqlite3");
    let db_was_there = db.exists(); // (someone ran `manage.py migrate` here)
    let (port, uport) = (free_port(), free_port());
    let inst = start_example("django", &[("PORT", port.to_string()), ("SOCKET_PORT", uport.to_string())]);
    inst.wait_ready();
    let addr = format!("127.0.0.1:{port}");

    let r = http_get(&addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"), "{}", inst.logs());
    // Django's middleware ran (settings from `env = DJANGO_SETTINGS_MODULE=...`).
    for (h, v) in [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "same-origin"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ] {
        assert_eq!(r.header(h), Some(v), "{h}: {r:?}");
    }
    assert_eq!(http_get(&addr, "/hello/podmaster/").unwrap().body, "Hello, podmaster!");
    check_catalogue(&http_get(&addr, "/api/items/").unwrap(), "django");
    // DEBUG is off: the plain 404 page, and APPEND_SLASH redirects.
    let missing = http_get(&addr, "/no/such/page/").unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("<h1>Not Found</h1>") && !missing.body.contains("URLconf"), "{missing:?}");
    let moved = http_get(&addr, "/hello/podmaster").unwrap();
    assert_eq!((moved.status, moved.header("Location")), (301, Some("/hello/podmaster/")));
    // A Host outside ALLOWED_HOSTS is refused by Django, not by podmaster.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // The same project over the uwsgi protocol, as nginx's uwsgi_pass sends it.
    let vars: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/api/items/"),
        (b"PATH_INFO", b"/api/items/"),
        (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"HTTP_HOST", b"localhost"),
    ];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", uport)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&podmaster::worker::front::uwsgi::encode_packet(vars)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"sku\": \"SKU-00001\""), "{out}");

    // No view touched the database: served without `migrate`, and SQLite
    // never created its file.
    assert!(db_was_there || !db.exists(), "a view opened the database");
    graceful_stop_finishes(inst, &addr, "/slow/?s=1.5", "slept 1.5");
}

#[test]
#[cfg_attr(
    not(have_wsgi_apps),
    ignore = "needs Flask, Django, FastAPI and uvicorn in .tools/venv: run bash scripts/test-deps.sh"
)]
fn fastapi_app_through_uvicorn_is_ready_only_once_it_accepts() {
    let port = free_port();
    // The app's startup takes 2 s (WARMUP_SECONDS): the workers run, their
    // sockets listen, but readiness must wait for uwsgi.accepting().
    let inst = start_example("fastapi", &[("PORT", port.to_string()), ("WARMUP_SECONDS", "2".into())]);
    wait_for("uvicorn to start the app", DEADLINE, || {
        inst.logs().contains("Waiting for application startup.").then_some(())
    });
    let early = inst.probe_get("/readyz").expect("/readyz");
    assert_eq!(early.status, 503, "ready before any worker accepted: {early:?}");
    assert!(early.body.contains("0/2 workers accepting"), "{early:?}");
    inst.wait_ready();
    let logs = inst.logs();
    let complete = logs.find("Application startup complete.").expect("uvicorn's startup line");
    let accepting = logs.find("worker accepting").expect("podmaster's accepting line");
    assert!(complete < accepting, "accepting() only after the app's startup:\n{logs}");

    let addr = format!("127.0.0.1:{port}");
    let r = http_get(&addr, "/").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World!"), "{}", inst.logs());
    assert_eq!(r.header("server"), Some("uvicorn"), "served by uvicorn in the worker: {r:?}");
    assert_eq!(http_get(&addr, "/hello/podmaster").unwrap().body, "Hello, podmaster!");
    check_catalogue(&http_get(&addr, "/api/items").unwrap(), "fastapi");
    assert_eq!(http_get(&addr, "/no/such/page").unwrap().status, 404);

    // A chain reload (SIGHUP) waits for each replacement's accepting(),
    // through its 2 s startup, before it stops an old worker.
    let before = inst.worker_pids();
    inst.signal(libc::SIGHUP);
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    let after = inst.worker_pids();
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200);
    check_catalogue(&http_get(&addr, "/api/items").unwrap(), "fastapi");
    graceful_stop_finishes(inst, &addr, "/slow?s=1.5", "slept 1.5");
}
