//! uWSGI's request-log format (`log-format = %(addr) - %(user) [%(ltime)]
//! "%(method) %(uri) %(proto)" %(status) %(size) ...`), parsed once when
//! the worker starts and rendered per request into the line buffer.
//!
//! As uWSGI (`core/logging.c`): `%(name)` is a variable up to the next
//! `)`; a variable whose value is empty prints `-`; a name uWSGI does not
//! define is a "logvar" the app sets for the request with
//! `uwsgi.set_logvar(name, value)` (see [`super::logvars`]), `-` when it
//! did not; `%(var.NAME)` is request
//! variable `NAME` (CGI name: `HTTP_X_FORWARDED_FOR`, `REMOTE_PORT`...),
//! `%(metric.NAME)` an app metric. podmaster adds `%(request_id)`.
//! Values that come from the request are escaped (see
//! [`super::push_text`]): a client cannot forge a log line.

use std::borrow::Cow;
use std::io::Write;

use super::Line;
use super::clock::Civil;
use crate::worker::front::{Protocol, Request};

/// A parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Format {
    chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Text(Vec<u8>),
    Var(Var),
}

/// The variables, named as in uWSGI.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Uri,
    Method,
    User,
    Addr,
    Host,
    Proto,
    Uagent,
    Referer,
    Status,
    Rsize,
    Hsize,
    Size,
    Cl,
    Micros,
    Msecs,
    Secs,
    Tmsecs,
    Tmicros,
    Time,
    Ltime,
    Ctime,
    Epoch,
    Pid,
    Wid,
    Core,
    Headers,
    Vars,
    Pktsize,
    Rss,
    Vsz,
    RssM,
    VszM,
    /// Counters podmaster's worker does not have: async switches, uwsgi
    /// modifiers (always 0 here).
    Zero,
    RequestId,
    Cgi(Vec<u8>),
    Metric(String),
    /// A name uWSGI does not define: the app's `uwsgi.set_logvar`.
    Logvar(String),
    /// A variable podmaster cannot know (`werr`, `rerr`, `ioerr`,
    /// `ftime`): `-`.
    Unset,
}

impl Var {
    fn named(name: &str) -> Var {
        match name {
            "uri" => Var::Uri,
            "method" => Var::Method,
            "user" => Var::User,
            "addr" => Var::Addr,
            "host" => Var::Host,
            "proto" => Var::Proto,
            "uagent" => Var::Uagent,
            "referer" => Var::Referer,
            "status" => Var::Status,
            "rsize" => Var::Rsize,
            "hsize" => Var::Hsize,
            "size" => Var::Size,
            "cl" => Var::Cl,
            "micros" => Var::Micros,
            "msecs" => Var::Msecs,
            "secs" => Var::Secs,
            "tmsecs" => Var::Tmsecs,
            "tmicros" => Var::Tmicros,
            "time" => Var::Time,
            "ltime" => Var::Ltime,
            "ctime" => Var::Ctime,
            "epoch" => Var::Epoch,
            "pid" => Var::Pid,
            "wid" => Var::Wid,
            "core" => Var::Core,
            "headers" => Var::Headers,
            "vars" => Var::Vars,
            "pktsize" => Var::Pktsize,
            "rss" => Var::Rss,
            "vsz" => Var::Vsz,
            "rssM" => Var::RssM,
            "vszM" => Var::VszM,
            "switches" | "modifier1" | "modifier2" => Var::Zero,
            "request_id" => Var::RequestId,
            _ => match (name.strip_prefix("var."), name.strip_prefix("metric.")) {
                (Some(v), _) => Var::Cgi(v.as_bytes().to_vec()),
                (_, Some(m)) => Var::Metric(m.to_owned()),
                _ if matches!(name, "werr" | "rerr" | "ioerr" | "ftime") => Var::Unset,
                _ => Var::Logvar(name.to_owned()),
            },
        }
    }
}

