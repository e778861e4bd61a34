//! A simulated kubelet: runs the Deployment that `helm template` renders
//! against the real binary, the way kubelet and the endpoints controller
//! would, and asserts that clients see no failed request across a rollout
//! restart, a ConfigMap change (both modes) and a scale-down; a worker
//! crash is reported (requests in flight on a SIGKILLed worker die with it).
//!
//! Each pod gets its own network namespace (`ip netns`, loopback only: the
//! container's fixed ports do not collide) and PID namespace (podmaster is
//! PID 1). The ConfigMap is projected as kubelet does (timestamped dir,
//! `..data` symlink, per-key links; updates swap `..data` atomically).
//! Probes run at the spec's periods and thresholds; a pod is an endpoint
//! while its readiness probe passes and it is not terminating.
//! Termination: endpoint removal and SIGTERM at once, SIGKILL after
//! `terminationGracePeriodSeconds`. The load generator opens one connection
//! per request to a ready pod (as kube-proxy balances connections).
//! Needs root (namespaces), `ip` (iproute2), `unshare` and helm in
//! .tools/bin; reported ignored without them.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_yaml::Value;

/// The pod spec parts the simulation uses, read from the rendered Deployment.
#[derive(Clone, Debug)]
struct Spec {
    args: Vec<String>,
    mount: String,
    http_port: u16,
    probe_port: u16,
    grace: Duration,
    readiness: Probe,
    startup: Probe,
    max_surge: usize,
    config: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    period: Duration,
    failure_threshold: u32,
}

