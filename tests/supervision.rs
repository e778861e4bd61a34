//! Supervision: chain reload under load, aborts, coalescing, recycling,
//! crash loops, scaling, stop modes, command workers and side daemons.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;

fn pids(inst: &Instance) -> HashSet<i32> {
    inst.worker_pids().into_iter().map(|(_, p)| p).collect()
}

fn reloads(inst: &Instance, result: &str) -> f64 {
    metric_with(&inst.metrics(), &format!("podmaster_reloads_total{{result=\"{result}\"}}")).unwrap_or(-1.0)
}

#[test]
fn chain_reload_under_load_drops_nothing_and_keeps_capacity() {
    let mut inst = Instance::start(&example_script(), 4, 2, "worker-reload-mercy = 10");
    inst.wait_ready();
    let before = pids(&inst);
    let addrs: Vec<String> = inst.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let load = Load::start(addrs, 4);
    let sampler = AcceptingSampler::start(inst.probe.clone());
    wait_for("some load", DEADLINE, || (metric(&inst.metrics(), "podmaster_workers_accepting")? == 4.0).then_some(()));
    let t0 = Instant::now();
    inst.signal(libc::SIGHUP);
    wait_for("reloading phase seen or reload done", DEADLINE, || (reloads(&inst, "ok") >= 1.0).then_some(()));
    let took = t0.elapsed();
    let (min_accepting, samples) = sampler.finish();
    let (ok, failed, errors) = load.finish();
    let after = pids(&inst);
    eprintln!(
        "chain reload of 4 workers: {took:?}; requests ok {ok} failed {failed}; min accepting {min_accepting} over {samples} samples"
    );
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 100, "load ran: {ok}");
    assert_eq!(min_accepting, 4.0, "capacity never dips");
    assert!(before.is_disjoint(&after), "every worker replaced: {before:?} -> {after:?}");
    let status = inst.status();
    for w in status["workers"].as_array().unwrap() {
        assert!(w["generation"].as_u64().unwrap() > 4, "new generation: {w}");
    }
    assert_eq!(status["phase"], "running");
    let logs = inst.logs();
    assert!(logs.contains("chain reload started") && logs.contains("chain reload finished"), "{logs}");
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn failed_replacement_aborts_the_reload_and_old_workers_keep_serving() {
    let d = TempDir::new("abort");
    let flag = d.path().join("exit");
    let flag_s = flag.to_str().unwrap().to_owned();
    let inst = Instance::start_with(&test_script(), 3, 1, "", &[("APP_EXIT_IF", flag_s.as_str())], |c| c);
    inst.wait_ready();
    let before = pids(&inst);
    std::fs::write(&flag, "").unwrap();
    inst.signal(libc::SIGHUP);
    inst.wait_metric("podmaster_reloads_total{result=\"aborted\"}", 1.0);
    assert_eq!(reloads(&inst, "ok"), 0.0);
    wait_for("replacement gone, 3 old workers serving", DEADLINE, || {
        let s = inst.status();
        (s["transitions"].as_array()?.is_empty() && pids(&inst) == before).then_some(())
    });
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200);
    assert_eq!(http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/Still").unwrap().body, "Hello, Still");
    let logs = inst.logs();
    assert!(
        logs.contains("reload aborted") && logs.contains("replacement exited before accepting (exit_code=3)"),
        "{logs}"
    );
}

#[test]
fn replacement_that_never_accepts_times_out_and_aborts() {
    let d = TempDir::new("timeout");
    let gate = d.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let gate_s = gate.to_str().unwrap().to_owned();
    let inst = Instance::start_with(
        &test_script(),
        2,
        1,
        "chain-reload-timeout = 0.5\nworker-reload-mercy = 1",
        &[("APP_GATE", gate_s.as_str())],
        |c| c,
    );
    inst.wait_ready();
    let before = pids(&inst);
    std::fs::remove_file(&gate).unwrap();
    inst.signal(libc::SIGHUP);
    inst.wait_metric("podmaster_reloads_total{result=\"aborted\"}", 1.0);
    assert!(inst.logs().contains("chain-reload-timeout"), "{}", inst.logs());
    wait_for("stuck replacement stopped", DEADLINE, || {
        inst.status()["transitions"].as_array()?.is_empty().then_some(())
    });
    assert_eq!(pids(&inst), before);
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200);
}

