//! What PID 1 costs: no Python in the master process, init mode and
//! command workers without libpython on the machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The lib directory of the Python podmaster-worker was built against.
fn python_lib_dir() -> PathBuf {
    let exe = Path::new(env!("PODMASTER_BUILD_PYTHON"));
    exe.parent().and_then(Path::parent).expect("python prefix").join("lib")
}

fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

#[test]
fn the_master_maps_no_python_and_the_zygote_does() {
    let inst = Instance::start(&example_script(), 2, 1, "");
    inst.wait_ready();
    let master = maps(inst.pid());
    assert!(!master.is_empty());
    assert!(!master.contains("libpython"), "the master maps libpython:\n{master}");
    let zygote = inst.status()["zygotes"][0]["pid"].as_i64().expect("a zygote") as i32;
    assert!(maps(zygote).contains("libpython"), "the check sees libpython where it is");
    let worker = inst.worker_pids()[0].1;
    assert!(maps(worker).contains("libpython"));
}

#[test]
fn a_python_config_without_podmaster_worker_is_refused() {
    let dir = TempDir::new("lonely");
    let lonely = dir.path().join("podmaster");
    std::fs::copy(BIN, &lonely).unwrap();
    let (text, _, _) = ini(&example_script(), 1, 1, "");
    let ini_path = dir.write("p.ini", &text);
    let out = Command::new(&lonely).arg("--ini").arg(&ini_path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("podmaster-worker not found next to") && err.contains("install both binaries"), "{err}");
}

/// Every libpython hidden, in a private mount namespace: an empty tmpfs
/// over the embedded Python's lib directory (the RUNPATH) and /dev/null over
/// each libpython the loader's cache lists (the system's). podmaster-worker
/// cannot start there, while init mode and command workers run.
#[test]
#[cfg_attr(not(have_root), ignore = "needs root (a private mount namespace hides libpython): run cargo test as root")]
fn init_mode_and_command_workers_run_without_libpython() {
    let hidden = |script: &str| {
        let lib = python_lib_dir();
        let sh = format!(
            "mount -t tmpfs none '{}' && for f in $(ldconfig -p | awk '/libpython/ {{print $NF}}'); do \
             mount --bind /dev/null \"$f\" || exit 91; done && {script}",
            lib.display()
        );
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &sh]).output().unwrap()
    };
    let worker = format!("{}/podmaster-worker", Path::new(BIN).parent().unwrap().display());
    let o = hidden(&format!("PODMASTER_WORKER=x '{worker}'"));
    assert_eq!(o.status.code(), Some(127), "the hiding works: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("libpython"));

    let o = hidden(&format!("'{BIN}' -- sh -c 'exit 7'"));
    assert_eq!(o.status.code(), Some(7), "init mode: {}", String::from_utf8_lossy(&o.stderr));

    // A command worker: readiness, then a graceful stop, all without Python.
    let dir = TempDir::new("nopython");
    let (text, _, probe) = ini("", 1, 1, "worker-exec = sleep 60\nworker-ready-mode = spawn\n");
    let ini_path = dir.write("p.ini", &text);
    let script = format!(
        "'{BIN}' --ini '{}' & m=$!; i=0; \
         until '{BIN}' probe http://{probe}/readyz >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 200 ] && exit 90; sleep 0.05; done; \
         kill -TERM $m; wait $m",
        ini_path.display()
    );
    let o = hidden(&script);
    assert_eq!(o.status.code(), Some(0), "command workers: {}", String::from_utf8_lossy(&o.stderr));
}

