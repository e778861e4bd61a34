//! Preforked Python workers (the zygote) against `lazy-apps = true`, with
//! real processes: what a forked worker sees of its hand-off, reloads that
//! import the code anew, a threaded or broken `shared-import`, a zygote
//! that dies. The uid case runs in `tests/container.rs` (the embedded
//! Python must be readable by the worker's user, which the machine's
//! pyenv under /root is not).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

fn script() -> String {
    format!("{ROOT}/tests/scripts/prefork/report_worker.py")
}

/// The module the zygote imports; `VERSION` is what the workers serve.
fn write_sharedmod(dir: &TempDir, version: &str) {
    dir.write(
        "sharedmod.py",
        &format!(
            "import os\nVERSION = {version:?}\nIMPORTED_IN = os.getpid()\nAT_FORK_CHILD = []\n\
             os.register_at_fork(after_in_child=lambda: AT_FORK_CHILD.append(os.getpid()))\n"
        ),
    );
}

struct Setup {
    inst: Instance,
    dir: TempDir,
}

/// podmaster with `n` report workers; `extra` ini lines.
fn start(n: u32, extra: &str) -> Setup {
    let dir = TempDir::new("prefork");
    write_sharedmod(&dir, "1");
    std::fs::create_dir_all(dir.path().join("reports")).unwrap();
    let extra = format!("pythonpath = {}\n{extra}", dir.path().display());
    let reports = dir.path().join("reports");
    let inst = Instance::start_with(
        &script(),
        n,
        1,
        &extra,
        &[("REPORT_DIR", reports.to_str().unwrap()), ("PYTHONDONTWRITEBYTECODE", "1")],
        |c| c,
    );
    Setup { inst, dir }
}

/// The report of every current worker (per /status), once each has written
/// one from its current process.
fn reports(s: &Setup) -> BTreeMap<u32, serde_json::Value> {
    wait_for("every worker's report", DEADLINE, || {
        let mut out = BTreeMap::new();
        for (id, pid) in s.inst.worker_pids() {
            let text = std::fs::read_to_string(s.dir.path().join(format!("reports/{id}.json"))).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            if pid <= 0 || v["pid"] != pid {
                return None;
            }
            out.insert(id, v);
        }
        Some(out)
    })
}

fn zygotes(inst: &Instance) -> Vec<serde_json::Value> {
    inst.status()["zygotes"].as_array().cloned().unwrap_or_default()
}

/// The current zygote's pid once it is ready.
fn ready_zygote(inst: &Instance) -> i32 {
    wait_for("a ready zygote", DEADLINE, || {
        zygotes(inst)
            .into_iter()
            .find(|z| z["role"] == "current" && z["state"] == "ready")
            .and_then(|z| z["pid"].as_i64())
            .map(|p| p as i32)
    })
}

fn serve_line(port: u16) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    s.read_to_string(&mut line).ok()?;
    Some(line)
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or(0)
}

