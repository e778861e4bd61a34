//! The `uwsgi` module inside real workers: every attribute and function,
//! metrics through shared memory to /metrics, bad scripts and virtualenvs.

mod common;

use std::process::{Command, Stdio};

use common::*;

const METRICS: &str = "metric = name=requests,type=counter\nmetric = name=peak,type=gauge\nmetric = name=inflight,type=gauge,initial_value=100\n";

#[test]
fn module_attributes_and_functions() {
    let d = TempDir::new("module");
    let out = d.path().join("probe.json");
    let out_s = out.to_str().unwrap().to_owned();
    let script = format!("{ROOT}/tests/scripts/module_probe.py");
    let extra = format!("{METRICS}vacuum\npyargv = --flag 'two words'\ndrain-delay = 2\n");
    let mut inst = Instance::start_with(&script, 2, 2, &extra, &[("PROBE_OUT", out_s.as_str())], |c| c);
    inst.wait_ready();
    let v: serde_json::Value =
        wait_for("probe output", DEADLINE, || serde_json::from_str(&std::fs::read_to_string(&out).ok()?).ok());
    assert_eq!(v["same_module"], true);
    assert_eq!(v["sockets"], serde_json::json!([3, 4]));
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["numproc"], 2);
    assert_eq!(v["masterpid"], inst.pid());
    assert!(v["worker_id"] == 1 || v["worker_id"] == 2);
    assert_eq!(v["is_a_reload"], false);
    assert!(v["started_on"].as_u64().unwrap() > 1_700_000_000);
    assert!(v["micros"].as_u64().unwrap() > 1_700_000_000_000_000);
    assert!(v["mem"][0].as_u64().unwrap() > 1_000_000 && v["mem"][1].as_u64().unwrap() > v["mem"][0].as_u64().unwrap());
    assert_eq!(v["opt"]["processes"], "2");
    assert_eq!(v["opt"]["vacuum"], true, "valueless flag reads True");
    assert_eq!(v["opt"]["socket"].as_array().unwrap().len(), 2, "repeated option is a list");
    assert_eq!(v["argv"], serde_json::json!([script, "--flag", "two words"]));
    assert!(!v["executable"].as_str().unwrap().contains("podmaster"), "sys.executable is a real python");
    assert_eq!(v["refcount_none_ok"], true);
    assert_eq!(v["setprocname"], serde_json::Value::Null);
    assert_eq!(v["is_draining"], false);
    assert_eq!(v["metric_inc"], true);
    assert_eq!(v["metric_unknown"], serde_json::Value::Null);
    assert_eq!(v["metric_set_max"], serde_json::json!([true, true]));
    assert_eq!(v["metric_errors"], serde_json::json!(["TypeError", "OverflowError", "TypeError"]));
    // requests: 1 + 5 - 1 = 5 in this worker (the other may have run too).
    assert!(v["metric_get"][0].as_i64().unwrap() >= 5);
    assert_eq!(v["metric_get"][3], serde_json::Value::Null);

    // The master exports them, summed and per worker, from shared memory.
    wait_for("both workers counted", DEADLINE, || {
        (metric(&inst.metrics(), "podmaster_app_requests_total")? == 10.0).then_some(())
    });
    let m = inst.metrics();
    assert_eq!(metric(&m, "podmaster_app_peak"), Some(20.0));
    assert_eq!(metric(&m, "podmaster_app_inflight"), Some(104.0), "initial 100 + 2 per worker");
    assert_eq!(metric_with(&m, "podmaster_app_requests_per_worker_total{worker=\"1\"}"), Some(5.0));
    let pid1 = inst.worker_pids()[0].1;
    let comm = std::fs::read_to_string(format!("/proc/{pid1}/comm")).unwrap();
    assert_eq!(comm.trim(), "pm-probe-worker");

    // workers() and is_draining() read the board the master publishes.
    let r = http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/").unwrap();
    let w: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(w["workers"].as_array().unwrap().len(), 2);
    assert_eq!(w["workers"][0]["accepting"], 1);
    assert!(w["workers"][0]["rss"].as_u64().unwrap() > 0);
    assert_eq!(w["draining"], false);
    inst.signal(libc::SIGTERM);
    // During drain-delay workers still serve, and see the drain coming.
    let r = wait_for("draining visible", DEADLINE, || {
        let r = http_get(&format!("127.0.0.1:{}", inst.ports[0]), "/").ok()?;
        r.body.contains("\"draining\": true").then_some(r)
    });
    assert!(r.body.contains("\"draining\": true"));
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
    let logs = inst.logs();
    assert!(
        logs.contains("module probe ready worker="),
        "uwsgi.log goes through the formatter with the worker id: {logs}"
    );
}

