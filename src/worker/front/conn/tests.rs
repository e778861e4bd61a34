//! Connection-level tests over an in-memory stream that delivers its input
//! in the pieces given (no sockets, no timing): pipelining, body framing
//! end to end, 100-continue, errors. Real sockets: tests/front.
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// Input in fixed pieces (an empty piece: one `WouldBlock`), then EOF;
/// output collected.
struct Scripted {
    input: VecDeque<Vec<u8>>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Read for Scripted {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(piece) = self.input.front_mut() else { return Ok(0) };
        if piece.is_empty() {
            self.input.pop_front();
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = piece.len().min(out.len());
        out[..n].copy_from_slice(&piece[..n]);
        piece.drain(..n);
        if piece.is_empty() {
            self.input.pop_front();
        }
        Ok(n)
    }
}

impl Write for Scripted {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.output.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Scripted {
    fn wait(&self, _: bool, _: Duration) -> io::Result<bool> {
        Ok(true)
    }
    fn shutdown(&self, _: std::net::Shutdown) -> io::Result<()> {
        Ok(())
    }
    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// What the recording handler saw of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: Vec<u8>,
    path: Vec<u8>,
    query: Vec<u8>,
    body: Vec<u8>,
}

/// What `Handler::done` was told: method, target, protocol, status.
type Reported = (String, String, String, u16);

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    /// What `done` was told: method, target, protocol, status.
    done: Mutex<Vec<Reported>>,
}

impl Recorder {
    fn done(&self) -> Vec<Reported> {
        std::mem::take(&mut *self.done.lock().unwrap())
    }
}

impl Handler for Recorder {
    fn call(&self, req: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        let mut data = Vec::new();
        if let Err(e) = body.read_to_end(&mut data) {
            return Response::text(599, "Body Failed", &e.to_string());
        }
        if req.path_info.starts_with(b"/panic") {
            panic!("asked to panic");
        }
        self.seen.lock().unwrap().push(Seen {
            method: req.method.to_vec(),
            path: req.path_info.to_vec(),
            query: req.query_string.to_vec(),
            body: data.clone(),
        });
        Response::new(200, "OK").body(format!("{} bytes", data.len()))
    }

    fn done(&self, req: &Request<'_>, outcome: &Outcome) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let row = (text(req.method), text(req.request_uri), text(req.server_protocol), outcome.status);
        self.done.lock().unwrap().push(row);
    }
}

/// A connection over `pieces`, its output, and what it is served with.
struct Bench<'h> {
    output: Arc<Mutex<Vec<u8>>>,
    occupancy: Occupancy,
    drain: AtomicBool,
    handler: &'h dyn Handler,
    config: &'h Config,
}

impl<'h> Bench<'h> {
    fn new(handler: &'h dyn Handler, config: &'h Config) -> Bench<'h> {
        Bench {
            output: Arc::default(),
            occupancy: Occupancy::new(config.max_keepalive),
            drain: AtomicBool::new(false),
            handler,
            config,
        }
    }
    fn site(&self) -> Site<'_> {
        let occupancy = &self.occupancy;
        Site {
            handler: self.handler,
            config: self.config,
            server_name: "test",
            server_port: "80",
            occupancy,
            drain: &self.drain,
        }
    }
    fn conn(&self, protocol: Protocol, pieces: Vec<Vec<u8>>) -> Conn<'_> {
        let stream = Scripted { input: pieces.into(), output: Arc::clone(&self.output) };
        Conn::new(Box::new(stream), Peer::default(), 0, protocol, self.config, &self.occupancy)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

/// Serves `pieces` on one connection as the hub would (serve, park, serve
/// again when "ready") until it closes; returns the output.
fn run(handler: &dyn Handler, protocol: Protocol, config: &Config, pieces: Vec<Vec<u8>>) -> String {
    let bench = Bench::new(handler, config);
    let site = bench.site();
    let mut scratch = Scratch::new(config);
    let mut conn = Some(bench.conn(protocol, pieces));
    let mut services = 0;
    while let Some(c) = conn.take() {
        services += 1;
        assert!(services < 10_000, "a connection that never ends");
        conn = serve_ready(c, &mut scratch, &site);
    }
    assert_eq!(bench.occupancy.open(), 0, "the connection is counted until dropped");
    bench.text()
}

fn http(pieces: Vec<Vec<u8>>) -> String {
    run(&Recorder::default(), Protocol::Http, &Config::default(), pieces)
}