#[test]
fn hups_during_a_reload_coalesce_into_one_more_reload() {
    let d = TempDir::new("coalesce");
    let gate = d.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let gate_s = gate.to_str().unwrap().to_owned();
    let inst = Instance::start_with(&test_script(), 2, 1, "", &[("APP_GATE", gate_s.as_str())], |c| c);
    inst.wait_ready();
    // Hold the first replacement at the gate, so the reload is surely in progress.
    std::fs::remove_file(&gate).unwrap();
    inst.signal(libc::SIGHUP);
    wait_for("phase reloading", DEADLINE, || (inst.status()["phase"] == "reloading").then_some(()));
    for _ in 0..3 {
        inst.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(30));
    }
    std::fs::write(&gate, "").unwrap();
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 2.0);
    wait_for("back to running", DEADLINE, || (inst.status()["phase"] == "running").then_some(()));
    assert_eq!(reloads(&inst, "ok"), 2.0, "three HUPs during a reload give exactly one more reload");
}

#[test]
fn touch_reload_file_triggers_a_chain_reload() {
    let d = TempDir::new("touch");
    let touch = d.write("reload.txt", "");
    let extra = format!("touch-chain-reload = {}\nconfig-check-interval = 0.1", touch.display());
    let inst = Instance::start(&example_script(), 2, 1, &extra);
    inst.wait_ready();
    let before = pids(&inst);
    // A different mtime (coarse filesystems: set it explicitly).
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options().write(true).open(&touch).unwrap().set_modified(later).unwrap();
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    assert!(pids(&inst).is_disjoint(&before));
    assert!(inst.logs().contains("touch-reload"), "{}", inst.logs());
}

#[test]
fn crash_loop_backs_off_and_fails_liveness_then_recovers() {
    let d = TempDir::new("crash");
    let flag = d.path().join("crash");
    let flag_s = flag.to_str().unwrap().to_owned();
    let inst =
        Instance::start_with(&test_script(), 2, 1, "max-failed-starts = 4", &[("APP_EXIT_IF", flag_s.as_str())], |c| c);
    inst.wait_ready();
    std::fs::write(&flag, "").unwrap();
    let (_, victim) = inst.worker_pids()[0];
    // SAFETY: kill(2) of a worker we started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let r = wait_for("/livez 503", DEADLINE, || inst.probe_get("/livez").filter(|r| r.status == 503));
    assert!(r.body.contains("worker 1 failed to start 4 times in a row"), "{}", r.body);
    assert_eq!(metric(&inst.metrics(), "podmaster_crash_loop"), Some(1.0));
    // Spawn times of slot 1 show the exponential backoff: 100, 200, 400 ms.
    let logs = inst.logs();
    let times: Vec<f64> = logs
        .lines()
        .filter(|l| l.contains("worker spawned") && l.contains("worker=1 "))
        .map(|l| {
            let ts = l.split_whitespace().next().unwrap();
            let t = &ts[11..ts.len() - 1]; // HH:MM:SS.ffffff
            let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
            p[0] * 3600.0 + p[1] * 60.0 + p[2]
        })
        .collect();
    let gaps: Vec<f64> = times.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 3, "{logs}");
    for (i, g) in gaps.iter().take(3).enumerate() {
        let expect = 0.1 * f64::from(1 << i);
        assert!(*g >= expect && *g < expect + 1.0, "gap {i}: {g:.3}s, expected about {expect}s: {gaps:?}");
    }
    // The master does not spin meanwhile: its CPU time stays small.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", inst.pid())).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    assert!(ticks < 200, "master used {ticks} clock ticks");
    // The cause goes away: the next respawn succeeds and liveness recovers.
    std::fs::remove_file(&flag).unwrap();
    wait_for("/livez 200 again", Duration::from_secs(40), || inst.probe_get("/livez").filter(|r| r.status == 200));
    inst.wait_ready();
}

