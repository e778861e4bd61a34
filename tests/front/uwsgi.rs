//! The uwsgi protocol over a Unix socket, with packets built here byte by
//! byte as nginx's `uwsgi_pass` builds them (not with the front's own
//! encoder).

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use podmaster::worker::front::{Config, Protocol, Request, RequestBody, Response};

use crate::harness::*;

/// modifier1 0, u16 LE size, modifier2 0, then `u16 LE len, key, u16 LE
/// len, value` per var.
pub fn nginx_packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&[(k.len() & 0xff) as u8, (k.len() >> 8) as u8]);
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&[(v.len() & 0xff) as u8, (v.len() >> 8) as u8]);
        block.extend_from_slice(v.as_bytes());
    }
    let mut packet = vec![0, (block.len() & 0xff) as u8, (block.len() >> 8) as u8, 0];
    packet.extend_from_slice(&block);
    packet
}

/// Answers with what it saw, one `key=value` per line.
pub fn describe(req: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
    let mut data = Vec::new();
    if let Err(e) = body.read_to_end(&mut data) {
        return Response::text(400, "Bad Body", &e.to_string());
    }
    if &*req.path_info == b"/stream" {
        let chunks = (0..4).map(|i| Ok(format!("part{i};").into_bytes()));
        return Response::new(200, "OK").header("Content-Type", "text/plain").stream(chunks, None);
    }
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let lines = [
        format!("method={}", s(req.method)),
        format!("path={}", s(&req.path_info)),
        format!("query={}", s(req.query_string)),
        format!("uri={}", s(req.request_uri)),
        format!("remote={}:{}", s(req.remote_addr), s(req.remote_port)),
        format!("server={}:{}", s(req.server_name), s(req.server_port)),
        format!("scheme={}", req.scheme.as_str()),
        format!("protocol={}", s(req.server_protocol)),
        format!("host={}", s(req.header("host").unwrap_or_default())),
        format!("type={}", s(req.header("content-type").unwrap_or_default())),
        format!("xff={}", s(req.header("x-forwarded-for").unwrap_or_default())),
        format!("body={}", s(&data)),
    ];
    Response::new(200, "OK").header("Content-Type", "text/plain").body(lines.join("\n"))
}

fn unix_exchange(srv: &Server, raw: &[u8]) -> (Resp, bool) {
    let mut s = UnixStream::connect(srv.path.as_ref().unwrap()).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    let resp = read_response(&mut r, false).unwrap();
    let mut rest = Vec::new();
    let closed = r.read_to_end(&mut rest).is_ok() && rest.is_empty();
    (resp, closed)
}

#[test]
fn uwsgi_request_as_nginx_sends_it() {
    let srv = Server::unix(Protocol::Uwsgi, Config::default(), 2, describe);
    let mut raw = nginx_packet(&[
        ("QUERY_STRING", "a=1&b=%20"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("CONTENT_LENGTH", "11"),
        ("REQUEST_URI", "/x%20y?a=1&b=%20"),
        ("PATH_INFO", "/x y"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "https"),
        ("HTTPS", "on"),
        ("REMOTE_ADDR", "192.0.2.9"),
        ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "443"),
        ("SERVER_NAME", "example.org"),
        ("HTTP_HOST", "example.org"),
        ("HTTP_X_FORWARDED_FOR", "198.51.100.1"),
        ("HTTP_CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("HTTP_CONTENT_LENGTH", "11"),
    ]);
    raw.extend_from_slice(b"hello=world");
    let (resp, closed) = unix_exchange(&srv, &raw);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(resp.body.len().to_string().as_str()));
    assert!(closed, "one request per uwsgi connection");
    let text = resp.text();
    for line in [
        "method=POST",
        "path=/x y",
        "query=a=1&b=%20",
        "uri=/x%20y?a=1&b=%20",
        "remote=192.0.2.9:40000",
        "server=example.org:443",
        "scheme=https",
        "protocol=HTTP/1.1",
        "host=example.org",
        "type=application/x-www-form-urlencoded",
        "xff=198.51.100.1",
        "body=hello=world",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[test]
fn uwsgi_streamed_answer_is_delimited_by_the_close() {
    let srv = Server::unix(Protocol::Uwsgi, Config::default(), 2, describe);
    let raw = nginx_packet(&[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/stream"), ("SERVER_PROTOCOL", "HTTP/1.1")]);
    let (resp, _) = unix_exchange(&srv, &raw);
    assert_eq!((resp.header("content-length"), resp.header("transfer-encoding")), (None, None));
    assert_eq!(resp.text(), "part0;part1;part2;part3;");
}

#[test]
fn uwsgi_refusals_close() {
    let srv = Server::unix(Protocol::Uwsgi, Config { buffer_size: 64, ..Config::default() }, 2, describe);
    let path = srv.path.clone().unwrap();
    let send = |raw: &[u8]| {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut other_plugin = nginx_packet(&[("REQUEST_METHOD", "GET")]);
    other_plugin[0] = 30;
    assert_eq!(send(&other_plugin), "", "modifier1 30 is not WSGI: closed unanswered");
    let big = nginx_packet(&[("REQUEST_METHOD", "GET"), ("HTTP_X", &"v".repeat(100))]);
    assert_eq!(send(&big), "", "a vars block over buffer-size is closed unanswered");
    let overrun = [0u8, 4, 0, 0, 9, 0, b'A', b'B'];
    assert_eq!(send(&overrun), "", "a var running past the packet is closed");
    let no_params = nginx_packet(&[("PATH_INFO", "/")]);
    assert!(send(&no_params).starts_with("HTTP/1.0 400 "), "no REQUEST_METHOD (no uwsgi_params)");
}
