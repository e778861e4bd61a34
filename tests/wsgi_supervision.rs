//! Request-aware supervision of the WSGI worker (issue 20), end to end:
//! `max-requests` replaces workers replacement-first under load with no
//! failed request. The options need podmaster's own worker: with an
//! override script they are errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

fn app_dir() -> String {
    format!("{ROOT}/tests/scripts/wsgi")
}

/// Clients sending GETs on fresh connections until `stop`; (ok, failures).
fn load(addr: &str, clients: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<(u64, Vec<String>)>> {
    (0..clients)
        .map(|i| {
            let (addr, stop) = (addr.to_owned(), Arc::clone(stop));
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match http_get(&addr, &format!("/c{i}")) {
                        Ok(r) if r.status == 200 && r.body.contains(&format!("Hello, c{i}\n")) => ok += 1,
                        Ok(r) => failed.push(format!("{} {:?}", r.status, r.body)),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

#[test]
fn max_requests_replaces_workers_replacement_first_without_a_failed_request() {
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "module = app\npythonpath = {}\nhttp-socket = {addr}\nmax-requests = 40\nmax-requests-delta = 20\n",
        app_dir()
    );
    let inst = Instance::start("", 2, 0, &extra);
    inst.wait_ready();
    let first = inst.worker_pids();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&addr, 4, &stop);
    inst.wait_metric("podmaster_worker_recycles_total{reason=\"max_requests\"}", 4.0);
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}\n{}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)],
        inst.logs()
    );
    // Each worker asks once, at 40..=60 requests; four recycles took at
    // least 160 requests.
    assert!(ok >= 160, "{ok} requests");
    let now = inst.worker_pids();
    assert!(now.iter().all(|p| !first.contains(p)), "{first:?} -> {now:?}");
    assert!(inst.logs().contains("max-requests reached"), "{}", inst.logs());
}

#[test]
fn request_options_need_the_wsgi_worker() {
    let dir = TempDir::new("req-opts");
    let script = dir.write("w.py", "import uwsgi\n");
    for (key, value) in [("max-requests", "100"), ("harakiri", "30")] {
        let extra = format!("python-worker-override = {}\n{key} = {value}\nsocket = 127.0.0.1:0\n", script.display());
        let (text, _, _) = ini("", 1, 0, &extra);
        let path = dir.write("c.ini", &text);
        let out = std::process::Command::new(BIN).arg("--ini").arg(&path).arg("--check-config").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{key}: {err}");
        assert!(err.contains(&format!("{key} needs podmaster's WSGI worker")), "{key}: {err}");
    }
}

const STUCK_APP: &str = r#"
import time

def stuck_here(seconds):
    time.sleep(seconds)

def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        stuck_here(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fine\n"]
"#;

/// A request stuck past `harakiri`: the client gets a 504, the log has the
/// request and the Python stack with the stuck line, the worker is
/// replaced replacement-first and exits, and the service keeps answering.
#[test]
fn harakiri_answers_504_logs_the_stack_and_replaces_the_worker() {
    let dir = TempDir::new("harakiri");
    dir.write("stuckapp.py", STUCK_APP);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "module = stuckapp\npythonpath = {}\nhttp-socket = {addr}\nharakiri = 1\nharakiri-verbose = true\n",
        dir.path().display()
    );
    let inst = Instance::start("", 2, 0, &extra);
    inst.wait_ready();
    let before = inst.worker_pids();
    let t0 = std::time::Instant::now();
    let r = http_request(&addr, "GET", "/stuck", &["X-Trace: abc123"]).unwrap();
    assert_eq!(r.status, 504, "{r:?}\n{}", inst.logs());
    assert!(t0.elapsed() < std::time::Duration::from_secs(30), "answered after {:?}", t0.elapsed());
    inst.wait_metric("podmaster_worker_recycles_total{reason=\"harakiri\"}", 1.0);
    let logs = wait_for("the stack in the log", DEADLINE, || {
        let l = inst.logs();
        l.contains("in stuck_here").then_some(l)
    });
    assert!(logs.contains("harakiri: a request ran too long") && logs.contains("GET /stuck"), "{logs}");
    assert!(logs.contains("X-Trace: abc123"), "harakiri-verbose logs the headers: {logs}");
    // The stuck worker is replaced and gone; the service answers meanwhile.
    wait_for("the stuck worker to exit", DEADLINE, || {
        let now = inst.worker_pids();
        let alive = before.iter().filter(|(_, p)| std::path::Path::new(&format!("/proc/{p}")).exists()).count();
        (now.iter().filter(|p| !before.contains(p)).count() == 1 && alive == 1).then_some(())
    });
    for _ in 0..10 {
        let r = http_get(&addr, "/").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "fine\n"), "{}", inst.logs());
    }
}