#[test]
fn random_kills_under_load_leave_every_slot_respawned() {
    let inst = Instance::start(&example_script(), 4, 1, "respawn-backoff-max = 0.5");
    inst.wait_ready();
    let load = Load::start(vec![format!("127.0.0.1:{}", inst.ports[0])], 2);
    let end = Instant::now() + Duration::from_secs(10);
    let mut killed = 0;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    while Instant::now() < end {
        let live: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).filter(|p| *p > 0).collect();
        if !live.is_empty() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // SAFETY: kill(2) of a worker we started.
            unsafe { libc::kill(live[(seed % live.len() as u64) as usize], libc::SIGKILL) };
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    inst.wait_ready();
    let (ok, failed, _) = load.finish();
    eprintln!("killed {killed} workers; requests ok {ok}, failed {failed} (in flight on killed workers)");
    assert!(killed >= 30);
    assert!(ok > failed, "service kept answering: ok {ok} failed {failed}");
    assert_eq!(http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/Load").unwrap().body, "Hello, Load");
    let s = inst.status();
    let respawns: u64 = s["workers"].as_array().unwrap().iter().map(|w| w["respawn_count"].as_u64().unwrap()).sum();
    assert!(respawns >= killed as u64 - 4, "respawns {respawns} for {killed} kills");
    assert!(s["workers"].as_array().unwrap().iter().all(|w| w["accepting"] == 1));
}

#[test]
fn ttin_ttou_scale_and_readiness_follows() {
    let inst = Instance::start(&example_script(), 2, 1, "");
    inst.wait_ready();
    inst.signal(libc::SIGTTIN);
    wait_for("3/3", DEADLINE, || (inst.probe_get("/readyz")?.body == "ready: 3/3 workers accepting\n").then_some(()));
    for _ in 0..3 {
        inst.signal(libc::SIGTTOU);
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("1/1 and nothing retiring", DEADLINE, || {
        let s = inst.status();
        (inst.probe_get("/readyz")?.body == "ready: 1/1 workers accepting\n" && s["transitions"].as_array()?.is_empty())
            .then_some(())
    });
    assert_eq!(inst.worker_pids().len(), 1, "never below one worker");
}

#[test]
fn sigquit_is_a_fast_stop() {
    let mut inst = Instance::start(&example_script(), 2, 1, "worker-reload-mercy = 20");
    inst.wait_ready();
    let pids: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();
    let slow = start_request(&format!("127.0.0.1:{}", inst.ports[0]), "/slow/30");
    wait_for("accepted", DEADLINE, || accepted_by(&slow, &pids));
    let t0 = Instant::now();
    inst.signal(libc::SIGQUIT);
    let st = inst.wait_exit(DEADLINE);
    assert!(t0.elapsed() < Duration::from_secs(10), "fast stop does not wait for in-flight work");
    let logs = inst.logs();
    assert!(logs.contains("signal=\"SIGINT\""), "workers get SIGINT: {logs}");
    // The example exits 1 on SIGINT; no SIGKILL was needed.
    assert_eq!(st.code(), Some(0), "{logs}");
    assert!(finish_request(slow).map(|r| r.status != 200).unwrap_or(true));
}

#[test]
fn max_worker_lifetime_replaces_workers_replacement_first() {
    let inst = Instance::start(&example_script(), 2, 1, "max-worker-lifetime = 1");
    inst.wait_ready();
    let before = pids(&inst);
    let sampler = AcceptingSampler::start(inst.probe.clone());
    wait_for("both workers recycled", DEADLINE, || pids(&inst).is_disjoint(&before).then_some(()));
    let (min, _) = sampler.finish();
    assert_eq!(min, 2.0, "recycling never dips below capacity");
    assert!(inst.logs().contains("cause=\"max-worker-lifetime\""));
}

#[test]
fn reload_on_rss_replaces_a_big_worker() {
    let inst = Instance::start(&example_script(), 1, 1, "reload-on-rss = 1\nconfig-check-interval = 0.2");
    inst.wait_ready();
    let before = pids(&inst);
    wait_for("worker replaced for RSS", DEADLINE, || pids(&inst).is_disjoint(&before).then_some(()));
    assert!(inst.logs().contains("worker over reload-on-rss"));
}

#[test]
fn command_worker_gets_sockets_the_systemd_way() {
    let script = format!("{ROOT}/tests/scripts/sdserver.py");
    let extra = format!("worker-exec = python3 {script} --greeting 'Hi there'");
    let d = TempDir::new("cmd");
    let (ini_text, ports, probe) = ini("", 2, 2, &extra);
    let ini_path = d.write("cmd.ini", &ini_text);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg(&ini_path);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    inst.probe = probe;
    inst.wait_ready();
    for p in &ports {
        let r = http_get(&format!("127.0.0.1:{p}"), "/").unwrap();
        assert!(r.body.starts_with("Hi there from "), "{}", r.body);
        assert!(r.body.contains(&format!("127.0.0.1\\x3a{p}")), "LISTEN_FDNAMES: {}", r.body);
    }
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
    assert!(inst.logs().contains("signal=\"SIGTERM\""), "command workers stop on SIGTERM");
}

#[test]
fn command_worker_spawn_ready_mode_and_missing_program() {
    // A program that cannot notify: accepting as soon as it runs.
    let inst = Instance::start_with("", 1, 1, "worker-exec = sleep 1000\nworker-ready-mode = spawn", &[], |c| c);
    wait_for("ready", DEADLINE, || inst.probe_get("/readyz").filter(|r| r.status == 200));
    drop(inst);

    let d = TempDir::new("missing");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--socket", "127.0.0.1:0", "--worker-exec", "/nonexistent/server --flag"]);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(69), "{logs}");
    assert!(logs.contains("cannot run /nonexistent/server") && logs.contains("status=\"exit_code=127\""), "{logs}");
}

#[test]
fn attach_daemon_is_supervised_and_stopped_last() {
    let d = TempDir::new("daemon");
    let out = d.path().join("daemon.log");
    let script = d.write(
        "daemon.py",
        &format!(
            "import os, signal, sys, time\nf = open({:?}, 'a')\nf.write(f'start {{os.getpid()}}\\n'); f.flush()\n\
             signal.signal(signal.SIGTERM, lambda *a: (f.write('term\\n'), f.flush(), sys.exit(0)))\nwhile True: time.sleep(1)\n",
            out.display().to_string()
        ),
    );
    let extra = format!("attach-daemon = python3 {}", script.display());
    let mut inst = Instance::start(&example_script(), 1, 1, &extra);
    inst.wait_ready();
    // A daemon announces itself in its file once its SIGTERM handler is set.
    let started = |n: usize| {
        wait_for("daemon started", DEADLINE, || {
            let text = std::fs::read_to_string(&out).ok()?;
            let pids: Vec<i32> = text.lines().filter_map(|l| l.strip_prefix("start ")?.parse().ok()).collect();
            (pids.len() >= n).then(|| pids[n - 1])
        })
    };
    let first = started(1);
    assert_eq!(inst.status()["daemons"][0]["pid"], first);
    // SAFETY: kill(2) of a daemon we started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let second = started(2);
    assert_ne!(first, second);
    assert_eq!(inst.status()["daemons"][0]["respawn_count"], 1);
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200, "daemons are not counted in readiness");
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
    let logs = inst.logs();
    let worker_exit = logs.find("worker exited").expect(&logs);
    let daemon_stop = logs.find("stopping daemon").expect(&logs);
    assert!(worker_exit < daemon_stop, "daemon stopped after the workers: {logs}");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}; logs:\n{logs}", out.display()));
    assert!(text.ends_with("term\n") && text.matches("start").count() == 2, "{text}");
}

