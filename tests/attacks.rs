//! Attacks from inside the pod: a hostile worker against the master's
//! shared memory and notify socket, and config edits that name fds the
//! master owns or sockets that cannot be bound. The master stays up and
//! quiet, `/livez` stays 200, and the other workers keep serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn a_hostile_worker_cannot_take_down_the_master_or_its_peers() {
    let d = TempDir::new("hostile");
    let report = d.path().join("report.json");
    let script = format!("{}/tests/scripts/hostile_worker.py", env!("CARGO_MANIFEST_DIR"));
    let inst = Instance::start_with(&script, 3, 1, "", &[("HOSTILE_REPORT", report.to_str().unwrap())], |c| c);
    let text = wait_for("the attacker's report", Duration::from_secs(60), || {
        assert!(pid_alive(inst.pid()), "the master died; logs:\n{}", inst.logs());
        std::fs::read_to_string(&report).ok()
    });
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    eprintln!("attacker's report: {r:#}");
    // The master survived and still answers.
    assert!(pid_alive(inst.pid()), "the master died; logs:\n{}", inst.logs());
    let live = inst.probe_get("/livez").expect("/livez after the attack");
    assert_eq!(live.status, 200, "{}", live.body);
    // The seals held wherever the attacker could open the memfds (as root
    // it always can; as another user it cannot even open them).
    for kind in ["board", "metrics", "http"] {
        let k = &r[kind];
        if k["open"] != "ok" {
            continue;
        }
        for op in ["truncate_to_0", "truncate_to_8", "grow", "fallocate"] {
            assert_eq!(k[op], "EPERM", "{kind}: {op} was not refused: {k}");
        }
    }
    if r["board"]["open"] == "ok" {
        assert_eq!(r["board"]["pwrite_draining"], "EPERM", "{}", r["board"]);
        assert_ne!(r["board"]["mmap_rw"], "ok", "{}", r["board"]);
        assert_ne!(r["board"]["mprotect_rw"], "ok", "{}", r["board"]);
    }
    assert_eq!(r["is_draining_after"], false);
    // The other workers keep serving and never see the instance draining.
    let port = inst.ports[0];
    for i in 0..30 {
        let answer = get(port).unwrap_or_else(|| panic!("request {i} failed; logs:\n{}", inst.logs()));
        assert!(answer.contains("draining False"), "request {i}: {answer}");
        assert!(!answer.contains("worker 1 "), "the attacker served: {answer}");
    }
    // The main loop is not spinning on what was left in the notify queue.
    let cpu = cpu_ticks;
    let (c0, t0) = (cpu(inst.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu(inst.pid()) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    assert!(used < 0.1, "master uses {used:.2} CPU-seconds per second after the attack");
    assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
}

/// CPU time of `pid` (user + system), in clock ticks (1/100 s).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f[11] + f[12]
}

/// The master's fds above stdio, with what each points to.
fn master_fds(pid: i32) -> Vec<(i32, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?.display().to_string();
            (fd > 2).then_some((fd, target))
        })
        .collect()
}

/// An instance of `processes` hello workers whose ini in `d` is watched
/// every 0.1 s: (instance, the ini's path, its text).
fn watched(d: &TempDir, processes: u32) -> (Instance, std::path::PathBuf, String) {
    let (text, ports, probe) =
        ini(&example_script(), processes, 1, "reload-on-config-change = true\nconfig-check-interval = 0.1\n");
    let path = d.write("podmaster.ini", &text);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--ini").arg(&path);
    let mut inst = Instance::spawn(cmd, d.path().join("stderr.log"));
    inst.probe = probe;
    inst.ports = ports;
    (inst, path, text)
}

