//! uWSGI's value expansion, shared by the ini and YAML readers.
//!
//! In a value, from left to right:
//! - `%(expr)`: a key set earlier (`%(key)`), `%(_)` (the value a logic
//!   block gives, see [`super::ini`]), or placeholder maths
//!   (`%(processes + 1)`, [`maths`]);
//! - `$(VAR)`, `$(VAR:-default)`: the environment (unset: an error);
//! - `@(file)`: a regular file's text, one trailing newline dropped;
//!   `@(exec://COMMAND)`: a command's output ([`exec`], ini files only);
//! - `%%`: a literal `%`; `%` and a letter, digit or `[`: a magic variable
//!   ([`magic`]; unknown ones are errors); any other `%` (`50%`, `% `) is
//!   text, as are `$` and `@` not followed by `(`.
//!
//! The text inside `%( )`, `$( )` and `@( )` is expanded first (uWSGI
//! substitutes magic variables and `$( )` before it reads the others, so
//! `@(%d/secret)` and `%(%k * 2)` work); the closing `)` is the one that
//! balances the opening `(`. Every result is bounded ([`MAX_VALUE_BYTES`]
//! per value, [`MAX_NESTING`] levels); the readers bound the totals.
//! Reads only the environment, the files named and the commands' output.

pub mod exec;
pub mod magic;
pub mod maths;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::Entry;
use super::ini::read_text;
use exec::ExecBudget;
use magic::{FileMagic, Magic, MagicError};

/// Everything a value expansion needs to know about the file it is in.
pub struct FileCtx<'a> {
    pub path: &'a Path,
    pub abs: PathBuf,
}

/// `p` relative to the directory of the file in `ctx` (absolute paths as they are).
pub fn resolve_relative(ctx: &FileCtx, p: &str) -> PathBuf {
    resolve_in(&ctx.abs, p)
}

/// `p` relative to the directory of file `abs` (absolute paths as they are).
pub fn resolve_in(abs: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_owned() } else { abs.parent().unwrap_or(Path::new("/")).join(p) }
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
    #[error("placeholders nested more than {MAX_NESTING} levels deep")]
    TooDeep,
    #[error("placeholder %({0}) refers to a key that is not set before it")]
    UnknownKey(String),
    /// A key whose own value failed to expand (that error is reported;
    /// this one is a consequence, and the readers leave it out).
    #[error("placeholder %({0}) refers to a key whose value could not be expanded")]
    Consequence(String),
    #[error("%(_) has a value only inside an if-* or for block")]
    NoContext,
    #[error("environment variable {0} is not set (use $({0}:-default) for a fallback)")]
    UnsetVar(String),
    #[error("@({0}): {1}")]
    File(String, Box<ConfigError>),
    #[error(transparent)]
    Magic(#[from] MagicError),
    #[error("%({expr}): {why}")]
    Maths { expr: String, why: String },
    #[error("@(exec://{0}): {1}")]
    Exec(String, String),
    #[error("@({0}): only files and exec:// can be read (uWSGI's other schemes are not supported)")]
    Scheme(String),
    #[error("@(exec://...) is supported in ini files only")]
    ExecHere,
}

/// Longest value placeholders may expand to (text written as is is
/// bounded by the file size alone).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// All values of one configuration together, after expansion.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024 * 1024;
/// Options (entries) in one configuration.
pub const MAX_ENTRIES: usize = 10_000;
/// Placeholders inside placeholders (`@($(DIR)/x)` is two levels): real
/// values use two or three, and the bound keeps the recursion shallow.
pub const MAX_NESTING: usize = 8;

/// One value's expansion: the file's magic variables, the value of `%(_)`
/// if any, the keys whose values failed, and the exec:// budget (`None`:
/// exec:// is refused). Records the keys its `%(key)`s read.
pub struct Expander<'a> {
    pub magic: &'a Magic,
    pub context: Option<&'a str>,
    pub failed: &'a HashSet<String>,
    pub exec: Option<&'a mut ExecBudget>,
    /// The value is a uWSGI request-log format ([`REQUEST_LOG_KEYS`]): an
    /// unknown `%(name)` is one of its variables (`%(addr)`, `%(status)`)
    /// and stays as written, as uWSGI leaves it.
    pub request_log: bool,
    pub used: Vec<String>,
}

