//! The WSGI worker's access log and request metrics (issue 20), end to
//! end against a real podmaster and real HTTP: log lines parsed as JSON
//! and as a uWSGI log format, `disable-logging`/`log-4xx`/`log-5xx`; the
//! `podmaster_http_*` metrics parsed by Prometheus' own parser and checked
//! against the requests sent, across a chain reload and a worker killed
//! mid-request; the listen queue and the queue-wait histogram while the
//! workers are stuck.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

const APP: &str = r#"
import mmap, os, time

def scribble():
    # A hostile app: garbage over every word of the request-metrics region.
    master = os.getppid()
    for name in os.listdir(f"/proc/{master}/fd"):
        target = os.readlink(f"/proc/{master}/fd/{name}")
        if target.startswith("/memfd:podmaster-http"):
            fd = os.open(f"/proc/{master}/fd/{name}", os.O_RDWR)
            size = os.fstat(fd).st_size
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            m[:] = (bytes(range(256)) + b"\xff" * 256) * (size // 512)
            m.close()
            os.close(fd)
            return b"scribbled\n"
    return b"no region\n"

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/scribble":
        body = scribble()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/logvar":
        import uwsgi
        uwsgi.set_logvar("user_id", "41")
        uwsgi.set_logvar(b"user_id", b"42")
        uwsgi.set_logvar("evil", 'a"b\nc')
        body = f"{uwsgi.get_logvar('user_id')!r} {uwsgi.get_logvar('nope')}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/id":
        body = f"{environ.get('podmaster.request_id')} {environ.get('HTTP_X_REQUEST_ID')}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/sleep/"):
        time.sleep(float(path[len("/sleep/"):]))
    status = {"/404": "404 Not Found", "/500": "500 Internal Server Error"}.get(path, "200 OK")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
"#;

/// A podmaster serving [`APP`] on an HTTP socket: (instance, address, its dir).
fn serve(processes: u32, extra: &str) -> (Instance, String, TempDir) {
    let dir = TempDir::new("wsgi-obs");
    dir.write("obsapp.py", APP);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!("module = obsapp\npythonpath = {}\nhttp-socket = {addr}\n{extra}", dir.path().display());
    let inst = Instance::start("", processes, 0, &extra);
    inst.wait_ready();
    (inst, addr, dir)
}

fn status_of(addr: &str, path: &str, headers: &[&str]) -> u16 {
    http_request(addr, "GET", path, headers).unwrap().status
}

/// The request lines in the log that `is_request` picks, once there are `n`.
fn request_lines(inst: &Instance, n: usize, is_request: impl Fn(&str) -> bool) -> Vec<String> {
    wait_for(&format!("{n} request lines"), DEADLINE, || {
        let lines: Vec<String> = inst.logs().lines().filter(|l| is_request(l)).map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    })
}

#[test]
fn json_request_lines_carry_the_request() {
    let (inst, addr, _d) = serve(2, "log-format = json");
    assert_eq!(status_of(&addr, "/hello?x=1", &["X-Request-Id: trace-42", "User-Agent: obs-test/1"]), 200);
    assert_eq!(status_of(&addr, "/404", &[]), 404);
    assert_eq!(status_of(&addr, "/500", &["X-Request-Id: not sane"]), 500);
    let lines = request_lines(&inst, 3, |l| l.contains("\"message\":\"request\""));
    let events: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let by_path = |p: &str| events.iter().find(|e| e["path"] == p).unwrap_or_else(|| panic!("{p}: {lines:?}"));
    let pids: Vec<i64> = inst.worker_pids().iter().map(|(_, p)| i64::from(*p)).collect();
    for (path, status) in [("/hello?x=1", 200), ("/404", 404), ("/500", 500)] {
        let e = by_path(path);
        assert_eq!((e["method"].as_str(), e["status"].as_i64()), (Some("GET"), Some(status)), "{e}");
        assert_eq!((e["level"].as_str(), e["bytes"].as_i64()), (Some("INFO"), Some(3)), "{e}");
        assert!(e["duration_ms"].as_f64().is_some_and(|d| (0.0..10_000.0).contains(&d)), "{e}");
        assert!(pids.contains(&e["pid"].as_i64().unwrap()), "{e} {pids:?}");
        assert!((1..=2).contains(&e["worker"].as_i64().unwrap()), "{e}");
        assert_eq!(e["remote_addr"], "127.0.0.1");
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    assert_eq!(by_path("/hello?x=1")["request_id"], "trace-42");
    assert_eq!(by_path("/hello?x=1")["user_agent"], "obs-test/1");
    for path in ["/404", "/500"] {
        let id = by_path(path)["request_id"].as_str().unwrap().to_owned();
        assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "generated: {id}");
    }
    assert_ne!(by_path("/404")["request_id"], by_path("/500")["request_id"]);
}

