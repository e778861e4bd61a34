//! Every way to get a listening socket, each proven by a worker that
//! accepts a connection on it; socket activation in; privileges; bad input.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::*;

fn unix_get(stream: std::io::Result<UnixStream>) -> String {
    let mut s = stream.expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /Unix HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(out)
}

/// podmaster with the hello example and exactly these `socket` lines.
fn with_sockets(sockets: &[String], extra: &str) -> Instance {
    let mut lines: String = sockets.iter().map(|s| format!("socket = {s}\n")).collect();
    lines.push_str(extra);
    Instance::start(&example_script(), 1, 0, &lines)
}

#[test]
fn tcp_forms_port_zero_and_all_interfaces() {
    let port = free_port();
    let inst = with_sockets(&[format!(":{port}"), "localhost:0".into()], "");
    inst.wait_ready();
    assert_eq!(http_get(&format!("127.0.0.1:{port}"), "/Any").unwrap().body, "Hello, Any");
    let status = inst.status();
    let picked = status["sockets"][1]["local"].as_str().unwrap().to_owned();
    assert!(picked.starts_with("127.0.0.1:") && !picked.ends_with(":0"), "{picked}");
    assert_eq!(http_get(&picked, "/Zero").unwrap().body, "Hello, Zero");
    assert!(inst.logs().contains(&format!("local=\"{picked}\"")), "picked port is logged");
}

#[test]
#[cfg_attr(
    not(have_ipv6_loopback),
    ignore = "needs an IPv6 loopback (::1): enable IPv6 (sysctl net.ipv6.conf.lo.disable_ipv6=0)"
)]
fn ipv6_loopback_is_v6_only() {
    let port = free_port();
    let inst = with_sockets(&[format!("[::1]:{port}")], "");
    inst.wait_ready();
    assert_eq!(http_get(&format!("[::1]:{port}"), "/Six").unwrap().body, "Hello, Six");
    // IPV6_V6ONLY: the same port stays free for IPv4.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn unix_socket_with_mode_and_owner_and_stale_file_replaced() {
    let d = TempDir::new("unix");
    let path = d.path().join("app.sock");
    // A stale socket file (nobody listening) from a previous crash.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut extra = "chmod-socket = 660\n".to_string();
    if is_root() {
        extra.push_str("chown-socket = nobody:nogroup\n");
    }
    let inst = with_sockets(&[path.display().to_string()], &extra);
    inst.wait_ready();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
    assert_eq!(unix_get(UnixStream::connect(&path)), "Hello, Unix");

    // A live socket at the path is never replaced.
    let d2 = TempDir::new("unix2");
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket", path.to_str().unwrap(), "--python-worker-override", &example_script()]);
    let mut second = Instance::spawn(cmd, d2.path().join("err.log"));
    assert_eq!(second.wait_exit(DEADLINE).code(), Some(78));
    assert!(second.logs().contains("another process is already listening"), "{}", second.logs());
    assert_eq!(unix_get(UnixStream::connect(&path)), "Hello, Unix", "first instance unaffected");
    assert!(path.exists(), "the failed second instance left the first one's file alone");

    // A drain removes the file it created (uWSGI's `vacuum`, always on).
    let mut inst = inst;
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
    assert!(!path.exists(), "socket file left after the drain");
}

/// A startup that fails after the sockets are bound (here the probe
/// socket's address is taken) removes the socket files it created; a file
/// that replaced ours at the path meanwhile is not ours to remove.
#[test]
fn socket_files_are_removed_after_a_failed_start_and_only_ours() {
    let d = TempDir::new("unix-vacuum");
    let path = d.path().join("app.sock");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let probe = taken.local_addr().unwrap().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["--socket", path.to_str().unwrap(), "--python-worker-override", &example_script()]);
    cmd.args(["--probe-socket", &probe]);
    let mut failed = Instance::spawn(cmd, d.path().join("err.log"));
    assert_ne!(failed.wait_exit(DEADLINE).code(), Some(0), "{}", failed.logs());
    assert!(!path.exists(), "socket file left after a failed start: {}", failed.logs());

    let mut inst = with_sockets(&[path.display().to_string()], "");
    inst.wait_ready();
    std::fs::remove_file(&path).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // someone else's now
    inst.signal(libc::SIGTERM);
    assert_eq!(inst.wait_exit(DEADLINE).code(), Some(0), "{}", inst.logs());
    assert!(path.exists(), "removed a socket file another process made");
}

