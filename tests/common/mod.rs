//! Shared helpers for integration tests: run the real podmaster binary,
//! talk HTTP to it over real sockets, poll with deadlines (never a bare
//! sleep), and inspect processes through /proc.
#![allow(dead_code)]

pub mod wsgi;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_podmaster");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Generous upper bound for anything that should take well under a second
/// on an idle machine; CI machines are slower and shared.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("podmaster-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port for a test to configure. Chosen below the kernel's
/// ephemeral range (so no client connection of a concurrent test can be
/// given it meanwhile), never the same twice in one test binary, and
/// checked bindable on every address.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(11_000, 65_000));
    // Test binaries run one after another, often several at once (CI):
    // start each at a place drawn from its pid.
    let start = (std::process::id().wrapping_mul(2_654_435_761)) % (high - low);
    for _ in 0..(high - low) {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % (high - low)) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free TCP port between {low} and {high}");
}

/// A test tool that scripts/test-deps.sh installs into .tools/bin (helm,
/// kubernetes-validate). Tests that use one are ignored unless build.rs
/// found it (`have_helm`, ...).
pub fn tool(name: &str) -> PathBuf {
    Path::new(ROOT).join(".tools/bin").join(name)
}

/// The Python of scripts/test-deps.sh's venv (with prometheus_client).
pub fn tools_python() -> PathBuf {
    Path::new(ROOT).join(".tools/venv/bin/python3")
}

/// Runs `tests/scripts/NAME` with [`tools_python`], `input` on its stdin;
/// its output (the caller checks the status).
pub fn python_filter(name: &str, input: &[u8]) -> std::process::Output {
    let mut p = Command::new(tools_python())
        .arg(format!("{ROOT}/tests/scripts/{name}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut p.stdin.take().unwrap(), input).unwrap();
    p.wait_with_output().unwrap()
}

pub fn example_script() -> String {
    format!("{ROOT}/examples/hello/hello.py")
}

pub fn test_script() -> String {
    format!("{ROOT}/tests/scripts/app.py")
}

/// A running podmaster with its stderr captured to a file.
pub struct Instance {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub probe: String,
    pub ports: Vec<u16>,
    _dir: Option<TempDir>,
}

/// An ini for `processes` workers running `script` (none if empty: then
/// `extra` sets worker-exec) on `nsockets` fresh ports, a probe socket,
/// and `extra` lines.
pub fn ini(script: &str, processes: u32, nsockets: usize, extra: &str) -> (String, Vec<u16>, String) {
    let ports: Vec<u16> = (0..nsockets).map(|_| free_port()).collect();
    let probe = format!("127.0.0.1:{}", free_port());
    let mut s = String::from("[uwsgi]\n");
    for p in &ports {
        s += &format!("socket = 127.0.0.1:{p}\n");
    }
    if !script.is_empty() {
        s += &format!("python-worker-override = {script}\n");
    }
    s += &format!("master = true\nprocesses = {processes}\nprobe-socket = {probe}\n{extra}\n");
    (s, ports, probe)
}

impl Instance {
    /// Starts podmaster with an ini built by [`ini`].
    pub fn start(script: &str, processes: u32, nsockets: usize, extra: &str) -> Instance {
        Self::start_with(script, processes, nsockets, extra, &[], |c| c)
    }

    pub fn start_with(
        script: &str,
        processes: u32,
        nsockets: usize,
        extra: &str,
        env: &[(&str, &str)],
        wrap: impl FnOnce(Command) -> Command,
    ) -> Instance {
        let dir = TempDir::new("inst");
        let (text, ports, probe) = ini(script, processes, nsockets, extra);
        let ini_path = dir.write("podmaster.ini", &text);
        let mut cmd = Command::new(BIN);
        cmd.arg("--ini").arg(&ini_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let cmd = wrap(cmd);
        let mut inst = Self::spawn(cmd, dir.path().join("stderr.log"));
        inst.probe = probe;
        inst.ports = ports;
        inst._dir = Some(dir);
        inst
    }

    /// Spawns an arbitrary podmaster command line with stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Instance {
        let f = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(f);
        let child = cmd.spawn().expect("spawn podmaster");
        Instance { child: Some(child), log, probe: String::new(), ports: vec![], _dir: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn probe_get(&self, path: &str) -> Option<Response> {
        http_get(&self.probe, path).ok()
    }

    pub fn wait_ready(&self) {
        let end = Instant::now() + DEADLINE;
        while self.probe_get("/readyz").filter(|r| r.status == 200).is_none() {
            assert!(Instant::now() < end, "timed out waiting for /readyz 200; logs:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        // CI's lazy-apps pass (.ci/run) must really run without a zygote.
        if std::env::var("UWSGI_LAZY_APPS").is_ok_and(|v| v == "true") {
            let status = self.probe_get("/status").map(|r| r.body).unwrap_or_default();
            assert!(!status.contains("\"preforked\": true"), "UWSGI_LAZY_APPS=true yet preforked: {status}");
        }
    }

    /// Waits for the master to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let st = wait_for("podmaster to exit", timeout, || child.try_wait().ok().flatten());
        self.child = None;
        st
    }

    /// Worker pids as reported by /status.
    pub fn worker_pids(&self) -> Vec<(u32, i32)> {
        let r = self.probe_get("/status").expect("/status");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (w["id"].as_u64().unwrap() as u32, w["pid"].as_i64().unwrap() as i32))
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Workers die with the master (parent-death signal).
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 GET with `Connection: close`, 30 s I/O timeouts.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {raw:?}")))
}

/// One HTTP/1.1 request with extra header lines (`"Accept: text/plain"`),
/// `Connection: close`, 30 s I/O timeouts; a HEAD answer has an empty body.
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[&str]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {raw:?}")))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().into(), v.trim().into()))).collect();
    Some(Response { status, headers, body: body.to_string() })
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still has a /proc entry; count it as alive (not reaped).
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Process state letter from /proc/PID/stat (R, S, Z, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].chars().next()
}

/// Pids from log lines like `worker spawned worker=1 pid=4939`.
pub fn spawned_pids(log: &str) -> Vec<i32> {
    log.lines()
        .filter(|l| l.contains("worker spawned"))
        .filter_map(|l| l.split("pid=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Value of an unlabelled sample in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sends a GET without reading the answer (to hold a request in flight).
pub fn start_request(addr: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    s
}

pub fn finish_request(mut s: TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {raw:?}")))
}

/// The pid among `pids` that has accepted the server side of `client`
/// (found through /proc/net/tcp inodes), once one has.
pub fn accepted_by(client: &TcpStream, pids: &[i32]) -> Option<i32> {
    let local = client.local_addr().ok()?.port();
    let remote = client.peer_addr().ok()?.port();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let port = |s: &str| u16::from_str_radix(s.rsplit(':').next()?, 16).ok();
        (port(f[1])? == remote && port(f[2])? == local).then(|| f[9].to_owned())
    })?;
    let target = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).map(|l| l.display().to_string() == target).unwrap_or(false))
    })
}

/// A client load: `threads` loops of GET requests (a new connection each)
/// until stopped. Counts successes and failures.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(u64, u64, Vec<String>)>>,
}

