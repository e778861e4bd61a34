//! Configuration sources end to end: a uWSGI-style ini with includes,
//! placeholders and environment, a ConfigMap manifest, precedence, and
//! `--check-config`.

mod common;

use std::process::Command;

use common::*;

fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(BIN);
    c.args(args).arg("--check-config");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn uwsgi_ini_with_includes_placeholders_and_env_runs() {
    let d = TempDir::new("realini");
    std::fs::create_dir(d.path().join("conf.d")).unwrap();
    let (p1, p2, probe) = (free_port(), free_port(), free_port());
    d.write("conf.d/sockets.ini", &format!("[uwsgi]\nsocket = 127.0.0.1:{p1}\nsocket = 127.0.0.1:%(second_port)\n"));
    d.write("workers.txt", "3\n");
    let ini = d.write(
        "app.ini",
        &format!(
            "# production config\n[uwsgi]\nsecond_port = {p2}\napp_dir = {root}/examples/hello\n\
             include = conf.d/sockets.ini\nmaster\nvacuum = true\ndie-on-term = true\n\
             processes = @(workers.txt)\npython-worker-override = %(app_dir)/hello.py\n\
             probe-socket = $(PROBE_ADDR)\ndrain-delay = $(DRAIN_DELAY:-0)\n",
            root = ROOT
        ),
    );
    let probe_addr = format!("127.0.0.1:{probe}");
    let (code, out, err) = check(&["--ini", ini.to_str().unwrap()], &[("PROBE_ADDR", &probe_addr)]);
    assert_eq!(code, 0, "{err}");
    let ini_s = ini.display().to_string();
    assert!(
        out.contains(&format!("socket = 127.0.0.1:{p2}  # {}:3", d.path().join("conf.d/sockets.ini").display())),
        "{out}"
    );
    assert!(out.contains(&format!("processes = 3  # {ini_s}:9")), "{out}");
    assert!(out.contains(&format!("probe-socket = {probe_addr}  # {ini_s}:11")), "{out}");
    assert!(out.contains("drain-delay = 0  #"), "{out}");
    assert!(!out.contains("second_port"), "variables are not options: {out}");
    assert!(err.contains("vacuum") && err.contains("accepted and ignored"), "notice per harmless option: {err}");

    let mut inst = Instance::start_with(&example_script(), 1, 0, "", &[], |_| {
        let mut c = Command::new(BIN);
        c.args(["--ini", ini.to_str().unwrap()]).env("PROBE_ADDR", &probe_addr);
        c
    });
    inst.probe = probe_addr.clone();
    inst.wait_ready();
    assert_eq!(inst.probe_get("/readyz").unwrap().body, "ready: 3/3 workers accepting\n");
    for p in [p1, p2] {
        assert_eq!(http_get(&format!("127.0.0.1:{p}"), "/Ini").unwrap().body, "Hello, Ini");
    }
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn configmap_manifest_runs_as_kubernetes_delivers_it() {
    let d = TempDir::new("cm");
    let (port, probe) = (free_port(), free_port());
    let cm = d.write(
        "configmap.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  processes: \"2\"\n  socket: |\n    127.0.0.1:{port}\n\
             \x20 python-worker-override: {root}/examples/hello/hello.py\n  probe-socket: 127.0.0.1:{probe}\n",
            root = ROOT
        ),
    );
    let (code, out, err) = check(&[cm.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("processes = 2  # {}: data.processes", cm.display())), "{out}");

    let mut inst = Instance::start_with(&example_script(), 1, 0, "", &[], |_| {
        let mut c = Command::new(BIN);
        c.args(["--yaml", cm.to_str().unwrap()]);
        c
    });
    inst.probe = format!("127.0.0.1:{probe}");
    inst.wait_ready();
    assert_eq!(http_get(&format!("127.0.0.1:{port}"), "/Kube").unwrap().body, "Hello, Kube");
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn precedence_env_then_files_in_order_then_cli() {
    let d = TempDir::new("prec");
    let a = d.write("a.ini", "[uwsgi]\nprocesses = 4\nsocket = :1001\n");
    let b = d.write("b.yaml", "uwsgi:\n  processes: 5\n  socket: ':1002'\n");
    let script = example_script();
    let env = [("UWSGI_PROCESSES", "2"), ("UWSGI_SOCKET", ":1000")];
    let base = ["--python-worker-override", script.as_str()];
    let (code, out, err) = check(&[&base[..], &[a.to_str().unwrap(), b.to_str().unwrap()]].concat(), &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("processes = 5  # {}: uwsgi.processes", b.display())), "{out}");
    let sockets: Vec<&str> = out.lines().filter(|l| l.starts_with("socket = ")).collect();
    assert_eq!(sockets.len(), 3, "list options accumulate: {out}");
    assert!(sockets[0].contains(":1000  # env UWSGI_SOCKET") && sockets[2].contains(":1002"), "{out}");
    let (_, out, _) = check(&[&base[..], &[a.to_str().unwrap(), "--processes", "8"]].concat(), &env);
    assert!(out.contains("processes = 8  # --processes"), "{out}");
    let (_, out, _) = check(&base, &env);
    assert!(out.contains("processes = 2  # env UWSGI_PROCESSES"), "{out}");
}

