//! `static-map = /prefix=dir`: files answered by the worker's Rust front
//! without touching Python — `sendfile`, `ETag` and `Last-Modified`,
//! `If-None-Match` / `If-Modified-Since` (304), a single `Range` (206,
//! 416), `static-gzip-all` (a `file.gz` beside the file for clients that
//! accept gzip), the `static-expires` family (see [`Expiry`]).
//!
//! Like uWSGI, a path under a prefix that names no regular file (missing,
//! a directory) goes on to the app, and only GET and HEAD are served.
//! Unlike uWSGI's default, escaping the directory is impossible, not
//! checked after the fact: the file is opened with `openat2` and
//! `RESOLVE_BENEATH` relative to the directory opened at startup, so `..`,
//! absolute or escaping symlinks and `/proc` magic links all fail inside
//! the kernel (answered 404); a `..` segment is refused before that.

pub(crate) mod date;
mod range;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use super::front::{FileBody, Request, Response, ResponseBody};
use crate::config::{ExpiresOn, ExpiresRule};

/// One `static-map`: a URL prefix and the directory it maps to.
struct Map {
    /// Without a trailing `/`.
    prefix: Vec<u8>,
    root: OwnedFd,
    /// The directory's path, as configured (`static-expires` matches
    /// file paths under it).
    dir: PathBuf,
}

/// The static files of a worker.
pub struct Statics {
    maps: Vec<Map>,
    gzip_all: bool,
    expires: Vec<Expiry>,
}

/// A `static-expires*` rule, ready to match. As in uWSGI, a regular
/// expression matches when it is found anywhere in its subject (the
/// file's path under its `static-map` directory, `REQUEST_URI` or
/// `PATH_INFO`), a type when it equals the file's content type without
/// parameters; the first matching rule, in the order given, counts.
/// Unlike uWSGI (`Expires` only) the answer carries `Cache-Control:
/// max-age` too, which caches prefer and which no clock skew spoils.
struct Expiry {
    on: Match,
    seconds: u64,
    from_mtime: bool,
}

enum Match {
    Filename(regex_lite::Regex),
    Type(String),
    Uri(regex_lite::Regex),
    PathInfo(regex_lite::Regex),
}

impl Expiry {
    fn new(rule: &ExpiresRule) -> Result<Expiry, String> {
        let regex =
            || regex_lite::Regex::new(&rule.pattern).map_err(|e| format!("static-expires {:?}: {e}", rule.pattern));
        let on = match rule.on {
            ExpiresOn::Filename => Match::Filename(regex()?),
            ExpiresOn::Type => Match::Type(served_type(&rule.pattern).unwrap_or("").to_owned()),
            ExpiresOn::Uri => Match::Uri(regex()?),
            ExpiresOn::PathInfo => Match::PathInfo(regex()?),
        };
        Ok(Expiry { on, seconds: rule.seconds, from_mtime: rule.from_mtime })
    }

    fn matches(&self, file: &Path, content_type: &str, req: &Request<'_>) -> bool {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match &self.on {
            Match::Filename(re) => re.is_match(&file.to_string_lossy()),
            Match::Type(t) => !t.is_empty() && base_type(content_type) == t,
            Match::Uri(re) => re.is_match(&lossy(req.request_uri)),
            Match::PathInfo(re) => re.is_match(&lossy(&req.path_info)),
        }
    }
}

/// The caching headers of a file: `Expires` and `Cache-Control`.
struct Caching {
    expires: String,
    max_age: u64,
}

impl Caching {
    fn of(rule: &Expiry, mtime: i64) -> Caching {
        let now = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs(),
        )
        .unwrap_or(i64::MAX);
        let base = if rule.from_mtime { mtime } else { now };
        let at = base.saturating_add(i64::try_from(rule.seconds).unwrap_or(i64::MAX));
        Caching { expires: date::format(at), max_age: u64::try_from(at.saturating_sub(now)).unwrap_or(0) }
    }
}

impl Statics {
    /// Opens every mapped directory (a failure names it). Longest
    /// prefixes are tried first.
    pub fn open(maps: &[(String, PathBuf)], gzip_all: bool, expires: &[ExpiresRule]) -> Result<Statics, String> {
        let expires = expires.iter().map(Expiry::new).collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(maps.len());
        for (prefix, dir) in maps {
            let root = nix::fcntl::open(
                dir.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("static-map {prefix}={}: {e}", dir.display()))?;
            // The filename rules see the real path, as uWSGI's (which
            // resolves the mapped directory with realpath).
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            out.push(Map { prefix: prefix.trim_end_matches('/').as_bytes().to_vec(), root, dir });
        }
        out.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Ok(Statics { maps: out, gzip_all, expires })
    }

