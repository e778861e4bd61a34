//! Configuration: read every source into one ordered list of raw entries
//! (each remembering where it came from), then resolve that list into a
//! typed [`Config`] in one place. Reading never binds, spawns or touches
//! paths beyond the files it reads; errors carry their origin so a person
//! can find the offending line. This module knows nothing of the master,
//! the workers or the probes: they read the [`Config`] it produces.
//!
//! - [`options`]: the option table; each option declared once, with its
//!   default and how it applies (split by concern).
//! - [`cli`], [`ini`], [`yaml`] (also JSON and ConfigMaps), environment
//!   variables (here): the sources, each producing [`Entry`]s.
//! - [`placeholders`]: uWSGI's `%(key)`, `$(VAR)`, `@(file)`, `%d`... expansion.
//! - `resolve`: entries (after the defaults) → [`Config`].
//! - [`values`]: parsers for values (seconds, signals, command lines...).
//! - [`metric`]: `metric =` declarations.
//! - `checks`: checks of the whole resolved configuration and `finalize`.
//! - `model`: [`Config`] and its value types; `error`: [`ConfigError`].

mod checks;
pub mod cli;
mod error;
pub mod ini;
pub mod metric;
mod model;
pub mod options;
pub mod placeholders;
mod resolve;
pub mod values;
pub mod yaml;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

pub use checks::{PY_VERSION, ScriptError, VirtualenvError, check_virtualenv};
pub use error::{AtEntry, ConfigError};
pub use metric::{MetricDecl, parse_metric};
pub use model::{
    AccessLog, AppSource, Config, Creds, ExpiresOn, ExpiresRule, LogFormat, MemoryMark, Mount, MountedApp, ReadyMode,
    ReadyWorkers, SocketEntry, SocketProtocol, WsgiApp,
};
use options::OptDef;
pub use values::{parse_bool, parse_signal, split_command};

/// Where a value came from; printed in front of every configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    Env(String),
    File {
        path: PathBuf,
        line: usize,
    },
    /// A position in a YAML/JSON document, as a key path (`data.processes`).
    Doc {
        path: PathBuf,
        at: String,
    },
    Cli(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Doc { path, at } if at.is_empty() => write!(f, "{}", path.display()),
            Origin::Doc { path, at } => write!(f, "{}: {at}", path.display()),
            Origin::Cli(flag) => write!(f, "--{flag}"),
        }
    }
}

/// One `key = value` as read, before any type is checked.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
    /// Referenced by a `%(key)` placeholder: a variable, not necessarily an option.
    pub variable: bool,
    /// Defined by `set-placeholder` (`set-ph`): a placeholder only, never
    /// an option, even when its name is one.
    pub placeholder: bool,
}

impl Entry {
    pub fn new(key: impl Into<String>, value: impl Into<String>, origin: Origin) -> Entry {
        Entry { key: key.into(), value: value.into(), origin, variable: false, placeholder: false }
    }

    /// A `set-placeholder` definition: `%(name)` expands to `value`.
    pub fn placeholder(name: impl Into<String>, value: impl Into<String>, origin: Origin) -> Entry {
        Entry { variable: true, placeholder: true, ..Entry::new(name, value, origin) }
    }
}

/// A config file or directory named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Ini(String),
    Yaml(String),
    Json(String),
    Dir(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ini(s) => write!(f, "ini {s}"),
            Source::Yaml(s) => write!(f, "yaml {s}"),
            Source::Json(s) => write!(f, "json {s}"),
            Source::Dir(p) => write!(f, "config-dir {}", p.display()),
        }
    }
}

impl Source {
    /// A bare config argument, by its extension (as uWSGI does).
    pub fn by_extension(arg: &str) -> Result<Source, ConfigError> {
        let (path, _) = ini::split_spec(arg);
        let ext = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "ini" => Ok(Source::Ini(arg.to_owned())),
            "yaml" | "yml" => Ok(Source::Yaml(arg.to_owned())),
            "json" | "js" => Ok(Source::Json(arg.to_owned())),
            _ => Err(ConfigError::new(
                None,
                None,
                format!(
                    "{arg}: cannot tell the config format from the name; use --ini, --yaml, --json or --config-dir"
                ),
            )),
        }
    }

    /// The file or directory to watch for changes.
    pub fn path(&self) -> PathBuf {
        match self {
            Source::Ini(s) | Source::Yaml(s) | Source::Json(s) => PathBuf::from(ini::split_spec(s).0),
            Source::Dir(p) => p.clone(),
        }
    }
}

