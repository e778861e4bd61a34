//! Options about logs: podmaster's own (workers get the same settings)
//! and the WSGI worker's request log, with uWSGI's meanings
//! (`log-format` as a request-log format, `disable-logging`, `log-4xx`,
//! `log-5xx`). Only podmaster's WSGI worker sees requests: with an
//! override script or a command the request-log options are noted as
//! having no effect (the notices are dropped once a WSGI app is known,
//! in `Config::resolve_all`).

use super::{Kind, OptDef};
use crate::config::values::flag;
use crate::config::{Config, ConfigError, Entry, LogFormat};

/// The options whose notice says they need the WSGI worker.
pub const REQUEST_LOG_OPTIONS: &[&str] = &["log-format", "disable-logging", "log-4xx", "log-5xx"];

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "log-format",
        Kind::Text,
        "log format: text or json; anything else is a uWSGI request-log format (%(addr) %(method) %(uri) \
         %(status) ...) for the WSGI worker's request lines, podmaster's own events staying text",
        log_format,
    )
    .aliases(&["logformat"])
    .default("text"),
    OptDef::new(
        "log-level",
        Kind::Text,
        "least severe level logged (error, warn, info, debug, trace); RUST_LOG overrides",
        log_level,
    )
    .default("info"),
    OptDef::new(
        "disable-logging",
        Kind::Bool,
        "no request lines from the WSGI worker (but those log-4xx and log-5xx ask for)",
        |c, e| {
            c.access_log.disabled = flag(e);
            note_request_option(c, e);
            Ok(())
        },
    )
    .default("false"),
    OptDef::new("log-4xx", Kind::Bool, "log requests answered 4xx even with disable-logging", |c, e| {
        c.access_log.log_4xx = flag(e);
        note_request_option(c, e);
        Ok(())
    })
    .default("false"),
    OptDef::new("log-5xx", Kind::Bool, "log requests answered 5xx even with disable-logging", |c, e| {
        c.access_log.log_5xx = flag(e);
        note_request_option(c, e);
        Ok(())
    })
    .default("false"),
];

fn log_format(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    c.notices.retain(|(key, _, _)| super::lookup(key).is_none_or(|o| o.name != "log-format"));
    match e.value.trim() {
        "text" => (c.log_format, c.access_log.format) = (LogFormat::Text, None),
        "json" => (c.log_format, c.access_log.format) = (LogFormat::Json, None),
        other => {
            c.log_format = LogFormat::Text;
            c.access_log.format = Some(other.to_owned());
            let text = format!(
                "log-format {other:?} is a uWSGI request-log format: only podmaster's WSGI worker (module, \
                 wsgi-file) logs requests; podmaster logs its own events as text (log-format = text or json)"
            );
            c.notices.push((e.key.clone(), e.origin.clone(), text));
        }
    }
    Ok(())
}

/// A request-log option set by a source (not a default): noted as having
/// no effect unless a WSGI app turns out to be served.
fn note_request_option(c: &mut Config, e: &Entry) {
    if e.origin == crate::config::Origin::Default {
        return;
    }
    let text = format!(
        "{}: only podmaster's WSGI worker (module, wsgi-file) logs requests; an override script's or a \
         command's server logs its own",
        e.key
    );
    c.notices.push((e.key.clone(), e.origin.clone(), text));
}

fn log_level(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim().to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
        return Err(ConfigError::at(e, format!("expected error, warn, info, debug or trace, found {v:?}")));
    }
    c.log_level = v;
    Ok(())
}