    /// The answer from the static files, or None: the app's request.
    pub fn serve(&self, req: &Request<'_>) -> Option<Response> {
        if self.maps.is_empty() || !(req.method == b"GET" || req.method == b"HEAD") {
            return None;
        }
        let path: &[u8] = &req.path_info;
        let (map, rest) = self.maps.iter().find_map(|m| {
            let rest = path.strip_prefix(m.prefix.as_slice())?;
            rest.strip_prefix(b"/").map(|r| (m, r))
        })?;
        if rest.is_empty() || rest.ends_with(b"/") {
            return None;
        }
        if rest.contains(&0) || rest.split(|b| *b == b'/').any(|seg| seg == b"..") {
            tracing::debug!(path = %String::from_utf8_lossy(path), "static-map: a path with `..` or NUL; 404");
            return Some(not_found());
        }
        let rel = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rest));
        let (file, encoding) = match self.open_variant(map, rel, req) {
            Ok(found) => found,
            Err(Found::App) => return None,
            Err(Found::Refused) => return Some(not_found()),
        };
        let caching = |content_type: &str, mtime: i64| {
            let rule = self.expires.iter().find(|r| r.matches(&map.dir.join(rel), content_type, req))?;
            Some(Caching::of(rule, mtime))
        };
        Some(respond(file, encoding, self.gzip_all, req, &caching))
    }

    /// The file at `rel` under `map`, or its `.gz` beside it when gzip is
    /// on and accepted.
    fn open_variant(
        &self,
        map: &Map,
        rel: &Path,
        req: &Request<'_>,
    ) -> Result<(std::fs::File, Option<&'static str>), Found> {
        if self.gzip_all && accepts_gzip(req) {
            let mut gz = rel.as_os_str().to_owned();
            gz.push(".gz");
            if let Ok(f) = open_beneath(map, Path::new(&gz)) {
                return Ok((f, Some("gzip")));
            }
        }
        open_beneath(map, rel).map(|f| (f, None))
    }
}

/// Why no file was opened.
enum Found {
    /// Missing, or not a regular file: the app answers.
    App,
    /// An escape attempt or a file the worker may not read: 404.
    Refused,
}

fn open_beneath(map: &Map, rel: &Path) -> Result<std::fs::File, Found> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(map.root.as_fd(), rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG) => return Err(Found::App),
        Err(e) => {
            tracing::debug!(path = %rel.display(), error = %e, "static-map: refused");
            return Err(Found::Refused);
        }
    };
    let file = std::fs::File::from(fd);
    match file.metadata() {
        Ok(m) if m.is_file() => Ok(file),
        _ => Err(Found::App),
    }
}

fn accepts_gzip(req: &Request<'_>) -> bool {
    req.header("accept-encoding").is_some_and(|v| {
        v.split(|b| *b == b',').any(|t| {
            let t = t.trim_ascii();
            let (coding, q) = match t.iter().position(|b| *b == b';') {
                Some(i) => (t[..i].trim_ascii(), t[i + 1..].trim_ascii()),
                None => (t, &b""[..]),
            };
            coding.eq_ignore_ascii_case(b"gzip") && !matches!(q, b"q=0" | b"q=0.0" | b"q=0.00" | b"q=0.000")
        })
    })
}

fn not_found() -> Response {
    Response::text(404, "Not Found", "Not Found")
}

