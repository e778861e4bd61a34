//! The effective, typed configuration ([`Config`]) and the small value
//! types its fields use. Built only by [`Config::resolve`]; read by every
//! other part of podmaster.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::metric::MetricDecl;
use super::{ConfigError, Origin};
use crate::sockets::SocketSpec;

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

/// Which requests the WSGI worker logs, and how, with uWSGI's meanings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessLog {
    /// `disable-logging`: no request lines (but those `log-4xx` and
    /// `log-5xx` ask for).
    pub disabled: bool,
    /// `log-4xx`, `log-5xx`: log these statuses even when disabled.
    pub log_4xx: bool,
    pub log_5xx: bool,
    /// A uWSGI request-log format (`log-format` other than text/json).
    pub format: Option<String>,
}

/// What a `static-expires*` rule matches a static file by (uWSGI's
/// `static-expires` family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpiresOn {
    /// `static-expires`: a regular expression searched in the file's path.
    Filename,
    /// `static-expires-type`: the content type, exactly.
    Type,
    /// `static-expires-uri`: a regular expression searched in `REQUEST_URI`.
    Uri,
    /// `static-expires-path-info`: a regular expression searched in `PATH_INFO`.
    PathInfo,
}

/// One `static-expires*` rule: matching files are sent with `Expires` and
/// `Cache-Control: max-age` for `seconds` from now (or, `from_mtime`,
/// from the file's modification time: the `-mtime` forms).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpiresRule {
    pub on: ExpiresOn,
    /// The regular expression, or for [`ExpiresOn::Type`] the type.
    pub pattern: String,
    pub seconds: u64,
    pub from_mtime: bool,
}

/// `reload-on-cgroup-memory`: where the container's working set is too high.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMark {
    /// A share of the cgroup's memory limit (inert without a limit).
    Percent(u32),
    Bytes(u64),
}

impl MemoryMark {
    /// The mark in bytes for a cgroup with `limit` (None: no mark).
    pub fn bytes(self, limit: Option<u64>) -> Option<u64> {
        match self {
            MemoryMark::Percent(p) => limit.map(|l| (u128::from(l) * u128::from(p) / 100) as u64),
            MemoryMark::Bytes(b) => Some(b),
        }
    }
}

/// The user and group workers run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// `u32::MAX` when only `gid` was given (workers keep the master's uid).
    pub uid: u32,
    pub gid: u32,
    /// `gid` was set explicitly (a later `uid` keeps it).
    pub(super) explicit_gid: bool,
}

/// When a worker counts as accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// After it sends `READY=1` (what `uwsgi.accepting()` does).
    Notify,
    /// As soon as it is running (programs that cannot notify).
    Spawn,
}

/// The protocol a socket speaks when podmaster serves a WSGI app on it,
/// from the option that declared it (uWSGI's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketProtocol {
    /// `http-socket`, `http11-socket`: HTTP/1.1.
    Http,
    /// `socket`, `uwsgi-socket` (and `shared-socket`): the uwsgi binary
    /// protocol, what nginx's `uwsgi_pass` speaks.
    Uwsgi,
}

impl SocketProtocol {
    /// The protocol of a socket declared with option `key` (as written).
    pub fn of_key(key: &str) -> SocketProtocol {
        match key {
            "http-socket" | "http11-socket" | "http" => SocketProtocol::Http,
            _ => SocketProtocol::Uwsgi,
        }
    }
}

/// A socket spec together with the origin of the line that declared it.
#[derive(Debug, Clone)]
pub struct SocketEntry {
    /// The spec as written: the socket's name in LISTEN_FDNAMES and /status.
    pub name: String,
    pub spec: SocketSpec,
    pub origin: Origin,
    /// What a WSGI worker speaks on it (override scripts speak what they like).
    pub protocol: SocketProtocol,
}

/// Where the WSGI app comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppSource {
    /// `module = pkg.mod`: imported by name.
    Module(String),
    /// `wsgi-file = path`: loaded from a file.
    File(PathBuf),
}

/// The WSGI app a worker serves: where it is and the callable's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WsgiApp {
    pub source: AppSource,
    pub callable: String,
}

/// `mount = /prefix=app`: an app served under a URL prefix (its
/// `callable` is the `callable` option's unless written `mod:callable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The prefix without a trailing `/` (`""` for `/`).
    pub prefix: String,
    pub source: AppSource,
    pub callable: Option<String>,
}