/// Sources in precedence order (lowest first), as given on the command line.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub files: Vec<Source>,
    pub cli: Vec<Entry>,
}

/// Reads every source, lowest precedence first: `UWSGI_*`/`PODMASTER_*`
/// environment variables, config files in order, command-line options.
pub fn load(sources: &Sources, env: impl Iterator<Item = (String, String)>) -> Result<Vec<Entry>, ConfigError> {
    let (entries, errors) = load_all(sources, env);
    ConfigError::all(errors).map(|()| entries)
}

/// [`load`] that goes on past a source it cannot read: the entries of
/// every source (what a failing one gave before its error, too) and the
/// errors, in order.
pub fn load_all(sources: &Sources, env: impl Iterator<Item = (String, String)>) -> (Vec<Entry>, Vec<ConfigError>) {
    let mut entries = env_entries(env);
    let mut errors = Vec::new();
    // `--set-ph NAME=VALUE` on the command line defines %(NAME) for the
    // files too, as uWSGI reads its command line first.
    for e in sources.cli.iter().filter(|e| matches!(e.key.as_str(), "set-placeholder" | "set-ph")) {
        // A malformed one is reported by resolution, with the others.
        if let Ok((name, value)) = options::workers::placeholder(e) {
            entries.push(Entry::placeholder(name, value, e.origin.clone()));
        }
    }
    for src in &sources.files {
        let loaded = match src {
            Source::Ini(spec) => ini::load_spec(spec, &mut entries),
            Source::Yaml(spec) => yaml::load_yaml_spec(spec, &mut entries),
            Source::Json(spec) => yaml::load_json_spec(spec, &mut entries),
            Source::Dir(dir) => yaml::load_dir(dir, &mut entries),
        };
        errors.extend(loaded.err());
    }
    entries.extend(sources.cli.iter().cloned());
    (entries, errors)
}

/// `UWSGI_PROCESSES=4` and `PODMASTER_PROCESSES=4` both mean `processes = 4`.
/// Only names of known options are taken, so unrelated variables that share
/// the prefix (`UWSGI_VERSION`, podmaster's own worker hand-off) are ignored.
fn env_entries(env: impl Iterator<Item = (String, String)>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (var, value) in env {
        if let Some(def) = env_option(&var) {
            // The name as written (`UWSGI_HTTP_SOCKET` is `http-socket`, an
            // alias that says which protocol the socket speaks).
            let written = var.split_once('_').map(|(_, r)| r.to_ascii_lowercase().replace('_', "-"));
            let name = written.filter(|w| def.name == w || def.aliases.contains(&w.as_str()));
            out.push(Entry::new(name.unwrap_or_else(|| def.name.to_owned()), value, Origin::Env(var)));
        }
    }
    out.sort_by_key(|e| e.origin.to_string());
    out
}

/// The option an environment variable sets, if it is one.
pub(crate) fn env_option(var: &str) -> Option<&'static OptDef> {
    let rest = var.strip_prefix("UWSGI_").or_else(|| var.strip_prefix("PODMASTER_"))?;
    options::lookup(&rest.to_ascii_lowercase().replace('_', "-"))
}