fn render(values: &[String]) -> Spec {
    let mut c = Command::new(tool("helm"));
    c.args(["template", "k", &format!("{ROOT}/charts/podmaster")]);
    for v in values {
        c.args(["--set", v]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = text.split("\n---").filter_map(|d| serde_yaml::from_str(d).ok()).collect();
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").expect("Deployment");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("ConfigMap");
    let pod = &dep["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    let port = |name: &str| {
        ctr["ports"].as_sequence().unwrap().iter().find(|p| p["name"] == name).unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16
    };
    let probe = |k: &str| Probe {
        period: Duration::from_secs(ctr[k]["periodSeconds"].as_u64().unwrap_or(10)),
        failure_threshold: ctr[k]["failureThreshold"].as_u64().unwrap_or(3) as u32,
    };
    let mount = ctr["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["name"] == "config").unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_owned();
    Spec {
        args: ctr["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        mount,
        http_port: port("http"),
        probe_port: port("probes"),
        grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap()),
        readiness: probe("readinessProbe"),
        startup: probe("startupProbe"),
        max_surge: dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"].as_u64().unwrap_or(1) as usize,
        config: cm["data"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
            .collect(),
    }
}

/// kubelet's projection of a ConfigMap volume, generation `n`.
fn project(dir: &Path, n: u32, data: &[(String, String)]) {
    let ts = format!("..2026_11_26_00_00_{n:02}.{n}");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    for (k, v) in data {
        std::fs::write(dir.join(&ts).join(k), v).unwrap();
        if std::fs::symlink_metadata(dir.join(k)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), dir.join(k)).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Opens a TCP connection inside a network namespace: a socket belongs to
/// the namespace of the thread that creates it.
fn connect_in(netns: &str, port: u16) -> std::io::Result<TcpStream> {
    let ns = netns.to_owned();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
        // SAFETY: setns on this short-lived thread only; the socket made
        // afterwards lives in that namespace and can be used anywhere.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(s)
    })
    .join()
    .unwrap()
}

fn get_in(netns: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = connect_in(netns, port)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let code = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

struct Pod {
    name: String,
    child: Child,
    config_dir: PathBuf,
    ready: Arc<AtomicBool>,
    terminating: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    log: PathBuf,
}

impl Pod {
    /// Creates the netns, projects the ConfigMap, starts the container and
    /// its probe loop.
    fn start(name: &str, spec: &Spec, dir: &Path) -> Pod {
        // A namespace left by an earlier, interrupted run.
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        assert!(Command::new("ip").args(["netns", "add", name]).status().unwrap().success());
        assert!(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]).status().unwrap().success());
        let config_dir = dir.join(name).join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        project(&config_dir, 1, &spec.config);
        let args: Vec<String> = spec
            .args
            .iter()
            .map(|a| if *a == spec.mount { config_dir.display().to_string() } else { a.clone() })
            .collect();
        let log = dir.join(name).join("container.log");
        let child = Command::new("ip")
            .args(["netns", "exec", name, "unshare", "--pid", "--fork", "--mount-proc", "--kill-child", BIN])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pod = Pod {
            name: name.to_owned(),
            child,
            config_dir,
            ready: Arc::new(AtomicBool::new(false)),
            terminating: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            log,
        };
        pod.probe_loop(spec);
        pod
    }

    /// startupProbe until it passes, then readinessProbe at its period; a
    /// pod turns unready after `failureThreshold` consecutive failures.
    fn probe_loop(&self, spec: &Spec) {
        let (ns, port, s) = (self.name.clone(), spec.probe_port, spec.clone());
        let (ready, stop) = (self.ready.clone(), self.stop.clone());
        std::thread::spawn(move || {
            let ok = |path: &str| get_in(&ns, port, path).map(|(c, _)| c == 200).unwrap_or(false);
            let mut fails = 0;
            while !stop.load(Ordering::Relaxed) && !ok("/startupz") {
                fails += 1;
                assert!(fails <= s.startup.failure_threshold * 10, "startup probe never passed for {ns}");
                std::thread::sleep(s.startup.period);
            }
            let mut failures = 0;
            while !stop.load(Ordering::Relaxed) {
                if ok("/readyz") {
                    failures = 0;
                    ready.store(true, Ordering::Relaxed);
                } else {
                    failures += 1;
                    if failures >= s.readiness.failure_threshold {
                        ready.store(false, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(s.readiness.period);
            }
        });
    }

    fn endpoint(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.terminating.load(Ordering::Relaxed)
    }

    /// The podmaster process (PID 1 of the pod), as seen from here: the
    /// child of `unshare` (which `ip netns exec` exec'd into) running BIN.
    fn pid1(&self) -> i32 {
        wait_for("pod PID 1", DEADLINE, || {
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id())).ok()?;
            kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()).find(|pid| {
                *pid > 1
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|c| c.starts_with(BIN.as_bytes()))
                        .unwrap_or(false)
            })
        })
    }

    /// Pod deletion: out of the endpoints and SIGTERM at once, SIGKILL
    /// after the grace period. Returns podmaster's exit code and how long
    /// it took.
    fn terminate(mut self, spec: &Spec) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        self.terminating.store(true, Ordering::Relaxed);
        let pid = self.pid1();
        // SAFETY: kill(2) of the pod's PID 1 we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > spec.grace {
                // SAFETY: as above; kubelet's SIGKILL after the grace period.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        (status.code(), t0.elapsed())
    }
}

/// A pod as the endpoints controller sees it: name, ready, terminating.
type EndpointState = (String, Arc<AtomicBool>, Arc<AtomicBool>);

/// The service: clients send requests to whichever pods are endpoints.
struct Service {
    pods: Arc<Mutex<Vec<EndpointState>>>,
}

impl Service {
    fn add(&self, p: &Pod) {
        self.pods.lock().unwrap().push((p.name.clone(), p.ready.clone(), p.terminating.clone()));
    }

    fn endpoints(&self) -> Vec<String> {
        self.pods
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r, t)| r.load(Ordering::Relaxed) && !t.load(Ordering::Relaxed))
            .map(|(n, _, _)| n.clone())
            .collect()
    }
}

struct LoadStats {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
}

