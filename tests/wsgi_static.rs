//! `static-map` end to end (issue 20): files from the Rust front with
//! validators, conditional requests, ranges and gzip variants; missing
//! files and directories go on to the app; every way out of the
//! directory (`..`, encoded `..`, symlinks out, absolute symlinks) is a
//! 404 and never reaches a file outside.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

const APP: &str = "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', \
                   'text/plain')])\n    return [('app: ' + environ['REQUEST_METHOD'] + ' ' + environ['PATH_INFO']).encode()]\n";

/// One request with extra header lines; (status, head, body).
fn ask(addr: &str, method: &str, target: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, all[split..].to_vec())
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

struct Site {
    _dir: TempDir,
    _inst: Instance,
    addr: String,
    big: Vec<u8>,
}

fn site() -> Site {
    site_with("")
}

fn site_with(rules: &str) -> Site {
    let dir = TempDir::new("wsgi-static");
    let root = dir.path().join("public");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("style.css"), "body { color: red }\n").unwrap();
    std::fs::write(root.join("sub/page.html"), "<p>hi</p>\n").unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("app.js"), "plain();\n").unwrap();
    std::fs::write(root.join("app.js.gz"), b"\x1f\x8bpretend-gzip").unwrap();
    std::fs::write(root.join("notes.txt"), "no rule matches me\n").unwrap();
    std::fs::write(root.join("logo.ico"), b"\x00\x00\x01\x00").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "top secret\n").unwrap();
    std::os::unix::fs::symlink("style.css", root.join("alias.css")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    dir.write("staticapp.py", APP);
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "module = staticapp\npythonpath = {d}\nhttp-socket = {addr}\nstatic-map = /static={d}/public\n\
         static-gzip-all = true\n{rules}",
        d = dir.path().display()
    );
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    Site { _dir: dir, _inst: inst, addr, big }
}

#[test]
fn files_validators_conditionals_ranges_and_gzip() {
    let s = site();
    let (status, head, body) = ask(&s.addr, "GET", "/static/style.css", "");
    assert_eq!((status, body.as_slice()), (200, &b"body { color: red }\n"[..]), "{head}");
    assert_eq!(header(&head, "Content-Type"), Some("text/css; charset=utf-8"));
    let etag = header(&head, "ETag").unwrap().to_owned();
    let modified = header(&head, "Last-Modified").unwrap().to_owned();
    assert!(modified.ends_with(" GMT"), "{modified}");

    let (status, _, body) = ask(&s.addr, "GET", "/static/style.css", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, _) = ask(&s.addr, "GET", "/static/style.css", &format!("If-Modified-Since: {modified}\r\n"));
    assert_eq!(status, 304);
    let (status, _, _) = ask(&s.addr, "GET", "/static/style.css", "If-None-Match: \"other\"\r\n");
    assert_eq!(status, 200);

    let (status, head, body) = ask(&s.addr, "GET", "/static/big.bin", "Range: bytes=1000-1999\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(header(&head, "Content-Range"), Some("bytes 1000-1999/1048576"));
    assert_eq!(body, s.big[1000..2000]);
    let (status, _, body) = ask(&s.addr, "GET", "/static/big.bin", "");
    assert!(status == 200 && body == s.big, "whole file");
    let (status, head, _) = ask(&s.addr, "GET", "/static/big.bin", "Range: bytes=2000000-\r\n");
    assert_eq!((status, header(&head, "Content-Range")), (416, Some("bytes */1048576")));
    let (status, _, body) = ask(&s.addr, "GET", "/static/big.bin", "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((status, body.len()), (200, 1 << 20), "a stale If-Range gets the whole file");
    let (status, head, body) = ask(&s.addr, "HEAD", "/static/big.bin", "");
    assert_eq!((status, header(&head, "Content-Length"), body.len()), (200, Some("1048576"), 0));

    let (_, head, body) = ask(&s.addr, "GET", "/static/app.js", "Accept-Encoding: br, gzip\r\n");
    assert_eq!((header(&head, "Content-Encoding"), body.as_slice()), (Some("gzip"), &b"\x1f\x8bpretend-gzip"[..]));
    assert_eq!(header(&head, "Content-Type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(header(&head, "Vary"), Some("Accept-Encoding"));
    let (_, head, body) = ask(&s.addr, "GET", "/static/app.js", "Accept-Encoding: gzip;q=0\r\n");
    assert_eq!((header(&head, "Content-Encoding"), body.as_slice()), (None, &b"plain();\n"[..]));

    let (status, _, body) = ask(&s.addr, "GET", "/static/alias.css", "");
    assert_eq!((status, body.as_slice()), (200, &b"body { color: red }\n"[..]), "a symlink inside stays inside");
}

#[test]
fn the_app_gets_what_is_not_a_file_and_nothing_escapes() {
    let s = site();
    for (target, want) in [
        ("/static/missing.css", "app: GET /static/missing.css"),
        ("/static/sub/", "app: GET /static/sub/"),
        ("/static/sub", "app: GET /static/sub"),
        ("/staticfoo/style.css", "app: GET /staticfoo/style.css"),
        ("/other", "app: GET /other"),
    ] {
        let (status, _, body) = ask(&s.addr, "GET", target, "");
        assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, want), "{target}");
    }
    let (_, _, body) = ask(&s.addr, "POST", "/static/style.css", "Content-Length: 0\r\n");
    assert_eq!(String::from_utf8_lossy(&body), "app: POST /static/style.css");
    for target in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/sub/%2E%2E/%2e%2e/secret.txt",
        "/static/escape.txt",
        "/static/passwd",
        "/static/sub/..%2f..%2fsecret.txt",
        "/static/%00style.css",
    ] {
        let (status, head, body) = ask(&s.addr, "GET", target, "");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("top secret") && !text.contains("root:"), "{target} leaked: {text}");
        assert!(status == 404 || status == 400, "{target}: {head}{text}");
    }
}

