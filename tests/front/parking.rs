//! Connections parked between requests: with one serving thread, every
//! keep-alive client is served in turn and none is closed for the others'
//! sake; the keep-alive cap; fd exhaustion that must not spin.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use podmaster::worker::front::{Config, Handler, Request, RequestBody, Response};

use crate::harness::*;
use crate::http::{Gate, app, get};

/// A keep-alive client: its connection and a reader over it.
struct Client {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(srv: &Server) -> Client {
        let s = connect(srv.addr());
        let r = BufReader::new(s.try_clone().expect("clone"));
        Client { s, r }
    }
    fn send(&mut self, path: &str) {
        self.s.write_all(&get(path)).expect("write");
    }
    fn answer(&mut self) -> Resp {
        read_response(&mut self.r, false).expect("response")
    }
    fn ask(&mut self, path: &str) -> Resp {
        self.send(path);
        self.answer()
    }
}

/// One thread, two keep-alive clients: while the second waits to be
/// accepted, the first one's next request is served and its connection
/// stays open, and the second is served too (bench row 16 once found 62
/// of 64 keep-alive clients starved, then every connection closed after
/// one response while others waited).
#[test]
fn a_waiting_client_is_served_while_others_keep_alive() {
    let srv = Server::tcp(Config::default(), 1, app());
    let mut a = Client::new(&srv);
    assert_eq!(a.ask("/hello?a1").header("connection"), None);
    let mut b = Client::new(&srv);
    b.send("/hello?b1");
    // B is accepted or queued now; A goes on on its connection.
    let second = a.ask("/hello?a2");
    assert_eq!((second.text().as_str(), second.header("connection")), ("hello a2", None));
    let served = b.answer();
    assert_eq!((served.text().as_str(), served.header("connection")), ("hello b1", None));

    // Eight clients in turn, five rounds: every one stays alive.
    let mut clients: Vec<Client> = (0..6).map(|_| Client::new(&srv)).collect();
    clients.push(a);
    clients.push(b);
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            let resp = c.ask(&format!("/hello?c{i}r{round}"));
            assert_eq!(resp.text(), format!("hello c{i}r{round}"));
            assert_eq!(resp.header("connection"), None, "client {i}, round {round}");
        }
    }
}

/// An idle keep-alive connection and a silent new one do not hold the
/// only thread: another client is served at once (long before the 5 s
/// keep-alive timeout), and the idle one is still open afterwards.
#[test]
fn an_idle_keep_alive_connection_does_not_hold_the_only_thread() {
    let srv = Server::tcp(Config::default(), 1, app());
    let mut idle = Client::new(&srv);
    assert_eq!(idle.ask("/hello?first").text(), "hello first");
    let silent = connect(srv.addr());
    let started = Instant::now();
    let mut other = Client::new(&srv);
    assert_eq!(other.ask("/hello?other").text(), "hello other");
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?} for the only thread", started.elapsed());
    let again = idle.ask("/hello?again");
    assert_eq!((again.text().as_str(), again.header("connection")), ("hello again", None));
    drop(silent);
}

/// While a request holds one thread, another one polls: a second client
/// is served at once, not when an idle thread next wakes to look at the
/// drain flag (made 3 s here to tell the two apart).
#[test]
fn a_thread_held_by_a_request_leaves_another_polling() {
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
    let config = Config { drain_poll: Duration::from_secs(3), ..Config::default() };
    let srv = Server::tcp(config, 2, handler);
    // Both threads running: one polls, the other waits its turn.
    assert_eq!(exchange(srv.addr(), &get("/hello")).text(), "hello");
    let mut busy = Client::new(&srv);
    busy.send("/wait");
    assert!(eventually(STEP, || gate.entered.load(Ordering::SeqCst) == 1));
    let started = Instant::now();
    let mut other = Client::new(&srv);
    assert_eq!(other.ask("/hello").text(), "hello");
    assert!(started.elapsed() < Duration::from_millis(1500), "served after {:?}", started.elapsed());
    gate.open();
    assert_eq!(busy.answer().text(), "waited");
}

/// Over `max_keepalive` open connections, a response closes its own.
#[test]
fn responses_close_their_connection_over_max_keepalive() {
    let config = Config { max_keepalive: 2, ..Config::default() };
    let srv = Server::tcp(config, 1, app());
    let mut a = Client::new(&srv);
    assert_eq!(a.ask("/hello").header("connection"), None);
    let mut b = Client::new(&srv);
    assert_eq!(b.ask("/hello").header("connection"), None);
    let mut c = Client::new(&srv);
    assert_eq!(c.ask("/hello").header("connection"), Some("close"), "three open, two may stay");
    assert!(closed_within(&c.s, STEP));
    assert_eq!(a.ask("/hello").header("connection"), None, "two open again");
}

/// When `accept` fails for want of fds, the worker stops watching the
/// listener for a while instead of spinning on it, and serves the queued
/// connection once fds are free. Runs in a child process: it lowers the
/// fd limit, which would fail the other tests of this binary.
#[test]
fn fd_exhaustion_pauses_accepting_without_spinning() {
    if std::env::var_os("FRONT_EMFILE_CHILD").is_some() {
        emfile_child();
        println!("emfile child done");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "parking::fd_exhaustion_pauses_accepting_without_spinning", "--nocapture"])
        .env("FRONT_EMFILE_CHILD", "1")
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("emfile child done"), "child: {text}");
}

fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn emfile_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let config = Config { drain_poll: Duration::from_millis(50), ..Config::default() };
    let srv = Server::tcp(config, 1, app());
    // Served, and closed by the server (its fd free) before the EOF.
    let mut warm = connect(srv.addr());
    warm.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("write");
    assert!(closed_within(&warm, STEP));
    drop(warm);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let open = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open + 16, hard).expect("setrlimit");
    let mut filler = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => filler.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("open /dev/null: {e}"),
        }
    }
    // One fd for the client; none for the server's accept.
    filler.pop();
    let mut client = connect(srv.addr());
    client.write_all(&get("/hello?queued")).expect("write");
    client.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    let window = Instant::now();
    let before = cpu_time();
    while window.elapsed() < Duration::from_secs(1) {
        let mut byte = [0u8; 1];
        match client.read(&mut byte) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            other => panic!("the queued client got {other:?} while the server had no fd to accept it"),
        }
    }
    let used = cpu_time() - before;
    assert!(used < Duration::from_millis(150), "the worker spun: {used:?} of CPU in a second of EMFILE");
    drop(filler);
    client.set_read_timeout(Some(STEP)).expect("timeout");
    let resp = read_response(&mut BufReader::new(client), false).expect("served once fds are free");
    assert_eq!(resp.text(), "hello queued");
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("restore the limit");
}
