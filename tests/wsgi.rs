//! The built-in WSGI worker (`module` / `wsgi-file`) end to end: the real
//! podmaster with real sockets, apps from `tests/scripts/wsgi/` wrapped in
//! `wsgiref.validate.validator` (PEP 3333 checks on every request), over
//! `http-socket` (HTTP/1.1) and `socket` (the uwsgi protocol). CI runs
//! this suite twice: preforked (the app imported by the zygote) and with
//! `UWSGI_LAZY_APPS=true` (imported by each worker).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use common::*;

fn app_dir() -> String {
    format!("{ROOT}/tests/scripts/wsgi")
}

/// A podmaster serving `module` on one `http-socket`; returns it and the
/// HTTP address.
fn wsgi_instance(module: &str, processes: u32, extra: &str) -> (Instance, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!("module = {module}\npythonpath = {}\nhttp-socket = {addr}\n{extra}", app_dir());
    let inst = Instance::start("", processes, 0, &extra);
    inst.wait_ready();
    (inst, addr)
}

/// `http_get`/`http_request`'s response with a chunked body decoded (the
/// front frames a streamed body without a length as chunked, as gunicorn).
fn decoded(r: Response) -> Response {
    if !r.header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return r;
    }
    let mut body = String::new();
    let mut rest = r.body.as_str();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        body.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    Response { body, ..r }
}

fn get(addr: &str, path: &str) -> Response {
    decoded(http_get(addr, path).unwrap())
}

/// Reads one response with a `Content-Length` body from a kept-alive
/// connection: (status, headers, body).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<String>, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        headers.push(h);
    }
    let chunked = headers.iter().any(|h| h.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if !chunked {
        let mut body = vec![0; length];
        r.read_exact(&mut body).unwrap();
        return (status, headers, body);
    }
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk).unwrap();
        if n == 0 {
            return (status, headers, body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

fn raw_request(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn get_post_head_keepalive_stream_and_chunked_body() {
    let (inst, addr) = wsgi_instance("app", 2, "");
    let r = get(&addr, "/World");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, World\n"), "{}", inst.logs());
    let head = http_request(&addr, "HEAD", "/World", &[]).unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    // Keep-alive: a POST and a GET on one connection.
    let s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    write!(w, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world").unwrap();
    let (status, _, body) = read_response(&mut r);
    assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
    write!(w, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, _, body) = read_response(&mut r);
    assert_eq!((status, body.as_slice()), (200, &b"Hello, again\n"[..]));

    // A generator's chunks, streamed (chunked framing on HTTP/1.1).
    let streamed = raw_request(&addr, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    for i in 0..5 {
        assert!(streamed.contains(&format!("chunk {i}\n")), "{streamed}");
    }
    // A chunked request body, read to its end without CONTENT_LENGTH.
    let echoed = raw_request(
        &addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(echoed.starts_with("HTTP/1.1 200") && echoed.contains("hello world"), "{echoed}");
    let lines = raw_request(
        &addr,
        b"POST /lines HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\na\nb\nc\n",
    );
    assert!(lines.contains("3 lines\n"), "{lines}");
}

#[test]
fn environ_follows_pep_3333() {
    let (inst, addr) = wsgi_instance("app", 1, "");
    let headers = ["X-Multi: a", "X-Multi: b", "X_Smuggle: 1"];
    let r = decoded(http_request(&addr, "GET", "/environ/caf%C3%A9?a=1&b=%20", &headers).unwrap());
    assert_eq!(r.status, 200, "{}", inst.logs());
    let env: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    // PATH_INFO: the decoded bytes, one code point each (latin-1).
    assert_eq!(env["PATH_INFO"], "/environ/caf\u{c3}\u{a9}");
    assert_eq!(env["QUERY_STRING"], "a=1&b=%20");
    assert_eq!(env["SCRIPT_NAME"], "");
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(env["SERVER_PORT"], addr.rsplit(':').next().unwrap());
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["HTTP_X_MULTI"], "a, b");
    assert!(env.get("HTTP_X_SMUGGLE").is_none(), "a header with `_` must be dropped: {env}");
    assert_eq!(env["wsgi.url_scheme"], "http");
    assert_eq!(env["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(env["wsgi.multithread"], false);
}

#[test]
fn an_exception_is_a_500_and_the_worker_goes_on() {
    let (inst, addr) = wsgi_instance("app", 1, "");
    let r = get(&addr, "/raise");
    assert_eq!(r.status, 500);
    let r = get(&addr, "/after");
    assert_eq!((r.status, r.body.as_str()), (200, "Hello, after\n"));
    let logs = inst.logs();
    assert!(logs.contains("RuntimeError: boom from the app"), "{logs}");
}

#[test]
fn uwsgi_protocol_on_a_unix_socket() {
    let dir = TempDir::new("wsgi-uwsgi");
    let sock = dir.path().join("app.sock");
    let extra = format!("module = app\npythonpath = {}\nsocket = {}\n", app_dir(), sock.display());
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    let vars: &[(&[u8], &[u8])] = &[
        (b"REQUEST_METHOD", b"POST"),
        (b"REQUEST_URI", b"/echo"),
        (b"PATH_INFO", b"/echo"),
        (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"80"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"CONTENT_LENGTH", b"4"),
        (b"HTTP_HOST", b"example.org"),
    ];
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&podmaster::worker::front::uwsgi::encode_packet(vars)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}\n{}", inst.logs());
    assert!(out.ends_with("ping"), "{out}");
}

#[test]
fn a_broken_app_stops_startup_with_its_traceback() {
    let (text, _, _) =
        ini("", 2, 0, &format!("module = broken\npythonpath = {}\nhttp-socket = 127.0.0.1:0", app_dir()));
    let dir = TempDir::new("wsgi-broken");
    let path = dir.write("podmaster.ini", &text);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--ini").arg(&path);
    let mut inst = Instance::spawn(cmd, dir.path().join("stderr.log"));
    let st = inst.wait_exit(DEADLINE);
    let logs = inst.logs();
    assert_eq!(st.code(), Some(69), "{logs}");
    assert!(logs.contains("Traceback") && logs.contains("broken_app_marker"), "{logs}");
}

#[test]
fn four_threads_serve_four_requests_at_once() {
    let (inst, addr) = wsgi_instance("app", 1, "threads = 4");
    // Each view waits on a threading.Barrier(4): only four requests in
    // flight together get past it.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn({
                let a = addr.clone();
                move || http_get(&a, "/barrier").map(decoded)
            })
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "met\n"), "{}", inst.logs());
    }
    let env: serde_json::Value = serde_json::from_str(&get(&addr, "/environ").body).unwrap();
    assert_eq!(env["wsgi.multithread"], true);
}

#[test]
fn chain_reload_then_drain_finishes_the_request_in_flight() {
    let (mut inst, addr) = wsgi_instance("app", 2, "");
    let before = inst.worker_pids();
    inst.signal(libc::SIGHUP);
    inst.wait_metric("podmaster_reloads_total{result=\"ok\"}", 1.0);
    let after = inst.worker_pids();
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");
    assert_eq!(get(&addr, "/reloaded").status, 200);

    // A slow request in flight when SIGTERM arrives still completes.
    let slow = std::thread::spawn({
        let a = addr.clone();
        move || http_get(&a, "/slow?1.5").map(decoded)
    });
    wait_for("the slow request to be in flight", DEADLINE, || {
        inst.logs().contains("slow request started").then_some(())
    });
    inst.signal(libc::SIGTERM);
    let r = slow.join().unwrap().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "slow done\n"));
    let st = inst.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", inst.logs());
}