/// Context switches of every thread of `pid` so far.
fn context_switches(pid: i32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in status.lines().filter(|l| l.contains("ctxt_switches:")) {
            total += l.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// With a config file (watched for changes by default) and a touch file,
/// an idle master does not wake up at all: no thread of it is scheduled.
#[test]
fn an_idle_master_watching_files_never_wakes_up() {
    let dir = TempDir::new("idle");
    let touch = dir.write("reload.touch", "");
    let extra = format!("touch-reload = {}\nconfig-check-interval = 0.1\n", touch.display());
    let inst = Instance::start(&example_script(), 2, 1, &extra);
    inst.wait_ready();
    let pid = inst.pid();
    // Settled: the last probe answered, the workers reported.
    let settled = wait_for("the master to go quiet", DEADLINE, || {
        let a = context_switches(pid);
        std::thread::sleep(std::time::Duration::from_millis(300));
        (context_switches(pid) == a).then_some(a)
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(context_switches(pid), settled, "an idle master woke up (config-check-interval is 0.1 s)");
    assert!(!inst.logs().contains("polling every"), "{}", inst.logs());
    // And a touch is still seen at once.
    let t0 = std::time::Instant::now();
    std::fs::write(&touch, "x").unwrap();
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    assert!(inst.logs().contains("touch-reload"), "{}", inst.logs());
    eprintln!("touch to reload done: {:?}", t0.elapsed());
}

/// No check interval needed: with `config-check-interval = 3600`, a
/// ConfigMap `..data` swap and an in-place edit of a config file are each
/// applied within a second.
#[test]
fn a_configmap_swap_and_an_in_place_edit_are_noticed_at_once() {
    let d = TempDir::new("notice");
    let cm = d.path().join("cm");
    std::fs::create_dir(&cm).unwrap();
    let probe = free_port();
    let (script, probe_s) = (example_script(), format!("127.0.0.1:{probe}\n"));
    let sock = format!("127.0.0.1:{}\n", free_port());
    let data = |processes: &'static str| {
        vec![
            ("socket", sock.as_str()),
            ("python-worker-override", script.as_str()),
            ("probe-socket", probe_s.as_str()),
            ("config-check-interval", "3600\n"),
            ("processes", processes),
        ]
    };
    project(&cm, 1, &data("1\n"));
    let extra = d.write("extra.ini", "[uwsgi]\ndrain-delay = 0\n");
    let mut inst = Instance::start_with("", 1, 0, "", &[], |_| {
        let mut c = Command::new(BIN);
        c.args(["--config-dir", cm.to_str().unwrap(), "--ini", extra.to_str().unwrap()]);
        c
    });
    inst.probe = format!("127.0.0.1:{probe}");
    inst.wait_ready();
    let deadline = std::time::Duration::from_secs(1);
    project(&cm, 2, &data("2\n"));
    wait_for("the ConfigMap swap applied", deadline, || {
        (metric_with(&inst.metrics(), "podmaster_config_reloads_total{result=\"ok\"}")? >= 1.0).then_some(())
    });
    std::fs::write(&extra, "[uwsgi]\ndrain-delay = 0.5\n").unwrap();
    wait_for("the in-place edit applied", deadline, || {
        (metric_with(&inst.metrics(), "podmaster_config_reloads_total{result=\"ok\"}")? >= 2.0).then_some(())
    });
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

/// The probe threads ask the scheduler for a 100 µs slice (same priority):
/// a probe that wakes while workers keep every CPU busy runs sooner.
#[test]
#[cfg_attr(not(have_sched_slice), ignore = "needs Linux 6.12 or later (EEVDF slice requests)")]
fn probe_threads_run_with_a_short_slice() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    let slices: Vec<(String, u64)> = std::fs::read_dir(format!("/proc/{}/task", inst.pid()))
        .unwrap()
        .flatten()
        .map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_owned();
            let sched = std::fs::read_to_string(t.path().join("sched")).unwrap_or_default();
            let slice = sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            (comm, slice)
        })
        .collect();
    for name in ["probe-guard", "probes-kubelet"] {
        assert!(slices.iter().any(|(c, s)| c == name && *s == 100_000), "{name}: {slices:?}");
    }
}

/// The nice value of `pid` (field 19 of /proc/PID/stat).
fn nice_of(pid: i32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a live process");
    stat[stat.rfind(')').unwrap() + 2..].split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// Workers and zygotes run `worker-nice` (default 5) nicer than the master,
/// so the probe threads win a busy CPU; `worker-nice = 0` turns it off, and
/// command workers follow the same setting.
#[test]
fn workers_run_nicer_than_the_master_unless_turned_off() {
    let master_nice = nice_of(std::process::id() as i32);
    let cases: [(&str, &str, i64); 3] = [
        (&example_script(), "", 5),
        (&example_script(), "worker-nice = 0\n", 0),
        ("", "worker-exec = sleep 60\nworker-ready-mode = spawn\nworker-nice = 3\n", 3),
    ];
    for (script, extra, increment) in cases {
        let inst = Instance::start(script, 2, 1, extra);
        inst.wait_ready();
        assert_eq!(nice_of(inst.pid()), master_nice, "the master keeps its priority ({extra:?})");
        let expected = (master_nice + increment).min(19);
        for (id, pid) in inst.worker_pids() {
            assert_eq!(nice_of(pid), expected, "worker {id} ({extra:?})");
        }
        if let Some(z) = inst.status()["zygotes"][0]["pid"].as_i64() {
            assert_eq!(nice_of(z as i32), expected, "the zygote ({extra:?})");
        }
    }
}
