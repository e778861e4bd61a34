//! Hostile packets on the uwsgi `socket`: wrong sizes and modifiers, vars
//! blocks over `buffer-size` or running past their end, truncated packets
//! and bodies, bad `CONTENT_LENGTH`. One request per connection: every
//! case ends in an answer and a close, or in a close.

use super::Expect::{Close, Status};
use super::*;

/// The vars nginx's `uwsgi_params` sends for `METHOD path`.
fn vars(method: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        ("REQUEST_METHOD", method),
        ("REQUEST_URI", path),
        ("PATH_INFO", path),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "example.org"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "10.0.0.7"),
        ("HTTP_HOST", "example.org"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn block(vars: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in vars {
        for s in [k, v] {
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s);
        }
    }
    b
}

/// A packet: header with `modifier1`, the block's size (or `size`), `modifier2`.
fn packet(modifier1: u8, size: Option<u16>, modifier2: u8, block: &[u8]) -> Vec<u8> {
    let mut p = vec![modifier1];
    p.extend_from_slice(&size.unwrap_or(block.len() as u16).to_le_bytes());
    p.push(modifier2);
    p.extend_from_slice(block);
    p
}

fn request(method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut v = vars(method, path);
    v.extend(extra.iter().map(|(k, val)| (k.as_bytes().to_vec(), val.as_bytes().to_vec())));
    let mut p = packet(0, None, 0, &block(&v));
    p.extend_from_slice(body);
    p
}

type Case = (&'static str, Vec<u8>, bool, super::Expect);

fn cases() -> Vec<Case> {
    let good = block(&vars("GET", "/x"));
    let no_method: Vec<_> = vars("GET", "/x").into_iter().filter(|(k, _)| k != b"REQUEST_METHOD").collect();
    let mut key_overrun = good.clone();
    key_overrun.extend_from_slice(&[200, 0, b'K']);
    let mut value_overrun = good.clone();
    value_overrun.extend_from_slice(&[1, 0, b'K', 200, 0, b'v']);
    let mut odd_byte = good.clone();
    odd_byte.push(7);
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..200).map(|i| (format!("HTTP_X{i}").into_bytes(), b"v".to_vec())).collect();
    let mut too_many = vars("GET", "/x");
    too_many.extend(many);
    let mut padded = vars("GET", "/x");
    let room = 4096 - good.len() - 4 - "HTTP_X_PAD".len();
    padded.push((b"HTTP_X_PAD".to_vec(), vec![b'p'; room]));
    let mut over = padded.clone();
    over[9].1.push(b'p');
    let mut twice = vars("GET", "/first");
    twice.extend(vars("POST", "/second"));
    vec![
        ("a good packet", packet(0, None, 0, &good), false, Status(200)),
        ("a vars block of exactly buffer-size", packet(0, None, 0, &block(&padded)), false, Status(200)),
        ("a vars block one byte over buffer-size", packet(0, None, 0, &block(&over)), false, Close),
        ("a declared size of 65535", packet(0, Some(u16::MAX), 0, &good), false, Close),
        ("modifier1 = 1", packet(1, None, 0, &good), false, Close),
        ("modifier1 = 255", packet(255, None, 0, &good), false, Close),
        ("modifier2 = 9", packet(0, None, 9, &good), false, Status(200)),
        ("an empty vars block", packet(0, None, 0, &[]), false, Status(400)),
        ("no REQUEST_METHOD", packet(0, None, 0, &block(&no_method)), false, Status(400)),
        ("an empty REQUEST_METHOD", request("", "/x", &[], b""), false, Status(400)),
        ("a key running past the block", packet(0, None, 0, &key_overrun), false, Close),
        ("a value running past the block", packet(0, None, 0, &value_overrun), false, Close),
        ("a stray byte after the vars", packet(0, None, 0, &odd_byte), false, Close),
        ("200 vars", packet(0, None, 0, &block(&too_many)), false, Close),
        ("a header cut short", vec![0, 10], true, Close),
        ("a vars block cut short", packet(0, Some(good.len() as u16), 0, &good[..good.len() / 2]), true, Close),
        ("nothing, half-closed", Vec::new(), true, Close),
        ("CONTENT_LENGTH abc", request("POST", "/hash", &[("CONTENT_LENGTH", "abc")], b""), false, Status(400)),
        ("CONTENT_LENGTH -1", request("POST", "/hash", &[("CONTENT_LENGTH", "-1")], b""), false, Status(400)),
        (
            "a 20-digit CONTENT_LENGTH",
            request("POST", "/hash", &[("CONTENT_LENGTH", "99999999999999999999")], b""),
            false,
            Status(400),
        ),
        ("a body cut short", request("POST", "/hash", &[("CONTENT_LENGTH", "100")], b"0123456789"), true, Close),
        (
            "a body longer than CONTENT_LENGTH",
            request("POST", "/hash", &[("CONTENT_LENGTH", "5")], b"hello, and more"),
            false,
            Status(200),
        ),
        ("a vars block repeated (the first wins)", packet(0, None, 0, &block(&twice)), false, Status(200)),
        ("NUL and high bytes in PATH_INFO", request("GET", "/a\0\u{ff}", &[], b""), false, Status(200)),
        (
            "a second packet after the first",
            [request("GET", "/a", &[], b""), request("GET", "/smuggled", &[], b"")].concat(),
            false,
            Status(200),
        ),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, Close),
    ]
}

#[test]
fn hostile_uwsgi_packets_get_a_4xx_or_a_close_and_the_worker_serves_on() {
    let w = Wsgi::start("bulk", 1, "threads = 1", |c| c);
    let worker = w.worker();
    let cases = cases();
    for (name, bytes, half_close, expect) in &cases {
        case(&w, worker, &w.uwsgi, name, bytes, *half_close, *expect);
    }
    // A uwsgi packet sent to the HTTP port is refused there.
    case(&w, worker, &w.http, "a uwsgi packet on the HTTP port", &request("GET", "/x", &[], b""), false, Status(400));
    let logs = w.inst.logs();
    assert!(!logs.contains("smuggled"), "{logs}");
    for line in ["over buffer-size", "modifier1 1", "runs past the end", "too many uwsgi vars"] {
        assert!(logs.contains(line), "no log line with {line:?}:\n{logs}");
    }
    assert_no_panic(&w);
    eprintln!("{} hostile uwsgi cases", cases.len() + 1);
}
