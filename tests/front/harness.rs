//! A front served on its own thread, and a small HTTP/1.1 response reader
//! for the client side.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use podmaster::worker::front::{Config, Handler, Listener, Listening, Protocol, serve};

/// How long any single step of a test may take before it fails.
pub const STEP: Duration = Duration::from_secs(20);

/// `serve` on a background thread; drained and joined on drop.
pub struct Server {
    pub addr: Option<SocketAddr>,
    pub path: Option<PathBuf>,
    pub drain: Arc<AtomicBool>,
    done: mpsc::Receiver<io::Result<()>>,
    finished: bool,
}

impl Server {
    pub fn tcp(config: Config, threads: usize, handler: impl Handler + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let mut s = Server::start(Listener::Tcp(listener), Protocol::Http, config, threads, handler);
        s.addr = Some(addr);
        s
    }

    pub fn unix(protocol: Protocol, config: Config, threads: usize, handler: impl Handler + 'static) -> Server {
        let path = temp_dir().join("front.sock");
        let listener = UnixListener::bind(&path).expect("bind unix");
        // nginx may run as another user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
        let mut s = Server::start(Listener::Unix(listener), protocol, config, threads, handler);
        s.path = Some(path);
        s
    }

    fn start(
        listener: Listener,
        protocol: Protocol,
        config: Config,
        threads: usize,
        handler: impl Handler + 'static,
    ) -> Server {
        let drain = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let flag = Arc::clone(&drain);
        std::thread::spawn(move || {
            let listening = [Listening { listener, protocol }];
            let _ = tx.send(serve(&listening, threads, &handler, &config, &flag));
        });
        Server { addr: None, path: None, drain, done, finished: false }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a TCP server")
    }

    /// Sets the drain flag and waits for `serve` to return; how long it took.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.drain.store(true, Ordering::Relaxed);
        self.wait_stopped(STEP);
        started.elapsed()
    }

    /// Waits for `serve` to return (after the drain flag was set).
    pub fn wait_stopped(&mut self, within: Duration) {
        if self.finished {
            return;
        }
        match self.done.recv_timeout(within) {
            Ok(r) => r.expect("serve returned an error"),
            Err(e) => panic!("serve did not return within {within:?} of the drain: {e}"),
        }
        self.finished = true;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.drain.store(true, Ordering::Relaxed);
        if !self.finished && !std::thread::panicking() {
            self.wait_stopped(STEP);
        }
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "podmaster-front-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    dir
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    s.set_write_timeout(Some(STEP)).expect("timeout");
    s
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response; the body goes to `sink` (not kept) when given.
pub fn read_response_with(r: &mut impl BufRead, head_request: bool, sink: &mut dyn FnMut(&[u8])) -> io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response"));
    }
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(&line))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad(l))?;
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let resp = Resp { status, headers, body: Vec::new() };
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let len: u64 = len.parse().map_err(|_| bad(len))?;
        copy_exact(r, len, sink)?;
    } else if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size =
                u64::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16).map_err(|_| bad(&line))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            copy_exact(r, size, sink)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sink(&buf[..n]);
        }
    }
    Ok(resp)
}

pub fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Resp> {
    let mut body = Vec::new();
    let mut resp = read_response_with(r, head_request, &mut |b| body.extend_from_slice(b))?;
    resp.body = body;
    Ok(resp)
}

fn copy_exact(r: &mut impl Read, mut len: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    while len > 0 {
        let want = buf.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short"));
        }
        sink(&buf[..n]);
        len -= n as u64;
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad response line {what:?}"))
}

/// One request on a new connection; the response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).expect("write");
    let head = raw.starts_with(b"HEAD ");
    read_response(&mut BufReader::new(s), head).expect("response")
}

/// Whether the peer closed the connection (EOF or a reset) within
/// `within`; any bytes still arriving are read and dropped.
pub fn closed_within(s: &TcpStream, within: Duration) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    let mut reader = s;
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Polls `cond` until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This process's resident set, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