/// Keys whose value is a uWSGI request-log format, full of `%(var)`s that
/// are not placeholders.
pub const REQUEST_LOG_KEYS: &[&str] = &["log-format", "logformat"];

/// Expands `raw` as a value of a YAML/JSON document or ConfigMap (no
/// logic blocks, no exec://) and marks the entries its `%(key)`
/// placeholders used as variables (so an unknown key used only that way
/// is not an error).
pub fn expand_into(raw: &str, ctx: &FileCtx, entries: &mut [Entry]) -> Result<String, ExpandError> {
    if entries.len() >= MAX_ENTRIES {
        return Err(ExpandError::TooMany);
    }
    let given = ctx.path.display().to_string();
    let file = FileMagic { shown: ctx.path.to_owned(), abs: ctx.abs.clone(), given, section: "uwsgi".into() };
    let magic = Magic::single(file);
    let failed = HashSet::new();
    let mut ex =
        Expander { magic: &magic, context: None, failed: &failed, exec: None, request_log: false, used: Vec::new() };
    let v = ex.expand(raw, entries);
    mark_used(entries, &ex.used);
    let v = v?;
    // `%(key)` may repeat earlier values, which may repeat theirs: without
    // these limits a small file expands into gigabytes.
    let total: usize = entries.iter().map(|e| e.value.len()).sum();
    if total + v.len() > MAX_TOTAL_BYTES {
        return Err(ExpandError::TooMuch);
    }
    Ok(v)
}

/// Marks the entries named in `used` as variables. Done whether or not the
/// value expanded: a key a placeholder names is a variable either way,
/// and "unknown option" about it would only repeat the first error.
pub fn mark_used(entries: &mut [Entry], used: &[String]) {
    if used.is_empty() {
        return;
    }
    for e in entries.iter_mut().filter(|e| used.contains(&e.key)) {
        e.variable = true;
    }
}