impl Format {
    /// Parses a format; never fails (what is not a variable is text).
    pub fn parse(text: &str) -> Format {
        let mut chunks = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("%(") {
            let Some(len) = rest[at + 2..].find(')').filter(|n| *n > 0) else {
                // `%()` or no closing `)`: text, as far as the next `%(`.
                let next = rest[at + 2..].find("%(").map_or(rest.len(), |n| at + 2 + n);
                push_text(&mut chunks, &rest[..next]);
                rest = &rest[next..];
                continue;
            };
            push_text(&mut chunks, &rest[..at]);
            chunks.push(Chunk::Var(Var::named(&rest[at + 2..at + 2 + len])));
            rest = &rest[at + 3 + len..];
        }
        push_text(&mut chunks, rest);
        Format { chunks }
    }

    /// Whether rendering needs the request id.
    pub fn uses_request_id(&self) -> bool {
        self.chunks.contains(&Chunk::Var(Var::RequestId))
    }

    /// Appends the line (without its newline) to `out`.
    pub fn render(&self, line: &Line<'_>, out: &mut Vec<u8>) {
        for c in &self.chunks {
            match c {
                Chunk::Text(t) => out.extend_from_slice(t),
                Chunk::Var(v) => {
                    let start = out.len();
                    value(v, line, out);
                    if out.len() == start {
                        out.push(b'-');
                    }
                }
            }
        }
    }
}

fn push_text(chunks: &mut Vec<Chunk>, text: &str) {
    if text.is_empty() {
        return;
    }
    match chunks.last_mut() {
        Some(Chunk::Text(t)) => t.extend_from_slice(text.as_bytes()),
        _ => chunks.push(Chunk::Text(text.as_bytes().to_vec())),
    }
}

/// Writes variable `v`'s value (nothing: empty, printed as `-`).
fn value(v: &Var, line: &Line<'_>, out: &mut Vec<u8>) {
    let (req, o) = (line.req, line.outcome);
    let text = |out: &mut Vec<u8>, b: &[u8]| super::push_text(out, b);
    let num = super::push_num;
    let micros = u64::try_from(o.duration.as_micros()).unwrap_or(u64::MAX);
    let started = line.started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    match v {
        Var::Uri => text(out, req.request_uri),
        Var::Method => text(out, req.method),
        Var::User => text(out, &cgi_var(req, b"REMOTE_USER").unwrap_or_default()),
        Var::Addr => text(out, req.remote_addr),
        Var::Host => text(out, req.header("host").unwrap_or_default()),
        Var::Proto => text(out, req.server_protocol),
        Var::Uagent => text(out, req.header("user-agent").unwrap_or_default()),
        Var::Referer => text(out, req.header("referer").unwrap_or_default()),
        Var::Status => num(out, u64::from(o.status)),
        Var::Rsize => num(out, o.body_bytes),
        Var::Hsize => num(out, o.head_bytes),
        Var::Size => num(out, o.head_bytes.saturating_add(o.body_bytes)),
        Var::Cl => num(out, req.content_length.unwrap_or(0)),
        Var::Micros => num(out, micros),
        Var::Msecs => num(out, micros / 1000),
        Var::Secs => {
            let _ = write!(out, "{:.6}", o.duration.as_secs_f64());
        }
        Var::Tmsecs => num(out, u64::try_from(started.as_millis()).unwrap_or(u64::MAX)),
        Var::Tmicros => num(out, u64::try_from(started.as_micros()).unwrap_or(u64::MAX)),
        Var::Time => num(out, started.as_secs()),
        Var::Ltime => Civil::of(line.started).apache(out),
        Var::Ctime => Civil::of(line.started).ctime(out),
        Var::Epoch => num(out, super::unix_now().as_secs()),
        Var::Pid => num(out, u64::from(line.pid)),
        Var::Wid => num(out, u64::from(line.worker)),
        Var::Core => num(out, u64::from(line.core)),
        Var::Headers => num(out, u64::from(o.headers)),
        Var::Vars => num(out, var_count(req).0),
        Var::Pktsize => num(out, var_count(req).1),
        Var::Rss | Var::Vsz | Var::RssM | Var::VszM => memory(v, out),
        Var::Zero => out.push(b'0'),
        Var::RequestId => text(out, line.request_id.as_bytes()),
        Var::Cgi(name) => text(out, &cgi_var(req, name).unwrap_or_default()),
        Var::Metric(name) => {
            if let Some(n) = crate::worker::python::metric_value(name) {
                let _ = write!(out, "{n}");
            }
        }
        Var::Logvar(name) => {
            super::logvars::get(name, |v| text(out, v));
        }
        Var::Unset => {}
    }
}

