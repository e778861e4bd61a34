//! Helpers for the WSGI worker's end-to-end suites: an instance serving an
//! app from `tests/scripts/wsgi` on an HTTP and a uwsgi socket, a client
//! that reads responses with their framing (streamed, so 100 MB bodies
//! never sit in memory), the byte pattern `bulk.py` produces and CRC-32 to
//! compare bodies, a worker's RSS from /proc, and a keep-alive client load
//! that tells a clean close between requests from a lost request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

pub fn app_dir() -> String {
    format!("{ROOT}/tests/scripts/wsgi")
}

/// A podmaster serving a WSGI app on an `http-socket` and a `socket`
/// (uwsgi protocol), both on 127.0.0.1.
pub struct Wsgi {
    pub inst: Instance,
    pub http: String,
    pub uwsgi: String,
}

impl Wsgi {
    /// Starts `module` with `processes` workers and `extra` ini lines;
    /// `wrap` may change the command (limits, environment). Waits until ready.
    pub fn start(module: &str, processes: u32, extra: &str, wrap: impl FnOnce(Command) -> Command) -> Wsgi {
        let http = format!("127.0.0.1:{}", free_port());
        let uwsgi = format!("127.0.0.1:{}", free_port());
        let extra =
            format!("module = {module}\npythonpath = {}\nhttp-socket = {http}\nsocket = {uwsgi}\n{extra}", app_dir());
        let inst = Instance::start_with("", processes, 0, &extra, &[], wrap);
        inst.wait_ready();
        Wsgi { inst, http, uwsgi }
    }

    pub fn pids(&self) -> Vec<i32> {
        self.inst.worker_pids().into_iter().map(|(_, pid)| pid).collect()
    }

    /// The only worker's pid.
    pub fn worker(&self) -> i32 {
        let pids = self.pids();
        assert_eq!(pids.len(), 1, "one worker expected: {pids:?}");
        pids[0]
    }

    /// A good request still gets its answer, from the same worker.
    pub fn assert_serves(&self, worker: i32, after: &str) {
        let got = get(&self.http, "/alive");
        let logs = || self.inst.logs();
        assert_eq!(
            got,
            Ok((200, b"Hello, alive\n".to_vec())),
            "after {after}: a good request failed; logs:\n{}",
            logs()
        );
        assert_eq!(self.pids(), [worker], "after {after}: the worker changed; logs:\n{}", logs());
    }
}

/// A response head as read from the wire.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one final response's head (1xx ones are skipped): Ok(None) at a
/// clean end of stream before its first byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let status: u16 = text
            .strip_prefix("HTTP/1.")
            .and_then(|t| t.get(2..5))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {text:?}")))?;
        let mut head = Head { status, headers: Vec::new() };
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream inside a head"));
            }
            let l = String::from_utf8_lossy(&line);
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| bad(&format!("bad header line {l:?}")))?;
            head.headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if !(100..200).contains(&status) {
            return Ok(Some(head));
        }
    }
}

/// Streams the body of `head` to `sink`; `no_body` for an answer to HEAD.
/// Without length or chunked framing the body runs to the close.
pub fn read_body(r: &mut impl BufRead, head: &Head, no_body: bool, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    if no_body || head.status == 204 || head.status == 304 {
        return Ok(());
    }
    if head.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream in a chunked body"));
            }
            let size = line.trim_end().split(';').next().unwrap_or_default();
            let n = u64::from_str_radix(size, 16).map_err(|_| bad(&format!("bad chunk size {line:?}")))?;
            if n == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    r.read_line(&mut line)?;
                    if line.trim_end().is_empty() {
                        return Ok(());
                    }
                }
            }
            copy_exact(r, n, sink)?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    match head.header("content-length") {
        Some(v) => copy_exact(r, v.parse().map_err(|_| bad("bad Content-Length"))?, sink),
        None => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf)? {
                    0 => return Ok(()),
                    n => sink(&buf[..n]),
                }
            }
        }
    }
}

fn copy_exact(r: &mut impl Read, mut left: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream inside a body"));
        }
        sink(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A response read whole from a buffer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub head: Head,
    pub body: Vec<u8>,
}

/// Every response in `raw`, in order, and whether the last one was cut
/// short (or `raw` held bytes that are no response).
pub fn parse_answers(raw: &[u8]) -> (Vec<Answer>, bool) {
    let mut r = io::Cursor::new(raw);
    let mut out = Vec::new();
    loop {
        match read_head(&mut r) {
            Ok(None) => return (out, false),
            Ok(Some(head)) => {
                let mut body = Vec::new();
                let ok = read_body(&mut r, &head, false, &mut |b| body.extend_from_slice(b)).is_ok();
                out.push(Answer { head, body });
                if !ok {
                    return (out, true);
                }
            }
            Err(_) => return (out, true),
        }
    }
}

/// Byte `i` of the stream `bulk.py` yields and the tests upload.
pub fn pattern_byte(i: u64) -> u8 {
    let j = i % 65521;
    ((j * 7919 + (j >> 8)) & 0xFF) as u8
}

/// `len` bytes of the pattern from offset `from`.
pub fn pattern(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(from + i)).collect()
}