#[test]
fn uwsgi_log_format_lines() {
    let format = r#"%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) "%(referer)" "%(uagent)" rsize=%(rsize) ms=%(msecs) wid=%(wid) pid=%(pid) fwd=%(var.HTTP_X_FORWARDED_FOR) rid=%(request_id) x=%(nope)"#;
    let (inst, addr, _d) = serve(1, &format!("logformat = {format}\nthreads = 1"));
    let headers =
        ["Referer: http://ref/", "User-Agent: ua \"quoted\"", "X-Forwarded-For: 192.0.2.7", "X-Request-Id: r1"];
    assert_eq!(status_of(&addr, "/a/b?c=d", &headers), 200);
    assert_eq!(status_of(&addr, "/404", &[]), 404);
    let lines = request_lines(&inst, 2, |l| l.starts_with("127.0.0.1 - - ["));
    let pid = inst.worker_pids()[0].1;
    // `[06/May/2024:12:53:20 +0000]` then the rest, exactly.
    let rest = |l: &str| l.split_once("] ").map(|(t, r)| (t.to_owned(), r.to_owned())).unwrap();
    let (time, first) = rest(&lines[0]);
    assert!(time.ends_with(" +0000") && time.len() == "127.0.0.1 - - [06/May/2024:12:53:20 +0000".len(), "{time}");
    let size_and_ms = |l: &str| {
        let ms = l.split(" ms=").nth(1).and_then(|r| r.split(' ').next()).unwrap().to_owned();
        (l.split(' ').nth(4).unwrap().to_owned(), ms)
    };
    let (size, ms) = size_and_ms(&first);
    assert!(size.parse::<u64>().unwrap() > 3, "head and body: {first}");
    assert!(ms.parse::<u64>().is_ok(), "{first}");
    assert_eq!(
        first,
        format!(
            r#""GET /a/b?c=d HTTP/1.1" 200 {size} "http://ref/" "ua \x22quoted\x22" rsize=3 ms={ms} wid=1 pid={pid} fwd=192.0.2.7 rid=r1 x=-"#
        )
    );
    let (_, second) = rest(&lines[1]);
    let (size, ms) = size_and_ms(&second);
    assert!(
        second.starts_with(&format!(r#""GET /404 HTTP/1.1" 404 {size} "-" "-" rsize=3 ms={ms} wid=1 "#)),
        "{second}"
    );
    let logs = inst.logs();
    assert!(!logs.contains("is a uWSGI request-log format"), "no notice when the WSGI worker logs requests: {logs}");
}

/// `disable-logging` with `log-4xx` / `log-5xx`: only those statuses are
/// logged, as uWSGI's default line. One worker thread: its lines come in
/// request order, so the last line's arrival means the earlier ones would
/// have been written.
#[test]
fn disable_logging_keeps_only_what_log_4xx_and_log_5xx_ask_for() {
    for (extra, logged) in [
        ("disable-logging = true\nlog-5xx = true", &["/500"][..]),
        ("disable-logging\nlog-4xx = true\nlog-5xx = true", &["/404", "/500"][..]),
        ("disable-logging = false", &["/", "/404", "/500"][..]),
    ] {
        let (inst, addr, _d) = serve(1, &format!("threads = 1\n{extra}"));
        for path in ["/", "/404", "/500", "/", "/500"] {
            status_of(&addr, path, &[]);
        }
        let is_line = |l: &str| l.starts_with("[pid: ");
        let want = logged.len() + usize::from(logged.contains(&"/500")) + usize::from(logged.contains(&"/"));
        let lines = request_lines(&inst, want, is_line);
        // The last request is a logged 500: once its line is there, every
        // earlier request's would be too (one thread, in order).
        assert!(lines.last().unwrap().contains("|req: 5/5] "), "{extra}: {lines:?}");
        assert_eq!(lines.len(), want, "{extra}: {lines:?}");
        for l in &lines {
            let path = l.split(" GET ").nth(1).and_then(|r| r.split(' ').next()).unwrap();
            assert!(logged.contains(&path), "{extra}: {l}");
            assert!(l.contains("] 127.0.0.1 () {") && l.contains(" => generated 3 bytes in "), "{l}");
        }
    }
}

type Labels = serde_json::Map<String, serde_json::Value>;
/// A parsed sample: (name, labels, value).
type Sample = (String, Labels, f64);

/// Every sample of the OpenMetrics exposition, through prometheus_client's
/// parser.
fn samples(inst: &Instance) -> Vec<Sample> {
    let r =
        http_request(&inst.probe, "GET", "/metrics", &["Accept: application/openmetrics-text; version=1.0.0"]).unwrap();
    let out = python_filter("metric_samples.py", r.body.as_bytes());
    assert!(out.status.success(), "parser rejected: {}\n{}", String::from_utf8_lossy(&out.stderr), r.body);
    let v: Vec<(String, String, String, Labels, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter().map(|(_, _, name, labels, value)| (name, labels, value)).collect()
}

fn value(
    s: &[(String, serde_json::Map<String, serde_json::Value>, f64)],
    name: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    s.iter()
        .filter(|(n, l, _)| n == name && label.is_none_or(|(k, v)| l.get(k).and_then(|x| x.as_str()) == Some(v)))
        .map(|(_, _, v)| *v)
        .sum()
}

/// (2xx, 4xx, 5xx, histogram count, in flight) as parsed.
fn counts(inst: &Instance) -> (f64, f64, f64, f64, f64) {
    let s = samples(inst);
    let class = |c| value(&s, "podmaster_http_requests_total", Some(("code_class", c)));
    (
        class("2xx"),
        class("4xx"),
        class("5xx"),
        value(&s, "podmaster_http_request_duration_seconds_count", None),
        value(&s, "podmaster_http_requests_in_flight", None),
    )
}

fn wait_counts(inst: &Instance, want: (f64, f64, f64, f64, f64)) {
    wait_for(&format!("counts {want:?}"), DEADLINE, || (counts(inst) == want).then_some(()));
}

#[test]
#[cfg_attr(
    not(have_prometheus_client),
    ignore = "needs Python's prometheus_client in .tools/venv: run bash scripts/test-deps.sh"
)]
fn request_metrics_count_exactly_and_survive_a_chain_reload() {
    let (inst, addr, _d) = serve(2, "");
    for (path, n) in [("/", 7), ("/404", 3), ("/500", 2)] {
        for _ in 0..n {
            status_of(&addr, path, &[]);
        }
    }
    wait_counts(&inst, (7.0, 3.0, 2.0, 12.0, 0.0));
    let s = samples(&inst);
    for class in ["1xx", "3xx", "other"] {
        assert_eq!(value(&s, "podmaster_http_requests_total", Some(("code_class", class))), 0.0, "{class}");
    }
    let inf = value(&s, "podmaster_http_request_duration_seconds_bucket", Some(("le", "+Inf")));
    let fast = value(&s, "podmaster_http_request_duration_seconds_bucket", Some(("le", "1.0")));
    assert_eq!((inf, fast), (12.0, 12.0), "12 quick requests");
    assert!(value(&s, "podmaster_http_request_duration_seconds_sum", None) > 0.0);
    assert_eq!(value(&s, "podmaster_http_request_queue_seconds_count", None), 12.0, "TCP: every request measured");
    assert!(s.iter().any(|(n, l, v)| n == "podmaster_socket_listen_backlog" && l.contains_key("socket") && *v > 0.0));
    // A chain reload replaces both workers: nothing counted is lost.
    inst.signal(libc::SIGHUP);
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    assert_eq!(counts(&inst), (7.0, 3.0, 2.0, 12.0, 0.0));
    status_of(&addr, "/", &[]);
    wait_counts(&inst, (8.0, 3.0, 2.0, 13.0, 0.0));
}

#[test]
fn in_flight_returns_to_zero_when_a_worker_is_killed_mid_request() {
    let (inst, addr, _d) = serve(1, "threads = 2");
    status_of(&addr, "/", &[]);
    inst.wait_metric("podmaster_http_requests_total{code_class=\"2xx\"}", 1.0);
    let mut stuck = TcpStream::connect(&addr).unwrap();
    write!(stuck, "GET /sleep/60 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    inst.wait_metric("podmaster_http_requests_in_flight{worker=\"1\"}", 1.0);
    let (_, pid) = inst.worker_pids()[0];
    // SAFETY: kill(2) on the worker this test's podmaster started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut buf = Vec::new();
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = stuck.read_to_end(&mut buf);
    wait_for("a new worker", DEADLINE, || {
        let now = inst.worker_pids();
        (now[0].1 != pid && now[0].1 > 0 && inst.probe_get("/readyz")?.status == 200).then_some(())
    });
    let in_flight = || metric_with(&inst.metrics(), "podmaster_http_requests_in_flight{worker=\"1\"}");
    assert_eq!(in_flight(), Some(0.0), "{}", inst.metrics());
    status_of(&addr, "/", &[]);
    inst.wait_metric("podmaster_http_requests_total{code_class=\"2xx\"}", 2.0);
    assert_eq!(in_flight(), Some(0.0));
}

#[test]
fn the_listen_queue_and_queue_wait_show_requests_waiting_for_a_stuck_worker() {
    let unix_dir = TempDir::new("wsgi-obs-unix");
    let unix = unix_dir.path().join("http.sock");
    let (inst, addr, _d) = serve(1, &format!("threads = 1\nhttp-socket = {}", unix.display()));
    let sleeper = {
        let addr = addr.clone();
        std::thread::spawn(move || status_of(&addr, "/sleep/2", &[]))
    };
    inst.wait_metric("podmaster_http_requests_in_flight{worker=\"1\"}", 1.0);
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || status_of(&addr, "/", &[]))
        })
        .collect();
    let socket = format!("podmaster_socket_listen_queue{{socket=\"{addr}\"}}");
    wait_for("connections in the listen queue", DEADLINE, || {
        (metric_with(&inst.metrics(), &socket)? >= 1.0).then_some(())
    });
    // A UNIX socket's queue too (sock_diag), where the kernel has unix_diag.
    let unix_clients: Vec<_> = (0..2).map(|_| std::os::unix::net::UnixStream::connect(&unix).unwrap()).collect();
    let unix_series = format!("podmaster_socket_listen_queue{{socket=\"{}\"}}", unix.display());
    match metric_with(&inst.metrics(), &unix_series) {
        Some(_) => wait_for("UNIX connections in the listen queue", DEADLINE, || {
            (metric_with(&inst.metrics(), &unix_series)? >= 2.0).then_some(())
        }),
        None => eprintln!("no unix_diag in this kernel: the UNIX socket's queue is not exported; not checked"),
    }
    drop(unix_clients);
    assert_eq!(sleeper.join().unwrap(), 200);
    for w in waiting {
        assert_eq!(w.join().unwrap(), 200);
    }
    inst.wait_metric("podmaster_http_request_queue_seconds_count", 4.0);
    wait_for("the queue drained", DEADLINE, || (metric_with(&inst.metrics(), &socket)? == 0.0).then_some(()));
    let m = inst.metrics();
    let quick = metric_with(&m, "podmaster_http_request_queue_seconds_bucket{le=\"0.25\"}").unwrap();
    let sum = metric_with(&m, "podmaster_http_request_queue_seconds_sum").unwrap();
    assert!(quick <= 1.0, "the three queued requests waited for the sleeper: {m}");
    assert!(sum >= 3.0 * 0.5, "{m}");
}

