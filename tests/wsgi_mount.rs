//! Several WSGI apps in one instance (`mount`, `manage-script-name`),
//! `need-app = false`, and `http = :port` — uWSGI's options as real
//! configs use them, end to end with real workers and sockets.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;

/// An app that answers with its name, its SCRIPT_NAME and its PATH_INFO.
fn named_app(name: &str) -> String {
    format!(
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [('{name} %s %s' % (environ['SCRIPT_NAME'] or '-', environ['PATH_INFO'] or '-')).encode()]\n"
    )
}

fn body(addr: &str, path: &str) -> (u16, String) {
    let r = http_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status, r.body)
}

#[test]
fn manage_script_name_routes_by_the_longest_mount_and_splits_the_path() {
    let dir = TempDir::new("wsgi-mount");
    dir.write("home.py", &named_app("home"));
    dir.write("api.py", &named_app("api"));
    std::fs::create_dir_all(dir.path().join("legacy")).unwrap();
    dir.write("legacy/old.wsgi", &named_app("legacy"));
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "chdir = {dir}\npythonpath = {dir}\nmodule = home\nmount = /api=api\nmount = /api/legacy/=legacy/old.wsgi\n\
         manage-script-name = true\nhttp-socket = {addr}\n",
        dir = dir.path().display()
    );
    let inst = Instance::start("", 2, 0, &extra);
    inst.wait_ready();
    for (path, want) in [
        ("/", "home - /"),
        ("/about", "home - /about"),
        ("/api", "api /api -"),
        ("/api/users/7", "api /api /users/7"),
        ("/api/legacy/x", "legacy /api/legacy /x"),
        ("/apiary", "home - /apiary"),
    ] {
        assert_eq!(body(&addr, path), (200, want.to_owned()), "{path}\n{}", inst.logs());
    }
}

/// Without manage-script-name, nginx's `uwsgi_param SCRIPT_NAME` picks the
/// app and the path is left as the proxy sent it; over HTTP (no
/// SCRIPT_NAME) every request goes to the default app.
#[test]
fn without_manage_script_name_the_proxys_script_name_picks_the_app() {
    let dir = TempDir::new("wsgi-mount-sn");
    dir.write("home.py", &named_app("home"));
    dir.write("api.py", &named_app("api"));
    let sock = dir.path().join("app.sock");
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "pythonpath = {dir}\nmount = /api=api\nmount = /=home\nsocket = {sock}\nhttp-socket = {addr}\n",
        dir = dir.path().display(),
        sock = sock.display()
    );
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    assert_eq!(body(&addr, "/api/x"), (200, "home - /api/x".into()), "{}", inst.logs());
    let ask = |script: &[u8], path: &[u8]| {
        let vars: &[(&[u8], &[u8])] = &[
            (b"REQUEST_METHOD", b"GET"),
            (b"REQUEST_URI", b"/api/x"),
            (b"SCRIPT_NAME", script),
            (b"PATH_INFO", path),
            (b"QUERY_STRING", b""),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            (b"SERVER_NAME", b"example.org"),
            (b"SERVER_PORT", b"80"),
        ];
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(&podmaster::worker::front::uwsgi::encode_packet(vars)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(ask(b"/api", b"/x"), "api /api /x");
    assert_eq!(ask(b"", b"/api/x"), "home - /api/x");
    assert_eq!(ask(b"/nope", b"/x"), "home /nope /x");
}

/// need-app = false: the instance comes up although one app fails to
/// import; that app's requests get a 500, the others are served, and the
/// traceback is in the log. With the default (need-app = true) the same
/// config stops at startup (exit 69, as tests/wsgi.rs shows for one app).
#[test]
fn need_app_false_serves_the_apps_that_loaded() {
    let dir = TempDir::new("wsgi-need-app");
    dir.write("home.py", &named_app("home"));
    dir.write("bad.py", "raise RuntimeError('bad_app_marker')\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "pythonpath = {dir}\nmodule = home\nmount = /bad=bad\nmanage-script-name = true\nneed-app = false\n\
         http-socket = {addr}\n",
        dir = dir.path().display()
    );
    let inst = Instance::start("", 1, 0, &extra);
    inst.wait_ready();
    assert_eq!(body(&addr, "/x"), (200, "home - /x".into()), "{}", inst.logs());
    let (status, _) = body(&addr, "/bad/x");
    assert_eq!(status, 500, "{}", inst.logs());
    let logs = inst.logs();
    assert!(logs.contains("bad_app_marker") && logs.contains("need-app = false"), "{logs}");

    // Another port: the first instance's workers may hold theirs a moment
    // after it is gone (they die by parent-death signal).
    let other = format!("127.0.0.1:{}", free_port());
    let (text, _, _) = ini("", 1, 0, &extra.replace("need-app = false\n", "").replace(&addr, &other));
    let path = dir.write("strict.ini", &text);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--ini").arg(&path);
    let mut strict = Instance::spawn(cmd, dir.path().join("strict.log"));
    let st = strict.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(69), "{}", strict.logs());
}

/// `http = :port` (uWSGI's router) is served by the workers themselves,
/// with a notice saying so.
#[test]
fn http_is_served_by_the_workers_with_a_notice() {
    let dir = TempDir::new("wsgi-http");
    dir.write("home.py", &named_app("home"));
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!("pythonpath = {}\nmodule = home\nhttp = {addr}\n", dir.path().display());
    let inst = Instance::start("", 2, 0, &extra);
    inst.wait_ready();
    assert_eq!(body(&addr, "/"), (200, "home - /".into()), "{}", inst.logs());
    assert!(inst.logs().contains("runs no HTTP router process"), "{}", inst.logs());
}

/// Mistakes in mounts are errors at startup, all at once.
#[test]
fn bad_mounts_are_refused() {
    let dir = TempDir::new("wsgi-mount-bad");
    dir.write("home.py", &named_app("home"));
    let script = dir.write("w.py", "import uwsgi\n");
    let script_line = format!("mount = /a=home\npython-worker-override = {}\n", script.display());
    for (extra, want) in [
        ("module = home\nmount = /=home\n", "two apps are mounted at /"),
        ("mount = /a=home\nmount = /a/=home\n", "two apps are mounted at /a"),
        ("mount = /a=missing/file.py\n", "missing/file.py"),
        ("mount = a=site\n", "a mount prefix is a URL path"),
        (script_line.as_str(), "keep mount"),
    ] {
        let extra = format!("pythonpath = {}\n{extra}socket = 127.0.0.1:0\n", dir.path().display());
        let (text, _, _) = ini("", 1, 0, &extra);
        let path = dir.write("bad.ini", &text);
        let out = std::process::Command::new(BIN).arg("--ini").arg(&path).arg("--check-config").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{extra}: {err}");
        assert!(err.contains(want), "{extra}: want {want:?} in {err}");
    }
}