#[test]
fn projected_configmap_swap_rolls_workers_without_failed_requests_and_bad_edits_are_ignored() {
    let d = TempDir::new("projected");
    let cm = d.path().join("cm");
    std::fs::create_dir(&cm).unwrap();
    let (port, probe) = (free_port(), free_port());
    let script = example_script();
    let sock = format!("127.0.0.1:{port}\n");
    let probe_s = format!("127.0.0.1:{probe}\n");
    let base = vec![
        ("socket", sock.as_str()),
        ("python-worker-override", script.as_str()),
        ("probe-socket", probe_s.as_str()),
        ("config-check-interval", "0.2\n"),
    ];
    let with = |processes: &'static str, mercy: &'static str| {
        let mut v = base.clone();
        v.push(("processes", processes));
        v.push(("worker-reload-mercy", mercy));
        v
    };
    project(&cm, 1, &with("2\n", "10\n"));
    let mut inst = Instance::start_with("", 1, 0, "", &[], |_| {
        let mut c = Command::new(BIN);
        c.args(["--config-dir", cm.to_str().unwrap()]);
        c
    });
    inst.probe = format!("127.0.0.1:{probe}");
    inst.wait_ready();
    let before: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();

    let load = Load::start(vec![format!("127.0.0.1:{port}")], 3);
    project(&cm, 2, &with("3\n", "9\n"));
    inst.wait_metric("podmaster_config_reloads_total{result=\"ok\"}", 1.0);
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    wait_for("3/3 ready", DEADLINE, || {
        (inst.probe_get("/readyz")?.body == "ready: 3/3 workers accepting\n").then_some(())
    });
    let after: Vec<i32> = inst.worker_pids().into_iter().map(|(_, p)| p).collect();
    assert!(before.iter().all(|p| !after.contains(p)), "workers rolled: {before:?} -> {after:?}");

    // A bad edit: logged, counted, ignored; service continues unchanged.
    project(&cm, 3, &with("lots\n", "9\n"));
    inst.wait_metric("podmaster_config_reloads_total{result=\"failed\"}", 1.0);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "no request fails across the roll: {errors:?}");
    assert!(ok > 50);
    assert_eq!(inst.worker_pids().into_iter().map(|(_, p)| p).collect::<Vec<_>>(), after, "bad edit changed nothing");
    assert_eq!(inst.probe_get("/readyz").unwrap().status, 200);
    let logs = inst.logs();
    assert!(
        logs.contains("config changed but is invalid") && logs.contains("processes: expected a whole number"),
        "{logs}"
    );
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn config_change_can_add_a_socket_live() {
    let d = TempDir::new("addsock");
    let (p1, p2, probe) = (free_port(), free_port(), free_port());
    let ini_text = |extra: &str| {
        format!(
            "[uwsgi]\nsocket = 127.0.0.1:{p1}\n{extra}processes = 1\npython-worker-override = {}\nprobe-socket = 127.0.0.1:{probe}\nconfig-check-interval = 0.2\n",
            example_script()
        )
    };
    let ini = d.write("a.ini", &ini_text(""));
    let mut inst = Instance::start_with("", 1, 0, "", &[], |_| {
        let mut c = Command::new(BIN);
        c.arg(&ini);
        c
    });
    inst.probe = format!("127.0.0.1:{probe}");
    inst.wait_ready();
    assert!(http_get(&format!("127.0.0.1:{p2}"), "/x").is_err());
    std::fs::write(&ini, ini_text(&format!("socket = 127.0.0.1:{p2}\n"))).unwrap();
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    for p in [p1, p2] {
        assert_eq!(http_get(&format!("127.0.0.1:{p}"), "/New").unwrap().body, "Hello, New");
    }
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0));
}