#[test]
fn pipelined_requests_in_one_piece() {
    let rec = Recorder::default();
    let input = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzPOST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let out = run(&rec, Protocol::Http, &Config::default(), vec![input.to_vec()]);
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
    let bodies: Vec<&str> = out.split("\r\n\r\n").skip(1).map(|b| &b[..7]).collect();
    assert_eq!(bodies, ["0 bytesH", "3 bytesH", "2 bytes"].map(|s| &s[..7]));
    let seen = rec.seen.lock().unwrap();
    assert_eq!(seen[1].query, b"q");
    assert_eq!(seen[2].body, b"hi");
}

#[test]
fn errors_are_answered_then_closed() {
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET / HTTP/2.0\r\n\r\n", "HTTP/1.1 505 "),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HTTP/1.1 400 "),
        (b"GET /panic HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 500 "),
    ];
    for (input, status) in cases {
        let out = http(vec![input.to_vec()]);
        assert!(out.starts_with(status), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "nothing after the close: {out}");
    }
    let big = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(5000));
    assert!(http(vec![big.into_bytes()]).starts_with("HTTP/1.1 431 "));
}

#[test]
fn limit_post_on_chunked_bodies() {
    let config = Config { limit_post: Some(4), ..Config::default() };
    let ok = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".to_vec();
    assert!(run(&Recorder::default(), Protocol::Http, &config, vec![ok]).starts_with("HTTP/1.1 200 "));
    let over =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec();
    let out = run(&Recorder::default(), Protocol::Http, &config, vec![over]);
    assert!(out.starts_with("HTTP/1.1 413 ") && out.contains("Connection: close"), "{out}");
}

#[test]
fn continue_is_sent_when_the_body_is_read() {
    let head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_vec();
    let out = http(vec![head.clone(), b"ok".to_vec()]);
    assert!(out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), "{out}");
    // A handler that never reads: no 100, and the connection closes (the
    // client may not have sent its body).
    let ignore = |_: &Request<'_>, _: &mut RequestBody<'_>| Response::new(403, "Forbidden").body("no");
    let out = run(&ignore, Protocol::Http, &Config::default(), vec![head]);
    assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n") && out.contains("Connection: close"), "{out}");
}

#[test]
fn unread_bodies_are_discarded_or_close() {
    let ignore = |_: &Request<'_>, _: &mut RequestBody<'_>| Response::new(200, "OK").body("x");
    let small = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    let out = run(&ignore, Protocol::Http, &Config::default(), vec![small]);
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 2, "a small rest is dropped: {out}");
    let big = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", DISCARD_MAX + 1);
    let out = run(&ignore, Protocol::Http, &Config::default(), vec![big.into_bytes(), vec![0; 70_000]]);
    assert!(out.contains("Connection: close"), "{out}");
}

