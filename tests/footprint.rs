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