#[test]
fn wsgi_file_and_callable() {
    let dir = TempDir::new("wsgi-file");
    let file = dir.write(
        "site.py",
        "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'from a file\\n']\n",
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!("wsgi-file = {}\ncallable = app\nhttp-socket = {addr}\n", file.display());
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    let r = get(&addr, "/");
    assert_eq!((r.status, r.body.as_str()), (200, "from a file\n"), "{}", inst.logs());
}

#[test]
fn input_after_the_call_raises_exc_info_replaces_headers_and_close_is_called() {
    let (inst, addr) = wsgi_instance("app:edges", 1, "");
    assert_eq!(get(&addr, "/keep-input").body, "kept\n", "{}", inst.logs());
    let r = get(&addr, "/read-kept");
    assert!(r.body.starts_with("ValueError: wsgi.input read after the app's call returned"), "{r:?}");
    let r = get(&addr, "/exc-info");
    assert_eq!((r.status, r.body.as_str()), (503, "replaced\n"));
    for _ in 0..2 {
        assert_eq!(get(&addr, "/closing").body, "ab");
    }
    assert_eq!(get(&addr, "/closed").body, "closed 2\n");
}

/// The protocol follows the name a socket was given by on the command line
/// and in the environment too, not only in a file (`--http-socket` and
/// `UWSGI_HTTP_SOCKET` speak HTTP; bench row 16 found them speaking uwsgi).
#[test]
fn http_socket_from_the_command_line_and_the_environment_speaks_http() {
    let (cli, env) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let probe = format!("127.0.0.1:{}", free_port());
    let dir = TempDir::new("wsgi-cli");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--module", "app", "--pythonpath", &app_dir(), "--http-socket", &cli, "--probe-socket", &probe]);
    cmd.env("UWSGI_HTTP_SOCKET", &env);
    let mut inst = Instance::spawn(cmd, dir.path().join("log"));
    inst.probe = probe;
    inst.wait_ready();
    for addr in [&cli, &env] {
        let r = get(addr, "/");
        assert_eq!(r.status, 200, "{addr}: {}", inst.logs());
    }
}
