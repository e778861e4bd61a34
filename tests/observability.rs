//! Probes in every phase, the exposition parsed by a real Prometheus
//! parser, JSON logs, hostile clients, and a wedged main loop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn codes(inst: &Instance) -> (u16, u16, u16) {
    let c = |p: &str| inst.probe_get(p).map(|r| r.status).unwrap_or(0);
    (c("/livez"), c("/readyz"), c("/startupz"))
}

#[test]
fn endpoints_in_every_phase() {
    let d = TempDir::new("phases");
    let gate = d.path().join("gate");
    let gate_s = gate.to_str().unwrap().to_owned();
    let mut inst =
        Instance::start_with(&test_script(), 2, 1, "drain-delay = 3", &[("APP_GATE", gate_s.as_str())], |c| c);
    // Starting: alive, not ready, not started.
    wait_for("probe up", DEADLINE, || inst.probe_get("/livez"));
    assert_eq!(codes(&inst), (200, 503, 503));
    assert_eq!(inst.probe_get("/readyz").unwrap().body, "not ready: 0/2 workers accepting (need 2)\n");
    assert_eq!(inst.status()["phase"], "starting");
    // Running.
    std::fs::write(&gate, "").unwrap();
    inst.wait_ready();
    assert_eq!(codes(&inst), (200, 200, 200));
    let v = inst.probe_get("/readyz?verbose").unwrap().body;
    assert!(v.starts_with("ready: 2/2 workers accepting\nworker 1 pid ") && v.contains(": accepting\n"), "{v}");
    // Reloading: the replacement is held at the gate; still ready.
    std::fs::remove_file(&gate).unwrap();
    inst.signal(libc::SIGHUP);
    wait_for("reloading", DEADLINE, || (inst.status()["phase"] == "reloading").then_some(()));
    assert_eq!(codes(&inst), (200, 200, 200));
    assert_eq!(metric_with(&inst.metrics(), "podmaster_phase{phase=\"reloading\"}"), Some(1.0));
    // The replacement appears once the new code's zygote is ready (preforked) or at once.
    wait_for("a replacement starting", DEADLINE, || {
        inst.probe_get("/readyz?verbose").filter(|r| r.body.contains(": starting\n")).map(drop)
    });
    assert_eq!(codes(&inst), (200, 200, 200));
    std::fs::write(&gate, "").unwrap();
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    // Draining: not ready at once, still alive.
    inst.signal(libc::SIGTERM);
    let r = wait_for("draining", DEADLINE, || inst.probe_get("/readyz").filter(|r| r.status == 503));
    assert_eq!(r.body, "not ready: draining (2/2 workers accepting)\n");
    assert_eq!(inst.probe_get("/livez").unwrap().status, 200);
    assert_eq!(metric(&inst.metrics(), "podmaster_ready"), Some(0.0));
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn methods_paths_and_head() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    assert_eq!(inst.probe_get("/nope").unwrap().status, 404);
    let raw = |req: &str| {
        let mut s = TcpStream::connect(&inst.probe).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let post = raw("POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"), "{post}");
    let head = raw("HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    // Probes change nothing: the phase and workers are what they were.
    assert_eq!(inst.status()["phase"], "running");
}

#[test]
#[cfg_attr(
    not(have_prometheus_client),
    ignore = "needs Python's prometheus_client in .tools/venv: run bash scripts/test-deps.sh"
)]
fn metrics_parse_with_the_prometheus_parser() {
    let inst = Instance::start(
        &example_script(),
        2,
        1,
        "metric = name=requests.total,type=counter\nmetric = name=temp,type=gauge",
    );
    inst.wait_ready();
    // The parser reads OpenMetrics, which /metrics serves when asked for it.
    let r =
        http_request(&inst.probe, "GET", "/metrics", &["Accept: application/openmetrics-text; version=1.0.0"]).unwrap();
    assert_eq!(r.header("Content-Type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let out = python_filter("parse_metrics.py", r.body.as_bytes());
    let families = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "parser rejected the exposition: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
    for (name, kind) in [
        ("podmaster_build_info", "gauge"),
        ("podmaster_phase", "gauge"),
        ("podmaster_workers", "gauge"),
        ("podmaster_workers_accepting", "gauge"),
        ("podmaster_ready", "gauge"),
        ("podmaster_worker_spawns", "counter"),
        ("podmaster_worker_exits", "counter"),
        ("podmaster_worker_rss_bytes", "gauge"),
        ("podmaster_reloads", "counter"),
        ("podmaster_reaped_orphans", "counter"),
        ("podmaster_config_reloads", "counter"),
        ("podmaster_app_requests_total", "counter"),
        ("podmaster_app_temp", "gauge"),
    ] {
        assert!(
            families.lines().any(|l| l.starts_with(&format!("{name} {kind} "))),
            "{name} {kind} missing:\n{families}"
        );
    }
}

#[test]
fn json_logs_parse_line_by_line() {
    let mut inst = Instance::start(&test_script(), 1, 1, "log-format = json");
    inst.wait_ready();
    http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/crash").unwrap();
    wait_for("respawn", DEADLINE, || inst.logs().contains("worker exited unexpectedly").then_some(()));
    inst.wait_ready();
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
    let logs = inst.logs();
    let mut events = Vec::new();
    for line in logs.lines() {
        // Lines a worker writes itself (a traceback) pass through untouched.
        if !line.starts_with('{') {
            assert!(logs.contains("Traceback") || line.trim().is_empty(), "non-JSON line from podmaster: {line}");
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{line}");
        events.push(v);
    }
    let find = |msg: &str| events.iter().find(|e| e["message"] == msg).unwrap_or_else(|| panic!("no {msg:?} event"));
    let exited = find("worker exited unexpectedly");
    assert_eq!(exited["status"], "exit_code=1");
    assert!(exited["pid"].is_number() && exited["worker"] == 1 && exited["runtime_s"].is_number());
    assert!(find("drain finished")["duration_s"].is_number());
    assert!(find("socket bound")["local"].is_string());
}

#[test]
fn hostile_clients_do_not_block_probes() {
    // Raise our fd limit to hold thousands of connections; the flood is
    // 10 000 connections unless the hard limit forbids that.
    // SAFETY: plain get/setrlimit on our own process.
    let hard = unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(20_000);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur as usize
    };
    let flood_size = 10_000.min(hard.saturating_sub(400));
    if flood_size < 10_000 {
        eprintln!(
            "NOTE hostile_clients_do_not_block_probes: fd hard limit {hard}, flooding with {flood_size} connections"
        );
    }
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    let t0 = Instant::now();
    let probe_fast = |what: &str| {
        eprintln!("{what}: {:?}", t0.elapsed());

        let t = Instant::now();
        let r = inst.probe_get("/readyz").unwrap_or_else(|| panic!("/readyz failed during {what}"));
        assert_eq!(r.status, 200, "{what}");
        assert!(t.elapsed() < Duration::from_secs(1), "{what}: /readyz took {:?}", t.elapsed());
    };
    // Slowloris: 300 connections each sending a header byte now and then.
    let mut slow: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(&inst.probe).ok()).collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nX-Slow: ");
    }
    for _ in 0..3 {
        probe_fast("slowloris");
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
    }
    drop(slow);
    // A 1 MB header: refused with 431, nothing else affected.
    let mut big = TcpStream::connect(&inst.probe).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = b"GET /readyz HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    let _ = big.write_all(&req);
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    probe_fast("1 MB header");
    // 10 000 connections opened at once.
    let flood: Vec<TcpStream> = (0..flood_size).filter_map(|_| TcpStream::connect(&inst.probe).ok()).collect();
    assert!(flood.len() * 10 >= flood_size * 9, "opened {} of {flood_size}", flood.len());
    probe_fast("10 000 connections");

    drop(flood);
    probe_fast("after the flood");
    // The probe threads stay bounded (guard + tiny_http + its pool).
    let threads = std::fs::read_dir(format!("/proc/{}/task", inst.pid())).unwrap().count();
    assert!(threads < 40, "master has {threads} threads");
}