impl Load {
    pub fn start(addrs: Vec<String>, threads: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                let addrs = addrs.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
                    let mut n = t;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let addr = &addrs[n % addrs.len()];
                        n += 1;
                        match http_get(addr, "/Load") {
                            Ok(r) if r.status == 200 && r.body == "Hello, Load" => ok += 1,
                            Ok(r) => {
                                failed += 1;
                                errors.push(format!("{} {}", r.status, r.body));
                            }
                            Err(e) => {
                                failed += 1;
                                errors.push(e.to_string());
                            }
                        }
                    }
                    (ok, failed, errors)
                })
            })
            .collect();
        Load { stop, handles }
    }

    /// Stops the load; returns (ok, failed, first errors).
    pub fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = (0, 0, Vec::new());
        for h in self.handles {
            let (o, f, e) = h.join().unwrap();
            total.0 += o;
            total.1 += f;
            total.2.extend(e.into_iter().take(5));
        }
        total
    }
}

/// Samples `podmaster_workers_accepting` from /metrics until stopped;
/// returns the minimum seen and the number of samples.
pub struct AcceptingSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(f64, u64)>,
}

impl AcceptingSampler {
    pub fn start(probe: String) -> AcceptingSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut min, mut n) = (f64::MAX, 0);
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(v) =
                    http_get(&probe, "/metrics").ok().and_then(|r| metric(&r.body, "podmaster_workers_accepting"))
                {
                    min = min.min(v);
                    n += 1;
                }
            }
            (min, n)
        });
        AcceptingSampler { stop, handle }
    }

    pub fn finish(self) -> (f64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Value of a labelled sample, e.g. `podmaster_reloads_total{result="ok"}`.
pub fn metric_with(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Instance {
    pub fn metrics(&self) -> String {
        self.probe_get("/metrics").map(|r| r.body).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.probe_get("/status").expect("/status").body).unwrap()
    }

    pub fn wait_metric(&self, series: &str, at_least: f64) {
        wait_for(&format!("{series} >= {at_least}"), DEADLINE, || {
            (metric_with(&self.metrics(), series)? >= at_least).then_some(())
        });
    }
}

/// Lays out `dir` the way kubelet projects a ConfigMap volume: the files
/// live in a timestamped directory, `..data` points at it, and each key is
/// a symlink through `..data`. An update writes a new timestamped
/// directory and swaps `..data` atomically with a rename.
pub fn project(dir: &std::path::Path, generation: u32, data: &[(&str, &str)]) {
    let ts = format!("..2026_11_26_00_00_{generation:02}.{generation}");
    std::fs::create_dir_all(dir.join(&ts)).unwrap();
    for (k, v) in data {
        std::fs::write(dir.join(&ts).join(k), v).unwrap();
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Runs `f` on a helper thread and waits at most `deadline` (generated
/// inputs must neither hang nor blow up); a panic in `f` is re-raised here
/// so proptest sees it and shrinks the input.
pub fn bounded_within<T: Send + 'static>(what: &str, deadline: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(deadline) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: no answer within {deadline:?}"),
    }
}

/// A proptest configuration with `n` cases (PROPTEST_CASES, when set,
/// overrides it for a longer soak) and no persisted failures.
pub fn proptest_cases(n: u32) -> proptest::test_runner::Config {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    proptest::test_runner::Config { cases: n, failure_persistence: None, ..Default::default() }
}
