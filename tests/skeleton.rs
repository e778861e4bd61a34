//! The walking-skeleton scenario end to end: the uWSGI worker-override
//! example served by the real binary, probes, drain, respawn, PID 1.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn shipped_example_serves_both_sockets_and_all_workers_answer() {
    // Exactly the README command, with the example's fixed ports.
    let dir = TempDir::new("example");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(ROOT).args(["--ini", "examples/hello/podmaster.ini"]);
    let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
    inst.probe = "127.0.0.1:9191".into();
    inst.wait_ready();

    for port in [3031, 3032] {
        let r = http_get(&format!("127.0.0.1:{port}"), "/World").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "Hello, World"));
    }
    let mut seen = HashSet::new();
    wait_for("all 4 workers to answer", DEADLINE, || {
        for port in [3031, 3032] {
            let r = http_get(&format!("127.0.0.1:{port}"), "/World").ok()?;
            seen.insert(r.header("X-Worker")?.to_owned());
        }
        (seen.len() == 4).then_some(())
    });
    assert_eq!(seen, HashSet::from(["1", "2", "3", "4"].map(String::from)));

    let m = inst.probe_get("/metrics").unwrap();
    // Without an Accept header: Prometheus' classic text (tests/metrics_format.rs has the rest).
    assert_eq!(m.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(metric(&m.body, "podmaster_workers_accepting"), Some(4.0));
    assert!(m.body.contains("# TYPE podmaster_workers_accepting gauge"));
    assert_eq!(inst.probe_get("/livez").unwrap().status, 200);

    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "logs:\n{}", inst.logs());
}

#[test]
fn readyz_is_503_until_every_worker_accepts() {
    let gate_dir = TempDir::new("gate");
    let gate = gate_dir.path().join("open");
    let gate_s = gate.to_str().unwrap().to_owned();
    let inst = Instance::start_with(&test_script(), 4, 1, "", &[("APP_GATE", gate_s.as_str())], |c| c);

    // Workers are up (they bound nothing themselves) but none has accepted.
    let r = wait_for("/readyz to answer", DEADLINE, || inst.probe_get("/readyz"));
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "not ready: 0/4 workers accepting (need 4)\n");
    assert_eq!(inst.probe_get("/livez").unwrap().status, 200, "liveness does not depend on readiness");

    std::fs::write(&gate, "").unwrap();
    inst.wait_ready();
    assert_eq!(inst.probe_get("/readyz").unwrap().body, "ready: 4/4 workers accepting\n");
    let status: serde_json::Value = serde_json::from_str(&inst.probe_get("/status").unwrap().body).unwrap();
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4);
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["id"], i as u64 + 1);
        assert_eq!(w["accepting"], 1);
        assert!(w["rss"].as_u64().unwrap() > 1_000_000, "rss read from /proc: {w}");
        assert!(w["last_spawn"].as_u64().unwrap() > 1_700_000_000);
    }
    assert_eq!(status["phase"], "running");
}

#[test]
fn sigterm_drains_gracefully_in_flight_request_completes() {
    // drain-delay 1 s: readiness must be 503 while workers still serve.
    let mut inst = Instance::start(&example_script(), 4, 2, "drain-delay = 1\nworker-reload-mercy = 15");
    inst.wait_ready();
    let pids: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();
    let slow = start_request(&format!("127.0.0.1:{}", inst.ports[0]), "/slow/2");
    wait_for("slow request accepted by a worker", DEADLINE, || accepted_by(&slow, &pids));

    inst.signal(libc::SIGTERM);
    let r = wait_for("/readyz 503", Duration::from_secs(5), || inst.probe_get("/readyz").filter(|r| r.status == 503));
    assert!(r.body.starts_with("not ready: draining"), "{}", r.body);
    // During drain-delay the workers keep serving new requests.
    let during = http_get(&format!("127.0.0.1:{}", inst.ports[1]), "/Drain").unwrap();
    assert_eq!(during.body, "Hello, Drain");

    let resp = finish_request(slow).expect("in-flight request must complete");
    assert_eq!((resp.status, resp.body.as_str()), (200, "slept 2"));
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(0), "logs:\n{logs}");
    assert!(logs.contains("signal=\"SIGHUP\""), "workers get SIGHUP: {logs}");
    assert!(logs.contains("drain finished") && logs.contains("killed=0"));
    for pid in pids {
        assert!(!pid_alive(pid), "worker {pid} left behind");
    }
}

#[test]
fn sigint_is_a_graceful_drain_too() {
    let mut inst = Instance::start(&example_script(), 2, 1, "");
    inst.wait_ready();
    let pids: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();
    let slow = start_request(&format!("127.0.0.1:{}", inst.ports[0]), "/slow/1");
    wait_for("slow request accepted by a worker", DEADLINE, || accepted_by(&slow, &pids));
    inst.signal(libc::SIGINT);
    assert_eq!(finish_request(slow).unwrap().body, "slept 1");
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
}

