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