#[test]
fn forked_workers_are_the_masters_children_with_an_execd_workers_handoff() {
    let forked = start(3, "shared-import = sharedmod\nlazy-apps = false\n");
    forked.inst.wait_ready();
    let zygote = ready_zygote(&forked.inst);
    let master = forked.inst.pid();
    assert_eq!(parent_of(zygote), master);
    let fr = reports(&forked);
    let lazy = start(3, "shared-import = sharedmod\nlazy-apps = true\n");
    lazy.inst.wait_ready();
    let lr = reports(&lazy);
    assert!(zygotes(&lazy.inst).is_empty(), "lazy-apps: no zygote");
    assert_eq!(lazy.inst.status()["preforked"], false);

    let mut randoms = Vec::new();
    for (mode, r, master) in [("forked", &fr, master), ("lazy", &lr, lazy.inst.pid())] {
        for (id, w) in r {
            let pid = w["pid"].as_i64().unwrap();
            let ctx = format!("{mode} worker {id}: {w}");
            assert_eq!(w["ppid"], master, "the master is the parent: {ctx}");
            assert_eq!(w["pgid"], pid, "own process group: {ctx}");
            assert_eq!(w["sigblk"], "0000000000000000", "empty signal mask: {ctx}");
            assert_eq!(w["listen_pid_os"], pid.to_string(), "LISTEN_PID in os.environ: {ctx}");
            assert_eq!(w["listen_pid_c"], pid.to_string(), "LISTEN_PID in the C environment: {ctx}");
            assert_eq!(w["listen_fds"], "1", "{ctx}");
            assert_eq!(w["numproc"], 3, "{ctx}");
            assert_eq!(w["cmdline"], format!("podmaster: worker {id}"), "{ctx}");
            assert_eq!(w["sigint"], "<built-in function default_int_handler>", "{ctx}");
            // Ignored, as CPython's startup leaves it ("1" is SIG_IGN).
            assert!(w["sigpipe"] == "Handlers.SIG_IGN" || w["sigpipe"] == "1", "{ctx}");
            assert_eq!(w["threads"], 1, "{ctx}");
            randoms.push(w["random"].as_f64().unwrap());
        }
    }
    for w in fr.values() {
        let pid = w["pid"].as_i64().unwrap();
        assert_eq!(w["imported_in"], zygote, "imported once, in the zygote: {w}");
        assert_eq!(w["at_fork_child"], serde_json::json!([pid]), "os.register_at_fork(after_in_child) ran: {w}");
    }
    for w in lr.values() {
        assert_eq!(w["imported_in"], w["pid"], "lazy: each worker imports: {w}");
    }
    // No fd beyond what an exec'd worker gets (0-2, the socket, the board).
    let fds = |r: &BTreeMap<u32, serde_json::Value>| r.values().map(|w| w["fds"].clone()).collect::<Vec<_>>();
    assert_eq!(fds(&fr), fds(&lr));
    assert_eq!(fr[&1]["fds"], serde_json::json!([0, 1, 2, 3, 4]));
    // `random` is reseeded in every forked worker.
    randoms.sort_by(f64::total_cmp);
    randoms.dedup();
    assert_eq!(randoms.len(), 6, "distinct random streams");

    let m = forked.inst.metrics();
    assert_eq!(metric(&m, "podmaster_zygote_ready"), Some(1.0));
    assert_eq!(metric(&m, "podmaster_zygote_generation"), Some(1.0));
    assert_eq!(metric(&m, "podmaster_zygote_restarts_total"), Some(0.0));
    assert!(metric_with(&m, "podmaster_zygote_memory_bytes{kind=\"pss\"}").is_some_and(|v| v > 0.0), "{m}");
    let z = &zygotes(&forked.inst)[0];
    assert!(z["rss"].as_u64().is_some_and(|v| v > 0) && z["pss"].as_u64().is_some(), "{z}");
    assert_eq!(z["generation"], 1);
    assert!(forked.inst.logs().contains("zygote ready"), "{}", forked.inst.logs());
}

#[test]
fn a_module_edited_on_disk_is_served_by_every_worker_after_sighup() {
    let s = start(3, "shared-import = sharedmod\nlazy-apps = false\n");
    s.inst.wait_ready();
    let port = s.inst.ports[0];
    let before = reports(&s);
    assert!(before.values().all(|w| w["version"] == "1"));
    let z1 = ready_zygote(&s.inst);
    write_sharedmod(&s.dir, "2");
    s.inst.signal(libc::SIGHUP);
    s.inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    let after = reports(&s);
    for (id, w) in &after {
        assert_eq!(w["version"], "2", "worker {id} runs the new code: {w}");
        assert_ne!(w["pid"], before[id]["pid"]);
        assert_eq!(w["ppid"], s.inst.pid());
    }
    let z2 = ready_zygote(&s.inst);
    assert_ne!(z1, z2);
    assert_eq!(after[&1]["imported_in"], z2);
    wait_for("the old zygote to exit", DEADLINE, || (!pid_alive(z1)).then_some(()));
    assert_eq!(metric(&s.inst.metrics(), "podmaster_zygote_generation"), Some(2.0));
    for _ in 0..6 {
        let line = serve_line(port).expect("an answer");
        assert!(line.starts_with("v2 pid "), "{line}");
    }
}