/// CRC-32 (IEEE, zlib's `crc32`), continued from `crc`.
pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (n, e) in t.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    let mut c = !crc;
    for b in data {
        c = table[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// VmRSS of `pid`, in kB.
pub fn vm_rss_kb(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's VmRSS every 20 ms until finished: the largest seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: i32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !s.load(Ordering::Relaxed) {
                max = max.max(vm_rss_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        });
        RssSampler { stop, handle }
    }

    /// The largest VmRSS seen, in kB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// What a keep-alive client load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Complete, correct responses.
    pub ok: u64,
    /// A reused connection closed before any byte of the answer (the
    /// server closed it between requests): the request was sent again on
    /// a new connection, as HTTP clients do for idempotent requests.
    pub retried: u64,
    /// New connections that could not be made (after a drain: expected).
    pub refused: u64,
    /// A new connection closed or reset before any byte of its answer.
    pub lost_fresh: u64,
    /// An answer cut short, or a wrong one (status, body): never allowed.
    pub broken: u64,
    pub errors: Vec<String>,
}

/// `threads` clients, each sending `GET path` in a loop on keep-alive
/// connections until stopped; `check` validates a complete answer.
pub struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<LoadReport>>,
}

type Check = fn(&Head, &[u8]) -> Result<(), String>;

impl KeepAliveLoad {
    pub fn start(addr: &str, threads: usize, path: &'static str, check: Check) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|_| {
                let (stop, ok, addr) = (stop.clone(), ok.clone(), addr.to_owned());
                std::thread::spawn(move || keep_alive_client(&addr, path, check, &stop, &ok))
            })
            .collect();
        KeepAliveLoad { stop, ok, handles }
    }

    /// Complete, correct answers so far, all clients together.
    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more answers than now have come.
    pub fn wait_for_more(&self, n: u64) {
        let target = self.ok_so_far() + n;
        wait_for(&format!("{n} more answers"), DEADLINE, || (self.ok_so_far() >= target).then_some(()));
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for h in self.handles {
            let r = h.join().unwrap();
            total.ok += r.ok;
            total.retried += r.retried;
            total.refused += r.refused;
            total.lost_fresh += r.lost_fresh;
            total.broken += r.broken;
            total.errors.extend(r.errors.into_iter().take(5));
        }
        total
    }
}

fn keep_alive_client(addr: &str, path: &str, check: Check, stop: &AtomicBool, ok: &AtomicU64) -> LoadReport {
    let mut rep = LoadReport::default();
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let request = format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let fresh = conn.is_none();
        if fresh {
            let Ok(s) = TcpStream::connect(addr) else {
                rep.refused += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            conn = Some((s.try_clone().unwrap(), BufReader::new(s)));
        }
        let Some((w, r)) = conn.as_mut() else { continue };
        // Whether any byte of an answer comes decides what a failure means.
        let came = w.write_all(request.as_bytes()).and_then(|_| r.fill_buf().map(|b| !b.is_empty()));
        if !matches!(came, Ok(true)) {
            conn = None;
            if fresh {
                rep.lost_fresh += 1;
                rep.errors.push(format!("a new connection ended before any answer: {came:?}"));
            } else {
                rep.retried += 1;
            }
            continue;
        }
        let head = match read_head(r) {
            Ok(Some(head)) => head,
            other => {
                rep.broken += 1;
                rep.errors.push(format!("an answer cut inside its head: {other:?}"));
                conn = None;
                continue;
            }
        };
        let mut body = Vec::new();
        let read = read_body(r, &head, false, &mut |b| body.extend_from_slice(b));
        match read.map_err(|e| e.to_string()).and_then(|_| check(&head, &body)) {
            Ok(()) => {
                rep.ok += 1;
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                rep.broken += 1;
                rep.errors.push(format!("{} after {} body bytes: {e}", head.status, body.len()));
                conn = None;
                continue;
            }
        }
        if head.closes() {
            conn = None;
        }
    }
    rep
}

/// Sends `bytes` on a new connection (then half-closes it if asked) and
/// reads until the server closes, resets, or `within` passes.
pub fn exchange(addr: &str, bytes: &[u8], half_close: bool, within: Duration) -> Outcome {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect to the app port");
    // Writes may fail once the server answered and closed: what it answered counts.
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    read_until_close(&mut s, t, within)
}

/// `GET path` with `Connection: close`: the one complete answer's status
/// and body, or why there is none.
pub fn get(addr: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let out = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
        DEADLINE,
    );
    match out.answers() {
        (answers, false) if answers.len() == 1 && !out.hung => {
            let a = answers.into_iter().next().unwrap_or_else(|| unreachable!());
            Ok((a.head.status, a.body))
        }
        other => Err(format!("GET {path}: {other:?} (hung: {}, reset: {})", out.hung, out.reset)),
    }
}

/// What a client saw: every byte until the close, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub raw: Vec<u8>,
    /// The server reset the connection (after what `raw` holds).
    pub reset: bool,
    /// Neither a close nor a reset within the deadline.
    pub hung: bool,
    pub took: Duration,
}

impl Outcome {
    pub fn answers(&self) -> (Vec<Answer>, bool) {
        parse_answers(&self.raw)
    }
    /// Status codes of the complete answers.
    pub fn statuses(&self) -> Vec<u16> {
        self.answers().0.iter().map(|a| a.head.status).collect()
    }
}

pub fn read_until_close(s: &mut TcpStream, started: Instant, within: Duration) -> Outcome {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let (mut reset, mut hung) = (false, false);
    loop {
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            hung = true;
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                hung = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    Outcome { raw, reset, hung, took: started.elapsed() }
}
