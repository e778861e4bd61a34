//! HTTP/1.1 over TCP.

use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use podmaster::worker::front::{Config, Handler, Request, RequestBody, Response};

use crate::harness::*;

/// Thread counts the connection-level tests run with: with one thread a
/// parked connection is edge-triggered and registered once, with several
/// it is one-shot and re-armed at each park (src/worker/front/hub.rs).
const THREADS: [usize; 2] = [1, 4];

/// Bytes of the pattern both big transfers send: byte i is i % 251.
fn pattern(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((from + i) % 251) as u8).collect()
}

/// Folds bytes into (count, sum), the check both sides compute.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Tally {
    count: u64,
    sum: u64,
}

impl Tally {
    fn add(&mut self, b: &[u8]) {
        self.count += b.len() as u64;
        self.sum = b.iter().fold(self.sum, |s, x| s.wrapping_mul(31).wrapping_add(u64::from(*x)));
    }
}

/// The routes most tests use.
pub(crate) fn app() -> impl Handler {
    |req: &Request<'_>, body: &mut RequestBody<'_>| {
        let query = String::from_utf8_lossy(req.query_string).into_owned();
        match &*req.path_info {
            b"/hello" if query.is_empty() => Response::new(200, "OK").body("hello"),
            b"/hello" => Response::new(200, "OK").body(format!("hello {query}")),
            b"/count" => {
                let mut tally = Tally::default();
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match body.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => tally.add(&buf[..n]),
                        Err(e) => return Response::text(400, "Bad Body", &e.to_string()),
                    }
                }
                Response::new(200, "OK").body(format!("{} {}", tally.count, tally.sum))
            }
            b"/stream" => {
                let total: u64 = query.parse().unwrap_or(0);
                let mut sent = 0u64;
                let chunks = std::iter::from_fn(move || {
                    let n = (total - sent).min(64 * 1024) as usize;
                    let chunk = (n > 0).then(|| Ok(pattern(sent, n)));
                    sent += n as u64;
                    chunk
                });
                Response::new(200, "OK").stream(chunks, None)
            }
            b"/panic" => panic!("the test handler panics on purpose"),
            _ => Response::text(404, "Not Found", "no such route"),
        }
    }
}

pub(crate) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

#[test]
fn keep_alive_carries_many_requests() {
    for threads in THREADS {
        keep_alive_carries_many_requests_with(threads);
    }
}

fn keep_alive_carries_many_requests_with(threads: usize) {
    let srv = Server::tcp(Config::default(), threads, app());
    let mut s = connect(srv.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..100 {
        s.write_all(&get(&format!("/hello?{i}"))).unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!((resp.status, resp.text()), (200, format!("hello {i}")));
        assert_eq!(resp.header("connection"), None);
    }
    // The connection is idle and open: a drain closes it and serve returns.
    let mut srv = srv;
    let took = srv.stop();
    assert!(took < Duration::from_secs(2), "serve took {took:?} to return after the drain");
    assert!(closed_within(&s, STEP));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for threads in THREADS {
        pipelined_requests_are_answered_in_order_with(threads);
    }
}

fn pipelined_requests_are_answered_in_order_with(threads: usize) {
    let srv = Server::tcp(Config::default(), threads, app());
    let mut s = connect(srv.addr());
    let mut all = get("/hello?first");
    all.extend_from_slice(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    all.extend_from_slice(&get("/hello?third"));
    s.write_all(&all).unwrap();
    let mut r = BufReader::new(s);
    let texts: Vec<String> = (0..3).map(|_| read_response(&mut r, false).unwrap().text()).collect();
    let mut abc = Tally::default();
    abc.add(b"abc");
    assert_eq!(texts, ["hello first".to_owned(), format!("3 {}", abc.sum), "hello third".to_owned()]);
}

#[test]
fn hundred_megabytes_each_way_in_bounded_memory() {
    for threads in THREADS {
        hundred_megabytes_each_way_in_bounded_memory_with(threads);
    }
}

fn hundred_megabytes_each_way_in_bounded_memory_with(threads: usize) {
    const TOTAL: u64 = 100 * 1024 * 1024;
    let srv = Server::tcp(Config::default(), threads, app());
    let base = rss();
    let peak = Arc::new(AtomicUsize::new(base as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss() as usize, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Up: a chunked body of 64 KiB chunks, written as it is made.
    let s = connect(srv.addr());
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut want = Tally::default();
        w.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut sent = 0u64;
        while sent < TOTAL {
            let chunk = pattern(sent, 64 * 1024);
            want.add(&chunk);
            w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).unwrap();
            w.write_all(&chunk).unwrap();
            w.write_all(b"\r\n").unwrap();
            sent += chunk.len() as u64;
        }
        w.write_all(b"0\r\n\r\n").unwrap();
        want
    });
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).unwrap();
    let want = writer.join().unwrap();
    assert_eq!(resp.text(), format!("{} {}", want.count, want.sum));

    // Down: a streamed body without a length (chunked on the wire).
    r.get_mut().write_all(&get(&format!("/stream?{TOTAL}"))).unwrap();
    let mut got = Tally::default();
    let resp = read_response_with(&mut r, false, &mut |b| got.add(b)).unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    let mut expect = Tally::default();
    for from in (0..TOTAL).step_by(64 * 1024) {
        expect.add(&pattern(from, 64 * 1024));
    }
    assert_eq!(got, expect);
    let grew = (peak.load(Ordering::Relaxed) as u64).saturating_sub(base);
    // Buffering either body would cost 100 MiB; streaming costs buffers
    // (other tests of this binary run meanwhile: the bound is loose).
    eprintln!("RSS {} MiB before, peak {} MiB growth while streaming 2 x 100 MiB", base >> 20, grew >> 20);
    assert!(grew < 48 * 1024 * 1024, "RSS grew by {} MiB while streaming", grew >> 20);
}

