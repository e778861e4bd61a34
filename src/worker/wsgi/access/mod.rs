//! The WSGI worker's access log: one line per request on stderr, written
//! after the response went out (from [`Handler::done`], with the GIL
//! released), in the style the configuration asks for:
//! - `log-format = json`: one JSON object, shaped as podmaster's other
//!   JSON log lines (`timestamp`, `level`, `message`) with the request's
//!   `method`, `path`, `status`, `bytes`, `duration_ms`, `worker`, `pid`,
//!   `remote_addr`, `request_id` (the client's `X-Request-Id` when it is
//!   sane, else one made here) and `user_agent` when sent;
//! - a uWSGI request-log format (`log-format = %(addr) ...`, see [`format`]);
//! - else uWSGI's default request line, so that tools that parse it
//!   (goaccess, log pipelines) keep working.
//!
//! `disable-logging`, `log-4xx`, `log-5xx` choose which requests are
//! logged, as in uWSGI. Cost: the line is formatted into a per-thread
//! buffer, without tracing's machinery, then queued in [`sink`], which
//! writes lines in batches (at most 100 ms late; see there why). Values
//! from the request are escaped: a client cannot forge or split a log line.
//!
//! [`Handler::done`]: crate::worker::front::Handler::done

mod clock;
mod format;
pub(crate) mod logvars;
mod sink;

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::config::AccessLog as Settings;
use crate::worker::front::{Outcome, Request};
use clock::Civil;
use format::Format;

/// The longest `X-Request-Id` taken from a client (longer: one is made).
const MAX_REQUEST_ID: usize = 128;
/// A line buffer grown past this by a huge line is given back afterwards.
const KEEP_BUFFER: usize = 16 * 1024;

/// How lines look.
#[derive(Debug)]
enum Style {
    Json,
    Uwsgi(Format),
    Default,
}

/// One worker's access log.
#[derive(Debug)]
pub(super) struct AccessLog {
    style: Style,
    settings: Settings,
    worker: u32,
    pid: u32,
    ids: RequestIds,
    /// Requests this process answered (uWSGI's `req: N`).
    served: AtomicU64,
    /// None when nothing can be logged (`disable-logging` alone).
    sink: Option<&'static sink::Sink>,
}

/// What a line is made of.
pub(super) struct Line<'a> {
    pub req: &'a Request<'a>,
    pub outcome: &'a Outcome,
    /// Wall-clock time the request head was complete.
    pub started: SystemTime,
    pub request_id: &'a str,
    pub pid: u32,
    pub worker: u32,
    /// The serving thread's number (uWSGI's core).
    pub core: u32,
}

impl AccessLog {
    /// `json`: podmaster logs JSON (`log-format = json`).
    pub(super) fn new(settings: &Settings, json: bool, worker: u32) -> AccessLog {
        let style = match (&settings.format, json) {
            (_, true) => Style::Json,
            (Some(f), false) => Style::Uwsgi(Format::parse(f)),
            (None, false) => Style::Default,
        };
        AccessLog {
            style,
            settings: settings.clone(),
            worker,
            pid: std::process::id(),
            ids: RequestIds::new(),
            served: AtomicU64::new(0),
            sink: (!settings.disabled || settings.log_4xx || settings.log_5xx).then(sink::global),
        }
    }

    /// Whether a request answered `status` is logged (uWSGI's rules).
    fn wants(&self, status: u16) -> bool {
        let s = &self.settings;
        !s.disabled || (s.log_4xx && (400..500).contains(&status)) || (s.log_5xx && (500..600).contains(&status))
    }

    /// Whether lines carry a request id (and so requests get one).
    fn needs_id(&self) -> bool {
        self.sink.is_some()
            && match &self.style {
                Style::Json => true,
                Style::Uwsgi(f) => f.uses_request_id(),
                Style::Default => false,
            }
    }

