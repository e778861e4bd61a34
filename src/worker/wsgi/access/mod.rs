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
/// The longest line written, newline included: what one write puts in a
/// pipe atomically (`PIPE_BUF`).
const MAX_LINE: usize = 4096;
/// In a JSON line too long for [`MAX_LINE`], each field from the request
/// is cut to this many bytes once escaped, and log variables are left
/// out (`"truncated":true` says so): 5 such fields and the fixed ones fit.
const JSON_FIELD_CAP: usize = 640;
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
        /// The request's log variables go with its line: a refusal the
        /// front reports next on this thread (it never `begin`s) must not
        /// carry them.
        struct ClearVars;
        impl Drop for ClearVars {
            fn drop(&mut self) {
                logvars::clear();
            }
        }
        let _clear = ClearVars;
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
                Style::Json => json_line(&line, &mut buf, None),
                Style::Uwsgi(f) => f.render(&line, &mut buf),
                Style::Default => default_line(&line, served, &mut buf),
            }
            // A line longer than a pipe's atomic write could be split by
            // other processes' lines: long request fields (a huge target,
            // user agent or log variables) are cut to fit.
            if buf.len() >= MAX_LINE {
                match &self.style {
                    Style::Json => {
                        buf.clear();
                        json_line(&line, &mut buf, Some(JSON_FIELD_CAP));
                    }
                    Style::Uwsgi(_) | Style::Default => cut_text(&mut buf, MAX_LINE - 1),
                }
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

/// Cuts a text line to at most `max` bytes, not inside a UTF-8 sequence
/// (request bytes are escaped to ASCII; a format's own text may not be).
fn cut_text(buf: &mut Vec<u8>, max: usize) {
    let mut end = max.min(buf.len());
    while end > 0 && end < buf.len() && (buf[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    buf.truncate(end);
}

/// `{"timestamp":...,"level":"INFO","message":"request","method":...}`;
/// `cap`: each request field cut to this many escaped bytes, no log
/// variables (the line would not fit in one atomic write otherwise).
fn json_line(l: &Line<'_>, out: &mut Vec<u8>, cap: Option<usize>) {
    let limit = cap.unwrap_or(usize::MAX);
    let push_json = |out: &mut Vec<u8>, bytes: &[u8]| push_json_within(out, bytes, limit);
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
    if cap.is_some() {
        out.extend_from_slice(b",\"truncated\":true");
    } else {
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

/// `n` in decimal.
pub(super) use crate::worker::front::response::decimal as push_num;

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
/// valid JSON. The string's escaped bytes are cut at `budget` (never
/// inside an escape or a UTF-8 sequence).
fn push_json_within(out: &mut Vec<u8>, bytes: &[u8], budget: usize) {
    out.push(b'"');
    let utf8 = std::str::from_utf8(bytes).is_ok();
    let start = out.len();
    let mut unit = [0u8; 6];
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (piece, used): (&[u8], usize) = match b {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            0..0x20 | 0x7f => (escape_u(b, &mut unit), 1),
            0x80.. if !utf8 => (escape_u(b, &mut unit), 1),
            0x80.. => {
                // A whole character (the input is valid UTF-8).
                let len = match b {
                    0xF0.. => 4,
                    0xE0.. => 3,
                    _ => 2,
                };
                let end = (i + len).min(bytes.len());
                (&bytes[i..end], end - i)
            }
            _ => (std::slice::from_ref(&bytes[i]), 1),
        };
        if out.len() - start + piece.len() > budget {
            break;
        }
        out.extend_from_slice(piece);
        i += used;
    }
    out.push(b'"');
}

/// `\u00HH` for byte `b`.
fn escape_u(b: u8, unit: &mut [u8; 6]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    *unit = [b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
    &unit[..]
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