impl Expander<'_> {
    /// Expands uWSGI magic variables and placeholders in one value.
    pub fn expand(&mut self, raw: &str, entries: &[Entry]) -> Result<String, ExpandError> {
        self.expand_at(raw, entries, 0, false)
    }

    /// `shell`: the text of an `@(exec://...)`, where `$(...)` and `@` are
    /// the shell's (command substitution), so only `%` sequences expand.
    fn expand_at(&mut self, raw: &str, entries: &[Entry], depth: usize, shell: bool) -> Result<String, ExpandError> {
        if depth > MAX_NESTING {
            return Err(ExpandError::TooDeep);
        }
        let mut out = String::with_capacity(raw.len().min(MAX_VALUE_BYTES));
        let mut rest = raw;
        while let Some(pos) = rest.find(['%', '$', '@']) {
            // Text as written is bounded by the file size; only what
            // placeholders add is held to MAX_VALUE_BYTES.
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            let sigil = tail.as_bytes()[0];
            let next = tail[1..].chars().next();
            if next == Some('(') && (sigil == b'%' || !shell) {
                let close =
                    closing(tail).ok_or_else(|| ExpandError::Unclosed { sigil: sigil as char, raw: raw.to_owned() })?;
                let body = &tail[2..close];
                let inner =
                    self.expand_at(body, entries, depth + 1, shell || (sigil == b'@' && body.starts_with("exec://")))?;
                // Maths errors show the expression as written (`%k`, not 8).
                let piece = match self.substitute(sigil, &inner, entries) {
                    Ok(piece) => piece,
                    Err(ExpandError::UnknownKey(_) | ExpandError::NoContext) if self.request_log && sigil == b'%' => {
                        format!("%({body})")
                    }
                    Err(ExpandError::Maths { why, .. }) => {
                        return Err(ExpandError::Maths { expr: body.to_owned(), why });
                    }
                    Err(e) => return Err(e),
                };
                push(&mut out, &piece)?;
                rest = &tail[close + 1..];
                continue;
            }
            match (sigil, next) {
                (b'%', Some('%')) => push(&mut out, "%")?,
                (b'%', Some(c)) if magic::is_magic(c) => push(&mut out, &self.magic.value(c)?)?,
                _ => {
                    out.push_str(&tail[..1]);
                    rest = &tail[1..];
                    continue;
                }
            }
            // Both the `%` and the (ASCII) character after it are consumed.
            rest = &tail[2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The text of `%(inner)`, `$(inner)` or `@(inner)` (inner expanded).
    fn substitute(&mut self, sigil: u8, inner: &str, entries: &[Entry]) -> Result<String, ExpandError> {
        match sigil {
            b'%' => {
                let mut lookup = |name: &str| self.lookup(name, entries);
                maths::evaluate(inner, &mut lookup)
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
            _ => self.read_at(inner),
        }
    }

    /// `@(inner)`: a command's output or a file's text.
    fn read_at(&mut self, inner: &str) -> Result<String, ExpandError> {
        if let Some(command) = inner.strip_prefix("exec://") {
            let budget = self.exec.as_deref_mut().ok_or(ExpandError::ExecHere)?;
            return exec::run(command, budget).map_err(|why| ExpandError::Exec(command.to_owned(), why));
        }
        if let Some((scheme, _)) = inner.split_once("://") {
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ExpandError::Scheme(inner.to_owned()));
            }
        }
        // Read with the config-file checks: a FIFO, a device or a
        // directory is refused before it is opened (`@(/dev/zero)` read
        // forever, `@(fifo)` blocked).
        let s = read_text(&resolve_in(&self.magic.this.abs, inner))
            .map_err(|e| ExpandError::File(inner.into(), e.into()))?;
        Ok(s.strip_suffix('\n').unwrap_or(&s).to_owned())
    }

    /// The value of placeholder `name`: `_` inside a logic block, else
    /// the first entry with that key.
    fn lookup(&mut self, name: &str, entries: &[Entry]) -> Result<String, ExpandError> {
        if name == "_" {
            if let Some(c) = self.context {
                return Ok(c.to_owned());
            }
        }
        if let Some(v) = find(entries, name) {
            self.used.push(name.to_owned());
            return Ok(v.to_owned());
        }
        if self.failed.contains(name) {
            return Err(ExpandError::Consequence(name.to_owned()));
        }
        Err(if name == "_" { ExpandError::NoContext } else { ExpandError::UnknownKey(name.to_owned()) })
    }
}

/// The value `%(name)` reads: that of the first entry that is `name`, or
/// that defines it with `set-placeholder`/`set-ph = name=VALUE` (kept as
/// the option entry it is; its syntax is the option's, checked when the
/// configuration is resolved), as uWSGI reads the first exported value.
pub fn find<'e>(entries: &'e [Entry], name: &str) -> Option<&'e str> {
    entries.iter().find_map(|e| {
        if e.key == name {
            return Some(e.value.as_str());
        }
        if !matches!(e.key.as_str(), "set-placeholder" | "set-ph") {
            return None;
        }
        match super::options::workers::placeholder(e) {
            Ok((n, v)) if n == name => Some(v),
            _ => None,
        }
    })
}

/// Appends what a placeholder or magic variable gave, refusing to grow
/// the value past [`MAX_VALUE_BYTES`].
fn push(out: &mut String, piece: &str) -> Result<(), ExpandError> {
    if out.len() + piece.len() > MAX_VALUE_BYTES {
        return Err(ExpandError::TooLong);
    }
    out.push_str(piece);
    Ok(())
}

/// The index of the `)` that closes the `(` at index 1 of `tail`.
fn closing(tail: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in tail.bytes().enumerate().skip(1) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