fn start_load(
    svc: Arc<Service>,
    port: u16,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<LoadStats>, Vec<std::thread::JoinHandle<()>>) {
    let stats = Arc::new(LoadStats { ok: AtomicU64::new(0), failed: AtomicU64::new(0), errors: Mutex::new(vec![]) });
    let handles = (0..threads)
        .map(|t| {
            let (svc, stop, stats) = (svc.clone(), stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    let eps = svc.endpoints();
                    if eps.is_empty() {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    n += 1;
                    let ep = &eps[n % eps.len()];
                    match get_in(ep, port, "/Kube") {
                        Ok((200, b)) if b == "Hello, Kube" => {
                            stats.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            stats.failed.fetch_add(1, Ordering::Relaxed);
                            let mut e = stats.errors.lock().unwrap();
                            if e.len() < 10 {
                                e.push(format!("{ep}: {other:?}"));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    (stats, handles)
}

fn values(extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        format!("config.options.python-worker-override={}", example_script()),
        "config.options.processes=2".to_string(),
        // The simulation follows the spec's timings; shorter ones keep it quick.
        "config.options.drain-delay=2".to_string(),
        "config.options.worker-reload-mercy=10".to_string(),
        "config.options.config-check-interval=0.5".to_string(),
        "probes.readiness.periodSeconds=1".to_string(),
        "probes.readiness.failureThreshold=1".to_string(),
        "probes.startup.periodSeconds=1".to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn wait_endpoints(svc: &Service, n: usize) {
    wait_for(&format!("{n} endpoints"), Duration::from_secs(60), || (svc.endpoints().len() == n).then_some(()));
}

#[test]
#[cfg_attr(
    not(all(have_netns, have_pidns, have_helm)),
    ignore = "needs root, network and PID namespaces (iproute2, util-linux) and helm: run bash scripts/test-deps.sh, then cargo test, as root"
)]
fn rollout_restart_scale_down_and_worker_crash() {
    let spec = render(&values(&[]));
    assert_eq!(spec.grace, Duration::from_secs(2 + 10 + 5), "grace = drain-delay + mercy + margin");
    let dir = TempDir::new("kubelet");
    let svc = Arc::new(Service { pods: Arc::new(Mutex::new(vec![])) });
    let mut pods: Vec<Pod> = (0..2).map(|i| Pod::start(&format!("pmk-a{i}"), &spec, dir.path())).collect();
    for p in &pods {
        svc.add(p);
    }
    wait_endpoints(&svc, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_load(svc.clone(), spec.http_port, 4, stop.clone());
    wait_for("load flowing", DEADLINE, || (stats.ok.load(Ordering::Relaxed) > 50).then_some(()));

    // kubectl rollout restart: maxSurge new pods first, an old one goes only
    // once its replacement is ready (maxUnavailable 0).
    let mut results = HashMap::new();
    let old: Vec<Pod> = std::mem::take(&mut pods);
    for (i, o) in old.into_iter().enumerate() {
        let batch: Vec<Pod> =
            (0..spec.max_surge).map(|j| Pod::start(&format!("pmk-b{i}{j}"), &spec, dir.path())).collect();
        for p in &batch {
            svc.add(p);
        }
        wait_for("replacement ready", Duration::from_secs(60), || batch.iter().all(Pod::endpoint).then_some(()));
        pods.extend(batch);
        let (code, took) = o.terminate(&spec);
        assert_eq!(code, Some(0), "old pod drained cleanly");
        results.insert(format!("terminate {i}"), took);
    }
    let after_rollout = (stats.ok.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed));

    // A worker crash inside one pod (SIGKILL): reported, not asserted zero.
    let victim = {
        let pid1 = pods[0].pid1();
        let kids = std::fs::read_to_string(format!("/proc/{pid1}/task/{pid1}/children")).unwrap();
        kids.split_whitespace().next().unwrap().parse::<i32>().unwrap()
    };
    assert!(victim > 1);

    let before_crash = stats.failed.load(Ordering::Relaxed);
    // SAFETY: kill(2) of a worker of the pod we started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(2));
    let crash_failed = stats.failed.load(Ordering::Relaxed) - before_crash;

    // Scale-down to one replica.
    let before_scale = stats.failed.load(Ordering::Relaxed);
    let gone = pods.pop().unwrap();
    let (code, _) = gone.terminate(&spec);
    assert_eq!(code, Some(0));
    std::thread::sleep(Duration::from_secs(1));
    let scale_failed = stats.failed.load(Ordering::Relaxed) - before_scale;

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let errors = stats.errors.lock().unwrap().clone();
    eprintln!(
        "kubelet sim: rollout restart of 2 pods: ok {} failed {} (terminations {:?}); worker SIGKILL: {} failed; scale-down: {} failed; total ok {}",
        after_rollout.0,
        after_rollout.1,
        results,
        crash_failed,
        scale_failed,
        stats.ok.load(Ordering::Relaxed)
    );
    assert_eq!(after_rollout.1, 0, "rollout restart: {errors:?}");
    assert_eq!(scale_failed, 0, "scale-down: {errors:?}");
    for p in pods {
        let log = p.log.clone();
        let (code, _) = p.terminate(&spec);
        assert_eq!(code, Some(0), "{}", std::fs::read_to_string(log).unwrap_or_default());
    }
}

#[test]
#[cfg_attr(
    not(all(have_netns, have_pidns, have_helm)),
    ignore = "needs root, network and PID namespaces (iproute2, util-linux) and helm: run bash scripts/test-deps.sh, then cargo test, as root"
)]
fn configmap_change_rolls_workers_in_place_or_flags_a_pod_rollout() {
    // In-place mode: the ConfigMap directory is watched, workers roll, the pod stays.
    let spec = render(&values(&["reloadOnConfigChange=true"]));
    assert!(!spec.args.iter().any(|a| a.contains("reload-on-config-change=false")));
    let dir = TempDir::new("kubelet-cm");
    let svc = Arc::new(Service { pods: Arc::new(Mutex::new(vec![])) });
    let pod = Pod::start("pmk-cm0", &spec, dir.path());
    svc.add(&pod);
    wait_endpoints(&svc, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_load(svc.clone(), spec.http_port, 3, stop.clone());
    wait_for("load flowing", DEADLINE, || (stats.ok.load(Ordering::Relaxed) > 50).then_some(()));
    let mut changed = spec.config.clone();
    for (k, v) in &mut changed {
        if k == "processes" {
            *v = "3".into();
        }
    }
    let pid1 = pod.pid1();
    project(&pod.config_dir, 2, &changed);
    wait_for("3 workers after the in-place roll", Duration::from_secs(60), || {
        let (_, body) = get_in(&pod.name, spec.probe_port, "/readyz").ok()?;
        (body == "ready: 3/3 workers accepting\n").then_some(())
    });
    assert_eq!(pod.pid1(), pid1, "same pod, no restart");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let (ok, failed) = (stats.ok.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed));
    eprintln!("kubelet sim: in-place ConfigMap change: ok {ok} failed {failed}");
    assert_eq!(failed, 0, "{:?}", stats.errors.lock().unwrap());
    assert_eq!(pod.terminate(&spec).0, Some(0));

    // Checksum mode: a config change changes the pod template (a rollout,
    // exercised by the other test), and podmaster itself ignores the files.
    let a = render(&values(&[]));
    let b = render(&values(&["config.options.processes=3"]));
    assert!(a.args.iter().any(|x| x == "--reload-on-config-change=false"));
    let checksum = |vals: &[String]| {
        let out = Command::new(tool("helm"))
            .args(["template", "k", &format!("{ROOT}/charts/podmaster")])
            .args(vals.iter().flat_map(|v| ["--set".to_string(), v.clone()]))
            .output()
            .unwrap();
        let t = String::from_utf8(out.stdout).unwrap();
        t.lines().find(|l| l.contains("checksum/config")).unwrap().to_owned()
    };
    assert_ne!(checksum(&values(&[])), checksum(&values(&["config.options.processes=3"])));
    assert_ne!(a.config, b.config);
}
