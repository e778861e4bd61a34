//! Configuration: read every source into one ordered list of raw entries
//! (each remembering where it came from), then resolve that list into a
//! typed [`Config`] in one place. Reading never binds, spawns or touches
//! paths beyond the files it reads; errors carry their origin so a person
//! can find the offending line.

pub mod cli;
pub mod ini;
pub mod options;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sockets::SocketSpec;
use options::{Kind, OptDef};

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
}

impl Entry {
    pub fn new(key: impl Into<String>, value: impl Into<String>, origin: Origin) -> Entry {
        Entry { key: key.into(), value: value.into(), origin, variable: false }
    }
}

/// A configuration error: one line, naming the origin, the key and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Option<Origin>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(origin: Option<Origin>, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError { origin, key: key.map(str::to_owned), message: message.into() }
    }

    fn at(entry: &Entry, message: impl Into<String>) -> Self {
        Self::new(Some(entry.origin.clone()), Some(&entry.key), message)
    }
}

/// Longest message printed: values quoted from a bad file (a 2 MB line)
/// are cut so the error stays one readable line.
const MAX_MESSAGE_CHARS: usize = 300;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        // A document key path already ends with the key.
        let key_in_origin = matches!(&self.origin, Some(Origin::Doc { at, .. }) if !at.is_empty());
        if let (Some(k), false) = (&self.key, key_in_origin) {
            write!(f, "{}: ", one_line(k, 80))?;
        }
        f.write_str(&one_line(&self.message, MAX_MESSAGE_CHARS))
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

impl std::error::Error for ConfigError {}

/// How many accepting workers make the instance ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyWorkers {
    Count(u32),
    Percent(u32),
}

impl ReadyWorkers {
    /// The number of accepting workers needed out of `processes`
    /// (a percentage rounds up, and is at least 1).
    pub fn target(self, processes: u32) -> u32 {
        match self {
            ReadyWorkers::Count(n) => n.min(processes),
            ReadyWorkers::Percent(p) => (u64::from(processes) * u64::from(p)).div_ceil(100).max(1) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The user and group workers run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// `u32::MAX` when only `gid` was given (workers keep the master's uid).
    pub uid: u32,
    pub gid: u32,
    explicit_gid: bool,
}

/// A user by name or number: (uid, primary gid).
fn lookup_user(v: &str) -> Result<(u32, u32), String> {
    if let Ok(n) = v.parse::<u32>() {
        let primary = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)).ok().flatten().map(|u| u.gid.as_raw());
        return Ok((n, primary.unwrap_or(n)));
    }
    match nix::unistd::User::from_name(v) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        Ok(None) => Err(format!("no user named {v:?} (check /etc/passwd, or give a number)")),
        Err(e) => Err(format!("looking up user {v:?}: {e}")),
    }
}

/// A group by name or number.
fn lookup_group(v: &str) -> Result<i64, String> {
    if let Ok(n) = v.parse::<u32>() {
        return Ok(i64::from(n));
    }
    match nix::unistd::Group::from_name(v) {
        Ok(Some(g)) => Ok(i64::from(g.gid.as_raw())),
        Ok(None) => Err(format!("no group named {v:?} (check /etc/group, or give a number)")),
        Err(e) => Err(format!("looking up group {v:?}: {e}")),
    }
}

/// When a worker counts as accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// After it sends `READY=1` (what `uwsgi.accepting()` does).
    Notify,
    /// As soon as it is running (programs that cannot notify).
    Spawn,
}

/// Splits a command line into argv without a shell: whitespace separates
/// words; '…' quotes literally; "…" quotes with `\` escapes; `\` escapes
/// outside quotes.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
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
                        None => return Err(format!("unclosed single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(format!("trailing backslash in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed double quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(format!("trailing backslash in {s:?}")),
                }
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
        return Err("empty command".into());
    }
    Ok(out)
}

/// A socket spec together with the origin of the line that declared it.
#[derive(Debug, Clone)]
pub struct SocketEntry {
    /// The spec as written: the socket's name in LISTEN_FDNAMES and /status.
    pub name: String,
    pub spec: SocketSpec,
    pub origin: Origin,
}