#[test]
fn abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("podmaster-test-{}", free_port());
    let inst = with_sockets(&[format!("@{name}")], "");
    inst.wait_ready();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    assert_eq!(unix_get(UnixStream::connect_addr(&addr)), "Hello, Unix");
}

#[test]
fn fd_uri_adopts_an_inherited_listening_socket() {
    let port = free_port();
    let (ini_text, _, probe) = ini(&example_script(), 1, 0, "socket = fd://3\n");
    let d = TempDir::new("fd");
    let ini_path = d.write("fd.ini", &ini_text);
    // The launcher leaves fd 3 listening; LISTEN_PID names another pid, so
    // only the fd:// spec may use it.
    let mut cmd = Command::new("python3");
    cmd.args([&format!("{ROOT}/tests/scripts/activate.py"), "--pid", "1", &port.to_string(), "--", BIN]).arg(&ini_path);
    let mut inst = Instance::spawn(cmd, d.path().join("err.log"));
    inst.probe = probe;
    inst.wait_ready();
    assert_eq!(http_get(&format!("127.0.0.1:{port}"), "/Fd").unwrap().body, "Hello, Fd");
    assert!(inst.logs().contains("LISTEN_PID=1 is not this process"), "{}", inst.logs());
}

#[test]
fn socket_activation_by_name_index_and_implicitly() {
    let (web, admin) = (free_port(), free_port());
    let launcher = format!("{ROOT}/tests/scripts/activate.py");
    let sd = format!("{ROOT}/tests/scripts/sdserver.py");
    let run = |sockets: &str| {
        let d = TempDir::new("sd");
        let (ini_text, _, probe) = ini("", 1, 0, &format!("{sockets}worker-exec = python3 {sd}\n"));
        let ini_path = d.write("sd.ini", &ini_text);
        let mut cmd = Command::new("python3");
        cmd.args([&launcher, "--names", "web:admin", &web.to_string(), &admin.to_string(), "--", BIN]).arg(&ini_path);
        let mut inst = Instance::spawn(cmd, d.path().join("err.log"));
        inst.probe = probe;
        inst.wait_ready();
        let bodies = [web, admin].map(|p| http_get(&format!("127.0.0.1:{p}"), "/").map(|r| r.body).unwrap_or_default());
        drop(inst);
        drop(d);
        bodies
    };
    // Named, in configured order (admin first): names are the specs.
    let [w, a] = run("socket = sd://admin\nsocket = sd://web\n");
    assert!(w.ends_with("via sd\\x3a//web") && a.ends_with("via sd\\x3a//admin"), "{w} | {a}");
    // By index; the unused one is closed, not left hanging.
    let [w, a] = run("socket = sd://0\n");
    assert!(w.ends_with("via sd\\x3a//0"), "{w}");
    assert_eq!(a, "", "unused activated socket refuses connections");

    // Implicitly: every activated socket, named as passed.
    let [w, a] = run("");
    assert!(w.ends_with("via web") && a.ends_with("via admin"), "{w} | {a}");
}

#[test]
fn socket_activation_nonsense_is_a_config_error() {
    let launcher = format!("{ROOT}/tests/scripts/activate.py");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--fds".into(), "abc".into()], "LISTEN_FDS=\"abc\""),
        (vec!["--fds".into(), "3".into(), free_port().to_string()], "fd 4"),
        (vec!["--file-at-3".into()], "is not a socket"),
        (vec!["--pid".into(), "notapid".into()], "LISTEN_PID"),
    ];
    for (opts, expect) in cases {
        let d = TempDir::new("sdbad");
        let mut cmd = Command::new("python3");
        cmd.arg(&launcher).args(&opts).args(["--", BIN, "--worker-exec", "true"]);
        let mut inst = Instance::spawn(cmd, d.path().join("err.log"));
        let st = inst.wait_exit(DEADLINE);
        let err = inst.logs();
        assert_eq!(st.code(), Some(78), "{opts:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{opts:?}: {err}");
    }
}

