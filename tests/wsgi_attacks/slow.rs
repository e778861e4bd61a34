//! Clients that hold a serving thread: a head sent a byte at a time, a
//! head or a body that stops, idle and half-closed connections by the
//! hundred, and a client that never reads its answer. Each is cut at the
//! front's deadline (src/worker/front/mod.rs: 10 s for a request head
//! from the accept, 60 s without progress for a body read or a response
//! write), and the worker serves other clients after (and, with threads
//! to spare, during).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::common::*;
use super::*;

/// The front's head deadline, and its body read / response write one.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// (Stalled bodies get twice the slack: three of them and a deaf client
/// are cut at the same moment, and Python answers each.)
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_secs(4);

#[test]
fn a_slowloris_head_is_cut_at_the_head_deadline_and_the_next_client_is_served() {
    let w = Wsgi::start("bulk", 1, "threads = 1", |c| c);
    let worker = w.worker();
    let addr = w.http.clone();
    let slow = std::thread::spawn(move || {
        let t = Instant::now();
        let mut s = TcpStream::connect(&addr).unwrap();
        let head = b"GET /slow-loris HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head.iter().cycle().take(2000) {
            if s.write_all(&[*b]).is_err() || t.elapsed() > HEAD_TIMEOUT + SLACK {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        read_until_close(&mut s, t, HEAD_TIMEOUT + SLACK)
    });
    // The next client comes while the slow one holds the only thread.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = get(&w.http, "/next");
    let waited = t.elapsed();
    assert_eq!(r, Ok((200, b"Hello, next\n".to_vec())), "the next client");
    let out = slow.join().unwrap();
    let codes = out.statuses();
    assert!(!out.hung, "the slowloris head was not cut within {:?}", HEAD_TIMEOUT + SLACK);
    assert!(codes.is_empty() || codes == [408], "slowloris got {codes:?}");
    assert!(waited < HEAD_TIMEOUT + SLACK, "the next client waited {waited:?}");
    eprintln!("slowloris cut after {:?} ({codes:?}); the next client waited {waited:?}", out.took);
    w.assert_serves(worker, "a slowloris head");
}

/// Sends `bytes` and then waits, neither sending nor closing: Ok(how
/// long until the server's close, and its answers) or Err if none came
/// within `within`.
fn stall(addr: &str, bytes: &[u8], within: Duration) -> Outcome {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    read_until_close(&mut s, t, within)
}

/// (name, address, bytes, deadline, statuses allowed)
type Stalled = (&'static str, String, Vec<u8>, Duration, &'static [u16]);

#[test]
fn stalled_heads_and_bodies_and_a_client_that_never_reads_are_cut_at_their_deadlines() {
    let w = Wsgi::start("bulk", 1, "threads = 8", |c| c);
    let worker = w.worker();
    let uwsgi_good = podmaster::worker::front::uwsgi::encode_packet(&[
        (b"REQUEST_METHOD", b"POST"),
        (b"PATH_INFO", b"/hash"),
        (b"CONTENT_LENGTH", b"100"),
    ]);
    let cases: Vec<Stalled> = vec![
        ("an idle connection", w.http.clone(), Vec::new(), HEAD_TIMEOUT, &[]),
        ("a head that stops", w.http.clone(), b"GET /x HTTP/1.1\r\nHo".to_vec(), HEAD_TIMEOUT, &[408]),
        ("an idle uwsgi connection", w.uwsgi.clone(), Vec::new(), HEAD_TIMEOUT, &[]),
        ("a uwsgi vars block that stops", w.uwsgi.clone(), uwsgi_good[..10].to_vec(), HEAD_TIMEOUT, &[]),
        (
            "a body that stops",
            w.http.clone(),
            b"POST /hash HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            IO_TIMEOUT + SLACK,
            &[],
        ),
        (
            "a chunked body that stops",
            w.http.clone(),
            b"POST /hash HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhello".to_vec(),
            IO_TIMEOUT + SLACK,
            &[],
        ),
        (
            "a uwsgi body that stops",
            w.uwsgi.clone(),
            [uwsgi_good.clone(), b"0123456789".to_vec()].concat(),
            IO_TIMEOUT + SLACK,
            &[],
        ),
    ];
    let stalled: Vec<_> = cases
        .into_iter()
        .map(|(name, addr, bytes, deadline, allowed)| {
            std::thread::spawn(move || (name, deadline, allowed, stall(&addr, &bytes, deadline + SLACK)))
        })
        .collect();
    // A client asks for 1 GB and never reads: the worker must give it up.
    let mut deaf = TcpStream::connect(&w.http).unwrap();
    deaf.write_all(b"GET /yield?1000000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let held = wait_for("the worker to take the deaf client", DEADLINE, || accepted_by(&deaf, &[worker]));
    let t = Instant::now();
    // Meanwhile the threads left serve others.
    std::thread::sleep(Duration::from_millis(300));
    w.assert_serves(worker, "seven stalled clients");
    wait_for("the worker to give up the deaf client", IO_TIMEOUT + 2 * SLACK, || {
        accepted_by(&deaf, &[held]).is_none().then_some(())
    });
    let deaf_took = t.elapsed();
    for s in stalled {
        let (name, deadline, allowed, out) = s.join().unwrap();
        assert!(!out.hung, "{name}: not cut within {:?}", deadline + SLACK);
        let codes = out.statuses();
        assert!(allowed.contains(&codes.first().copied().unwrap_or(0)) || codes.is_empty(), "{name}: {codes:?}");
        eprintln!("{name}: cut after {:?} ({codes:?})", out.took);
    }
    eprintln!("a client that never reads: given up after {deaf_took:?}");
    w.assert_serves(worker, "stalled clients");
    assert_no_panic(&w);
}

#[test]
fn hundreds_of_idle_and_half_closed_connections_leave_the_worker_serving() {
    // A low limit on open files for the whole tree: fd pressure without
    // thousands of sockets.
    const NOFILE: u64 = 256;
    let w = Wsgi::start("bulk", 1, "threads = 2\nlisten = 1024", |mut c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: NOFILE, rlim_max: NOFILE };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c
    });
    let worker = w.worker();
    let connect = |addr: &str| {
        let sa: std::net::SocketAddr = addr.parse().unwrap();
        TcpStream::connect_timeout(&sa, Duration::from_secs(1)).ok()
    };
    // Half-closed at once: each ends as soon as the worker reads its EOF.
    for _ in 0..100 {
        if let Some(s) = connect(&w.http) {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }
    // Idle, twice the open-file limit, on both ports.
    let idle: Vec<TcpStream> =
        (0..2 * NOFILE).filter_map(|i| connect(if i % 2 == 0 { &w.http } else { &w.uwsgi })).collect();
    let fds = std::fs::read_dir(format!("/proc/{worker}/fd")).map(|d| d.count()).unwrap_or(0);
    eprintln!("{} idle connections open; the worker has {fds} fds", idle.len());
    assert!(idle.len() as u64 > NOFILE, "only {} connections could be opened", idle.len());
    assert!(fds as u64 <= NOFILE);
    drop(idle);
    // Once the idle clients are gone, the worker serves again, soon.
    let t = Instant::now();
    wait_for("a good answer after the idle connections closed", HEAD_TIMEOUT + SLACK, || {
        http_get(&w.http, "/after").ok().filter(|r| r.status == 200)
    });
    eprintln!("served {:?} after the idle connections closed", t.elapsed());
    w.assert_serves(worker, "hundreds of idle connections");
    assert_no_panic(&w);
}
