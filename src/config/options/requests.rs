//! Request-aware supervision of the built-in WSGI worker, with uWSGI's
//! meanings: `max-requests` (recycle a worker after N requests) and
//! `harakiri` (replace a worker whose request runs too long, with its
//! Python stacks in the log). They need podmaster's own worker, which
//! sees every request: with an override script or a command, podmaster
//! cannot count requests, and these options are errors (`check_app`).
//! `static-map` answers files from the same front, without the app.

use super::{Kind, OptDef};
use crate::config::values::{flag, positive_seconds, whole_in};
use crate::config::{Config, ConfigError, Entry, ExpiresOn, ExpiresRule};

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
    OptDef::new("static-expires", Kind::Text, EXPIRES[0].3, |c, e| expires(c, e, 0)).repeatable(),
    OptDef::new("static-expires-mtime", Kind::Text, EXPIRES[1].3, |c, e| expires(c, e, 1)).repeatable(),
    OptDef::new("static-expires-type", Kind::Text, EXPIRES[2].3, |c, e| expires(c, e, 2)).repeatable(),
    OptDef::new("static-expires-type-mtime", Kind::Text, EXPIRES[3].3, |c, e| expires(c, e, 3)).repeatable(),
    OptDef::new("static-expires-uri", Kind::Text, EXPIRES[4].3, |c, e| expires(c, e, 4)).repeatable(),
    OptDef::new("static-expires-uri-mtime", Kind::Text, EXPIRES[5].3, |c, e| expires(c, e, 5)).repeatable(),
    OptDef::new("static-expires-path-info", Kind::Text, EXPIRES[6].3, |c, e| expires(c, e, 6)).repeatable(),
    OptDef::new("static-expires-path-info-mtime", Kind::Text, EXPIRES[7].3, |c, e| expires(c, e, 7)).repeatable(),
];

/// The `static-expires` family: (option, what it matches, from the file's
/// modification time, help).
pub(crate) const EXPIRES: [(&str, ExpiresOn, bool, &str); 8] = [
    (
        "static-expires",
        ExpiresOn::Filename,
        false,
        "static files whose path matches REGEX get Expires / Cache-Control: max-age SECONDS from now: REGEX SECONDS",
    ),
    ("static-expires-mtime", ExpiresOn::Filename, true, "as static-expires, counted from the file's mtime"),
    (
        "static-expires-type",
        ExpiresOn::Type,
        false,
        "static files of this content type get Expires / Cache-Control: max-age SECONDS from now: TYPE=SECONDS",
    ),
    ("static-expires-type-mtime", ExpiresOn::Type, true, "as static-expires-type, counted from the file's mtime"),
    ("static-expires-uri", ExpiresOn::Uri, false, "as static-expires, the REGEX searched in REQUEST_URI"),
    ("static-expires-uri-mtime", ExpiresOn::Uri, true, "as static-expires-uri, counted from the file's mtime"),
    ("static-expires-path-info", ExpiresOn::PathInfo, false, "as static-expires, the REGEX searched in PATH_INFO"),
    (
        "static-expires-path-info-mtime",
        ExpiresOn::PathInfo,
        true,
        "as static-expires-path-info, counted from the file's mtime",
    ),
];

/// The longest expiry accepted: ten years (uWSGI takes any int; more
/// than a year means "never" to caches anyway, RFC 9111 §5.3 asks for at
/// most one year).
const EXPIRES_MAX: u64 = 10 * 365 * 24 * 3600;

/// `static-expires* = REGEX SECONDS` (the regex may hold spaces: the
/// seconds are the last word) or `static-expires-type* = TYPE=SECONDS`.
fn expires(c: &mut Config, e: &Entry, which: usize) -> Result<(), ConfigError> {
    let (_, on, from_mtime, _) = EXPIRES[which];
    let v = e.value.trim();
    let split = if on == ExpiresOn::Type { v.rsplit_once('=') } else { v.rsplit_once([' ', '\t']) };
    let form = if on == ExpiresOn::Type { "TYPE=SECONDS" } else { "REGEX SECONDS" };
    let Some((pattern, secs)) = split.map(|(p, s)| (p.trim(), s.trim())).filter(|(p, _)| !p.is_empty()) else {
        return Err(ConfigError::at(e, format!("expected {form}, found {v:?}")));
    };
    let seconds = match secs.parse::<u64>() {
        Ok(n) if n <= EXPIRES_MAX => n,
        _ => {
            return Err(ConfigError::at(
                e,
                format!("expected {form} with SECONDS a whole number up to {EXPIRES_MAX} (ten years), found {secs:?}"),
            ));
        }
    };
    if on != ExpiresOn::Type {
        if let Err(err) = regex_lite::Regex::new(pattern) {
            return Err(ConfigError::at(e, format!("{pattern:?} is not a regular expression: {err}")));
        }
    } else if crate::worker::statics::served_type(pattern).is_none() {
        // Not an error: a config written for uWSGI's mime.types may name
        // types podmaster never sends; the rule is inert, and said so.
        let text = format!(
            "no static file is ever sent as {pattern:?} (podmaster's types come from the file's extension: \
             html, css, js, json, txt, xml, svg, png, jpg, gif, webp, avif, ico, woff, woff2, ttf, pdf, wasm, \
             mp4, webm, else application/octet-stream); this rule matches nothing"
        );
        c.notices.push((e.key.clone(), e.origin.clone(), text));
    }
    c.static_expires.push(ExpiresRule { on, pattern: pattern.to_owned(), seconds, from_mtime });
    Ok(())
}

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