    /// A request enters the worker: when lines carry a request id, it is
    /// chosen now, so that the app sees the same one ([`current_id`]).
    pub(super) fn begin(&self, req: &Request<'_>) {
        logvars::clear();
        if !self.needs_id() {
            return;
        }
        let mut id_buf = [0u8; 24];
        let id = self.ids.of(req, &mut id_buf);
        CURRENT_ID.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.0.clear();
                c.0.push_str(id);
                c.1 = true;
            }
        });
    }

    /// Logs one finished request (if it is to be logged).
    pub(super) fn log(&self, req: &Request<'_>, outcome: &Outcome) {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        // The id chosen by `begin` is this request's; the front's own
        // refusals never began, and get one here.
        let begun = CURRENT_ID.with(|c| c.try_borrow_mut().map(|mut c| std::mem::take(&mut c.1)).unwrap_or(false));
        let Some(sink) = self.sink.filter(|_| self.wants(outcome.status)) else { return };
        let needs_id = self.needs_id();
        let mut id_buf = [0u8; 24];
        let mut kept = [0u8; MAX_REQUEST_ID];
        let request_id = match (needs_id, begun) {
            (false, _) => "",
            (true, true) => {
                let n = CURRENT_ID.with(|c| {
                    let Ok(c) = c.try_borrow() else { return 0 };
                    let n = c.0.len().min(MAX_REQUEST_ID);
                    kept[..n].copy_from_slice(&c.0.as_bytes()[..n]);
                    n
                });
                // Visible ASCII (a sane client id, or hex).
                std::str::from_utf8(&kept[..n]).unwrap_or("")
            }
            (true, false) => self.ids.of(req, &mut id_buf),
        };
        let started = SystemTime::now().checked_sub(outcome.duration).unwrap_or(SystemTime::UNIX_EPOCH);
        let line =
            Line { req, outcome, started, request_id, pid: self.pid, worker: self.worker, core: thread_number() };
        LINE.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else { return };
            buf.clear();
            match &self.style {
                Style::Json => json_line(&line, &mut buf),
                Style::Uwsgi(f) => f.render(&line, &mut buf),
                Style::Default => default_line(&line, served, &mut buf),
            }
            buf.push(b'\n');
            sink.push(&buf);
            if buf.capacity() > KEEP_BUFFER {
                *buf = Vec::with_capacity(1024);
            }
        });
    }
}

/// The request id chosen for the thread's current request, if any: for
/// `environ` (`podmaster.request_id`, and `HTTP_X_REQUEST_ID` when the
/// client sent none), only when the access log's lines carry ids.
pub(super) fn current_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CURRENT_ID.with(|c| match c.try_borrow() {
        Ok(c) if c.1 => f(Some(&c.0)),
        _ => f(None),
    })
}

thread_local! {
    /// The request id `begin` chose, and whether it is the current
    /// request's (taken by `log`).
    static CURRENT_ID: RefCell<(String, bool)> = const { RefCell::new((String::new(), false)) };
    /// The line being written, reused for every request of the thread.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
    /// The thread's number, from its name (`front-N`), read once.
    static CORE: Cell<Option<u32>> = const { Cell::new(None) };
}

fn thread_number() -> u32 {
    CORE.with(|c| {
        *c.get().get_or_insert_with(|| {
            let t = std::thread::current();
            let n = t.name().and_then(|n| n.strip_prefix("front-")).and_then(|n| n.parse().ok()).unwrap_or(0);
            c.set(Some(n));
            n
        })
    })
}