#[test]
fn wedged_main_loop_fails_liveness() {
    let inst = Instance::start_with(
        &example_script(),
        1,
        1,
        "liveness-timeout = 0.3",
        &[("PODMASTER_TEST_WEDGE_ON_USR2", "3")],
        |c| c,
    );
    inst.wait_ready();
    assert_eq!(inst.probe_get("/livez").unwrap().status, 200);
    inst.signal(libc::SIGUSR2);
    let r = wait_for("/livez 503", DEADLINE, || inst.probe_get("/livez").filter(|r| r.status == 503));
    assert_eq!(r.body, "not alive: master loop did not turn within 300 ms\n");
    // Readiness is still served from the last snapshot meanwhile.
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200);
    wait_for("/livez 200 again", DEADLINE, || inst.probe_get("/livez").filter(|r| r.status == 200));
}

/// `/readyz` is answered by the guard itself: a `/livez` that holds the
/// kubelet handler thread (waiting for a wedged main loop) does not delay it.
#[test]
fn readyz_does_not_queue_behind_a_waiting_livez() {
    let inst = Instance::start_with(
        &example_script(),
        1,
        1,
        "liveness-timeout = 5",
        &[("PODMASTER_TEST_WEDGE_ON_USR2", "8")],
        |c| c,
    );
    inst.wait_ready();
    inst.signal(libc::SIGUSR2);
    wait_for("the wedge", DEADLINE, || inst.logs().contains("blocking the main loop").then_some(()));
    // Two /livez sent first: the kubelet handler waits 5 s on each (a
    // /readyz behind them on the same handler would wait 10 s).
    let pending = [start_request(&inst.probe, "/livez"), start_request(&inst.probe, "/livez")];
    let t0 = std::time::Instant::now();
    let r = inst.probe_get("/readyz").expect("/readyz answered");
    assert_eq!(r.status, 200);
    assert!(t0.elapsed() < Duration::from_secs(5), "/readyz waited behind /livez: {:?}", t0.elapsed());
    let [first, second] = pending;
    assert_eq!(finish_request(first).map(|r| r.status).ok(), Some(503), "the loop is wedged");
    // The second waits until the wedge ends (8 s): alive again, or not yet.
    assert!(matches!(finish_request(second).map(|r| r.status).ok(), Some(200 | 503)));
}