/// An app and the URL prefix it is mounted at (`""`: the default app,
/// `module` or `wsgi-file`, which serves what no mount claims).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountedApp {
    pub mount: String,
    pub app: WsgiApp,
}

/// The effective, typed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sockets: Vec<SocketEntry>,
    pub processes: u32,
    /// `processes = auto`: `processes` is sized from the cgroup's CPU quota.
    pub processes_auto: bool,
    /// How `processes` was sized when `auto` (for logs and `--check-config`).
    pub processes_source: Option<String>,
    pub max_processes: Option<u32>,
    pub cgroup_memory_mark: Option<MemoryMark>,
    pub cgroup_check_interval: Duration,
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
    /// The WSGI worker's request log.
    pub access_log: AccessLog,
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
    pub worker_ready_warning: Duration,
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
    pub metrics: Vec<MetricDecl>,
    /// `env = KEY=VALUE`: set for workers, zygotes and daemons, in order
    /// (a later value of a key replaces the earlier one).
    pub env: Vec<(String, String)>,
    /// `pidfile`: written with the master's pid once the sockets are bound.
    pub pidfile: Option<PathBuf>,
    /// Extra `sys.argv` entries for the worker script.
    pub pyargv: Vec<String>,
    /// `shared-import`: modules the zygote imports before forking workers.
    pub shared_imports: Vec<String>,
    /// `lazy-apps = true`: no zygote, one fork+exec per Python worker.
    pub lazy_apps: bool,
    /// `module` (the module part of `pkg.mod:callable`).
    pub module: Option<String>,
    /// The callable of `module = pkg.mod:callable`, when given.
    pub module_callable: Option<String>,
    /// `wsgi-file`.
    pub wsgi_file: Option<PathBuf>,
    /// `callable`: the app's name in its module (default `application`).
    pub callable: String,
    /// `mount`: apps under URL prefixes, in the order given.
    pub mounts: Vec<Mount>,
    /// `manage-script-name`: pick the app by the longest mount prefix of
    /// the path and move that prefix from `PATH_INFO` to `SCRIPT_NAME`.
    pub manage_script_name: bool,
    /// `max-requests`: recycle a WSGI worker after this many requests.
    pub max_requests: Option<u64>,
    /// `max-requests-delta`: random extra requests per worker.
    pub max_requests_delta: u64,
    /// `harakiri`: the longest a WSGI request may run.
    pub harakiri: Option<Duration>,
    /// `harakiri-verbose`: log the stuck request's headers too.
    pub harakiri_verbose: bool,
    /// `static-map`: (URL prefix without trailing `/`, directory).
    pub static_maps: Vec<(String, PathBuf)>,
    /// `static-gzip-all`.
    pub static_gzip_all: bool,
    /// `static-expires`, `static-expires-type`, ... in the order given.
    pub static_expires: Vec<ExpiresRule>,
    /// `need-app`: an app that fails to load stops the workers (default);
    /// false: the worker serves 500s for it and logs why.
    pub need_app: bool,
    /// `threads`: app threads per WSGI worker.
    pub threads: u32,
    /// `buffer-size`: largest request head, bytes.
    pub buffer_size: usize,
    /// `limit-post`: largest request body, bytes (None: no limit).
    pub limit_post: Option<u64>,
    /// `worker-nice`: how much lower than the master's the workers' (and
    /// zygotes') scheduling priority is; 0 keeps the master's.
    pub worker_nice: i32,
    /// Every option as set (canonical name, value), for `uwsgi.opt`.
    pub opt: Vec<(String, String)>,
    /// uWSGI options accepted and ignored, with where they were set.
    pub ignored: Vec<(String, Origin)>,
    /// Notices about how an option was read (a socket alias, a uWSGI
    /// request-log format): option as written, origin, text. Logged once.
    pub notices: Vec<(String, Origin, String)>,
    /// Where each option (canonical name) was last set: the origin of the
    /// errors found after resolution (`check_workers`, `finalize`).
    pub set_at: Vec<(&'static str, Origin)>,
}