/// A worker (here the app itself) writing garbage over every cell of the
/// request-metrics region: the master reads bounded numbers, its
/// exposition still parses, and it keeps answering.
#[test]
#[cfg_attr(
    not(have_prometheus_client),
    ignore = "needs Python's prometheus_client in .tools/venv: run bash scripts/test-deps.sh"
)]
fn a_worker_scribbling_over_the_request_metrics_cannot_break_the_master() {
    let (inst, addr, _d) = serve(2, "");
    let r = http_request(&addr, "GET", "/scribble", &[]).unwrap();
    if is_root() {
        assert_eq!(r.body, "scribbled\n", "as root the app reaches the master's memfds");
    }
    for _ in 0..3 {
        status_of(&addr, "/", &[]);
    }
    let s = samples(&inst);
    let count = value(&s, "podmaster_http_request_duration_seconds_count", None);
    let inf = value(&s, "podmaster_http_request_duration_seconds_bucket", Some(("le", "+Inf")));
    assert_eq!(count, inf, "a consistent histogram even over garbage");
    assert!(s.iter().filter(|(n, _, _)| n.starts_with("podmaster_http_")).all(|(_, _, v)| *v >= 0.0 && v.is_finite()));
    assert_eq!(inst.probe_get("/livez").map(|r| r.status), Some(200));
    assert!(inst.metrics().contains("podmaster_http_requests_total{code_class=\"2xx\"}"));
    assert_eq!(status_of(&addr, "/", &[]), 200);
}

