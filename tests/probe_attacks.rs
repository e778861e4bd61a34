//! Hostile clients against the probe port: every request gets its answer
//! or a close within the head deadline, and afterwards `/livez` answers
//! 200 within 100 ms and the master's threads and fds are back to their
//! baseline. Also: panics in the probe threads never leave the pod
//! without probes, and `/status` shows no secrets.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// The guard's head deadline (2 s) plus scheduling slack.
const ANSWER_WITHIN: Duration = Duration::from_secs(4);

fn count(dir: String) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// What a client saw: the status code of the answer, or None for a close.
fn attack(addr: &str, bytes: &[u8], half_close: bool) -> (Option<u16>, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect to the probe port");
    s.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("no answer and no close within {ANSWER_WITHIN:?} for {:?}", String::from_utf8_lossy(bytes))
            }
            // A reset after the answer (the client kept sending) still counts.
            Err(_) => break,
        }
    }
    let code = std::str::from_utf8(answer.get(9..12).unwrap_or_default()).ok().and_then(|c| c.parse().ok());
    if code.is_some() {
        assert!(answer.iter().filter(|b| **b == b'\n').count() >= 3, "truncated answer");
        assert!(answer.windows(19).any(|w| w.eq_ignore_ascii_case(b"connection: close\r\n")));
    }
    (code, t.elapsed())
}

/// `/livez` answers 200 within 100 ms.
fn live_fast(inst: &Instance, after: &str) {
    let t = Instant::now();
    let r = inst.probe_get("/livez").unwrap_or_else(|| panic!("/livez failed after {after}; logs:\n{}", inst.logs()));
    let took = t.elapsed();
    assert_eq!(r.status, 200, "after {after}: {}", r.body);
    assert!(took < Duration::from_millis(100), "after {after}: /livez took {took:?}");
}