#[test]
#[cfg_attr(
    not(all(have_root, have_checkout_open_to_nobody)),
    ignore = "needs root, and user nobody able to reach target/ and tests/ (o+x on each parent dir): run cargo test as root"
)]
fn workers_never_run_as_root_when_uid_is_set() {
    // A port below 1024 is bound as root, then served by an unprivileged worker.
    let port = (600..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a free low port");
    let sd = format!("{ROOT}/tests/scripts/sdserver.py");
    let extra =
        format!("socket = 127.0.0.1:{port}\nworker-exec = /usr/bin/python3 {sd}\nuid = nobody\ngid = nogroup\n");
    let inst = Instance::start("", 2, 0, &extra);
    inst.wait_ready();
    assert!(http_get(&format!("127.0.0.1:{port}"), "/").unwrap().body.starts_with("Hello from"));
    for (_, pid) in inst.worker_pids() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ids = |k: &str| {
            status.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(ids("Uid:"), "65534 65534 65534 65534", "worker {pid}");
        assert_eq!(ids("Gid:"), "65534 65534 65534 65534");
        assert_eq!(ids("Groups:"), "65534");
    }
    // The master keeps root (it binds new sockets on config reload).
    let master = std::fs::read_to_string(format!("/proc/{}/status", inst.pid())).unwrap();
    assert!(master.lines().any(|l| l.starts_with("Uid:") && l.contains("\t0\t")));
}

#[test]
fn unknown_user_is_a_config_error() {
    let out = Command::new(BIN)
        .args(["--socket", ":0", "--worker-exec", "true", "--uid", "no-such-user-here"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "podmaster: --uid: uid: no user named \"no-such-user-here\" (check /etc/passwd, or give a number)"
    );
}

#[test]
fn bind_errors_name_the_spec_and_leave_nothing_bound() {
    let first = free_port();
    let d = TempDir::new("binderr");
    let cases: Vec<(String, &str)> = vec![
        ("bad_host:80".into(), "is not a valid host name"),
        (format!("{}/missing/dir/app.sock", d.path().display()), "No such file or directory"),
        ("fd://99".into(), "fd 99: Bad file descriptor"),
        ("fd://0".into(), "is not a socket"),
    ];
    for (spec, expect) in cases {
        let out = Command::new(BIN)
            .args(["--socket", &format!("127.0.0.1:{first}"), "--socket", &spec, "--worker-exec", "true"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{spec}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&spec) && err.contains(expect), "{spec}: {err}");
        // The socket bound before the bad one was released.
        assert!(std::net::TcpListener::bind(("127.0.0.1", first)).is_ok(), "{spec}: first socket left bound");
    }
}

#[test]
#[cfg_attr(
    not(all(have_root, have_setpriv, have_privileged_low_ports)),
    ignore = "needs root, setpriv (util-linux) and ports below 1024 kept for root (sysctl net.ipv4.ip_unprivileged_port_start=1024): run cargo test as root"
)]
fn privileged_port_without_root_is_permission_denied() {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    let port = (600..start.min(1000))
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 600..1000 below net.ipv4.ip_unprivileged_port_start");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "--socket", &format!("127.0.0.1:{port}")])
        .args(["--worker-exec", "true"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.trim().ends_with("Permission denied") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn reuse_port_and_backlog_cap() {
    let port = free_port();
    let inst = with_sockets(&[format!("127.0.0.1:{port}")], "reuse-port = true\nlisten = 10000000\n");
    inst.wait_ready();
    // Another SO_REUSEPORT socket may join only if ours has it too.
    let ok = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1); s.bind(('127.0.0.1', {port}))"
            ),
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "SO_REUSEPORT set on the listener");
    assert!(inst.logs().contains("above net.core.somaxconn"), "{}", inst.logs());
}

#[test]
fn daemons_do_not_inherit_activation_variables() {
    let d = TempDir::new("daemonenv");
    let out = d.path().join("env");
    let port = free_port();
    let (ini_text, _, probe) = ini(
        &example_script(),
        1,
        0,
        &format!("socket = sd://0\nattach-daemon = sh -c 'env > {}; sleep 100'\n", out.display()),
    );
    let ini_path = d.write("a.ini", &ini_text);
    let mut cmd = Command::new("python3");
    cmd.args([&format!("{ROOT}/tests/scripts/activate.py"), &port.to_string(), "--", BIN]).arg(&ini_path);
    let mut inst = Instance::spawn(cmd, d.path().join("err.log"));
    inst.probe = probe;
    inst.wait_ready();
    let env = wait_for("daemon env", DEADLINE, || std::fs::read_to_string(&out).ok().filter(|s| s.contains("PATH=")));
    assert!(!env.contains("LISTEN_"), "{env}");
}