/// The process environment as text, for [`load`] and socket activation
/// (`std::env::vars` would panic on the first value that is not UTF-8).
/// A variable podmaster reads (an option's `UWSGI_*`/`PODMASTER_*` name,
/// or one of `also`) that is not UTF-8 is an error naming it; any other
/// variable that is not UTF-8 is left out: podmaster never reads it, and
/// workers still inherit it unchanged.
pub fn env_text(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    also: &[&str],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (var, value) in vars {
        let Ok(var) = var.into_string() else { continue };
        match value.into_string() {
            Ok(value) => out.push((var, value)),
            Err(_) if env_option(&var).is_some() || also.contains(&var.as_str()) => {
                return Err(ConfigError::new(Some(Origin::Env(var)), None, "value is not valid UTF-8"));
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// A hash of what the sources said (keys and values, in order): the
/// master compares it with a fresh [`load`] to see whether a config file
/// changed. Computed from the entries already loaded at startup, so no
/// file is read twice.
pub fn entries_hash(entries: &[Entry]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in entries {
        (&e.key, &e.value).hash(&mut h);
    }
    h.finish()
}

/// The effective configuration as text, one `option = value  # origin`
/// per line: scalars show the winning value, repeatable options all of
/// theirs, in order; then the defaults of the options no source set
/// (`# default`). Variables used only as placeholders are left out.
pub fn effective(entries: &[Entry]) -> String {
    let defaults = options::defaults(entries);
    let entries: Vec<&Entry> = entries.iter().filter(|e| !e.placeholder).chain(&defaults).collect();
    let mut out = String::new();
    let mut names: Vec<&str> = Vec::new();
    for e in &entries {
        let name = options::lookup(&e.key).map(|d| d.name).unwrap_or(&e.key);
        if !names.contains(&name) && (options::lookup(name).is_some() || options::uwsgi::ignored(name).is_some()) {
            names.push(name);
        }
    }
    for name in names {
        let mine: Vec<&Entry> = entries
            .iter()
            .copied()
            .filter(|e| options::lookup(&e.key).map(|d| d.name).unwrap_or(&e.key) == name)
            .collect();
        let repeatable = options::lookup(name).is_some_and(|d| d.repeatable);
        let shown: Vec<&Entry> = if repeatable { mine } else { mine.last().into_iter().copied().collect() };
        for e in shown {
            out.push_str(&format!("{name} = {}  # {}\n", e.value, e.origin));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_prefixes_map_to_options() {
        let env = vec![
            ("UWSGI_PROCESSES".to_string(), "3".to_string()),
            ("UWSGI_VERSION".to_string(), "2.0".to_string()),
            ("PODMASTER_DRAIN_DELAY".to_string(), "2".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let got = env_entries(env.into_iter());
        let keys: Vec<_> = got.iter().map(|e| (e.key.as_str(), e.origin.to_string())).collect();
        assert_eq!(
            keys,
            vec![("drain-delay", "env PODMASTER_DRAIN_DELAY".into()), ("processes", "env UWSGI_PROCESSES".into())]
        );
    }

    /// `std::env::vars` panicked on the first value that was not UTF-8,
    /// whatever the variable (found by tests/env_attacks.rs).
    #[test]
    fn env_text_refuses_only_what_podmaster_reads() {
        use std::os::unix::ffi::OsStrExt;
        let bad = || std::ffi::OsStr::from_bytes(b"\xff\xfe").to_owned();
        let os = |k: &str| std::ffi::OsString::from(k);
        let vars = vec![(os("HOME"), bad()), (os("PATH"), os("/bin")), (os("UWSGI_VERSION"), bad())];
        assert_eq!(env_text(vars.into_iter(), &["LISTEN_PID"]).unwrap(), vec![("PATH".into(), "/bin".into())]);
        for var in ["UWSGI_PROCESSES", "PODMASTER_HOME", "LISTEN_PID"] {
            let err = env_text(std::iter::once((os(var), bad())), &["LISTEN_PID"]).unwrap_err();
            assert_eq!(err.to_string(), format!("env {var}: value is not valid UTF-8"));
        }
    }

    /// `--check-config` shows what the sources set, unchanged and first,
    /// then every default that applied, with origin `default`.
    #[test]
    fn effective_shows_set_values_then_defaults() {
        let cli = |k: &str, v: &str| Entry::new(k, v, Origin::Cli(k.into()));
        let text = effective(&[cli("processes", "3"), cli("socket", ":1"), cli("socket", ":2"), cli("vacuum", "1")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "processes = 3  # --processes",
                "socket = :1  # --socket",
                "socket = :2  # --socket",
                "vacuum = 1  # --vacuum"
            ]
        );
        assert!(lines.contains(&"worker-reload-mercy = 25  # default"), "{text}");
        assert!(!lines[4..].iter().any(|l| l.starts_with("processes ")), "{text}");
        assert_eq!(lines.len(), 4 + options::defaults(&[cli("processes", "3")]).len());
    }

    #[test]
    fn hash_follows_keys_and_values() {
        let a = [Entry::new("processes", "2", Origin::Default)];
        let b = [Entry::new("processes", "2", Origin::Cli("processes".into()))];
        let c = [Entry::new("processes", "3", Origin::Default)];
        assert_eq!(entries_hash(&a), entries_hash(&b));
        assert_ne!(entries_hash(&a), entries_hash(&c));
    }
}
