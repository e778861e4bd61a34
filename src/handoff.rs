//! The contract between master and worker, both sides of it: which fds a
//! worker finds where (listening sockets at 3, 4, ... in configuration
//! order, then the scoreboard's two regions), the environment it gets
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`, `NOTIFY_SOCKET`, the [`WorkerSpec`] in
//! [`SPEC_ENV`]), and the worker's settings, built once per configuration
//! by [`WorkerSettings::new`] and stamped per spawn with the slot's id and
//! generation. `LISTEN_PID` is set by the worker itself (only it knows its
//! pid). Nothing here touches processes: [`crate::sys::spawn`] does.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::time::SystemTime;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Config, LogFormat, MountedApp, SocketProtocol};
use crate::sys::{Credentials, LISTEN_FDS_START};

/// Environment variable carrying the JSON [`WorkerSpec`] from master to worker.
pub const SPEC_ENV: &str = "PODMASTER_WORKER";

/// Everything a worker needs to know, decided by the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub id: u32,
    pub generation: u64,
    pub numproc: u32,
    pub master_pid: i32,
    /// Unix time the master started (seconds).
    pub started_on: u64,
    pub script: PathBuf,
    /// `worker-exec`: run this program instead of a Python script.
    pub command: Option<Vec<String>>,
    pub chdir: Option<PathBuf>,
    pub virtualenv: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub opt: Vec<(String, String)>,
    /// The uid this worker must run as (`uid` option), checked at start.
    pub uid: Option<u32>,
    /// Where the scoreboard fds are (board, then metrics at +1), if passed.
    pub board_fd: Option<i32>,
    pub metrics: Vec<crate::scoreboard::MetricDecl>,
    pub pyargv: Vec<String>,
    /// `shared-import` modules: imported by the zygote, or (`lazy-apps`)
    /// by each worker before its script.
    #[serde(default)]
    pub shared_imports: Vec<String>,

    /// Socket names, in fd order (fd 3 first).
    pub sockets: Vec<String>,
    /// The WSGI app this worker serves (`module`/`wsgi-file`), if any.
    #[serde(default)]
    pub wsgi: Option<WsgiSpec>,
    /// True when this slot had a process before (a respawn or reload).
    pub is_a_reload: bool,
    /// This process's row in the request-metrics region.
    #[serde(default)]
    pub http_row: Option<u32>,
}

/// What a WSGI worker serves and how: the app, its threads, the front's
/// limits, and the protocol of each socket in fd order (as `sockets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsgiSpec {
    /// The apps, the default one (mounted at `""`) first.
    pub apps: Vec<MountedApp>,
    pub manage_script_name: bool,
    pub need_app: bool,
    /// `max-requests` with this worker's share of `max-requests-delta`
    /// (drawn by the worker).
    pub max_requests: Option<u64>,
    pub max_requests_delta: u64,
    pub harakiri: Option<std::time::Duration>,
    pub harakiri_verbose: bool,
    pub static_maps: Vec<(String, std::path::PathBuf)>,
    pub static_gzip_all: bool,
    #[serde(default)]
    pub static_expires: Vec<crate::config::ExpiresRule>,
    pub threads: u32,
    pub buffer_size: usize,
    pub limit_post: Option<u64>,
    pub protocols: Vec<SocketProtocol>,
    /// Which requests to log, and how.
    #[serde(default)]
    pub access_log: crate::config::AccessLog,
    /// `log-format = json`: request lines are JSON objects too.
    #[serde(default)]
    pub json_log: bool,
}