#[test]
fn second_sigint_is_a_fast_stop_usr1_logs_status_and_others_are_forwarded() {
    let d = TempDir::new("signals");
    let file = d.path().join("signals");
    let file_s = file.to_str().unwrap().to_owned();
    let mut inst = Instance::start_with(
        &test_script(),
        2,
        1,
        "drain-delay = 30\nworker-reload-mercy = 30",
        &[("APP_SIGNAL_FILE", file_s.as_str())],
        |c| c,
    );
    inst.wait_ready();
    let pids: HashSet<i32> = pids(&inst);
    // Forwarded: every worker gets SIGWINCH.
    inst.signal(libc::SIGWINCH);
    let got = wait_for("SIGWINCH in both workers", DEADLINE, || {
        let t = std::fs::read_to_string(&file).ok()?;
        let seen: HashSet<i32> =
            t.lines().filter(|l| l.ends_with("SIGWINCH")).filter_map(|l| l.split(' ').next()?.parse().ok()).collect();
        (seen == pids).then_some(seen)
    });
    assert_eq!(got.len(), 2);
    // USR1: one status line per worker.
    inst.signal(libc::SIGUSR1);
    wait_for("status lines", DEADLINE, || {
        (inst.logs().lines().filter(|l| l.contains(" status ") && l.contains("state=\"accepting\"")).count() >= 2)
            .then_some(())
    });
    // INT starts a drain (30 s drain-delay); a second INT stops at once.
    inst.signal(libc::SIGINT);
    wait_for("draining", DEADLINE, || inst.probe_get("/readyz").filter(|r| r.status == 503));
    let t0 = Instant::now();
    inst.signal(libc::SIGINT);
    let st = inst.wait_exit(DEADLINE);
    assert!(t0.elapsed() < Duration::from_secs(10), "fast stop did not wait for drain-delay");
    let logs = inst.logs();
    assert!(logs.contains("fast stop requested during drain") && logs.contains("signal=\"SIGINT\""), "{logs}");
    assert!(st.code().is_some());
}

#[test]
fn a_worker_that_served_10_s_is_replaced_without_backoff() {
    let inst = Instance::start(&test_script(), 1, 1, "");
    inst.wait_ready();
    let (_, pid) = inst.worker_pids()[0];
    // Accepting for 10 s makes it a healthy worker (the backoff reset time).
    std::thread::sleep(Duration::from_millis(10_200));
    // SAFETY: kill(2) on the worker this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let t = Instant::now();
    wait_for("the slot accepting again", Duration::from_secs(20), || {
        let (_, now) = inst.worker_pids()[0];
        (now != pid && inst.probe_get("/readyz").is_some_and(|r| r.status == 200)).then_some(())
    });
    eprintln!("slot accepting again {:?} after the kill", t.elapsed());
    let logs = inst.logs();
    let line = logs.lines().find(|l| l.contains("worker exited unexpectedly") && l.contains(&format!("pid={pid}")));
    assert!(line.is_some_and(|l| l.contains("respawn_in_s=0 ") || l.contains("respawn_in_s=0.0")), "{logs}");
}