/// The effective, typed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sockets: Vec<SocketEntry>,
    pub processes: u32,
    pub script: Option<PathBuf>,
    pub probe_socket: Option<String>,
    pub ready_workers: ReadyWorkers,
    pub drain_delay: Duration,
    pub worker_reload_mercy: Duration,
    pub worker_stop_signal: Option<Signal>,
    pub listen: i32,
    pub chdir: Option<PathBuf>,
    pub virtualenv: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub chain_reload_timeout: Duration,
    /// Files whose modification triggers a chain reload.
    pub touch_reload: Vec<PathBuf>,
    pub respawn_backoff_max: Duration,
    pub max_failed_starts: u32,
    pub max_worker_lifetime: Option<Duration>,
    pub max_worker_lifetime_delta: Duration,
    /// Bytes.
    pub reload_on_rss: Option<u64>,
    /// `worker-exec`: argv of a command worker (instead of a Python script).
    pub command: Option<Vec<String>>,
    pub ready_mode: ReadyMode,
    pub attach_daemons: Vec<Vec<String>>,
    pub reload_on_config_change: bool,
    pub config_check_interval: Duration,
    pub liveness_timeout: Duration,
    pub exit_grace: Duration,
    pub forward_to_group: bool,
    pub reuse_port: bool,
    pub chmod_socket: Option<u32>,
    /// (uid, gid) for UNIX socket files; -1 keeps the current one.
    pub chown_socket: Option<(i64, i64)>,
    /// Credentials the workers run as.
    pub creds: Option<Creds>,
    /// App metrics declared with `metric =`.
    pub metrics: Vec<crate::scoreboard::MetricDecl>,
    /// Extra `sys.argv` entries for the worker script.
    pub pyargv: Vec<String>,
    /// Every option as set (canonical name, value), for `uwsgi.opt`.
    pub opt: Vec<(String, String)>,
    /// uWSGI options accepted and ignored, with where they were set.
    pub ignored: Vec<(String, Origin)>,
    /// Where each option (canonical name) was last set: the origin of the
    /// errors found after resolution (`check_workers`, `finalize`).
    pub set_at: Vec<(&'static str, Origin)>,
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
    let mut entries = env_entries(env);
    for src in &sources.files {
        match src {
            Source::Ini(spec) => ini::load_spec(spec, &mut entries)?,
            Source::Yaml(spec) => yaml::load_yaml_spec(spec, &mut entries)?,
            Source::Json(spec) => yaml::load_json_spec(spec, &mut entries)?,
            Source::Dir(dir) => yaml::load_dir(dir, &mut entries)?,
        }
    }
    entries.extend(sources.cli.iter().cloned());
    Ok(entries)
}

/// `UWSGI_PROCESSES=4` and `PODMASTER_PROCESSES=4` both mean `processes = 4`.
/// Only names of known options are taken, so unrelated variables that share
/// the prefix (`UWSGI_VERSION`, podmaster's own worker hand-off) are ignored.
fn env_entries(env: impl Iterator<Item = (String, String)>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (var, value) in env {
        if let Some(def) = env_option(&var) {
            out.push(Entry::new(def.name, value, Origin::Env(var)));
        }
    }
    out.sort_by_key(|e| e.origin.to_string());
    out
}

/// The option an environment variable sets, if it is one.
fn env_option(var: &str) -> Option<&'static OptDef> {
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

pub fn parse_bool(value: &str) -> bool {
    !matches!(value.trim().to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0")
}

fn parse_uint(entry: &Entry) -> Result<u64, ConfigError> {
    entry
        .value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::at(entry, format!("expected a whole number, found {:?}", entry.value)))
}

fn parse_seconds(entry: &Entry) -> Result<Duration, ConfigError> {
    let v = entry.value.trim();
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0 * 365.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| ConfigError::at(entry, format!("expected seconds (e.g. 5 or 0.5), found {v:?}")))
}

fn positive_seconds(entry: &Entry) -> Result<Duration, ConfigError> {
    let d = parse_seconds(entry)?;
    if d.is_zero() {
        return Err(ConfigError::at(entry, "must be more than 0 seconds"));
    }
    Ok(d)
}

pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<Signal>().ok()
}