#[test]
fn a_threaded_shared_import_is_refused_with_exit_78_and_lazy_apps_is_the_way_out() {
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let mut s = start(2, &format!("{pythonpath}shared-import = threaded\nlazy-apps = false\n"));
    let st = s.inst.wait_exit(DEADLINE);
    let logs = s.inst.logs();
    assert_eq!(st.code(), Some(78), "{logs}");
    let line = logs.lines().find(|l| l.contains("left 1 thread(s) running")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("shared-import threaded") && line.contains("bg-poller"), "{line}");
    assert!(line.contains("lazy-apps = true") && line.contains("not at import time"), "{line}");
    assert!(!logs.contains("worker spawned"), "no worker is forked: {logs}");
    // The way out the message names: each worker imports it for itself.
    let ok = start(2, &format!("{pythonpath}shared-import = threaded\nlazy-apps = true\n"));
    ok.inst.wait_ready();
}

/// The single-thread check runs after the app's at-fork hooks, right
/// before the fork: a hook that starts a thread is caught too.
#[test]
fn a_thread_started_by_an_at_fork_hook_is_refused_before_the_fork() {
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let mut s = start(1, &format!("{pythonpath}shared-import = thread_at_fork\n"));
    let st = s.inst.wait_exit(DEADLINE);
    let logs = s.inst.logs();
    assert_eq!(st.code(), Some(78), "{logs}");
    assert!(logs.contains("left 1 thread(s) running (at-fork-thread)"), "{logs}");
    assert!(!logs.contains("worker spawned"), "nothing was forked: {logs}");
}

#[test]
fn a_shared_import_that_raises_stops_the_instance_with_its_traceback() {
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let mut s = start(2, &format!("{pythonpath}shared-import = broken\n"));
    let st = s.inst.wait_exit(DEADLINE);
    let logs = s.inst.logs();
    assert_eq!(st.code(), Some(69), "{logs}");
    assert!(logs.contains("shared-import failed") && logs.contains("module=\"broken\""), "{logs}");
    assert!(logs.contains("RuntimeError: broken at import (shared-import test)"), "{logs}");
    assert!(logs.contains("zygote exited before it was ready"), "{logs}");
}

/// A zygote runs app code: a module that writes on the control socket is
/// caught (the master expects `Ready` first) and the zygote killed.
#[test]
fn a_zygote_that_lies_on_its_control_socket_is_killed() {
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let mut s = start(1, &format!("{pythonpath}shared-import = hostile_zygote\n"));
    let st = s.inst.wait_exit(DEADLINE);
    let logs = s.inst.logs();
    assert_eq!(st.code(), Some(69), "{logs}");
    assert!(logs.contains("zygote sent something other than Ready; killing it"), "{logs}");
    assert!(!logs.contains("worker spawned"), "{logs}");
}

#[test]
fn killing_the_zygote_leaves_the_workers_serving_and_a_new_one_appears() {
    let s = start(2, "shared-import = sharedmod\nlazy-apps = false\n");
    s.inst.wait_ready();
    let port = s.inst.ports[0];
    let z1 = ready_zygote(&s.inst);
    let workers = s.inst.worker_pids();
    // SAFETY: kill(2) of the zygote this test started.
    unsafe { libc::kill(z1, libc::SIGKILL) };
    let z2 = wait_for("a new zygote", DEADLINE, || {
        let z = ready_zygote(&s.inst);
        (z != z1).then_some(z)
    });
    assert_eq!(s.inst.worker_pids(), workers, "the workers kept running");
    assert!(serve_line(port).is_some_and(|l| l.starts_with("v1 pid ")));
    assert_eq!(metric(&s.inst.metrics(), "podmaster_zygote_restarts_total"), Some(1.0));
    assert_eq!(parent_of(z2), s.inst.pid());
    // A worker that dies now is forked from the new zygote.
    // SAFETY: kill(2) of a worker this test started.
    unsafe { libc::kill(workers[0].1, libc::SIGKILL) };
    let r = wait_for("the respawned worker's report", DEADLINE, || {
        let r = reports(&s);
        (r[&workers[0].0]["pid"] != workers[0].1).then_some(r)
    });
    let w = &r[&workers[0].0];
    assert_eq!(w["ppid"], s.inst.pid());
    assert_eq!(w["imported_in"], z2, "forked from the new zygote: {w}");
    s.inst.wait_ready();
}

