//! The configuration error: one line naming the origin, the key and the
//! cause. Everything in `config` returns it (or a smaller typed error that
//! an applier turns into one with [`AtEntry::at`]); only `main.rs` prints it.
//! One error can carry the others found in the same pass ([`ConfigError::all`]),
//! so a file with ten problems is reported in one run, one line each.

use std::fmt;

use super::{Entry, Origin};

/// A configuration error: one line, naming the origin, the key and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
    /// The other problems found in the same pass, each rendered on its own
    /// line after this one.
    pub also: Vec<ConfigError>,
}

/// Problems reported in one run at most: a generated file with thousands of
/// bad lines still gives a readable report (the last line says how many
/// more there were).
pub const MAX_REPORTED: usize = 100;

/// Longest message printed: values quoted from a bad file (a 2 MB line)
/// are cut so the error stays one readable line.
const MAX_MESSAGE_CHARS: usize = 300;

impl ConfigError {
    pub fn new(origin: Option<Origin>, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError { origin, key: key.map(str::to_owned), message: message.into(), also: Vec::new() }
    }

    /// Ok when `errors` is empty, else one error carrying all of them (in
    /// the order found; errors that already carry others are flattened).
    pub fn all(errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        let mut flat = errors.into_iter().flat_map(ConfigError::into_each);
        let Some(mut first) = flat.next() else { return Ok(()) };
        first.also = flat.collect();
        Err(first)
    }

    /// This error and each it carries, one by one.
    pub fn into_each(mut self) -> Vec<ConfigError> {
        let also = std::mem::take(&mut self.also);
        std::iter::once(self).chain(also.into_iter().flat_map(ConfigError::into_each)).collect()
    }

    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        1 + self.also.iter().map(ConfigError::count).sum::<usize>()
    }

    /// An error about `entry`, at its origin.
    pub fn at(entry: &Entry, message: impl Into<String>) -> Self {
        Self::new(Some(entry.origin.clone()), Some(&entry.key), message)
    }

    /// `origin: key: message`, one line per problem.
    fn render(&self) -> String {
        let mut out = self.render_one();
        for e in self.also.iter().take(MAX_REPORTED - 1) {
            out.push('\n');
            out.push_str(&e.render_one());
        }
        if self.also.len() >= MAX_REPORTED {
            out.push_str(&format!("\n... and {} more problems", self.also.len() + 1 - MAX_REPORTED));
        }
        out
    }

    fn render_one(&self) -> String {
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

    #[test]
    fn every_error_on_its_own_line_in_order_and_bounded() {
        assert_eq!(ConfigError::all(vec![]), Ok(()));
        let e = |n: usize| ConfigError::new(Some(Origin::File { path: "a.ini".into(), line: n }), Some("k"), "bad");
        let nested = ConfigError::all(vec![e(2), e(3)]).unwrap_err();
        let all = ConfigError::all(vec![e(1), nested, e(4)]).unwrap_err();
        assert_eq!(all.count(), 4);
        assert_eq!(all.to_string(), "a.ini:1: k: bad\na.ini:2: k: bad\na.ini:3: k: bad\na.ini:4: k: bad");
        let many = ConfigError::all((1..=250).map(e).collect()).unwrap_err().to_string();
        assert_eq!(many.lines().count(), MAX_REPORTED + 1);
        assert!(many.ends_with("... and 150 more problems"), "{many}");
    }
}