impl Config {
    /// Type-checks the raw entries and applies defaults. The last value of a
    /// scalar wins; repeatable options keep every value in order.
    pub fn resolve(entries: &[Entry]) -> Result<Config, ConfigError> {
        let mut cfg = Config {
            sockets: Vec::new(),
            processes: 1,
            script: None,
            probe_socket: None,
            ready_workers: ReadyWorkers::Percent(100),
            drain_delay: Duration::ZERO,
            worker_reload_mercy: Duration::from_secs(25),
            worker_stop_signal: None,
            listen: 1024,
            chdir: None,
            virtualenv: None,
            pythonpath: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            chain_reload_timeout: Duration::from_secs(60),
            touch_reload: Vec::new(),
            respawn_backoff_max: Duration::from_secs(30),
            max_failed_starts: 10,
            max_worker_lifetime: None,
            max_worker_lifetime_delta: Duration::ZERO,
            reload_on_rss: None,
            command: None,
            ready_mode: ReadyMode::Notify,
            attach_daemons: Vec::new(),
            reload_on_config_change: true,
            config_check_interval: Duration::from_secs(5),
            liveness_timeout: Duration::from_millis(500),
            exit_grace: Duration::ZERO,
            forward_to_group: false,
            reuse_port: false,
            chmod_socket: None,
            chown_socket: None,
            creds: None,
            metrics: Vec::new(),
            pyargv: Vec::new(),
            opt: Vec::new(),
            ignored: Vec::new(),
            set_at: Vec::new(),
        };
        for e in entries {
            let Some(def) = options::lookup(&e.key) else {
                if options::HARMLESS.contains(&e.key.as_str()) {
                    cfg.ignored.push((e.key.clone(), e.origin.clone()));
                    cfg.opt.push((e.key.clone(), e.value.clone()));
                    continue;
                }
                if options::UNSUPPORTED.contains(&e.key.as_str()) {
                    return Err(ConfigError::at(
                        e,
                        "this uWSGI option is not supported by podmaster (it would change what runs); \
                         use python-worker-override with your own server instead",
                    ));
                }
                if e.variable {
                    // Used only as a %(placeholder) variable, as uWSGI allows.
                    continue;
                }
                let hint = options::suggest(&e.key).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                return Err(ConfigError::at(e, format!("unknown option{hint}")));
            };
            cfg.apply(def, e)?;
            cfg.opt.push((def.name.to_owned(), e.value.clone()));
            cfg.set_at.retain(|(k, _)| *k != def.name);
            cfg.set_at.push((def.name, e.origin.clone()));
        }
        Ok(cfg)
    }