/// The zygote may not outlive the master, whatever kills the master.
#[test]
fn the_zygote_dies_with_the_master() {
    let mut s = start(1, "shared-import = sharedmod\n");
    s.inst.wait_ready();
    let z = ready_zygote(&s.inst);
    let w = s.inst.worker_pids()[0].1;
    s.inst.child.as_mut().unwrap().kill().unwrap();
    s.inst.wait_exit(DEADLINE);
    wait_for("zygote and worker gone", DEADLINE, || (!pid_alive(z) && !pid_alive(w)).then_some(()));
    assert!(!Path::new(&format!("/proc/{z}")).exists() || proc_state(z) == Some('Z'));
}

/// The master's children, from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()));
    }
    out
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A fork request that fails after the fork (the zygote answers too late)
/// must not leave a worker nobody supervises: the worker announces itself
/// and the master, not knowing it, kills it. Every zygote that dies is
/// forgotten (no fd left behind).
#[test]
fn a_worker_forked_by_a_failed_request_is_killed_and_no_fd_leaks() {
    let d = TempDir::new("failedfork");
    let flag = d.path().join("slow");
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let s = Setup {
        inst: Instance::start_with(
            &example_script(),
            2,
            1,
            &format!("{pythonpath}shared-import = slow_parent\n"),
            &[("SLOW_FLAG", flag.to_str().unwrap())],
            |c| c,
        ),
        dir: d,
    };
    s.inst.wait_ready();
    let master = s.inst.pid();
    let fds_before = open_fds(master);
    std::fs::write(&flag, "").unwrap();
    let (_, victim) = s.inst.worker_pids()[0];
    // SAFETY: kill(2) of a worker this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    wait_for("the failed fork", DEADLINE, || {
        s.inst.logs().contains("a worker forked by a failed request is not ours; killing it").then_some(())
    });
    std::fs::remove_file(&flag).unwrap();
    s.inst.wait_ready();
    // Eventually every child of the master is a worker or a zygote it knows.
    wait_for("only known children", DEADLINE, || {
        let st = s.inst.status();
        let mut known: Vec<i32> =
            st["workers"].as_array()?.iter().filter_map(|w| w["pid"].as_i64()).map(|p| p as i32).collect();
        known.extend(st["zygotes"].as_array()?.iter().filter_map(|z| z["pid"].as_i64()).map(|p| p as i32));
        children_of(master).iter().all(|c| known.contains(c) || proc_state(*c) == Some('Z')).then_some(())
    });
    // The dead zygotes' control sockets were closed: no more fds than
    // before (polled, and not "equal": a probe connection of this test may
    // have been open, lingering, when the first count was taken).
    wait_for("the master's fds back to their count", DEADLINE, || (open_fds(master) <= fds_before).then_some(()));
}

/// Code that breaks on disk after startup: the zygote keeps failing to
/// start, and after max-failed-starts /livez says so (a pod restart), as
/// it does for workers that keep failing in the lazy model.
#[test]
fn a_zygote_that_keeps_failing_is_a_crash_loop() {
    let d = TempDir::new("zcrash");
    let flag = d.path().join("broken");
    let pythonpath = format!("pythonpath = {ROOT}/tests/scripts/prefork\n");
    let extra =
        format!("{pythonpath}shared-import = fails_when_flagged\nrespawn-backoff-max = 0.2\nmax-failed-starts = 3\n");
    let inst = Instance::start_with(&example_script(), 1, 1, &extra, &[("FAIL_FLAG", flag.to_str().unwrap())], |c| c);
    inst.wait_ready();
    std::fs::write(&flag, "").unwrap();
    let z = ready_zygote(&inst);
    // SAFETY: kill(2) of the zygote this test started.
    unsafe { libc::kill(z, libc::SIGKILL) };
    let r = wait_for("/livez 503", DEADLINE, || inst.probe_get("/livez").filter(|r| r.status == 503));
    assert!(r.body.contains("zygote failed to start 3 times"), "{}", r.body);
    assert_eq!(inst.probe_get("/readyz").map(|r| r.status), Some(200), "the worker still serves");
    // Fixed on disk: the next restart works and the crash loop is over.
    std::fs::remove_file(&flag).unwrap();
    wait_for("/livez 200", DEADLINE, || inst.probe_get("/livez").filter(|r| r.status == 200));
}
