//! `wsgi.file_wrapper` end to end: a real file goes out by `sendfile`
//! (counted: a handful of read syscalls for 24 MiB, where reading it in
//! 64 KiB blocks would take hundreds — sendfile counts as one read per
//! call in /proc/PID/io; a socket's send counts as none, so reads it is), from the file's current position, cut at the
//! app's `Content-Length`; anything else is iterated.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

const FILE_APP: &str = r#"
import io, os

DATA = os.environ["FILE_UNDER_TEST"]

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/whole":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(DATA, "rb"))
    if path == "/from-1000":
        f = open(DATA, "rb")
        f.seek(1000)
        start_response("200 OK", [("Content-Length", "5000")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/bytesio":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"not a real file"))
    if path == "/too-long":
        start_response("200 OK", [("Content-Length", str(os.path.getsize(DATA) + 1))])
        return environ["wsgi.file_wrapper"](open(DATA, "rb"))
    start_response("404 Not Found", [])
    return [b""]
"#;

/// The worker's read-syscall count (`syscr` in /proc/PID/io).
fn syscr(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines().find_map(|l| l.strip_prefix("syscr: ")).unwrap().trim().parse().unwrap()
}

/// One raw request; the whole answer (the server closes after it).
fn fetch(addr: &str, method: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8_lossy(&all[..split]).into_owned(), all[split..].to_vec())
}

#[test]
fn file_wrapper_sends_real_files_with_sendfile() {
    let dir = TempDir::new("wsgi-files");
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &data).unwrap();
    dir.write("fileapp.py", FILE_APP);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "module = fileapp\npythonpath = {}\nhttp-socket = {addr}\nenv = FILE_UNDER_TEST={}\n",
        dir.path().display(),
        path.display()
    );
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    let pid = inst.worker_pids()[0].1;

    let before = syscr(pid);
    let (head, body) = fetch(&addr, "GET", "/whole");
    let reads = syscr(pid) - before;
    assert!(head.contains(&format!("Content-Length: {}", data.len())), "{head}");
    assert!(body == data, "the body differs from the file ({} bytes)", body.len());
    assert!(reads < 64, "{reads} read syscalls for 24 MiB: not sendfile");

    let (head, body) = fetch(&addr, "GET", "/from-1000");
    assert!(head.contains("Content-Length: 5000"), "{head}");
    assert_eq!(body, data[1000..6000]);

    let (head, body) = fetch(&addr, "HEAD", "/whole");
    assert!(head.contains(&format!("Content-Length: {}", data.len())) && body.is_empty(), "{head}");

    let (head, body) = fetch(&addr, "GET", "/bytesio");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("not a real file"), "{text}");

    // A promise the file cannot keep is a 500, not a short body.
    let (head, _) = fetch(&addr, "GET", "/too-long");
    assert!(head.starts_with("HTTP/1.1 500"), "{head}\n{}", inst.logs());
    assert!(inst.logs().contains("more than the"), "{}", inst.logs());
}