    fn apply(&mut self, def: &OptDef, e: &Entry) -> Result<(), ConfigError> {
        if def.kind == Kind::Bool {
            let on = parse_bool(&e.value);
            match def.name {
                "reload-on-config-change" => self.reload_on_config_change = on,
                "forward-to-group" => self.forward_to_group = on,
                "reuse-port" => self.reuse_port = on,
                _ => {}
            }
            // `master` is always on.
            return Ok(());
        }
        match def.name {
            "socket" => {
                let spec = SocketSpec::parse(e.value.trim()).map_err(|m| ConfigError::at(e, m))?;
                self.sockets.push(SocketEntry { name: e.value.trim().to_owned(), spec, origin: e.origin.clone() });
            }
            "processes" => {
                let n = parse_uint(e)?;
                if n == 0 || n > 1024 {
                    return Err(ConfigError::at(e, format!("expected 1 to 1024 workers, found {n}")));
                }
                self.processes = n as u32;
            }
            "python-worker-override" => self.script = Some(PathBuf::from(e.value.trim())),
            "probe-socket" => self.probe_socket = Some(e.value.trim().to_owned()),
            "ready-workers" => {
                let v = e.value.trim();
                self.ready_workers = if let Some(p) = v.strip_suffix('%') {
                    match p.trim().parse::<u32>() {
                        Ok(p) if (1..=100).contains(&p) => ReadyWorkers::Percent(p),
                        _ => {
                            return Err(ConfigError::at(e, format!("expected a percentage 1%..100%, found {v:?}")));
                        }
                    }
                } else {
                    match v.parse::<u32>() {
                        Ok(n) if n >= 1 => ReadyWorkers::Count(n),
                        _ => {
                            return Err(ConfigError::at(
                                e,
                                format!("expected a number of workers (>= 1) or a percentage, found {v:?}"),
                            ));
                        }
                    }
                };
            }
            "drain-delay" => self.drain_delay = parse_seconds(e)?,
            "worker-reload-mercy" => self.worker_reload_mercy = parse_seconds(e)?,
            "worker-stop-signal" => {
                let sig = parse_signal(&e.value)
                    .ok_or_else(|| ConfigError::at(e, format!("unknown signal {:?}", e.value.trim())))?;
                if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
                    return Err(ConfigError::at(e, "SIGKILL/SIGSTOP cannot be a graceful stop signal"));
                }
                self.worker_stop_signal = Some(sig);
            }
            "listen" => {
                let n = parse_uint(e)?;
                if n == 0 || n > i32::MAX as u64 {
                    return Err(ConfigError::at(e, format!("expected a backlog of at least 1, found {n}")));
                }
                self.listen = n as i32;
            }
            "chdir" => self.chdir = Some(PathBuf::from(e.value.trim())),
            "virtualenv" => self.virtualenv = Some(PathBuf::from(e.value.trim())),
            "pythonpath" => self.pythonpath.push(PathBuf::from(e.value.trim())),
            "log-format" => {
                self.log_format = match e.value.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(ConfigError::at(e, format!("expected `text` or `json`, found {other:?}")));
                    }
                }
            }
            "log-level" => {
                let v = e.value.trim().to_ascii_lowercase();
                if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                    return Err(ConfigError::at(e, format!("expected error, warn, info, debug or trace, found {v:?}")));
                }
                self.log_level = v;
            }
            "chain-reload-timeout" => self.chain_reload_timeout = positive_seconds(e)?,
            "touch-reload" | "touch-chain-reload" => self.touch_reload.push(PathBuf::from(e.value.trim())),
            "respawn-backoff-max" => self.respawn_backoff_max = positive_seconds(e)?,
            "max-failed-starts" => {
                let n = parse_uint(e)?;
                if n == 0 || n > u64::from(u32::MAX) {
                    return Err(ConfigError::at(e, format!("expected at least 1, found {n}")));
                }
                self.max_failed_starts = n as u32;
            }
            "max-worker-lifetime" => self.max_worker_lifetime = Some(positive_seconds(e)?),
            "max-worker-lifetime-delta" => self.max_worker_lifetime_delta = parse_seconds(e)?,
            "reload-on-rss" => {
                let mb = parse_uint(e)?;
                if mb == 0 || mb > 1 << 30 {
                    return Err(ConfigError::at(e, format!("expected megabytes >= 1, found {mb}")));
                }
                self.reload_on_rss = Some(mb * 1024 * 1024);
            }
            "worker-exec" => self.command = Some(split_command(&e.value).map_err(|m| ConfigError::at(e, m))?),
            "worker-ready-mode" => {
                self.ready_mode = match e.value.trim() {
                    "notify" => ReadyMode::Notify,
                    "spawn" => ReadyMode::Spawn,
                    other => return Err(ConfigError::at(e, format!("expected `notify` or `spawn`, found {other:?}"))),
                }
            }
            "attach-daemon" => self.attach_daemons.push(split_command(&e.value).map_err(|m| ConfigError::at(e, m))?),
            "config-check-interval" => self.config_check_interval = positive_seconds(e)?,
            "liveness-timeout" => self.liveness_timeout = positive_seconds(e)?,
            "exit-grace" => self.exit_grace = parse_seconds(e)?,
            "metric" => {
                let d = crate::scoreboard::parse_metric(&e.value).map_err(|m| ConfigError::at(e, m))?;
                if self.metrics.iter().any(|m| m.name == d.name) {
                    return Err(ConfigError::at(e, format!("metric {:?} declared twice", d.name)));
                }
                if self.metrics.len() >= crate::scoreboard::MAX_METRICS {
                    return Err(ConfigError::at(e, format!("at most {} metrics", crate::scoreboard::MAX_METRICS)));
                }
                self.metrics.push(d);
            }
            "pyargv" => self.pyargv = split_command(&e.value).map_err(|m| ConfigError::at(e, m))?,
            "chmod-socket" => {
                let v = e.value.trim();
                // uWSGI: a bare `chmod-socket` means 666.
                let v = if v == "true" { "666" } else { v };
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| ConfigError::at(e, format!("expected an octal mode like 660, found {v:?}")))?;
                self.chmod_socket = Some(mode);
            }
            "chown-socket" => {
                let v = e.value.trim();
                let (u, g) = v.split_once(':').map_or((v, None), |(u, g)| (u, Some(g)));
                let uid = lookup_user(u).map_err(|m| ConfigError::at(e, m))?.0;
                let gid = match g {
                    Some(g) => lookup_group(g).map_err(|m| ConfigError::at(e, m))?,
                    None => -1,
                };
                self.chown_socket = Some((i64::from(uid), gid));
            }
            "uid" => {
                let (uid, primary) = lookup_user(e.value.trim()).map_err(|m| ConfigError::at(e, m))?;
                let c = self.creds.get_or_insert(Creds { uid, gid: primary, explicit_gid: false });
                c.uid = uid;
                if !c.explicit_gid {
                    c.gid = primary;
                }
            }
            "gid" => {
                let gid = lookup_group(e.value.trim()).map_err(|m| ConfigError::at(e, m))? as u32;
                let c = self.creds.get_or_insert(Creds { uid: u32::MAX, gid, explicit_gid: true });
                c.gid = gid;
                c.explicit_gid = true;
            }
            other => {
                return Err(ConfigError::at(e, format!("internal error: option {other} is declared but not wired")));
            }
        }
        Ok(())
    }

    /// Where option `key` was last set, if it was.
    fn origin_of(&self, key: &str) -> Option<Origin> {
        self.set_at.iter().find(|(k, _)| *k == key).map(|(_, o)| o.clone())
    }

    /// An error about option `key`, at the origin of its value.
    fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), Some(key), message)
    }

    /// Init mode runs one command: workers and sockets make no sense there.
    pub fn check_init_mode(&self) -> Result<(), ConfigError> {
        let set = if self.script.is_some() {
            Some("python-worker-override")
        } else if self.command.is_some() {
            Some("worker-exec")
        } else if !self.sockets.is_empty() {
            Some("socket")
        } else {
            None
        };
        match set {
            Some(k) => Err(self.error_at(
                k,
                "init mode (-- COMMAND) runs a single command; drop the -- COMMAND to run workers, or this option",
            )),
            None => Ok(()),
        }
    }

    /// Checks that need the whole configuration of a master with workers.
    /// `activated`: sockets were passed by socket activation (they serve
    /// as the socket list when none is configured).
    pub fn check_workers(&self, activated: bool) -> Result<(), ConfigError> {
        match (&self.script, &self.command) {
            (None, None) => {
                return Err(ConfigError::new(
                    None,
                    Some("python-worker-override"),
                    "no worker configured: set python-worker-override = SCRIPT or worker-exec = COMMAND (see README)",
                ));
            }
            (Some(_), Some(_)) => {
                let other = self.origin_of("python-worker-override").map(|o| format!(" ({o})")).unwrap_or_default();
                return Err(self.error_at(
                    "worker-exec",
                    format!(
                        "python-worker-override{other} and worker-exec are both set; a worker runs one or the other"
                    ),
                ));
            }
            _ => {}
        }
        if self.sockets.is_empty() && !activated {
            return Err(ConfigError::new(None, Some("socket"), "no socket configured: add socket = HOST:PORT"));
        }
        Ok(())
    }

    /// Resolves relative paths against `chdir` when set (uWSGI changes
    /// directory before loading the app), else `cwd`, and checks that
    /// `chdir` is a directory, the worker script a readable file and the
    /// virtualenv usable.
    pub fn finalize(&mut self, cwd: &Path) -> Result<(), ConfigError> {
        let base = self.chdir.as_ref().map(|c| cwd.join(c)).unwrap_or_else(|| cwd.to_path_buf());
        if self.chdir.is_some() {
            // Checked here as uWSGI checks it at startup: otherwise every
            // worker fails its chdir and the instance never becomes ready.
            match std::fs::metadata(&base) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(self.error_at("chdir", format!("{}: not a directory", base.display()))),
                Err(e) => return Err(self.error_at("chdir", format!("{}: {e}", base.display()))),
            }
        }
        if let Some(v) = &self.virtualenv {
            let abs = base.join(v);
            crate::worker::python::check_virtualenv(&abs).map_err(|m| self.error_at("virtualenv", m))?;
            self.virtualenv = Some(abs);
        }

        if let Some(s) = &self.script {
            let abs = base.join(s);
            Self::check_script(&abs).map_err(|m| self.error_at("python-worker-override", m))?;
            self.script = Some(abs);
        }
        for t in &mut self.touch_reload {
            *t = base.join(&*t);
        }
        Ok(())
    }

    /// The worker script, checked to be a readable regular file.
    pub fn check_script(path: &Path) -> Result<(), String> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => std::fs::File::open(path)
                .map(drop)
                .map_err(|e| format!("cannot read worker script {}: {e}", path.display())),
            Ok(_) => Err(format!("worker script {} is not a regular file", path.display())),
            Err(e) => Err(format!("worker script {}: {e}", path.display())),
        }
    }

    /// The signal that asks a worker to stop gracefully: SIGHUP for Python
    /// override workers (as under uWSGI), SIGTERM for command workers.
    pub fn stop_signal(&self) -> Signal {
        self.worker_stop_signal.unwrap_or(if self.command.is_some() { Signal::SIGTERM } else { Signal::SIGHUP })
    }

    pub fn bind_options(&self) -> crate::sockets::BindOptions {
        crate::sockets::BindOptions {
            backlog: self.listen,
            reuse_port: self.reuse_port,
            chmod: self.chmod_socket,
            chown: self.chown_socket,
        }
    }

    /// Number of accepting workers that makes the instance ready.
    pub fn ready_target(&self) -> u32 {
        self.ready_workers.target(self.processes)
    }
}