/// The response for an opened file: conditionals, range, headers.
fn respond(
    file: std::fs::File,
    encoding: Option<&'static str>,
    gzip_all: bool,
    req: &Request<'_>,
    caching: &dyn Fn(&str, i64) -> Option<Caching>,
) -> Response {
    let Ok(meta) = file.metadata() else { return not_found() };
    let (size, mtime) = (meta.len(), meta.mtime());
    let etag = format!(
        "\"{size:x}-{:x}{}\"",
        meta.mtime_nsec() as u64 ^ (mtime as u64) << 20,
        if encoding.is_some() { "-gz" } else { "" }
    );
    let last_modified = date::format(mtime);
    let content_type = content_type(&req.path_info);
    let caching = caching(content_type, mtime);
    let head = |status: u16, reason: &str| {
        let mut r = Response::new(status, reason)
            .header("ETag", etag.as_str())
            .header("Last-Modified", last_modified.as_str())
            .header("Accept-Ranges", "bytes");
        if gzip_all {
            r = r.header("Vary", "Accept-Encoding");
        }
        // On a 304 too (RFC 9110 §15.4.5: as the 200 would have had).
        if let Some(c) = &caching {
            r = r.header("Expires", c.expires.as_str()).header("Cache-Control", format!("max-age={}", c.max_age));
        }
        r
    };
    if not_modified(req, &etag, mtime) {
        return head(304, "Not Modified");
    }
    let pick = range::pick(req, &etag, mtime, size);
    let mut resp = match pick {
        range::Pick::Whole => head(200, "OK").header("Content-Type", content_type),
        range::Pick::Part(start, end) => head(206, "Partial Content")
            .header("Content-Type", content_type)
            .header("Content-Range", format!("bytes {start}-{end}/{size}")),
        range::Pick::Unsatisfiable => {
            return Response::new(416, "Range Not Satisfiable").header("Content-Range", format!("bytes */{size}"));
        }
    };
    if let Some(enc) = encoding {
        resp = resp.header("Content-Encoding", enc);
    }
    let (offset, length) = match pick {
        range::Pick::Part(start, end) => (start, end - start + 1),
        _ => (0, size),
    };
    resp.body = ResponseBody::File(FileBody { file, offset, length });
    resp
}

/// `If-None-Match` (weak comparison) wins over `If-Modified-Since`.
fn not_modified(req: &Request<'_>, etag: &str, mtime: i64) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        return inm
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag.as_bytes());
    }
    req.header("if-modified-since").and_then(date::parse).is_some_and(|since| mtime <= since)
}

/// The type podmaster serves for a type named in `static-expires-type`
/// (`image/x-icon`, `application/javascript`: the names of mime.types
/// files, which uWSGI reads), or None when no static file is ever sent
/// with it.
pub(crate) fn served_type(named: &str) -> Option<&'static str> {
    let named = named.trim().to_ascii_lowercase();
    let alias = match named.as_str() {
        "application/javascript" | "application/x-javascript" | "text/x-javascript" => "text/javascript",
        "image/x-icon" => "image/vnd.microsoft.icon",
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "text/xml" => "application/xml",
        "application/font-woff" | "application/x-font-woff" => "font/woff",
        "application/font-woff2" => "font/woff2",
        "application/x-font-ttf" | "application/x-font-truetype" => "font/ttf",
        other => other,
    };
    SERVED.iter().map(|(_, t)| base_type(t)).find(|t| *t == alias)
}

/// A content type without its parameters.
fn base_type(t: &str) -> &str {
    t.split(';').next().unwrap_or(t).trim()
}

/// Extensions and the types they are served with.
const SERVED: &[(&[&str], &str)] = &[
    (&["html", "htm"], "text/html; charset=utf-8"),
    (&["css"], "text/css; charset=utf-8"),
    (&["js", "mjs"], "text/javascript; charset=utf-8"),
    (&["json", "map"], "application/json"),
    (&["txt"], "text/plain; charset=utf-8"),
    (&["xml"], "application/xml"),
    (&["svg"], "image/svg+xml"),
    (&["png"], "image/png"),
    (&["jpg", "jpeg"], "image/jpeg"),
    (&["gif"], "image/gif"),
    (&["webp"], "image/webp"),
    (&["avif"], "image/avif"),
    (&["ico"], "image/vnd.microsoft.icon"),
    (&["woff"], "font/woff"),
    (&["woff2"], "font/woff2"),
    (&["ttf"], "font/ttf"),
    (&["pdf"], "application/pdf"),
    (&["wasm"], "application/wasm"),
    (&["mp4"], "video/mp4"),
    (&["webm"], "video/webm"),
    (&[], "application/octet-stream"),
];

/// A content type from the file's extension (the usual web types).
fn content_type(path: &[u8]) -> &'static str {
    let ext = path.rsplit(|b| *b == b'.').next().unwrap_or_default().to_ascii_lowercase();
    let ext = std::str::from_utf8(&ext).unwrap_or_default();
    SERVED.iter().find(|(exts, _)| exts.contains(&ext)).map_or("application/octet-stream", |(_, t)| t)
}