#[test]
fn pythonpath_and_virtualenv_site_packages_are_importable() {
    let d = TempDir::new("pypath");
    std::fs::create_dir(d.path().join("lib")).unwrap();
    d.write("lib/helper_mod_pm.py", "VALUE = 'from pythonpath'\n");
    let out = d.path().join("out");
    let script = d.write(
        "w.py",
        &format!(
            "import sys, uwsgi, helper_mod_pm\nopen({:?}, 'w').write(helper_mod_pm.VALUE + '|' + sys.path[0])\n\
             uwsgi.accepting()\nimport time\nwhile True: time.sleep(1)\n",
            out.display().to_string()
        ),
    );
    let extra = format!("pythonpath = {}\n", d.path().join("lib").display());
    let inst = Instance::start(script.to_str().unwrap(), 1, 1, &extra);
    inst.wait_ready();
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got, format!("from pythonpath|{}", d.path().join("lib").display()), "pythonpath is first on sys.path");
}

#[test]
fn reload_and_stop_from_python() {
    let d = TempDir::new("reloadpy");
    let script = d.write(
        "w.py",
        "import os, signal, time, uwsgi\nuwsgi.accepting()\n\
         if not uwsgi.is_a_reload and uwsgi.worker_id() == 1:\n    uwsgi.reload()\n\
         elif uwsgi.is_a_reload and uwsgi.worker_id() == 1:\n    uwsgi.stop()\n\
         signal.signal(signal.SIGHUP, lambda *a: os._exit(0))\nwhile True: time.sleep(1)\n",
    );
    let mut inst = Instance::start(script.to_str().unwrap(), 2, 1, "");
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(0), "{logs}");
    assert!(logs.contains("cause=\"uwsgi.reload()\"") && logs.contains("cause=\"uwsgi.stop()\""), "{logs}");
}

#[test]
fn bad_scripts_fail_startup_with_the_traceback() {
    let d = TempDir::new("badscript");
    let cases = [
        ("syntax.py", b"def broken(:\n    pass\n".to_vec(), "SyntaxError"),
        ("latin1.py", b"x = '\xe9t\xe9'\n".to_vec(), "SyntaxError"),
    ];
    for (name, body, expect) in cases {
        let p = d.path().join(name);
        std::fs::write(&p, body).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--socket", "127.0.0.1:0", "--python-worker-override", p.to_str().unwrap()]);
        let mut inst = Instance::spawn(cmd, d.path().join(format!("{name}.log")));
        let st = inst.wait_exit(DEADLINE);
        let logs = inst.logs();
        assert_eq!(st.code(), Some(69), "{name}: {logs}");
        assert!(logs.contains(expect) && logs.contains(name), "{name}: {logs}");
        assert!(!logs.contains("panicked"));
    }
}

#[test]
fn virtualenv_problems_are_config_errors() {
    let d = TempDir::new("venvbad");
    let fake = d.path().join("oldvenv");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(fake.join("bin/python3"), "").unwrap();
    std::fs::write(fake.join("pyvenv.cfg"), "home = /usr/bin\nversion = 3.9.18\n").unwrap();
    let cases = [
        (d.path().join("nothing").display().to_string(), "not a directory".to_string()),
        (d.path().display().to_string(), "no bin/python3".to_string()),
        (fake.display().to_string(), "made for Python 3.9.18, but podmaster embeds Python 3.".to_string()),
    ];
    for (venv, expect) in cases {
        let out = Command::new(BIN)
            .args(["--socket", ":0", "--python-worker-override", &example_script(), "--virtualenv", &venv])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("virtualenv: ") && err.contains(&expect), "{err}");
    }
}