#[test]
fn stragglers_are_killed_after_mercy_and_exit_code_says_so() {
    let mut inst =
        Instance::start_with(&test_script(), 2, 1, "worker-reload-mercy = 0.5", &[("APP_IGNORE_HUP", "1")], |c| c);
    inst.wait_ready();
    let pids: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();
    inst.signal(libc::SIGTERM);
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(1), "exit code 1 = had to SIGKILL; logs:\n{logs}");
    assert!(logs.contains("sending SIGKILL"), "{logs}");
    assert!(logs.contains("status=\"signal=SIGKILL\""), "{logs}");
    for pid in pids {
        assert!(!pid_alive(pid));
    }
}

#[test]
fn dead_worker_is_respawned_in_its_slot() {
    let inst = Instance::start(&example_script(), 3, 1, "");
    inst.wait_ready();
    let before = inst.worker_pids();
    let (id, victim) = before[1];
    // SAFETY: kill(2) of a worker we started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let after = wait_for("slot respawned and accepting", DEADLINE, || {
        let now = inst.worker_pids();
        let slot = now.iter().find(|(i, _)| *i == id)?;
        (slot.1 != victim && slot.1 != 0 && inst.probe_get("/readyz")?.status == 200).then_some(now)
    });
    // Other slots untouched.
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    let logs = inst.logs();
    let line = logs.lines().find(|l| l.contains("worker exited unexpectedly")).expect(&logs);
    assert!(
        line.contains(&format!("pid={victim}"))
            && line.contains("signal=SIGKILL")
            && line.contains(&format!("worker={id}")),
        "{line}"
    );
    let status: serde_json::Value = serde_json::from_str(&inst.probe_get("/status").unwrap().body).unwrap();
    assert_eq!(status["workers"][1]["respawn_count"], 1);
}

#[test]
fn script_raising_after_accepting_is_respawned_and_service_continues() {
    let inst = Instance::start(&test_script(), 2, 1, "");
    inst.wait_ready();
    let addr = format!("127.0.0.1:{}", inst.ports[0]);
    let r = http_get(&addr, "/crash").unwrap();
    let crashed: i32 = r.header("X-Pid").unwrap().parse().unwrap();
    wait_for("crashed worker replaced", DEADLINE, || {
        let pids = inst.worker_pids();
        (!pids.iter().any(|(_, p)| *p == crashed) && inst.probe_get("/readyz")?.status == 200).then_some(())
    });
    assert_eq!(http_get(&addr, "/Again").unwrap().body, "Hello, Again");
    let logs = inst.logs();
    assert!(logs.contains("RuntimeError: crash requested after accepting"), "traceback on stderr: {logs}");
    assert!(logs.contains("status=\"exit_code=1\""), "{logs}");
}

#[test]
fn orphans_are_reaped_when_not_pid1_as_subreaper() {
    let inst = Instance::start(&test_script(), 1, 1, "");
    inst.wait_ready();
    let r = http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/orphans/5").unwrap();
    let orphans: Vec<i32> = r.body.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(orphans.len(), 5);
    for p in &orphans {
        // Reparented to the master (subreaper), not to the system init.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(ppid == inst.pid() || proc_state(*p) == Some('Z'), "orphan {p} has parent {ppid}");
        }
    }
    wait_for("orphans reaped", DEADLINE, || orphans.iter().all(|p| !pid_alive(*p)).then_some(()));
    // The counter reaches /metrics with the next published snapshot, a moment
    // after the last orphan's /proc entry is gone (CI once read 4 of 5 here).
    wait_for("five reaped orphans counted", DEADLINE, || {
        (metric(&inst.probe_get("/metrics")?.body, "podmaster_reaped_orphans_total")? >= 5.0).then_some(())
    });
}

#[test]
#[cfg_attr(not(have_pidns), ignore = "needs root and PID namespaces (unshare --pid): run cargo test as root")]
fn as_pid1_reaps_orphans_and_drains_on_sigterm_from_outside() {
    let mut inst = Instance::start_with(&test_script(), 2, 1, "", &[], |c| {
        let mut u = Command::new("unshare");
        u.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(c.get_program()).args(c.get_args());
        u
    });
    inst.wait_ready();
    // The master is unshare's child; in its namespace it is PID 1.
    let master = wait_for("master pid", DEADLINE, || {
        let kids = std::fs::read_to_string(format!("/proc/{}/task/{}/children", inst.pid(), inst.pid())).ok()?;
        kids.split_whitespace().next()?.parse::<i32>().ok()
    });
    let status = std::fs::read_to_string(format!("/proc/{master}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "podmaster is PID 1 in its namespace: {nspid}");

    let r = http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/orphans/20").unwrap();
    // Pids in the body are namespace pids; check from inside via the master's view.
    assert_eq!(r.body.split_whitespace().count(), 20);
    wait_for("20 orphans reaped", DEADLINE, || {
        let m = inst.probe_get("/metrics")?;
        (metric(&m.body, "podmaster_reaped_orphans_total")? >= 20.0).then_some(())
    });
    // No zombie anywhere under the master.
    let zombies: Vec<i32> = descendants(master).into_iter().filter(|p| proc_state(*p) == Some('Z')).collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");

    // SIGTERM from outside the namespace drains like anywhere else.
    // SAFETY: kill(2) of the process we started (through unshare).
    unsafe { libc::kill(master, libc::SIGTERM) };
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(0), "{logs}");
    assert!(logs.contains("drain finished"), "{logs}");
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = vec![];
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                stack.push(k);
            }
        }
    }
    out
}