fn back_to_baseline(inst: &Instance, base: (usize, usize), after: &str) {
    let pid = inst.pid();
    let now = || (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")));
    let end = Instant::now() + Duration::from_secs(5);
    while now() != base {
        assert!(Instant::now() < end, "after {after}: (threads, fds) {:?}, baseline {base:?}", now());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn hostile_requests_are_answered_and_leave_nothing_behind() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    live_fast(&inst, "start");
    let pid = inst.pid();
    // Every probe connection so far is closed once the guard's linger
    // (500 ms at most) has run out.
    std::thread::sleep(Duration::from_millis(700));
    let base = (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")));

    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20 * 1024));
    let invalid_utf8_line = b"GET /\xff\xfe\xc3 HTTP/1.1\r\n\r\n".to_vec();
    let big_body = {
        let mut v = b"POST /readyz HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        v
    };
    // (name, bytes, half-close after sending, expected: Some(code) or None for a close)
    let cases: Vec<(&str, Vec<u8>, bool, Option<u16>)> = vec![
        ("multi-byte character at byte 11", "GET /abcdeé HTTP/1.1\r\n\r\n".into(), false, Some(400)),
        ("invalid UTF-8 in the request line", invalid_utf8_line, false, Some(400)),
        ("non-ASCII header name", "GET /livez HTTP/1.1\r\nconnectioné: x\r\n\r\n".into(), false, Some(400)),
        ("non-ASCII header value", "GET /livez HTTP/1.1\r\nX-Name: café\r\n\r\n".into(), false, Some(200)),
        ("invalid UTF-8 header value", b"GET /livez HTTP/1.1\r\nX: \xff\xfe\r\n\r\n".to_vec(), false, Some(200)),
        ("invalid UTF-8 header name", b"GET /livez HTTP/1.1\r\n\xff: x\r\n\r\n".to_vec(), false, Some(400)),
        ("NUL in the request line", b"GET /li\0vez HTTP/1.1\r\n\r\n".to_vec(), false, Some(400)),
        ("NUL in a header value", b"GET /livez HTTP/1.1\r\nX: a\0b\r\n\r\n".to_vec(), false, Some(400)),
        ("bare LF line ends", b"GET /livez HTTP/1.1\nHost: x\n\n".to_vec(), false, Some(200)),
        ("HTTP/0.9 request line", b"GET /livez\r\n\r\n".to_vec(), false, Some(400)),
        ("HTTP/0.9 without a blank line", b"GET /livez\r\n".to_vec(), false, None),
        ("HTTP/9.9", b"GET /livez HTTP/9.9\r\n\r\n".to_vec(), false, Some(505)),
        ("20 KB request line", long_line.into_bytes(), false, Some(431)),
        (
            "POST with a one-byte body",
            b"POST /readyz HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            false,
            Some(405),
        ),
        ("POST with a body and no length", b"POST /readyz HTTP/1.1\r\n\r\nxyz".to_vec(), false, Some(405)),
        ("POST with 1 MB of body", big_body, false, Some(405)),
        ("GET with a negative length", b"GET /livez HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), false, Some(400)),
        (
            "GET with a huge length",
            b"GET /livez HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            false,
            Some(400),
        ),
        (
            "GET with a length and no body",
            b"GET /livez HTTP/1.1\r\nContent-Length: 50\r\n\r\n".to_vec(),
            false,
            Some(200),
        ),
        (
            "chunked POST",
            b"POST /readyz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
            Some(405),
        ),
        (
            "chunked GET",
            b"GET /livez HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            false,
            Some(200),
        ),
        (
            "length and chunked",
            b"GET /livez HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n".to_vec(),
            false,
            Some(400),
        ),
        (
            "pipelined requests",
            b"GET /livez HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\n\r\n".to_vec(),
            false,
            Some(200),
        ),
        ("half-closed after a request", b"GET /livez HTTP/1.1\r\n\r\n".to_vec(), true, Some(200)),
        ("half-closed mid-head", b"GET /liv".to_vec(), true, None),
        ("half-closed at once", Vec::new(), true, None),
        ("a request line of spaces", b"          \r\n\r\n".to_vec(), false, Some(400)),
        ("control characters", b"\x01\x02\x03\x1b[2J\r\n\r\n".to_vec(), false, Some(400)),
        ("absolute URI with a space", b"GET http://x/ y HTTP/1.1\r\n\r\n".to_vec(), false, Some(400)),
        ("unknown path", b"GET /../../etc/passwd HTTP/1.1\r\n\r\n".to_vec(), false, Some(404)),
        ("absolute-form target", b"GET http://127.0.0.1/livez HTTP/1.1\r\n\r\n".to_vec(), false, Some(200)),
    ];
    for (name, bytes, half_close, expect) in &cases {
        let (code, took) = attack(&inst.probe, bytes, *half_close);
        assert_eq!(code, *expect, "{name}");
        assert!(took < ANSWER_WITHIN, "{name}: took {took:?}");
        live_fast(&inst, name);
        back_to_baseline(&inst, base, name);
    }
    // Generated garbage: random bytes ending in a blank line, from a fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let len = 1 + (i * 7) % 300;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        bytes.extend_from_slice(b"\r\n\r\n");
        let (code, _) = attack(&inst.probe, &bytes, i % 2 == 0);
        assert!(code.is_none() || code.is_some_and(|c| (400..600).contains(&c)), "garbage {i}: {code:?}");
    }
    live_fast(&inst, "200 garbage requests");
    back_to_baseline(&inst, base, "200 garbage requests");
    assert!(inst.logs().lines().all(|l| !l.contains("panicked")), "{}", inst.logs());
}

#[test]
fn idle_connections_cannot_grow_the_thread_count() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    let pid = inst.pid();
    let threads = || count(format!("/proc/{pid}/task"));
    let before = threads();
    // 300 idle connections to the probe port, and to every UNIX socket the
    // master listens on (there must be no internal HTTP socket to reach).
    let mut idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(&inst.probe).ok()).collect();
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    // (Other tests on this machine may run older builds: look for ours.)
    let ours = format!("podmaster-probe-{pid}-");
    let internal: Vec<&str> = unix.lines().filter(|l| l.contains(&ours)).collect();
    assert!(internal.is_empty(), "an internal probe socket is visible: {internal:?}");
    for s in &mut idle {
        let _ = s.write_all(b"GET /readyz HTTP/1.1\r\n");
    }
    live_fast(&inst, "300 idle connections");
    assert_eq!(threads(), before, "the thread count changed with idle connections");
}