#[test]
fn uwsgi_request_and_answer() {
    let rec = Recorder::default();
    let mut packet = crate::worker::front::uwsgi::encode_packet(&[
        (b"REQUEST_METHOD", b"PUT"),
        (b"PATH_INFO", b"/u"),
        (b"QUERY_STRING", b"k=v"),
        (b"CONTENT_LENGTH", b"4"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
    ]);
    packet.extend_from_slice(b"data");
    let out = run(&rec, Protocol::Uwsgi, &Config::default(), vec![packet[..3].to_vec(), packet[3..].to_vec()]);
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n4 bytes");
    let seen = rec.seen.lock().unwrap();
    assert_eq!(
        seen[0],
        Seen { method: b"PUT".to_vec(), path: b"/u".to_vec(), query: b"k=v".to_vec(), body: b"data".to_vec() }
    );

    let config = Config { limit_post: Some(3), ..Config::default() };
    let out = run(&Recorder::default(), Protocol::Uwsgi, &config, vec![packet.clone()]);
    assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    let mut other = packet.clone();
    other[0] = 17;
    assert_eq!(run(&Recorder::default(), Protocol::Uwsgi, &Config::default(), vec![other]), "", "closed unanswered");
    let out = run(&Recorder::default(), Protocol::Uwsgi, &Config::default(), vec![packet[..10].to_vec()]);
    assert_eq!(out, "", "a truncated packet is closed");
}

#[test]
fn a_partial_head_is_parked_with_its_deadline_then_served() {
    let rec = Recorder::default();
    let config = Config::default();
    let bench = Bench::new(&rec, &config);
    let site = bench.site();
    let mut scratch = Scratch::new(&config);
    let accepted = Instant::now();
    let pieces = vec![b"GET /a HT".to_vec(), vec![], b"TP/1.1\r\nHost: h\r\n\r\n".to_vec(), vec![]];
    let conn = serve_ready(bench.conn(Protocol::Http, pieces), &mut scratch, &site).expect("parked");
    assert!(!conn.is_idle(), "a head has begun");
    assert!(
        conn.deadline() >= accepted + config.head_timeout && conn.deadline() <= Instant::now() + config.head_timeout
    );
    assert_eq!(bench.text(), "");
    let answered = Instant::now();
    let conn = serve_ready(conn, &mut scratch, &site).expect("kept alive, parked");
    assert!(bench.text().starts_with("HTTP/1.1 200 OK\r\n"), "{}", bench.text());
    assert!(conn.is_idle());
    assert!(conn.deadline() >= answered + config.keepalive_timeout);
    let conn = serve_ready(conn, &mut scratch, &site).expect("nothing came: parked again");
    assert!(serve_ready(conn, &mut scratch, &site).is_none(), "EOF closes");
    assert_eq!(bench.occupancy.open(), 0);
    assert_eq!(rec.seen.lock().unwrap().len(), 1);
}

#[test]
fn an_expired_partial_head_is_answered_408_and_an_idle_one_is_not() {
    let config = Config::default();
    let rec = Recorder::default();
    for (protocol, pieces, want) in [
        (Protocol::Http, vec![b"GET / HTTP/1.1\r\nHo".to_vec(), vec![]], "HTTP/1.1 408 "),
        (Protocol::Http, vec![vec![]], ""),
        (Protocol::Uwsgi, vec![vec![0, 10, 0], vec![]], ""),
    ] {
        let bench = Bench::new(&rec, &config);
        let mut scratch = Scratch::new(&config);
        let conn = serve_ready(bench.conn(protocol, pieces), &mut scratch, &bench.site()).expect("parked");
        conn.expire(&rec);
        assert!(bench.text().starts_with(want), "{protocol:?}: {}", bench.text());
        assert_eq!(bench.occupancy.open(), 0);
        // The 408 is counted and logged like any answer; a silent close is not.
        let reported = if want.is_empty() { vec![] } else { vec![row("GET", "/", "HTTP/1.1", 408)] };
        assert_eq!(rec.done(), reported, "{protocol:?}");
    }
}

fn row(method: &str, target: &str, version: &str, status: u16) -> Reported {
    (method.into(), target.into(), version.into(), status)
}

/// Heads the front refuses reach `Handler::done` with what their first
/// line shows (a method only when it is a token, the rest only after it).
#[test]
fn refused_heads_are_reported_with_what_their_first_line_shows() {
    let config = Config { buffer_size: 512, ..Config::default() };
    let rec = Recorder::default();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(600));
    let cases: Vec<(Vec<u8>, Reported)> = vec![
        (b"GET / HTTP/2.0\r\n\r\n".to_vec(), row("GET", "/", "HTTP/2.0", 505)),
        (b"GET /x?q=1 HTTP/1.1\r\n\r\n".to_vec(), row("GET", "/x?q=1", "HTTP/1.1", 400)),
        (b"\x16\x03\x01\x02\x00 tls hello\r\n\r\n".to_vec(), row("-", "-", "-", 400)),
        (b"G(T / HTTP/1.1\r\n\r\n".to_vec(), row("-", "-", "-", 400)),
        (long.clone().into_bytes(), row("GET", &long[4..long.find(" HTTP").unwrap()], "HTTP/1.1", 431)),
    ];
    for (head, want) in cases {
        let bench = Bench::new(&rec, &config);
        let mut scratch = Scratch::new(&config);
        let _ = serve_ready(bench.conn(Protocol::Http, vec![head.clone(), vec![]]), &mut scratch, &bench.site());
        let status = format!("HTTP/1.1 {} ", want.3);
        assert!(bench.text().starts_with(&status), "{:?}: {}", String::from_utf8_lossy(&head), bench.text());
        let got = rec.done();
        assert_eq!(got.len(), 1, "{:?}", String::from_utf8_lossy(&head));
        // A long target is kept up to the first line's cap.
        let (m, t, v, s) = &got[0];
        assert_eq!((m, v, *s), (&want.0, &want.2, want.3));
        assert!(want.1.starts_with(t.as_str()) && !t.is_empty(), "{t:?}");
    }
}

#[test]
fn a_refused_head_lingers_parked_until_the_peer_closes() {
    let config = Config::default();
    let rec = Recorder::default();
    let bench = Bench::new(&rec, &config);
    let mut scratch = Scratch::new(&config);
    let pieces = vec![b"GET / HTTP/2.0\r\n\r\n".to_vec(), vec![], b"more".to_vec(), vec![]];
    let conn = serve_ready(bench.conn(Protocol::Http, pieces), &mut scratch, &bench.site()).expect("lingers");
    assert!(bench.text().starts_with("HTTP/1.1 505 "), "{}", bench.text());
    assert!(!conn.is_idle(), "a drain does not cut a linger short");
    assert!(conn.deadline() <= Instant::now() + LINGER_TIME);
    let conn = serve_ready(conn, &mut scratch, &bench.site()).expect("still lingering");
    assert!(serve_ready(conn, &mut scratch, &bench.site()).is_none());
}

