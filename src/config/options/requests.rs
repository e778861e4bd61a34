//! Request-aware supervision of the built-in WSGI worker, with uWSGI's
//! meanings: `max-requests` (recycle a worker after N requests) and
//! `harakiri` (replace a worker whose request runs too long, with its
//! Python stacks in the log). They need podmaster's own worker, which
//! sees every request: with an override script or a command, podmaster
//! cannot count requests, and these options are errors (`check_app`).
//! `static-map` answers files from the same front, without the app.

use super::{Kind, OptDef};
use crate::config::values::{flag, positive_seconds, whole_in};
use crate::config::{Config, ConfigError, Entry};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "max-requests",
        Kind::Uint,
        "replace a WSGI worker (replacement first) after it served this many requests",
        |c, e| whole_in(e, 1..=u64::MAX, "at least 1 request").map(|n| c.max_requests = Some(n)),
    ),
    OptDef::new(
        "max-requests-delta",
        Kind::Uint,
        "random extra requests per worker, 0..delta, so workers started together are not all replaced together",
        |c, e| whole_in(e, 0..=u64::MAX, "a number of requests").map(|n| c.max_requests_delta = n),
    )
    .default("0"),
    OptDef::new(
        "harakiri",
        Kind::Seconds,
        "a request running longer than this gets its WSGI worker replaced, its Python stacks logged and, when its \
         response has not started, a 504",
        |c, e| positive_seconds(e).map(|d| c.harakiri = Some(d)),
    ),
    OptDef::new("harakiri-verbose", Kind::Bool, "log the stuck request's headers too when harakiri strikes", |c, e| {
        c.harakiri_verbose = flag(e);
        Ok(())
    })
    .default("false"),
    OptDef::new(
        "static-map",
        Kind::Text,
        "serve files under a URL prefix from a directory, in Rust, without the app (repeatable): /prefix=dir",
        static_map,
    )
    .repeatable(),
    OptDef::new(
        "static-gzip-all",
        Kind::Bool,
        "serve FILE.gz (Content-Encoding: gzip) when it exists beside a static file and the client accepts gzip",
        |c, e| {
            c.static_gzip_all = flag(e);
            Ok(())
        },
    )
    .default("false"),
];

/// `static-map = /prefix=dir` (uWSGI's form).
fn static_map(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim();
    let Some((prefix, dir)) = v.split_once('=') else {
        return Err(ConfigError::at(e, format!("expected /PREFIX=DIRECTORY, found {v:?}")));
    };
    let (prefix, dir) = (prefix.trim(), dir.trim());
    if !prefix.starts_with('/') || prefix.bytes().any(|b| b.is_ascii_control() || b == b' ') || dir.is_empty() {
        return Err(ConfigError::at(e, format!("expected /PREFIX=DIRECTORY, found {v:?}")));
    }
    c.static_maps.push((prefix.trim_end_matches('/').to_owned(), dir.into()));
    Ok(())
}