#[test]
fn probe_subcommand_for_healthchecks() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    let run = |url: String| Command::new(BIN).args(["probe", &url]).output().unwrap();
    let ok = run(format!("http://{}/livez", inst.probe));
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok: master loop alive\n");
    assert_eq!(run(format!("http://{}/nope", inst.probe)).status.code(), Some(1));
    let down = run(format!("http://127.0.0.1:{}/livez", free_port()));
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("connect"));
}

#[test]
fn worker_memory_is_reported_as_rss_pss_and_uss() {
    let inst = Instance::start(&example_script(), 2, 1, "");
    inst.wait_ready();
    let m = inst.metrics();
    for id in ["1", "2"] {
        let get = |kind: &str| {
            metric_with(&m, &format!("podmaster_worker_memory_bytes{{worker=\"{id}\",kind=\"{kind}\"}}"))
                .unwrap_or_else(|| panic!("worker {id} {kind} missing:\n{m}"))
        };
        let (rss, pss, uss) = (get("rss"), get("pss"), get("uss"));
        assert!(rss > 1e6 && pss > 0.0 && uss > 0.0, "worker {id}: rss {rss} pss {pss} uss {uss}");
        assert!(uss <= pss && pss <= rss, "worker {id}: rss {rss} pss {pss} uss {uss}");
    }
    let status = inst.status();
    for w in status["workers"].as_array().unwrap() {
        let (rss, pss, uss) = (w["rss"].as_u64().unwrap(), w["pss"].as_u64().unwrap(), w["uss"].as_u64().unwrap());
        assert!(uss > 0 && uss <= pss && pss <= rss, "{w}");
    }
}

/// `RUST_LOG` filters by level (and per target, `info,app=debug`); a value
/// that does not parse falls back to `log-level`.
#[test]
fn rust_log_filters_by_level_and_bad_values_fall_back() {
    for (value, info_shown) in [("warn", false), ("info,app=debug", true), ("((not a filter", true)] {
        let mut inst = Instance::start_with(&example_script(), 1, 1, "", &[("RUST_LOG", value)], |c| c);
        inst.wait_ready();
        inst.signal(libc::SIGTERM);
        assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
        let logs = inst.logs();
        assert_eq!(logs.contains(" INFO "), info_shown, "RUST_LOG={value}:\n{logs}");
    }
}