/// The effective configuration as text, one `option = value  # origin`
/// per line: scalars show the winning value, repeatable options all of
/// theirs, in order. Variables used only as placeholders are left out.
pub fn effective(entries: &[Entry]) -> String {
    let mut out = String::new();
    let mut names: Vec<&str> = Vec::new();
    for e in entries {
        let name = options::lookup(&e.key).map(|d| d.name).unwrap_or(&e.key);
        if !names.contains(&name) && (options::lookup(name).is_some() || options::HARMLESS.contains(&name)) {
            names.push(name);
        }
    }
    for name in names {
        let mine: Vec<&Entry> =
            entries.iter().filter(|e| options::lookup(&e.key).map(|d| d.name).unwrap_or(&e.key) == name).collect();
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

    fn e(key: &str, value: &str) -> Entry {
        Entry::new(key, value, Origin::Cli(key.into()))
    }

    fn base() -> Vec<Entry> {
        vec![e("socket", "127.0.0.1:0"), e("python-worker-override", "w.py")]
    }

    #[test]
    fn last_scalar_wins_and_lists_accumulate() {
        let mut v = base();
        v.extend([e("processes", "2"), e("processes", "4"), e("socket", ":9000")]);
        let c = Config::resolve(&v).unwrap();
        c.check_workers(false).unwrap();
        assert_eq!(c.processes, 4);
        assert_eq!(c.sockets.len(), 2);
    }

    #[test]
    fn bad_number_names_origin_and_key() {
        let mut v = base();
        v.push(Entry::new("processes", "abc", Origin::File { path: "app.ini".into(), line: 7 }));
        let err = Config::resolve(&v).unwrap_err().to_string();
        assert_eq!(err, r#"app.ini:7: processes: expected a whole number, found "abc""#);
    }

    #[test]
    fn unknown_option_suggests() {
        let mut v = base();
        v.push(e("procesess", "4"));
        let err = Config::resolve(&v).unwrap_err().to_string();
        assert_eq!(err, "--procesess: procesess: unknown option; did you mean `processes`?");
    }

    #[test]
    fn harmless_and_unsupported() {
        let mut v = base();
        v.push(e("vacuum", "true"));
        assert_eq!(Config::resolve(&v).unwrap().ignored.len(), 1);
        v.push(e("module", "app:application"));
        assert!(Config::resolve(&v).unwrap_err().to_string().contains("not supported"));
    }

    #[test]
    fn ready_workers_forms() {
        assert_eq!(ReadyWorkers::Percent(100).target(4), 4);
        assert_eq!(ReadyWorkers::Percent(50).target(3), 2);
        assert_eq!(ReadyWorkers::Percent(1).target(4), 1);
        assert_eq!(ReadyWorkers::Count(9).target(4), 4);
        let mut v = base();
        v.push(e("ready-workers", "0%"));
        assert!(Config::resolve(&v).is_err());
    }

    #[test]
    fn seconds_and_signals() {
        let mut v = base();
        v.extend([e("drain-delay", "0.5"), e("worker-stop-signal", "term")]);
        let c = Config::resolve(&v).unwrap();
        assert_eq!(c.drain_delay, Duration::from_millis(500));
        assert_eq!(c.worker_stop_signal, Some(Signal::SIGTERM));
        for bad in ["-1", "abc", "inf", "NaN"] {
            let mut v = base();
            v.push(e("drain-delay", bad));
            assert!(Config::resolve(&v).is_err(), "{bad}");
        }
        let mut v = base();
        v.push(e("worker-stop-signal", "KILL"));
        assert!(Config::resolve(&v).is_err());
    }

    #[test]
    fn command_splitting() {
        assert_eq!(split_command("gunicorn -w 1 'app:make()'").unwrap(), vec!["gunicorn", "-w", "1", "app:make()"]);
        assert_eq!(split_command(r#"sh -c "echo \"hi\" there""#).unwrap(), vec!["sh", "-c", r#"echo "hi" there"#]);
        assert_eq!(split_command(r"a\ b ''").unwrap(), vec!["a b", ""]);
        for bad in ["", "   ", "'open", "\"open", "trailing\\"] {
            assert!(split_command(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_declared_option_is_wired() {
        let sample = |o: &options::OptDef| match o.kind {
            Kind::Bool => "true",
            Kind::Uint => "2",
            Kind::Seconds => "1",
            Kind::Text => match o.name {
                "socket" => ":0",
                "ready-workers" => "50%",
                "worker-stop-signal" => "TERM",
                "log-format" => "json",
                "log-level" => "debug",
                "worker-ready-mode" => "spawn",
                "chmod-socket" => "660",
                "chown-socket" | "uid" => "0",
                "metric" => "name=m",

                "gid" => "0",
                _ => "x",
            },
        };
        for o in options::OPTIONS {
            let mut v = vec![e("socket", ":0")];
            v.push(if o.name == "worker-exec" {
                e("worker-exec", "true")
            } else {
                e("python-worker-override", "w.py")
            });
            if o.name != "python-worker-override" && o.name != "worker-exec" {
                v.push(e(o.name, sample(o)));
            }
            Config::resolve(&v).unwrap_or_else(|err| panic!("{}: {err}", o.name));
        }
    }

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

    /// Errors found after resolution named the option but not where its
    /// value came from (found by tests/env_attacks.rs).
    #[test]
    fn errors_after_resolution_name_the_origin() {
        let env =
            |k: &str, v: &str| Entry::new(k, v, Origin::Env(format!("UWSGI_{}", k.to_uppercase().replace('-', "_"))));
        let v = vec![e("socket", ":0"), env("python-worker-override", "w.py"), e("worker-exec", "true")];
        let err = Config::resolve(&v).unwrap().check_workers(false).unwrap_err().to_string();
        assert_eq!(
            err,
            "--worker-exec: worker-exec: python-worker-override (env UWSGI_PYTHON_WORKER_OVERRIDE) and worker-exec \
             are both set; a worker runs one or the other"
        );
        let d = std::env::temp_dir();
        let mut c = Config::resolve(&[env("chdir", "surely-missing-dir")]).unwrap();
        let err = c.finalize(&d).unwrap_err().to_string();
        assert!(err.starts_with("env UWSGI_CHDIR: chdir: ") && err.contains("surely-missing-dir"), "{err}");
        let file = std::env::current_exe().unwrap();
        let mut c = Config::resolve(&[e("chdir", file.to_str().unwrap())]).unwrap();
        assert!(c.finalize(&d).unwrap_err().to_string().ends_with("not a directory"));
        let mut c = Config::resolve(&[e("chdir", d.to_str().unwrap())]).unwrap();
        c.finalize(&d).unwrap();
    }

    #[test]
    fn missing_worker_or_socket() {
        let check = |v: &[Entry]| Config::resolve(v).unwrap().check_workers(false).unwrap_err().to_string();
        assert!(check(&[e("socket", ":1")]).contains("python-worker-override"));
        assert!(check(&[e("python-worker-override", "x.py")]).contains("socket"));
        assert!(Config::resolve(&[e("socket", ":1")]).unwrap().check_init_mode().is_err());
        assert!(Config::resolve(&[]).unwrap().check_init_mode().is_ok());
    }
}