#[test]
fn config_edits_naming_master_fds_or_unbindable_sockets_are_refused() {
    let d = TempDir::new("cfgattack");
    let (inst, path, text) = watched(&d, 2);
    let ports = inst.ports.clone();
    inst.wait_ready();
    let pid = inst.pid();
    // Probe connections made so far are closed once the guard's linger
    // (500 ms at most) has run out.
    std::thread::sleep(Duration::from_millis(700));
    let fds_before = master_fds(pid);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let mut specs: Vec<String> = fds_before.iter().map(|(fd, _)| format!("fd://{fd}")).collect();
    specs.extend([
        "sd://web".into(),
        "sd://0".into(),
        format!("127.0.0.1:{busy_port}"),
        "/nonexistent/dir/app.sock".into(),
    ]);
    // (the line added, what the refusal in the log says)
    let mut edits: Vec<(String, String)> =
        specs.iter().map(|spec| (format!("socket = {spec}"), format!("socket {spec}: "))).collect();
    // What workers and daemons were started with cannot change live either.
    edits.push(("uid = 0".into(), "uid/gid changed".into()));
    edits.push(("metric = name=late,type=counter".into(), "metric changed".into()));
    edits.push(("attach-daemon = sleep 1000".into(), "attach-daemon changed".into()));
    let cpu = || cpu_ticks(pid);
    for (n, (spec, _)) in edits.iter().enumerate() {
        let failed_before =
            metric_with(&inst.metrics(), "podmaster_config_reloads_total{result=\"failed\"}").unwrap_or(0.0);
        std::fs::write(&path, format!("{text}{spec}\n# edit {n}\n")).unwrap();
        wait_for(&format!("the reload adding {spec} to be refused"), Duration::from_secs(10), || {
            let m = inst.metrics();
            metric_with(&m, "podmaster_config_reloads_total{result=\"failed\"}").filter(|v| *v > failed_before)
        });
        let (c0, t0) = (cpu(), Instant::now());
        std::thread::sleep(Duration::from_millis(1000));
        let used = (cpu() - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
        assert!(used < 0.1, "{spec}: master uses {used:.2} CPU-seconds per second");
        let now = master_fds(pid);
        let lost: Vec<_> = fds_before.iter().filter(|f| !now.contains(f)).collect();
        assert!(
            lost.is_empty(),
            "{spec}: the master lost or changed fds {lost:?}, now {now:?}; logs:\n{}",
            inst.logs()
        );
        assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200), "{spec}");
        let r = inst.probe_get("/readyz").unwrap();
        assert_eq!(r.status, 200, "{spec}: {}", r.body);
        let body = http_get(&format!("127.0.0.1:{}", ports[0]), "/World").expect("the service answers");
        assert_eq!(body.status, 200, "{spec}");
    }
    let logs = inst.logs();
    for (spec, key) in &edits {
        let lines = logs.lines().filter(|l| l.contains("cannot be applied") && l.contains(key.as_str())).count();
        assert_eq!(lines, 1, "{spec} refused {lines} times in the log:\n{logs}");
    }
    assert!(logs.contains("taken over only at startup"), "{logs}");
    drop(busy);
}

#[test]
#[cfg_attr(
    not(all(have_root, have_checkout_open_to_nobody)),
    ignore = "needs root, and user nobody able to reach target/ and tests/ (o+x on each parent dir): run cargo test as root"
)]
fn workers_with_a_uid_die_with_the_master() {
    let sd = format!("{}/tests/scripts/sdserver.py", env!("CARGO_MANIFEST_DIR"));
    let extra = format!("worker-exec = /usr/bin/python3 {sd}\nuid = nobody\ngid = nogroup\n");
    let mut inst = Instance::start("", 2, 1, &extra);
    inst.wait_ready();
    let workers: Vec<i32> = inst.worker_pids().into_iter().map(|(_, pid)| pid).collect();
    assert_eq!(workers.len(), 2);
    // Not PID 1 here: the workers are reparented, not killed by the kernel,
    // unless their parent-death signal survived the privilege drop.
    inst.signal(libc::SIGKILL);
    inst.wait_exit(Duration::from_secs(5));
    wait_for("workers to die with the master", Duration::from_secs(5), || {
        workers.iter().all(|pid| !pid_alive(*pid) || proc_state(*pid) == Some('Z')).then_some(())
    });
    // Nobody serves the socket any more.
    assert!(get(inst.ports[0]).is_none_or(|a| a.is_empty()));
}

#[test]
fn a_garbage_test_hook_value_is_ignored_not_a_panic() {
    for value in ["nan", "inf", "-1", "1e309", "x"] {
        let inst = Instance::start_with(&example_script(), 1, 1, "", &[("PODMASTER_TEST_WEDGE_ON_USR2", value)], |c| c);
        inst.wait_ready();
        assert!(inst.logs().contains("PODMASTER_TEST_WEDGE_ON_USR2 is not a number of seconds; ignored"), "{value}");
    }
}

#[test]
fn scaling_up_stops_at_the_scoreboard_size() {
    // 1024 command workers (the cap), counted ready as soon as they run.
    let extra = "worker-exec = sleep 1000\nworker-ready-mode = spawn\n";
    let inst = Instance::start("", 1024, 1, extra);
    wait_for("1024 workers", Duration::from_secs(60), || {
        metric(&inst.metrics(), "podmaster_workers_accepting").filter(|n| *n == 1024.0)
    });
    inst.signal(libc::SIGTTIN);
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        inst.logs().contains("not scaling up: the scoreboard has room for no more workers").then_some(())
    });
    assert_eq!(inst.status()["workers"].as_array().map(Vec::len), Some(1024));
    assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
}