#[test]
fn a_panicking_probe_thread_never_leaves_the_pod_without_probes() {
    let inst = Instance::start_with(&example_script(), 1, 1, "", &[("PODMASTER_TEST_PANIC_PROBES", "1")], |c| c);
    inst.wait_ready();
    // A handler panic is answered 500; the next probe works.
    let r = inst.probe_get("/test-hooks/panic-handler").expect("an answer to the handler panic");
    assert_eq!(r.status, 500);
    live_fast(&inst, "a handler panic");
    // A guard panic drops the connection; the guard restarts on the same socket.
    for round in 0..3 {
        let (code, _) = attack(&inst.probe, b"GET /test-hooks/panic-guard HTTP/1.1\r\n\r\n", false);
        assert_eq!(code, None, "round {round}");
        wait_for("/livez after a guard panic", Duration::from_secs(2), || {
            inst.probe_get("/livez").filter(|r| r.status == 200)
        });
        live_fast(&inst, "a guard panic");
    }
    let m = inst.metrics();
    assert_eq!(metric(&m, "podmaster_probe_panics_total"), Some(4.0), "{m}");
    let logs = inst.logs();
    assert_eq!(logs.matches("probe guard panicked; restarting").count(), 3, "{logs}");
}

#[test]
fn status_shows_no_arguments_or_environment() {
    let secret = "s3cr3t-token-value";
    let extra = format!(
        "attach-daemon = env API_TOKEN={secret} sleep 1000\nattach-daemon = sh -c 'exec sleep 1000' {secret}\n\
         attach-daemon = API_TOKEN={secret} sleep 1000\n"
    );
    let inst = Instance::start(&example_script(), 1, 1, &extra);
    inst.wait_ready();
    wait_for("daemons started", Duration::from_secs(10), || {
        let s = inst.status();
        // The third cannot start (a shell assignment is not a program): it respawns.
        s["daemons"].as_array().filter(|d| d.iter().take(2).all(|d| d["pid"].as_i64() > Some(0))).map(|_| ())
    });
    for path in ["/status", "/metrics", "/readyz?verbose", "/livez", "/startupz"] {
        let r = inst.probe_get(path).unwrap();
        assert!(!r.body.contains(secret), "{path} shows the secret:\n{}", r.body);
    }
    let s = inst.status();
    let commands: Vec<&str> = s["daemons"].as_array().unwrap().iter().map(|d| d["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["env", "sh", "API_TOKEN=<hidden>"]);
}

#[test]
fn a_flood_from_one_address_leaves_room_for_kubelet() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    let probe: std::net::SocketAddr = inst.probe.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Another "pod" (127.0.0.2) opens idle connections and resets them, in a
    // bounded loop, from two threads.
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let end = Instant::now() + Duration::from_secs(20);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end && n < 50_000 {
                    n += 1;
                    let sock = socket2_connect_from("127.0.0.2", probe);
                    if let Some(s) = sock {
                        held.push(s);
                    }
                    if held.len() > 400 {
                        held.drain(..200);
                    }
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut failed = Vec::new();
    for i in 0..40 {
        match inst.probe_get("/livez") {
            Some(r) if r.status == 200 => {}
            other => failed.push((i, other.map(|r| r.status))),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!("flood opened {opened} connections");
    assert!(opened > 1000, "the flood was too small to mean anything: {opened}");
    assert!(failed.is_empty(), "probes from kubelet's address failed during the flood: {failed:?}");
}

/// A TCP connection to `to` from the local address `from` (port chosen by
/// the kernel); None when the connect fails (a full backlog).
fn socket2_connect_from(from: &str, to: std::net::SocketAddr) -> Option<TcpStream> {
    // SAFETY: plain socket/bind/connect on a fresh fd we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let s = <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd);
        // Closed with a reset (no TIME_WAIT left bound to the port) and
        // bound with SO_REUSEADDR: thousands of these must not keep later
        // tests from binding ports the kernel hands out again.
        let one: libc::c_int = 1;
        let opt = (&one as *const libc::c_int).cast();
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, opt, 4);
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        let lopt = (&linger as *const libc::linger).cast();
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, lopt, std::mem::size_of::<libc::linger>() as u32);
        let local: std::net::Ipv4Addr = from.parse().ok()?;
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from(local).to_be();
        if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
            != 0
        {
            return None;
        }
        let std::net::SocketAddr::V4(to) = to else { return None };
        let mut ta: libc::sockaddr_in = std::mem::zeroed();
        ta.sin_family = libc::AF_INET as u16;
        ta.sin_port = to.port().to_be();
        ta.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        if libc::connect(fd, (&ta as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
            != 0
        {
            return None;
        }
        Some(s)
    }
}