#[test]
fn expect_100_continue() {
    for threads in THREADS {
        expect_100_continue_with(threads);
    }
}

fn expect_100_continue_with(threads: usize) {
    let srv = Server::tcp(Config::default(), threads, app());
    let mut s = connect(srv.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"POST /count HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let interim = read_response(&mut r, false).unwrap();
    assert_eq!(interim.status, 100, "the handler started reading: 100 first");
    s.write_all(b"hello").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.text().starts_with("5 "));

    // A handler that answers without reading: no 100, and a close (the
    // client has not sent its body and must not be asked to).
    s.write_all(b"POST /hello HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
    assert!(closed_within(&s, STEP));
}

#[test]
fn head_sends_no_body() {
    for threads in THREADS {
        head_sends_no_body_with(threads);
    }
}

fn head_sends_no_body_with(threads: usize) {
    let srv = Server::tcp(Config::default(), threads, app());
    let mut s = connect(srv.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    s.write_all(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = read_response(&mut r, true).unwrap();
    assert_eq!((resp.status, resp.header("content-length")), (200, Some("5")));
    s.write_all(b"HEAD /stream?100000 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = read_response(&mut r, true).unwrap();
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    // Had a body been sent, this would read it as the next response.
    s.write_all(&get("/hello?after")).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().text(), "hello after");
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    for threads in THREADS {
        http10_closes_unless_asked_to_keep_alive_with(threads);
    }
}

fn http10_closes_unless_asked_to_keep_alive_with(threads: usize) {
    let srv = Server::tcp(Config::default(), threads, app());
    let mut s = connect(srv.addr());
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.status, resp.header("connection")), (200, Some("close")));
    assert!(closed_within(&s, STEP));

    let mut s = connect(srv.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    for _ in 0..3 {
        s.write_all(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    // A body of unknown length to an HTTP/1.0 client: delimited by the close.
    s.write_all(b"GET /stream?200000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!((resp.header("transfer-encoding"), resp.header("connection")), (None, Some("close")));
    assert_eq!(resp.body, pattern(0, 200_000));
}

#[test]
fn a_panicking_handler_costs_one_response() {
    let srv = Server::tcp(Config::default(), 2, app());
    for _ in 0..6 {
        let resp = exchange(srv.addr(), &get("/panic"));
        assert_eq!((resp.status, resp.header("connection")), (500, Some("close")));
        assert_eq!(exchange(srv.addr(), &get("/hello")).text(), "hello");
    }
}

#[test]
fn refused_heads_are_answered_and_closed() {
    for threads in THREADS {
        refused_heads_are_answered_and_closed_with(threads);
    }
}

fn refused_heads_are_answered_and_closed_with(threads: usize) {
    let config = Config { limit_post: Some(10), ..Config::default() };
    let srv = Server::tcp(config, threads, app());
    let long = get(&format!("/{}", "a".repeat(5000)));
    let cases: [(&[u8], u16); 4] = [
        (&long, 431),
        (b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400),
        (b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n0123456789a", 413),
        (b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n", 413),
    ];
    for (raw, status) in cases {
        let mut s = connect(srv.addr());
        s.write_all(raw).unwrap();
        let resp = read_response(&mut BufReader::new(s.try_clone().unwrap()), false).unwrap();
        assert_eq!((resp.status, resp.header("connection")), (status, Some("close")));
        assert!(closed_within(&s, STEP));
    }
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    for threads in THREADS {
        idle_keep_alive_connections_are_closed_with(threads);
    }
}

fn idle_keep_alive_connections_are_closed_with(threads: usize) {
    let config = Config { keepalive_timeout: Duration::from_millis(300), ..Config::default() };
    let srv = Server::tcp(config, threads, app());
    let mut s = connect(srv.addr());
    s.write_all(&get("/hello")).unwrap();
    read_response(&mut BufReader::new(s.try_clone().unwrap()), false).unwrap();
    let idle_from = Instant::now();
    assert!(closed_within(&s, STEP));
    assert!(idle_from.elapsed() >= Duration::from_millis(250), "closed before keepalive_timeout");
}

#[test]
fn slowloris_is_cut_off_while_others_are_served() {
    // One thread: a trickling head is parked, not read on the thread.
    let config = Config { head_timeout: Duration::from_secs(1), ..Config::default() };
    let srv = Server::tcp(config, 1, app());
    let started = Instant::now();
    let slow = connect(srv.addr());
    let mut w = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let _ = w.write_all(b"GET /hello HTTP/1.1\r\n");
        for i in 0..100 {
            if w.write_all(format!("X-{i}: y\r\n").as_bytes()).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    for _ in 0..5 {
        assert_eq!(exchange(srv.addr(), &get("/hello")).text(), "hello");
    }
    let mut seen = Vec::new();
    let closed = {
        let _ = slow.set_read_timeout(Some(STEP));
        let _ = (&slow).read_to_end(&mut seen);
        started.elapsed()
    };
    trickle.join().unwrap();
    assert!(closed >= Duration::from_millis(900), "cut off before head_timeout: {closed:?}");
    assert!(closed < Duration::from_secs(4), "a trickling head kept its thread for {closed:?}");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408 "), "{text}");
}

/// A gate the `/wait` handler blocks on until the test opens it.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) entered: AtomicUsize,
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub(crate) fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let _ = self.cv.wait_timeout_while(open, STEP, |open| !*open).unwrap();
    }
    pub(crate) fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[test]
fn drain_finishes_the_request_in_flight_and_closes_the_rest() {
    let gate = Arc::new(Gate::default());
    let handler = {
        let gate = Arc::clone(&gate);
        let app = app();
        move |req: &Request<'_>, body: &mut RequestBody<'_>| {
            if &*req.path_info == b"/wait" {
                gate.pass();
                return Response::new(200, "OK").body("waited");
            }
            app.call(req, body)
        }
    };
    let config = Config { drain_poll: Duration::from_millis(50), ..Config::default() };
    let mut srv = Server::tcp(config, 4, handler);
    let mut idle = connect(srv.addr());
    idle.write_all(&get("/hello")).unwrap();
    read_response(&mut BufReader::new(idle.try_clone().unwrap()), false).unwrap();
    let mut busy = connect(srv.addr());
    busy.write_all(&get("/wait")).unwrap();
    assert!(eventually(STEP, || gate.entered.load(Ordering::SeqCst) == 1));
    // Accepted, nothing sent yet: idle too.
    let silent = connect(srv.addr());
    let mut probe = connect(srv.addr());
    probe.write_all(&get("/hello")).unwrap();
    read_response(&mut BufReader::new(probe.try_clone().unwrap()), false).unwrap();

    srv.drain.store(true, Ordering::Relaxed);
    let drained = Instant::now();
    assert!(closed_within(&idle, Duration::from_secs(2)), "an idle connection stayed open after the drain");
    assert!(closed_within(&silent, Duration::from_secs(2)), "a silent new connection stayed open after the drain");
    assert!(drained.elapsed() < Duration::from_secs(2));
    gate.open();
    let resp = read_response(&mut BufReader::new(busy.try_clone().unwrap()), false).unwrap();
    assert_eq!((resp.text().as_str(), resp.header("connection")), ("waited", Some("close")));
    assert!(closed_within(&busy, STEP));
    srv.wait_stopped(Duration::from_secs(5));
}

#[test]
fn four_threads_serve_four_requests_at_once() {
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let handler = {
        let arrived = Arc::clone(&arrived);
        move |_: &Request<'_>, _: &mut RequestBody<'_>| {
            let (count, cv) = &*arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let (n, timeout) = cv.wait_timeout_while(n, STEP, |n| *n < 4).unwrap();
            if timeout.timed_out() {
                return Response::text(503, "Alone", &format!("only {} at once", *n));
            }
            Response::new(200, "OK").body("together")
        }
    };
    let srv = Server::tcp(Config::default(), 4, handler);
    let addr = srv.addr();
    let clients: Vec<_> = (0..4).map(|_| std::thread::spawn(move || exchange(addr, &get("/")).text())).collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), "together");
    }
}
