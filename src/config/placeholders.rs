//! uWSGI's value expansion, shared by the ini and YAML readers: magic
//! variables (`%d` the file's directory with a trailing slash, `%n` its
//! name without extension, `%p` its absolute path, `%h` the hostname, `%%`),
//! `%(key)` (a key set earlier), `$(VAR)` and `$(VAR:-default)` (the
//! environment), `@(file)` (a regular file's text, one trailing newline
//! dropped). Reads only the environment and the `@(file)`s named.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::Entry;
use super::ini::read_text;

/// Everything a value expansion needs to know about the file it is in.
pub struct FileCtx<'a> {
    pub path: &'a Path,
    pub abs: PathBuf,
}

impl FileCtx<'_> {
    fn dir(&self) -> String {
        let mut d = self.abs.parent().map(|p| p.display().to_string()).unwrap_or_default();
        if !d.ends_with('/') {
            d.push('/');
        }
        d
    }
}

/// `p` relative to the directory of the file in `ctx` (absolute paths as they are).
pub fn resolve_relative(ctx: &FileCtx, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_owned() } else { ctx.abs.parent().unwrap_or(Path::new("/")).join(p) }
}

/// Why a value cannot be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error("unclosed `{sigil}(` in {raw:?}")]
    Unclosed { sigil: char, raw: String },
    #[error("the value grows to more than {MAX_VALUE_BYTES} bytes once expanded")]
    TooLong,
    #[error("the configuration holds more than {MAX_TOTAL_BYTES} bytes of values once expanded")]
    TooMuch,
    #[error("more than {MAX_ENTRIES} options in the configuration")]
    TooMany,
    #[error("placeholder %({0}) refers to a key that is not set before it")]
    UnknownKey(String),
    #[error("environment variable {0} is not set (use $({0}:-default) for a fallback)")]
    UnsetVar(String),
    #[error("@({0}): {1}")]
    File(String, Box<ConfigError>),
}

/// Longest value after expansion.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// All values of one configuration together, after expansion.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;
/// Options (entries) in one configuration.
pub const MAX_ENTRIES: usize = 10_000;

/// Expands `raw` and marks the entries its `%(key)` placeholders used as
/// variables (so an unknown key used only that way is not an error).
pub fn expand_into(raw: &str, ctx: &FileCtx, entries: &mut [Entry]) -> Result<String, ExpandError> {
    if entries.len() >= MAX_ENTRIES {
        return Err(ExpandError::TooMany);
    }
    let mut used = Vec::new();
    let v = expand(raw, ctx, entries, &mut used)?;
    // `%(key)` may repeat earlier values, which may repeat theirs: without
    // these limits a small file expands into gigabytes.
    let total: usize = entries.iter().map(|e| e.value.len()).sum();
    if total + v.len() > MAX_TOTAL_BYTES {
        return Err(ExpandError::TooMuch);
    }
    for e in entries.iter_mut().filter(|e| used.contains(&e.key)) {
        e.variable = true;
    }
    Ok(v)
}

/// Expands uWSGI magic variables and placeholders in one value.
fn expand(raw: &str, ctx: &FileCtx, entries: &[Entry], used: &mut Vec<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find(['%', '$', '@']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let sigil = tail.as_bytes()[0];
        if tail.len() >= 2 && tail.as_bytes()[1] == b'(' {
            let close =
                tail.find(')').ok_or_else(|| ExpandError::Unclosed { sigil: sigil as char, raw: raw.to_owned() })?;
            let inner = &tail[2..close];
            let piece = substitute(sigil, inner, ctx, entries, used)?;
            if out.len() + piece.len() > MAX_VALUE_BYTES {
                return Err(ExpandError::TooLong);
            }
            out.push_str(&piece);
            rest = &tail[close + 1..];
            continue;
        }
        if sigil == b'%' && tail.len() >= 2 {
            if let Some(m) = magic(tail.as_bytes()[1], ctx) {
                out.push_str(&m);
                rest = &tail[2..];
                continue;
            }
        }
        out.push(sigil as char);
        rest = &tail[1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of `%(inner)`, `$(inner)` or `@(inner)`.
fn substitute(
    sigil: u8,
    inner: &str,
    ctx: &FileCtx,
    entries: &[Entry],
    used: &mut Vec<String>,
) -> Result<String, ExpandError> {
    match sigil {
        b'%' => {
            let v = entries.iter().find(|e| e.key == inner).ok_or_else(|| ExpandError::UnknownKey(inner.into()))?;
            used.push(inner.to_owned());
            Ok(v.value.clone())
        }
        b'$' => {
            let (var, default) = match inner.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (inner, None),
            };
            match (std::env::var(var), default) {
                (Ok(v), _) => Ok(v),
                (Err(_), Some(d)) => Ok(d.to_owned()),
                (Err(_), None) => Err(ExpandError::UnsetVar(var.to_owned())),
            }
        }
        _ => {
            // Read with the config-file checks: a FIFO, a device
            // or a directory is refused before it is opened
            // (`@(/dev/zero)` read forever, `@(fifo)` blocked).
            let s = read_text(&resolve_relative(ctx, inner)).map_err(|e| ExpandError::File(inner.into(), e.into()))?;
            Ok(s.strip_suffix('\n').unwrap_or(&s).to_owned())
        }
    }
}

/// The value of magic variable `%c`, if `c` names one.
fn magic(c: u8, ctx: &FileCtx) -> Option<String> {
    match c {
        b'd' => Some(ctx.dir()),
        b'n' => Some(ctx.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
        b'p' => Some(ctx.abs.display().to_string()),
        b'h' => Some(nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()),
        b'%' => Some("%".to_owned()),
        _ => None,
    }
}
