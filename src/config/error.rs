//! The configuration error: one line naming the origin, the key and the
//! cause. Everything in `config` returns it (or a smaller typed error that
//! an applier turns into one with [`AtEntry::at`]); only `main.rs` prints it.

use std::fmt;

use super::{Entry, Origin};

/// A configuration error: one line, naming the origin, the key and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
}

/// Longest message printed: values quoted from a bad file (a 2 MB line)
/// are cut so the error stays one readable line.
const MAX_MESSAGE_CHARS: usize = 300;

impl ConfigError {
    pub fn new(origin: Option<Origin>, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError { origin, key: key.map(str::to_owned), message: message.into() }
    }

    /// An error about `entry`, at its origin.
    pub fn at(entry: &Entry, message: impl Into<String>) -> Self {
        Self::new(Some(entry.origin.clone()), Some(&entry.key), message)
    }

    /// `origin: key: message`, on one line.
    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(o) = &self.origin {
            out.push_str(&format!("{o}: "));
        }
        // A document key path already ends with the key.
        let key_in_origin = matches!(&self.origin, Some(Origin::Doc { at, .. }) if !at.is_empty());
        if let (Some(k), false) = (&self.key, key_in_origin) {
            out.push_str(&one_line(k, 80));
            out.push_str(": ");
        }
        out.push_str(&one_line(&self.message, MAX_MESSAGE_CHARS));
        out
    }
}

/// `s` on one line (control characters as spaces), cut to `max` chars.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Turns a typed value error into a [`ConfigError`] at the entry it came
/// from: `split_command(&e.value).at(e)?`.
pub trait AtEntry<T> {
    fn at(self, entry: &Entry) -> Result<T, ConfigError>;
}

impl<T, E: fmt::Display> AtEntry<T> for Result<T, E> {
    fn at(self, entry: &Entry) -> Result<T, ConfigError> {
        self.map_err(|err| ConfigError::at(entry, err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_origin_and_key() {
        let e = Entry::new("processes", "x", Origin::File { path: "a.ini".into(), line: 3 });
        assert_eq!(ConfigError::at(&e, "bad\nvalue").to_string(), "a.ini:3: processes: bad value");
        let doc = Origin::Doc { path: "a.yaml".into(), at: "uwsgi.processes".into() };
        let err = ConfigError::new(Some(doc), Some("processes"), "bad");
        assert_eq!(err.to_string(), "a.yaml: uwsgi.processes: bad");
        let long = ConfigError::new(None, None, "x".repeat(400)).to_string();
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