impl Config {
    /// Nothing set, not even the defaults: the state [`Config::resolve`]
    /// starts from before it applies the defaults (the option table's
    /// `default` values), so the values here for options with a default
    /// are never seen.
    pub(super) fn blank() -> Config {
        Config {
            sockets: Vec::new(),
            processes: 0,
            processes_auto: false,
            processes_source: None,
            max_processes: None,
            cgroup_memory_mark: None,
            cgroup_check_interval: Duration::ZERO,
            script: None,
            probe_socket: None,
            ready_workers: ReadyWorkers::Count(0),
            drain_delay: Duration::ZERO,
            worker_reload_mercy: Duration::ZERO,
            worker_stop_signal: None,
            listen: 0,
            chdir: None,
            virtualenv: None,
            pythonpath: Vec::new(),
            log_format: LogFormat::Text,
            log_level: String::new(),
            access_log: AccessLog::default(),
            chain_reload_timeout: Duration::ZERO,
            touch_reload: Vec::new(),
            respawn_backoff_max: Duration::ZERO,
            max_failed_starts: 0,
            max_worker_lifetime: None,
            max_worker_lifetime_delta: Duration::ZERO,
            reload_on_rss: None,
            command: None,
            ready_mode: ReadyMode::Notify,
            worker_ready_warning: Duration::ZERO,
            attach_daemons: Vec::new(),
            reload_on_config_change: false,
            config_check_interval: Duration::ZERO,
            liveness_timeout: Duration::ZERO,
            exit_grace: Duration::ZERO,
            forward_to_group: false,
            reuse_port: false,
            chmod_socket: None,
            chown_socket: None,
            creds: None,
            metrics: Vec::new(),
            pyargv: Vec::new(),
            env: Vec::new(),
            pidfile: None,
            shared_imports: Vec::new(),
            lazy_apps: false,
            module: None,
            module_callable: None,
            wsgi_file: None,
            callable: String::new(),
            mounts: Vec::new(),
            manage_script_name: false,
            need_app: true,
            max_requests: None,
            max_requests_delta: 0,
            harakiri: None,
            harakiri_verbose: false,
            static_maps: Vec::new(),
            static_expires: Vec::new(),
            static_gzip_all: false,
            threads: 0,
            buffer_size: 0,
            limit_post: None,
            worker_nice: 0,
            opt: Vec::new(),
            ignored: Vec::new(),
            notices: Vec::new(),
            set_at: Vec::new(),
        }
    }

    /// Where option `key` was last set, if it was.
    pub(super) fn origin_of(&self, key: &str) -> Option<Origin> {
        self.set_at.iter().find(|(k, _)| *k == key).map(|(_, o)| o.clone())
    }

    /// An error about option `key`, at the origin of its value.
    pub(super) fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin_of(key), Some(key), message)
    }

    /// Python workers are forked from a zygote (the default), not exec'd
    /// one by one (`lazy-apps = true`) — command workers are always exec'd.
    pub fn preforked(&self) -> bool {
        self.python_worker() && self.command.is_none() && !self.lazy_apps
    }

    /// Workers run Python: an override script or a WSGI app.
    pub fn python_worker(&self) -> bool {
        self.script.is_some() || self.serves_wsgi()
    }

    /// Workers are podmaster's WSGI worker (`module`, `wsgi-file` or `mount`).
    pub fn serves_wsgi(&self) -> bool {
        self.app().is_some() || !self.mounts.is_empty()
    }

    /// Every app a WSGI worker loads: the default app first (mounted at
    /// `""`), then each `mount` in order.
    pub fn apps(&self) -> Vec<MountedApp> {
        let mounts = self.mounts.iter().map(|m| MountedApp {
            mount: m.prefix.clone(),
            app: WsgiApp {
                source: m.source.clone(),
                callable: m.callable.clone().unwrap_or_else(|| self.callable.clone()),
            },
        });
        self.app().map(|app| MountedApp { mount: String::new(), app }).into_iter().chain(mounts).collect()
    }

    /// The WSGI app to serve (`module` first when both are set: that
    /// mistake is reported by `check_workers`). A callable given in
    /// `module = pkg.mod:callable` wins over `callable`.
    pub fn app(&self) -> Option<WsgiApp> {
        let source = match (&self.module, &self.wsgi_file) {
            (Some(m), _) => AppSource::Module(m.clone()),
            (None, Some(f)) => AppSource::File(f.clone()),
            (None, None) => return None,
        };
        let callable = self.module_callable.clone().filter(|_| self.module.is_some());
        Some(WsgiApp { source, callable: callable.unwrap_or_else(|| self.callable.clone()) })
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