#[test]
fn draining_or_over_the_cap_closes_after_the_response() {
    let rec = Recorder::default();
    let two = [get_bytes(), get_bytes()].concat();
    let config = Config::default();
    let bench = Bench::new(&rec, &config);
    bench.drain.store(true, Ordering::Relaxed);
    let mut scratch = Scratch::new(&config);
    assert!(serve_ready(bench.conn(Protocol::Http, vec![two.clone()]), &mut scratch, &bench.site()).is_none());
    let out = bench.text();
    assert_eq!((out.matches("HTTP/1.1 200").count(), out.matches("Connection: close").count()), (1, 1), "{out}");

    let capped = Config { max_keepalive: 0, ..Config::default() };
    let out = run(&rec, Protocol::Http, &capped, vec![two]);
    assert_eq!((out.matches("HTTP/1.1 200").count(), out.matches("Connection: close").count()), (1, 1), "{out}");
}

#[test]
fn a_connection_closes_after_keepalive_requests() {
    let rec = Recorder::default();
    let five: Vec<u8> = std::iter::repeat_n(get_bytes(), 5).flatten().collect();
    let config = Config { keepalive_requests: 3, ..Config::default() };
    let out = run(&rec, Protocol::Http, &config, vec![five]);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
    assert!(
        out.ends_with("Connection: close\r\n\r\n0 bytes") && out.matches("Connection: close").count() == 1,
        "{out}"
    );
}

/// A read that fills the whole buffer may leave bytes in the socket: the
/// connection reads on before parking, since an edge-triggered epoll would
/// not report them (nothing new arrives).
#[test]
fn a_full_read_is_followed_by_another_before_parking() {
    let one = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "p".repeat(37)).into_bytes();
    assert_eq!(one.len(), 64);
    let config = Config { keepalive_requests: u32::MAX, ..Config::default() };
    let exact = crate::worker::front::wire::buffer_len(config.buffer_size) / one.len();
    let input: Vec<u8> = std::iter::repeat_n(one, exact + 10).flatten().collect();
    let rec = Recorder::default();
    let bench = Bench::new(&rec, &config);
    let mut scratch = Scratch::new(&config);
    let conn = serve_ready(bench.conn(Protocol::Http, vec![input, vec![]]), &mut scratch, &bench.site());
    assert!(conn.is_some(), "parked after the would-block");
    assert_eq!(rec.seen.lock().unwrap().len(), exact + 10, "every request the socket had, before parking");
}

fn get_bytes() -> Vec<u8> {
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec()
}

/// One request of a pipelined stream, and its encoding.
fn arb_request() -> impl Strategy<Value = (Seen, Vec<u8>)> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT"]),
        "/[a-z/]{0,10}",
        "[a-z=&]{0,6}",
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(method, path, query, body, chunked, cuts)| {
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let mut out = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n").into_bytes();
            if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
                cuts.push(body.len());
                cuts.sort_unstable();
                let mut from = 0;
                for cut in cuts.into_iter().filter(|c| *c > 0) {
                    if cut > from {
                        out.extend_from_slice(format!("{:x}\r\n", cut - from).as_bytes());
                        out.extend_from_slice(&body[from..cut]);
                        out.extend_from_slice(b"\r\n");
                        from = cut;
                    }
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
            }
            let seen = Seen { method: method.into(), path: path.into_bytes(), query: query.into_bytes(), body };
            (seen, out)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// However the reads cut a pipelined stream, the same requests come
    /// out, in order, each answered once.
    #[test]
    fn pipelined_stream_split_anywhere(reqs in prop::collection::vec(arb_request(), 1..5), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let stream: Vec<u8> = reqs.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        cuts.dedup();
        let pieces: Vec<Vec<u8>> = cuts.windows(2).map(|w| stream[w[0]..w[1]].to_vec()).collect();
        let rec = Recorder::default();
        let out = run(&rec, Protocol::Http, &Config::default(), pieces);
        let want: Vec<Seen> = reqs.into_iter().map(|(s, _)| s).collect();
        prop_assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), want.len());
        prop_assert_eq!(&*rec.seen.lock().unwrap(), &want);
    }

    /// Arbitrary bytes on a connection: it ends (answered or closed),
    /// whatever they are.
    #[test]
    fn arbitrary_connections_end(bytes in prop::collection::vec(any::<u8>(), 0..2000), uwsgi in any::<bool>()) {
        let protocol = if uwsgi { Protocol::Uwsgi } else { Protocol::Http };
        let _ = run(&Recorder::default(), protocol, &Config::default(), vec![bytes]);
    }
}