/// Seconds since the Unix epoch, now.
pub(super) fn unix_now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// `{"timestamp":...,"level":"INFO","message":"request","method":...}`
fn json_line(l: &Line<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    Civil::of(SystemTime::now()).rfc3339(out);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    push_json(out, l.req.method);
    out.extend_from_slice(b",\"path\":");
    push_json(out, l.req.request_uri);
    let o = l.outcome;
    out.extend_from_slice(b",\"status\":");
    push_num(out, u64::from(o.status));
    out.extend_from_slice(b",\"bytes\":");
    push_num(out, o.body_bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    let micros = u64::try_from(o.duration.as_micros()).unwrap_or(u64::MAX);
    push_num(out, micros / 1000);
    out.push(b'.');
    push_digits(out, micros % 1000, 3);
    out.extend_from_slice(b",\"worker\":");
    push_num(out, u64::from(l.worker));
    out.extend_from_slice(b",\"pid\":");
    push_num(out, u64::from(l.pid));
    out.extend_from_slice(b",\"remote_addr\":");
    push_json(out, l.req.remote_addr);
    out.extend_from_slice(b",\"request_id\":");
    push_json(out, l.request_id.as_bytes());
    if let Some(ua) = l.req.header("user-agent") {
        out.extend_from_slice(b",\"user_agent\":");
        push_json(out, ua);
    }
    let mut first = true;
    logvars::each(|name, value| {
        out.extend_from_slice(if first { b",\"logvars\":{" } else { b"," });
        first = false;
        push_json(out, name.as_bytes());
        out.push(b':');
        push_json(out, value.as_bytes());
    });
    if !first {
        out.push(b'}');
    }
    out.push(b'}');
}

/// uWSGI's default request line (`core/logging.c`, `uwsgi_logit_simple`):
/// `[pid: 42|app: 0|req: 7/7] 10.0.0.1 () {34 vars in 456 bytes} [Mon May  6
/// 12:53:20 2024] GET /path => generated 12 bytes in 0 msecs (HTTP/1.1 200)
/// 2 headers in 79 bytes (1 switches on core 0)`.
fn default_line(l: &Line<'_>, served: u64, out: &mut Vec<u8>) {
    let (req, o) = (l.req, l.outcome);
    out.extend_from_slice(b"[pid: ");
    push_num(out, u64::from(l.pid));
    out.extend_from_slice(b"|app: 0|req: ");
    push_num(out, served);
    out.push(b'/');
    push_num(out, served);
    out.extend_from_slice(b"] ");
    push_text(out, req.remote_addr);
    out.extend_from_slice(b" (");
    // Only a proxy's uwsgi vars carry it (HTTP has no authentication here).
    push_text(out, req.vars.get(b"REMOTE_USER").unwrap_or_default());
    let (vars, var_bytes) = format::var_count(req);
    out.extend_from_slice(b") {");
    push_num(out, vars);
    out.extend_from_slice(b" vars in ");
    push_num(out, var_bytes);
    out.extend_from_slice(b" bytes} [");
    Civil::of(l.started).ctime(out);
    out.extend_from_slice(b"] ");
    push_text(out, req.method);
    out.push(b' ');
    push_text(out, req.request_uri);
    out.extend_from_slice(b" => generated ");
    push_num(out, o.body_bytes);
    out.extend_from_slice(b" bytes in ");
    push_num(out, u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX));
    out.extend_from_slice(b" msecs (");
    push_text(out, req.server_protocol);
    out.push(b' ');
    push_num(out, u64::from(o.status));
    out.extend_from_slice(b") ");
    push_num(out, u64::from(o.headers));
    out.extend_from_slice(b" headers in ");
    push_num(out, o.head_bytes);
    out.extend_from_slice(b" bytes (1 switches on core ");
    push_num(out, u64::from(l.core));
    out.push(b')');
}

/// `n` in decimal (the `fmt` machinery would cost more than the rest of
/// the line).
pub(super) fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The last `width` decimal digits of `n`, zero-padded.
pub(super) fn push_digits(out: &mut Vec<u8>, n: u64, width: u32) {
    for k in (0..width).rev() {
        out.push(b'0' + (n / 10u64.pow(k) % 10) as u8);
    }
}

/// Request bytes in a text line: printable ASCII as is; control bytes,
/// `"`, `\` and non-ASCII as `\xHH` (as nginx's access log), so a value
/// cannot end a quoted field or the line.
pub(super) fn push_text(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// Bytes as a JSON string: UTF-8 as it is (escaped as JSON requires);
/// bytes that are not UTF-8 read as latin-1 (`\u00HH`), so any input is
/// valid JSON.
fn push_json(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let utf8 = std::str::from_utf8(bytes).is_ok();
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 | 0x7f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            0x80.. if !utf8 => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Request ids: the client's `X-Request-Id` when sane (1 to 128 visible
/// ASCII characters, no `"` or `\`), else a per-process random prefix and
/// a counter (24 hex digits, unique across the pod's workers and restarts).
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS; a forked worker inherits its
        // zygote's seed, so the pid and the clock go in too.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(unix_now().as_nanos());
        RequestIds { prefix: h.finish(), next: AtomicU64::new(0) }
    }

    fn of<'a>(&self, req: &Request<'a>, buf: &'a mut [u8; 24]) -> &'a str {
        if let Some(id) = req.header("x-request-id").filter(|v| sane_id(v)) {
            // Checked: visible ASCII only.
            return std::str::from_utf8(id).unwrap_or("");
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as u32;
        let mut w = &mut buf[..];
        let _ = write!(w, "{:016x}{n:08x}", self.prefix);
        std::str::from_utf8(&buf[..]).unwrap_or("")
    }
}

fn sane_id(v: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&v.len()) && v.iter().all(|b| (0x21..0x7f).contains(b) && *b != b'"' && *b != b'\\')
}

/// Writes the lines still pending (before the process ends).
pub(super) fn flush() {
    sink::flush();
}

#[cfg(test)]
mod tests;