impl WsgiSpec {
    /// The spec for `cfg`'s app, with the protocol of each socket named
    /// in `sockets`; a socket no option declared (one passed by socket
    /// activation and not configured) speaks uwsgi, as uWSGI's `socket`.
    fn new(cfg: &Config, sockets: &[String]) -> Option<WsgiSpec> {
        let protocols = sockets
            .iter()
            .map(|name| cfg.sockets.iter().find(|s| &s.name == name).map_or(SocketProtocol::Uwsgi, |s| s.protocol))
            .collect();
        if !cfg.serves_wsgi() {
            return None;
        }
        Some(WsgiSpec {
            apps: cfg.apps(),
            manage_script_name: cfg.manage_script_name,
            need_app: cfg.need_app,
            max_requests: cfg.max_requests,
            max_requests_delta: cfg.max_requests_delta,
            harakiri: cfg.harakiri,
            harakiri_verbose: cfg.harakiri_verbose,
            static_maps: cfg.static_maps.clone(),
            static_gzip_all: cfg.static_gzip_all,
            static_expires: cfg.static_expires.clone(),
            threads: cfg.threads.max(1),
            buffer_size: cfg.buffer_size,
            limit_post: cfg.limit_post,
            protocols,
            access_log: cfg.access_log.clone(),
            json_log: cfg.log_format == LogFormat::Json,
        })
    }
}

impl WorkerSpec {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Worker side: takes the spec out of the environment (so the app does not
/// see it) and sets `LISTEN_PID` to this process. Call before any thread
/// starts (the environment is not thread-safe).
pub fn take_spec() -> Result<WorkerSpec, serde_json::Error> {
    let raw = std::env::var(SPEC_ENV).unwrap_or_default();
    crate::sys::edit_env_single_threaded(&[SPEC_ENV], &[("LISTEN_PID", &std::process::id().to_string())]);
    serde_json::from_str(&raw)
}

/// What one worker is to be, as the master decides it per spawn (for a
/// forked worker, the body of the master's fork request to the zygote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub id: u32,
    pub generation: u64,
    /// Worker slots now (uWSGI's `numproc`).
    pub numproc: u32,
    /// The slot had a process before (a respawn or a reload).
    pub is_a_reload: bool,
    /// Its row in the request-metrics region ([`crate::scoreboard::http`]).
    #[serde(default)]
    pub http_row: Option<u32>,
}

/// Every worker's settings under one configuration and one socket set;
/// rebuilt when either changes.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    template: WorkerSpec,
    /// Python workers get the scoreboard fds after the sockets.
    pub with_board: bool,
    /// `worker-nice`, for workers and zygotes.
    pub nice: i32,
    /// `env = KEY=VALUE`, for workers, zygotes and daemons.
    pub env: Vec<(OsString, OsString)>,
}

impl WorkerSettings {
    pub fn new(cfg: &Config, creds: Option<&Credentials>, sockets: Vec<String>, started_on: SystemTime) -> Self {
        let with_board = cfg.python_worker();
        let template = WorkerSpec {
            id: 0,
            generation: 0,
            numproc: 0,
            master_pid: std::process::id() as i32,
            started_on: started_on.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            script: cfg.script.clone().unwrap_or_default(),
            command: cfg.command.clone(),
            chdir: cfg.chdir.clone(),
            virtualenv: cfg.virtualenv.clone(),
            pythonpath: cfg.pythonpath.clone(),
            log_format: cfg.log_format,
            log_level: cfg.log_level.clone(),
            opt: cfg.opt.clone(),
            uid: creds.and_then(|c| c.uid),
            board_fd: with_board.then_some(LISTEN_FDS_START + sockets.len() as RawFd),
            metrics: cfg.metrics.clone(),
            pyargv: cfg.pyargv.clone(),
            shared_imports: cfg.shared_imports.clone(),
            wsgi: WsgiSpec::new(cfg, &sockets),
            sockets,
            is_a_reload: false,
            http_row: None,
        };
        let env = cfg.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
        WorkerSettings { template, with_board, nice: cfg.worker_nice, env }
    }

    /// What the zygote of code generation `generation` is started with.
    pub fn zygote(&self, generation: u64, control_fd: RawFd) -> ZygoteSpec {
        ZygoteSpec { template: self.template.clone(), generation, control_fd }
    }

    /// The spec of one worker.
    pub fn spec(&self, s: Stamp) -> WorkerSpec {
        WorkerSpec {
            id: s.id,
            generation: s.generation,
            numproc: s.numproc,
            is_a_reload: s.is_a_reload,
            http_row: s.http_row,
            ..self.template.clone()
        }
    }
}