#[test]
fn a_flapping_worker_cannot_flood_the_log() {
    let d = TempDir::new("flap");
    let done = d.path().join("done");
    let script = format!("{}/tests/scripts/flapper.py", env!("CARGO_MANIFEST_DIR"));
    let inst = Instance::start_with(&script, 1, 1, "", &[("FLAP_DONE", done.to_str().unwrap())], |c| c);
    wait_for("the flapper to finish", Duration::from_secs(30), || done.exists().then_some(()));
    wait_for("the last READY=1 to count", Duration::from_secs(10), || {
        inst.probe_get("/readyz").filter(|r| r.status == 200)
    });
    let logs = inst.logs();
    let lines =
        logs.lines().filter(|l| l.contains("worker stopped accepting") || l.contains("worker accepting")).count();
    eprintln!("{lines} accepting/stopped lines logged");
    assert!(lines <= 21, "{lines} accepting/stopped lines logged");
    assert!(logs.contains("worker keeps switching between accepting and not"), "{logs}");
    assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
}

/// `podmaster --check-config --ini PATH` (or `--yaml` for a .yaml):
/// (exit code, stderr), within a deadline.
fn check_config(path: &std::path::Path) -> (Option<i32>, String) {
    let format = if path.extension().is_some_and(|e| e == "yaml") { "--yaml" } else { "--ini" };
    let mut child = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(format)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_for("--check-config to finish", Duration::from_secs(20), || child.try_wait().ok().flatten());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (st.code(), err)
}

#[test]
fn config_bombs_are_refused_in_bounded_time_and_memory() {
    let d = TempDir::new("bombs");
    let head = format!("[uwsgi]\nsocket = :0\npython-worker-override = {}\n", example_script());
    // %(key) doubling: 1 KB, then 64 copies of it, then 64 copies of that...
    let mut doubling = format!("{head}a = {}\n", "x".repeat(1024));
    for (prev, key) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")] {
        doubling += &format!("{key} = {}\n", format!("%({prev})").repeat(64));
    }
    // Includes fanning out: 20 × 20 × 20 reads of an empty file.
    d.write("leaf.ini", "[uwsgi]\n");
    d.write("mid.ini", &"[uwsgi]\n".chars().chain("include = leaf.ini\n".repeat(20).chars()).collect::<String>());
    let fan = format!("{head}{}", "include = mid.ini\n".repeat(20));
    let fifo = d.path().join("fifo.ini");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // A billion laughs in YAML: nine levels of ten aliases each.
    let mut laughs = String::from("a0: &a0 \"lol\"\n");
    for i in 1..10 {
        laughs += &format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", "));
    }
    laughs += "uwsgi:\n  socket: \":0\"\n";
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        ("placeholder doubling", d.write("doubling.ini", &doubling), "once expanded"),
        ("include fan-out", d.write("fan.ini", &fan), "config files read"),
        (
            "include of a FIFO",
            d.write("fifo-inc.ini", &format!("{head}include = {}\n", fifo.display())),
            "not a regular file",
        ),
        (
            "include of /proc/self/pagemap",
            d.write("proc.ini", &format!("{head}include = /proc/self/pagemap\n")),
            "pagemap",
        ),
        (
            "check interval of 1 ms",
            d.write("interval.ini", &format!("{head}config-check-interval = 0.001\n")),
            "at least 0.05",
        ),
        (
            "metrics with the same Prometheus name",
            d.write("metrics.ini", &format!("{head}metric = name=req.count\nmetric = name=req_count\n")),
            "same Prometheus name",
        ),
    ];
    for (what, path, expect) in cases {
        let t = Instant::now();
        let (code, err) = check_config(&path);
        assert_eq!(code, Some(78), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(t.elapsed() < Duration::from_secs(10), "{what}: took {:?}", t.elapsed());
    }
    let (code, err) = check_config(&d.write("laughs.yaml", &laughs));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("YAML aliases"), "{err}");
}

#[test]
fn a_watched_config_swapped_for_a_fifo_or_a_bomb_is_refused_without_wedging() {
    let d = TempDir::new("swap");
    let (inst, path, text) = watched(&d, 1);
    inst.wait_ready();
    let failed = |inst: &Instance| {
        metric_with(&inst.metrics(), "podmaster_config_reloads_total{result=\"failed\"}").unwrap_or(0.0)
    };
    // A FIFO in place of the file: opening it must not block the main loop.
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    wait_for("the FIFO to be refused", Duration::from_secs(10), || (failed(&inst) >= 1.0).then_some(()));
    for _ in 0..5 {
        assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then a placeholder bomb.
    std::fs::remove_file(&path).unwrap();
    let mut bomb = format!("{text}a = {}\n", "x".repeat(1024));
    for (prev, key) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")] {
        bomb += &format!("{key} = {}\n", format!("%({prev})").repeat(64));
    }
    std::fs::write(&path, bomb).unwrap();
    wait_for("the bomb to be refused", Duration::from_secs(10), || (failed(&inst) >= 2.0).then_some(()));
    assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
    assert_eq!(inst.probe_get("/readyz").map(|r| r.status), Some(200));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", inst.pid())).unwrap();
    let kb: u64 =
        rss.lines().find(|l| l.starts_with("VmHWM:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb < 200 * 1024, "the master's peak RSS reached {kb} kB");
}