/// The `static-expires` family: the first rule that matches, in the order
/// given, sets `Expires` and `Cache-Control: max-age` (from now, or from
/// the file's mtime for `-mtime`), on 200, 206 and 304 alike; a file no
/// rule matches gets neither.
#[test]
fn static_expires_rules_in_order() {
    let s = site_with(
        "static-expires-type = text/css=3600\n\
         static-expires = /sub/.*\\.html 60\n\
         static-expires-mtime = big\\.bin$ 86400\n\
         static-expires-uri = \\?v=[0-9]+ 31536000\n\
         static-expires-path-info = ^/static/app\\.js$ 120\n\
         static-expires-type = image/x-icon=7200\n\
         static-expires-type = application/x-tar=60\n",
    );
    let max_age = |head: &str| {
        let cc = header(head, "Cache-Control").unwrap_or_else(|| panic!("no Cache-Control: {head}"));
        assert!(header(head, "Expires").is_some_and(|e| e.ends_with(" GMT")), "{head}");
        cc.strip_prefix("max-age=").and_then(|n| n.parse::<u64>().ok()).unwrap_or_else(|| panic!("{cc}"))
    };
    for (target, want) in [
        ("/static/style.css", 3600),
        ("/static/alias.css", 3600),
        ("/static/sub/page.html", 60),
        ("/static/app.js?v=42", 31_536_000),
        ("/static/app.js", 120),
        // mime.types' name for the type podmaster sends as image/vnd.microsoft.icon.
        ("/static/logo.ico", 7200),
    ] {
        let (status, head, _) = ask(&s.addr, "GET", target, "");
        assert_eq!((status, max_age(&head)), (200, want), "{target}: {head}");
    }
    // From the mtime (just written): a day minus the file's age.
    let (status, head, _) = ask(&s.addr, "GET", "/static/big.bin", "Range: bytes=0-9\r\n");
    let age = max_age(&head);
    assert!(status == 206 && (86_400 - 600..=86_400).contains(&age), "{age}: {head}");
    // A 304 carries them too.
    let (_, head, _) = ask(&s.addr, "GET", "/static/style.css", "");
    let etag = header(&head, "ETag").unwrap().to_owned();
    let (status, head, _) = ask(&s.addr, "GET", "/static/style.css", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((status, max_age(&head)), (304, 3600), "{head}");
    let (status, head, _) = ask(&s.addr, "GET", "/static/notes.txt", "");
    assert_eq!(status, 200);
    assert!(header(&head, "Expires").is_none() && header(&head, "Cache-Control").is_none(), "{head}");
    // A type podmaster never sends: accepted (a uWSGI config may name
    // any), with a notice that the rule matches nothing.
    let logs = s._inst.logs();
    assert!(logs.contains(r#"no static file is ever sent as "application/x-tar""#), "{logs}");
}

/// Malformed `static-expires*` values are configuration errors, all named
/// at once, before any worker starts.
#[test]
fn bad_static_expires_values_are_refused() {
    let dir = TempDir::new("wsgi-static-bad");
    std::fs::create_dir_all(dir.path().join("public")).unwrap();
    dir.write("staticapp.py", APP);
    let ini = dir.write(
        "bad.ini",
        &format!(
            "[uwsgi]\nmodule = staticapp\npythonpath = {d}\nhttp-socket = 127.0.0.1:0\nstatic-map = /s={d}/public\n\
             static-expires = [unclosed 60\nstatic-expires-type = text/css\nstatic-expires-uri = .* soon\n\
             static-expires-path-info = .* 999999999999\n",
            d = dir.path().display()
        ),
    );
    let out = std::process::Command::new(BIN).arg("--ini").arg(&ini).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for want in ["\"[unclosed\" is not a regular expression", "expected TYPE=SECONDS", "\"soon\"", "ten years"] {
        assert!(err.contains(want), "{want}: {err}");
    }
}