#[test]
fn workers_start_with_clean_signal_state_and_only_the_sockets() {
    // Start the master with SIGHUP ignored and SIGTERM blocked: workers must
    // not inherit either (uWSGI's override workers do).
    let mut inst = Instance::start_with(&example_script(), 1, 2, "", &[], |c| {
        let mut sh = Command::new("python3");
        sh.arg("-c")
            .arg(
                "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); \
                 signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); os.execv(sys.argv[1], sys.argv[1:])",
            )
            .arg(c.get_program())
            .args(c.get_args());
        sh
    });
    inst.wait_ready();
    let (_, pid) = inst.worker_pids()[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field =
        |n: &str| status.lines().find(|l| l.starts_with(n)).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(field("SigBlk:"), "0000000000000000", "empty signal mask");
    let ign = u64::from_str_radix(&field("SigIgn:"), 16).unwrap();
    assert_eq!(ign & (1 << (libc::SIGHUP - 1)), 0, "SIGHUP not ignored in worker");

    // fds: 0-2, the two sockets at 3 and 4, and whatever Python itself opened
    // (epoll, self-pipe) — but none of the master's (notify, probe, pipes).
    let link = |fd: &str| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap().display().to_string();
    assert!(link("3").starts_with("socket:") && link("4").starts_with("socket:"));
    let master_fds: HashSet<String> = std::fs::read_dir(format!("/proc/{}/fd", inst.pid()))
        .unwrap()
        .flatten()
        // An fd may close between listing and reading it (the probe thread reads /proc files).
        .filter_map(|e| std::fs::read_link(e.path()).ok().map(|l| l.display().to_string()))
        .filter(|l| l.starts_with("socket:") || l.starts_with("pipe:"))
        .collect();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["0", "1", "2", "3", "4"].contains(&name.as_str()) {
            continue;
        }
        let l = link(&name);
        assert!(!master_fds.contains(&l), "worker fd {name} -> {l} leaked from the master");
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.split('\0').any(|v| v == "LISTEN_FDS=2"));
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn embedded_interpreter_is_the_one_built_against() {
    let dir = TempDir::new("interp");
    let out = dir.path().join("out.txt");
    let script = dir.write(
        "w.py",
        &format!(
            "import os, sys, uwsgi, podmaster\nassert os.environ['LISTEN_PID'] == str(os.getpid())\n\
             open({:?}, 'w').write(sys.version.split()[0] + ' ' + sys.prefix + ' ' + \
             str(podmaster is uwsgi) + ' ' + sys.argv[0] + ' ' + __file__)\nuwsgi.accepting()\nimport time\nwhile True: time.sleep(1)\n",
            out.display().to_string()
        ),
    );
    let inst = Instance::start(script.to_str().unwrap(), 1, 1, "");
    inst.wait_ready();
    let got = std::fs::read_to_string(&out).unwrap();
    let expect = Command::new("python3")
        .args(["-c", "import sys; print(sys.version.split()[0] + ' ' + sys.prefix)"])
        .output()
        .unwrap();
    let expect = String::from_utf8(expect.stdout).unwrap();
    assert!(got.starts_with(expect.trim()), "embedded: {got:?}, python3 on PATH: {expect:?}");
    assert!(got.ends_with(&format!("True {0} {0}", script.display())), "{got}");
}

#[test]
fn version_names_the_release_and_the_embedded_python() {
    // The interpreter build.rs linked against (the one the test above finds in a worker).
    let py = Command::new(env!("PODMASTER_BUILD_PYTHON"))
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .unwrap();
    let py = String::from_utf8(py.stdout).unwrap();
    let expect = format!("podmaster {} (Python {})\n", env!("CARGO_PKG_VERSION"), py.trim());
    for flag in ["--version", "-V"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expect, "{flag}");
    }
}

#[test]
fn licence_file_and_changelog_match_cargo_toml() {
    let licence = std::fs::read_to_string(format!("{ROOT}/LICENSE")).expect("LICENSE");
    match env!("CARGO_PKG_LICENSE") {
        "MIT" => assert!(licence.starts_with("MIT License\n"), "LICENSE is not the MIT licence"),
        other => panic!("Cargo.toml says license = {other:?}: put its text in LICENSE and check it here"),
    }
    // The changelog's first entry is the version being built.
    let changelog = std::fs::read_to_string(format!("{ROOT}/CHANGELOG.md")).expect("CHANGELOG.md");
    let first = changelog.lines().find(|l| l.starts_with("## ")).expect("a '## VERSION' entry");
    let version = first[3..].split_whitespace().next().unwrap_or("");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "CHANGELOG.md starts with {first:?}");
}