/// Environment variable carrying the JSON [`ZygoteSpec`] to a zygote.
pub const ZYGOTE_ENV: &str = "PODMASTER_ZYGOTE";

/// What a zygote is started with: the settings every worker it forks
/// shares (the template, `id` 0, with the modules to import), its code
/// generation and the fd of its control socket to the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZygoteSpec {
    pub template: WorkerSpec,
    pub generation: u64,
    pub control_fd: i32,
}

impl ZygoteSpec {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Zygote side: takes the spec out of the environment; the zygote's own
/// environment has no `LISTEN_PID` (each worker sets its own). Call before
/// any thread starts.
pub fn take_zygote_spec() -> Result<ZygoteSpec, serde_json::Error> {
    let raw = std::env::var(ZYGOTE_ENV).unwrap_or_default();
    crate::sys::edit_env_single_threaded(&[ZYGOTE_ENV, "LISTEN_PID"], &[]);
    serde_json::from_str(&raw)
}

/// Largest message on the master ⇄ zygote control socket (a fork request
/// is a [`Stamp`], a reply a [`ZygoteReply`]: well under this).
pub const CONTROL_MAX: usize = 4096;

/// What a zygote tells the master on its control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZygoteReply {
    /// Imports done, collected and frozen: ready to fork.
    Ready,
    /// A worker was forked (it is already the master's child).
    Forked { pid: i32 },
    /// The zygote will not fork (it exits right after saying why).
    Refused { reason: String },
}