/// Behind nginx (`uwsgi_pass` over a UNIX socket): the request line comes
/// from the packet's vars, `REMOTE_USER` and any var included; no queue
/// wait is measured (not TCP), the request is counted all the same.
#[test]
fn uwsgi_protocol_requests_are_logged_from_their_vars() {
    let dir = TempDir::new("wsgi-obs-uwsgi");
    let sock = dir.path().join("app.sock");
    let format = "%(addr) %(user) \"%(method) %(uri) %(proto)\" %(status) %(var.HTTP_X_REAL_IP) %(host) %(vars)";
    let (inst, _addr, _d) = serve(1, &format!("socket = {}\nlogformat = {format}", sock.display()));
    let vars: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/404?x=1"),
        (b"PATH_INFO", b"/404"),
        (b"QUERY_STRING", b"x=1"),
        (b"SERVER_PROTOCOL", b"HTTP/1.0"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"REMOTE_USER", b"alice"),
        (b"HTTP_HOST", b"example.org"),
        (b"HTTP_X_REAL_IP", b"203.0.113.9"),
    ];
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&podmaster::worker::front::uwsgi::encode_packet(vars)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 404"), "{out}");
    let lines = request_lines(&inst, 1, |l| l.starts_with("10.0.0.7 "));
    assert_eq!(lines, [r#"10.0.0.7 alice "GET /404?x=1 HTTP/1.0" 404 203.0.113.9 example.org 11"#]);
    inst.wait_metric("podmaster_http_requests_total{code_class=\"4xx\"}", 1.0);
    // A packet the front refuses (no REQUEST_METHOD: an nginx location
    // without uwsgi_params): logged with what its vars show, and counted.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let refused: &[(&[u8], &[u8])] = &[(b"REQUEST_URI", b"/no-method"), (b"REMOTE_ADDR", b"10.0.0.8")];
    s.write_all(&podmaster::worker::front::uwsgi::encode_packet(refused)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 400"), "{out}");
    let lines = request_lines(&inst, 1, |l| l.starts_with("10.0.0.8 "));
    assert!(lines[0].starts_with(r#"10.0.0.8 - "- /no-method -" 400 "#), "{lines:?}");
    inst.wait_metric("podmaster_http_requests_total{code_class=\"4xx\"}", 2.0);
    assert_eq!(metric_with(&inst.metrics(), "podmaster_http_request_queue_seconds_count"), Some(0.0));
}

/// Sends `bytes` and reads the answer's status (the front closes after a
/// refusal).
fn raw_status(addr: &str, bytes: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    let mut head = Vec::new();
    let _ = s.read_to_end(&mut head);
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"))
}

/// Requests the front answers itself, before the app (a TLS hello on the
/// HTTP port, an unsupported version, a head over `buffer-size`), are
/// access-logged and counted like the app's answers: a flood of them is
/// visible in the log and in `podmaster_http_requests_total`.
#[test]
#[cfg_attr(
    not(have_prometheus_client),
    ignore = "needs Python's prometheus_client in .tools/venv: run bash scripts/test-deps.sh"
)]
fn requests_the_front_refuses_are_logged_and_counted() {
    let (inst, addr, _d) = serve(1, "log-format = json\nbuffer-size = 4096");
    assert_eq!(raw_status(&addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls\r\n\r\n"), 400);
    assert_eq!(raw_status(&addr, b"GET /v2 HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    let big = format!("GET /big HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n", "c".repeat(8000));
    assert_eq!(raw_status(&addr, big.as_bytes()), 431);
    assert_eq!(status_of(&addr, "/", &[]), 200);
    let lines = request_lines(&inst, 4, |l| l.contains("\"message\":\"request\""));
    let events: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, String, i64)> = events
        .iter()
        .map(|e| {
            (e["method"].as_str().unwrap().into(), e["path"].as_str().unwrap().into(), e["status"].as_i64().unwrap())
        })
        .collect();
    for want in [("-", "-", 400), ("GET", "/v2", 505), ("GET", "/big", 431), ("GET", "/", 200)] {
        assert!(got.iter().any(|g| (g.0.as_str(), g.1.as_str(), g.2) == want), "{want:?} in {got:?}");
    }
    for e in &events {
        assert_eq!(e["remote_addr"], "127.0.0.1", "{e}");
    }
    // 2xx, 4xx (400 and 431), 5xx (505); nothing in flight.
    wait_counts(&inst, (1.0, 2.0, 1.0, 4.0, 0.0));
}

/// With request ids in the log, the app sees its request's id in
/// `environ['podmaster.request_id']`, and as `HTTP_X_REQUEST_ID` when the
/// client sent none; the log line carries the same id.
#[test]
fn the_app_sees_the_request_id_its_log_line_carries() {
    let (inst, addr, _d) = serve(1, "log-format = json");
    let body = |headers: &[&str]| {
        let r = http_request(&addr, "GET", "/id", headers).unwrap();
        assert_eq!(r.status, 200);
        r.body
    };
    let generated = body(&[]);
    let (ours, header) = generated.split_once(' ').unwrap();
    assert!(ours.len() == 24 && ours.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");
    assert_eq!(header, ours, "no client id: the header is ours");
    assert_eq!(body(&["X-Request-Id: trace-7"]), "trace-7 trace-7");
    let insane = body(&["X-Request-Id: has \"quotes\""]);
    let (ours2, header) = insane.split_once(' ').unwrap();
    assert!(ours2.len() == 24 && ours2 != ours, "{insane}");
    assert_eq!(header, "has \"quotes\"", "the client's header is left as sent");
    let lines = request_lines(&inst, 3, |l| l.contains("\"path\":\"/id\""));
    let ids: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [ours, "trace-7", ours2], "{lines:?}");
}

/// `uwsgi.set_logvar` during a request: `%(name)` on that request's line
/// (escaped like request bytes), `-` on the next request's, which did not
/// set it; JSON lines carry them under `logvars`.
#[test]
fn logvars_set_by_the_app_reach_its_request_line_only() {
    let (inst, addr, _d) = serve(1, "logformat = LV %(uri) uid=%(user_id) evil=%(evil)\nthreads = 1");
    let r = http_request(&addr, "GET", "/logvar", &[]).unwrap();
    assert_eq!(r.body, "b'42' None", "bytes back, as uWSGI's get_logvar");
    assert_eq!(status_of(&addr, "/", &[]), 200);
    // A refusal the front reports on the same thread next: not theirs either.
    assert_eq!(http_request(&addr, "GET", "/logvar", &[]).unwrap().status, 200);
    assert_eq!(raw_status(&addr, b"GET /v2 HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    let lines = request_lines(&inst, 4, |l| l.starts_with("LV "));
    assert_eq!(
        lines,
        [
            r#"LV /logvar uid=42 evil=a\x22b\x0Ac"#,
            "LV / uid=- evil=-",
            r#"LV /logvar uid=42 evil=a\x22b\x0Ac"#,
            "LV /v2 uid=- evil=-"
        ]
    );

    let (inst, addr, _d) = serve(1, "log-format = json\nthreads = 1");
    assert_eq!(http_request(&addr, "GET", "/logvar", &[]).unwrap().status, 200);
    assert_eq!(status_of(&addr, "/", &[]), 200);
    let lines = request_lines(&inst, 2, |l| l.contains("\"message\":\"request\""));
    let events: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0]["logvars"], serde_json::json!({"user_id": "42", "evil": "a\"b\nc"}), "{}", lines[0]);
    assert!(events[1].get("logvars").is_none(), "{}", lines[1]);
}