/// Request variables and their bytes, as uWSGI counts them (`{N vars in
/// B bytes}`): the uwsgi packet's vars, or an HTTP request's header fields
/// (each with its two length bytes per name and value, as in a packet).
pub(super) fn var_count(req: &Request<'_>) -> (u64, u64) {
    let fields = if req.protocol == Protocol::Uwsgi { req.vars } else { req.headers };
    fields.iter().fold((0, 0), |(n, b), (k, v)| (n + 1, b + 4 + k.len() as u64 + v.len() as u64))
}

/// Request variable `name` by its CGI name: a uwsgi packet's var as sent,
/// or what the WSGI environ would hold for it.
pub(super) fn cgi_var<'a>(req: &Request<'a>, name: &[u8]) -> Option<Cow<'a, [u8]>> {
    if let Some(v) = req.vars.get(name) {
        return Some(Cow::Borrowed(v));
    }
    let plain: Option<&'a [u8]> = match name {
        b"REQUEST_METHOD" => Some(req.method),
        b"REQUEST_URI" => Some(req.request_uri),
        b"QUERY_STRING" => Some(req.query_string),
        b"SERVER_PROTOCOL" => Some(req.server_protocol),
        b"SCRIPT_NAME" => Some(req.script_name),
        b"REMOTE_ADDR" => Some(req.remote_addr),
        b"REMOTE_PORT" => Some(req.remote_port),
        b"SERVER_NAME" => Some(req.server_name),
        b"SERVER_PORT" => Some(req.server_port),
        _ => None,
    };
    if let Some(v) = plain {
        return Some(Cow::Borrowed(v));
    }
    if name == b"PATH_INFO" {
        return Some(req.path_info.clone());
    }
    let header = name.starts_with(b"HTTP_") || name == b"CONTENT_TYPE" || name == b"CONTENT_LENGTH";
    if req.protocol == Protocol::Uwsgi || !header {
        // A uwsgi request's header fields are vars, looked up above.
        return None;
    }
    req.headers.iter().find(|(field, _)| is_cgi_name_of(name, field)).map(|(_, v)| Cow::Borrowed(v))
}

/// Whether `cgi` (`HTTP_X_FORWARDED_FOR`, `CONTENT_TYPE`) is the CGI name
/// of HTTP header field `field` (`X-Forwarded-For`), without allocating.
/// A field with `_` in its name has none (as in `environ`: `X_Forwarded_For`
/// must not pass for `X-Forwarded-For`).
fn is_cgi_name_of(cgi: &[u8], field: &[u8]) -> bool {
    if field.contains(&b'_') {
        return false;
    }
    let bare = |f: &[u8]| f.eq_ignore_ascii_case(b"content-type") || f.eq_ignore_ascii_case(b"content-length");
    let rest = match cgi.strip_prefix(b"HTTP_") {
        Some(rest) if !bare(field) => rest,
        _ if bare(field) => cgi,
        _ => return false,
    };
    rest.len() == field.len()
        && rest.iter().zip(field).all(|(c, f)| *c == if *f == b'-' { b'_' } else { f.to_ascii_uppercase() })
}

/// `%(rss)`, `%(vsz)` (bytes) and their `M` forms (MiB), from
/// `/proc/self/statm` (read only when the format asks).
fn memory(v: &Var, out: &mut Vec<u8>) {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return };
    let mut pages = statm.split_whitespace().map(|p| p.parse::<u64>().unwrap_or(0));
    let (vsz, rss) = (pages.next().unwrap_or(0), pages.next().unwrap_or(0));
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096) as u64;
    let n = match v {
        Var::Rss => rss * page,
        Var::Vsz => vsz * page,
        Var::RssM => rss * page / (1024 * 1024),
        _ => vsz * page / (1024 * 1024),
    };
    let _ = write!(out, "{n}");
}