impl ZygoteReply {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a reply; anything else (oversized, not JSON) is `None`.
    pub fn decode(bytes: &[u8]) -> Option<ZygoteReply> {
        if bytes.len() > CONTROL_MAX {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

/// The fds a worker receives, in order from fd 3: the sockets, then (for
/// Python workers) the scoreboard's three regions.
pub fn fd_layout(sockets: &[RawFd], board: &[RawFd], with_board: bool) -> Vec<RawFd> {
    let mut fds = sockets.to_vec();
    if with_board {
        fds.extend_from_slice(board);
    }
    fds
}

/// The variables set for a worker on top of the master's environment.
pub fn environment(spec: &WorkerSpec, notify_socket: &str) -> Vec<(OsString, OsString)> {
    vec![
        (OsString::from("LISTEN_FDS"), OsString::from(spec.sockets.len().to_string())),
        (OsString::from("LISTEN_FDNAMES"), OsString::from(encode_fdnames(&spec.sockets))),
        (OsString::from("NOTIFY_SOCKET"), OsString::from(notify_socket)),
        (OsString::from(SPEC_ENV), OsString::from(spec.encode())),
    ]
}

/// The variables set for a zygote: those of a worker (its workers inherit
/// them), but the zygote's spec instead of a worker's.
pub fn zygote_environment(z: &ZygoteSpec, notify_socket: &str) -> Vec<(OsString, OsString)> {
    vec![
        (OsString::from("LISTEN_FDS"), OsString::from(z.template.sockets.len().to_string())),
        (OsString::from("LISTEN_FDNAMES"), OsString::from(encode_fdnames(&z.template.sockets))),
        (OsString::from("NOTIFY_SOCKET"), OsString::from(notify_socket)),
        (OsString::from(ZYGOTE_ENV), OsString::from(z.encode())),
    ]
}

/// `LISTEN_FDNAMES` value: names joined by `:`. A `:` inside a name (every
/// `host:port` spec has one) is written `\x3a`, the escape systemd uses,
/// so splitting on `:` always yields exactly `LISTEN_FDS` names; a `\` is
/// written `\x5c`, so a name that contains `\x3a` itself comes back intact
/// from [`decode_fdnames`].
pub fn encode_fdnames(names: &[String]) -> String {
    names.iter().map(|n| n.replace('\\', "\\x5c").replace(':', "\\x3a")).collect::<Vec<_>>().join(":")
}

/// Splits a `LISTEN_FDNAMES` value into names, undoing the escapes of
/// [`encode_fdnames`] (`\x3a` is `:`, `\x5c` is `\`, either case); any
/// other text, a lone `\` included, is taken as written.
pub fn decode_fdnames(value: &str) -> Vec<String> {
    value
        .split(':')
        .map(|part| {
            let mut out = String::with_capacity(part.len());
            let mut rest = part;
            while let Some(i) = rest.find('\\') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                let code = tail.get(1..4).map(str::to_ascii_lowercase);
                match code.as_deref() {
                    Some("x3a") => out.push(':'),
                    Some("x5c") => out.push('\\'),
                    _ => {
                        out.push('\\');
                        rest = &tail[1..];
                        continue;
                    }
                }
                rest = &tail[4..];
            }
            out.push_str(rest);
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zygote_replies_round_trip_and_garbage_is_none() {
        for r in [ZygoteReply::Ready, ZygoteReply::Forked { pid: 42 }, ZygoteReply::Refused { reason: "x".into() }] {
            assert_eq!(ZygoteReply::decode(&r.encode()), Some(r));
        }
        for bad in [&b""[..], b"READY", b"{\"Forked\":{\"pid\":\"1\"}}", &[0xff; 10], &[b' '; CONTROL_MAX + 1]] {
            assert_eq!(ZygoteReply::decode(bad), None, "{bad:?}");
        }
        let stamp = Stamp { id: 2, generation: 9, numproc: 4, is_a_reload: true, http_row: Some(3) };
        let back: Stamp = serde_json::from_str(&serde_json::to_string(&stamp).unwrap()).unwrap();
        assert_eq!(back, stamp);
    }

    #[test]
    fn fdnames_split_into_exactly_one_name_per_fd() {
        let names = vec!["127.0.0.1:3031".to_string(), "/run/a.sock".to_string(), "[::1]:80".to_string()];
        let joined = encode_fdnames(&names);
        assert_eq!(joined, "127.0.0.1\\x3a3031:/run/a.sock:[\\x3a\\x3a1]\\x3a80");
        assert_eq!(joined.split(':').count(), 3);
    }

    /// Found by the property tests: a name containing `\x3a` itself came
    /// back from the decoder as `:`.
    #[test]
    fn fdnames_round_trip_names_with_escapes() {
        for names in [vec![r"\x3a".to_string()], vec![r"a\".into(), ":".into(), r"\x5c\X3A".into()]] {
            let encoded = encode_fdnames(&names);
            assert_eq!(encoded.split(':').count(), names.len(), "{encoded}");
            assert_eq!(decode_fdnames(&encoded), names, "{encoded}");
        }
    }

    #[test]
    fn environment_names_every_socket_and_carries_the_spec() {
        let mut cfg = Config::resolve(&[]).expect("defaults resolve");
        cfg.script = Some("/app/w.py".into());
        let names = vec!["a:1".to_string(), "b".to_string()];
        let settings = WorkerSettings::new(&cfg, None, names, SystemTime::UNIX_EPOCH);
        let spec = settings.spec(Stamp { id: 3, generation: 7, numproc: 4, is_a_reload: true, http_row: None });
        assert_eq!(spec.board_fd, Some(5), "the board follows fds 3 and 4");
        let env = environment(&spec, "@notify");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned());
        assert_eq!(get("LISTEN_FDS").as_deref(), Some("2"));
        assert_eq!(decode_fdnames(&get("LISTEN_FDNAMES").unwrap()), vec!["a:1", "b"]);
        assert_eq!(get("NOTIFY_SOCKET").as_deref(), Some("@notify"));
        let back: WorkerSpec = serde_json::from_str(&get(SPEC_ENV).unwrap()).unwrap();
        assert_eq!((back.id, back.generation, back.numproc, back.is_a_reload), (3, 7, 4, true));
    }

    #[test]
    fn board_follows_the_sockets() {
        assert_eq!(fd_layout(&[7, 9], &[11, 12], true), vec![7, 9, 11, 12]);
        assert_eq!(fd_layout(&[7, 9], &[11, 12], false), vec![7, 9]);
    }
}
