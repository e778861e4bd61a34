//! Parsers for option values (booleans, whole numbers, seconds, signals,
//! command lines, users and groups) and the small helpers the option
//! appliers are built from. Pure functions of the text, except the user
//! and group look-ups, which read the passwd and group databases.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{AtEntry, ConfigError, Entry};

/// uWSGI's booleans: false/off/no/0 (any case) are false, anything else
/// true; a trailing comment is not part of it (`true  # memory`).
pub fn parse_bool(value: &str) -> bool {
    !matches!(strip_comment(value).to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0")
}

/// `value` without a trailing comment: from the first `;` or `#` that
/// follows a blank (`4 ; per core`), trimmed. Widely copied uWSGI files
/// write numbers and booleans this way, which uWSGI reads with `atoi`.
/// Only numbers, seconds and booleans are read so: a path or a command
/// keeps its `;` and `#`, as uWSGI keeps them.
pub fn strip_comment(value: &str) -> &str {
    let v = value.trim();
    let cut = v.char_indices().find(|&(i, c)| (c == ';' || c == '#') && v[..i].ends_with([' ', '\t']));
    cut.map_or(v, |(i, _)| v[..i].trim_end())
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<Signal>().ok()
}

/// The entry's value as a boolean.
pub fn flag(entry: &Entry) -> bool {
    parse_bool(&entry.value)
}

/// The entry's value, trimmed.
pub fn text(entry: &Entry) -> String {
    entry.value.trim().to_owned()
}

/// The entry's value as a path (resolved later, in `finalize`).
pub fn path(entry: &Entry) -> PathBuf {
    PathBuf::from(entry.value.trim())
}

/// A whole number.
pub fn whole(entry: &Entry) -> Result<u64, ConfigError> {
    strip_comment(&entry.value)
        .parse::<u64>()
        .map_err(|_| ConfigError::at(entry, format!("expected a whole number, found {:?}", entry.value)))
}

/// A whole number in `range`; `expected` says what is, in the message
/// "expected {expected}, found N".
pub fn whole_in(entry: &Entry, range: RangeInclusive<u64>, expected: &str) -> Result<u64, ConfigError> {
    let n = whole(entry)?;
    if !range.contains(&n) {
        return Err(ConfigError::at(entry, format!("expected {expected}, found {n}")));
    }
    Ok(n)
}

/// Seconds, whole or fractional, from 0 to a year.
pub fn seconds(entry: &Entry) -> Result<Duration, ConfigError> {
    let v = strip_comment(&entry.value);
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0 * 365.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| ConfigError::at(entry, format!("expected seconds (e.g. 5 or 0.5), found {v:?}")))
}

/// Seconds, more than 0.
pub fn positive_seconds(entry: &Entry) -> Result<Duration, ConfigError> {
    let d = seconds(entry)?;
    if d.is_zero() {
        return Err(ConfigError::at(entry, "must be more than 0 seconds"));
    }
    Ok(d)
}

/// One of two or more words, each meaning a value: "expected `a` or `b`".
pub fn one_of<T: Copy>(entry: &Entry, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    let v = entry.value.trim();
    if let Some((_, t)) = choices.iter().find(|(w, _)| *w == v) {
        return Ok(*t);
    }
    let words: Vec<String> = choices.iter().map(|(w, _)| format!("`{w}`")).collect();
    let (last, rest) = words.split_last().map(|(l, r)| (l.clone(), r.join(", "))).unwrap_or_default();
    Err(ConfigError::at(entry, format!("expected {rest} or {last}, found {v:?}")))
}

/// The entry's value as a command line (see [`split_command`]).
pub fn command(entry: &Entry) -> Result<Vec<String>, ConfigError> {
    split_command(&entry.value).at(entry)
}

/// Why a command line cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unclosed single quote in {0:?}")]
    UnclosedSingleQuote(String),
    #[error("unclosed double quote in {0:?}")]
    UnclosedDoubleQuote(String),
    #[error("trailing backslash in {0:?}")]
    TrailingBackslash(String),
    #[error("empty command")]
    Empty,
}

/// Splits a command line into argv without a shell: whitespace separates
/// words; '…' quotes literally; "…" quotes with `\` escapes; `\` escapes
/// outside quotes.
pub fn split_command(s: &str) -> Result<Vec<String>, CommandError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(CommandError::UnclosedSingleQuote(s.to_owned())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or_else(|| CommandError::TrailingBackslash(s.into()))?),
                        Some(c) => cur.push(c),
                        None => return Err(CommandError::UnclosedDoubleQuote(s.to_owned())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().ok_or_else(|| CommandError::TrailingBackslash(s.into()))?);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    if out.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(out)
}

/// Why a user or group name does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no user named {0:?} (check /etc/passwd, or give a number)")]
    NoUser(String),
    #[error("looking up user {0:?}: {1}")]
    User(String, nix::Error),
    #[error("no group named {0:?} (check /etc/group, or give a number)")]
    NoGroup(String),
    #[error("looking up group {0:?}: {1}")]
    Group(String, nix::Error),
}

/// A user by name or number: (uid, primary gid).
pub fn lookup_user(v: &str) -> Result<(u32, u32), LookupError> {
    if let Ok(n) = v.parse::<u32>() {
        let primary = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)).ok().flatten().map(|u| u.gid.as_raw());
        return Ok((n, primary.unwrap_or(n)));
    }
    match nix::unistd::User::from_name(v) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(LookupError::NoUser(v.to_owned())),
        Err(e) => Err(LookupError::User(v.to_owned(), e)),
    }
}

/// A group by name or number.
pub fn lookup_group(v: &str) -> Result<u32, LookupError> {
    if let Ok(n) = v.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(v) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(LookupError::NoGroup(v.to_owned())),
        Err(e) => Err(LookupError::Group(v.to_owned(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn e(value: &str) -> Entry {
        Entry::new("k", value, Origin::Cli("k".into()))
    }

    #[test]
    fn command_splitting() {
        assert_eq!(split_command("gunicorn -w 1 'app:make()'").unwrap(), vec!["gunicorn", "-w", "1", "app:make()"]);
        assert_eq!(split_command(r#"sh -c "echo \"hi\" there""#).unwrap(), vec!["sh", "-c", r#"echo "hi" there"#]);
        assert_eq!(split_command(r"a\ b ''").unwrap(), vec!["a b", ""]);
        for bad in ["", "   ", "'open", "\"open", "trailing\\"] {
            assert!(split_command(bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_command("\"a\\").unwrap_err().to_string(), r#"trailing backslash in "\"a\\""#);
    }

    #[test]
    fn shapes() {
        assert_eq!(whole_in(&e("5"), 1..=4, "1 to 4").unwrap_err().message, "expected 1 to 4, found 5");
        assert_eq!(seconds(&e("0.5")).unwrap(), Duration::from_millis(500));
        assert_eq!(positive_seconds(&e("0")).unwrap_err().message, "must be more than 0 seconds");
        let choices = [("text", 1), ("json", 2)];
        assert_eq!(one_of(&e(" json "), &choices).unwrap(), 2);
        assert_eq!(one_of(&e("xml"), &choices).unwrap_err().message, "expected `text` or `json`, found \"xml\"");
        assert!(!flag(&e("Off")) && flag(&e("")));
    }
}
