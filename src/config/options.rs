//! The option table: every option podmaster understands is declared here once
//! (name, aliases, value kind, repeatable, default, help). The CLI, the ini
//! and YAML readers, environment variables and `--help` all read this table;
//! nothing else in the crate spells an option name as a string to parse.

/// What a value must look like; checked by [`super::Config::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` when given bare; false/off/no/0 (any case) are false.
    Bool,
    /// A whole number.
    Uint,
    /// Seconds, whole or fractional (`0.5`).
    Seconds,
    /// Free text (paths, addresses, signal names: checked when resolved).
    Text,
}

#[derive(Debug)]
pub struct OptDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub kind: Kind,
    /// Repeatable options accumulate across sources; scalars: last one wins.
    pub repeatable: bool,
    /// Shown in `--help`; the effective default lives in `Config::resolve`.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn opt(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptDef {
    OptDef { name, aliases: &[], kind, repeatable: false, default, help }
}

const fn list(name: &'static str, help: &'static str) -> OptDef {
    OptDef { name, aliases: &[], kind: Kind::Text, repeatable: true, default: None, help }
}

pub static OPTIONS: &[OptDef] = &[
    list(
        "socket",
        "listening socket to bind and hand to every worker (repeatable): host:port, :port, [v6]:port, /path.sock, @abstract, fd://N, sd://NAME",
    ),
    opt("master", Kind::Bool, Some("true"), "accepted for uWSGI compatibility; podmaster always runs a master"),
    opt("processes", Kind::Uint, Some("1"), "number of workers"),
    OptDef {
        name: "python-worker-override",
        aliases: &["worker-override"],
        kind: Kind::Text,
        repeatable: false,
        default: None,
        help: "Python script each worker runs as __main__ with the `uwsgi` module available",
    },
    opt(
        "probe-socket",
        Kind::Text,
        None,
        "address of the HTTP probe server (/livez /readyz /metrics /status); off unless set",
    ),
    opt(
        "ready-workers",
        Kind::Text,
        Some("100%"),
        "accepting workers needed for /readyz 200: a number or a percentage of processes",
    ),
    opt(
        "drain-delay",
        Kind::Seconds,
        Some("0"),
        "seconds between SIGTERM (readiness turns 503) and stopping the workers; covers endpoint-removal lag",
    ),
    opt(
        "worker-reload-mercy",
        Kind::Seconds,
        Some("25"),
        "seconds a stopping worker gets before SIGKILL (default fits Kubernetes' 30 s grace period)",
    ),
    opt(
        "worker-stop-signal",
        Kind::Text,
        None,
        "signal that asks a worker to stop gracefully (default: HUP for Python workers)",
    ),
    opt("listen", Kind::Uint, Some("1024"), "listen backlog of every socket (capped by net.core.somaxconn)"),
    opt("reuse-port", Kind::Bool, Some("false"), "set SO_REUSEPORT on TCP sockets"),
    opt("chmod-socket", Kind::Text, None, "mode of UNIX socket files, octal (e.g. 660; bare `chmod-socket` means 666)"),
    opt("chown-socket", Kind::Text, None, "owner of UNIX socket files: user[:group], names or numbers"),
    opt("uid", Kind::Text, None, "user the workers run as (name or number); sockets are bound before dropping"),
    opt("gid", Kind::Text, None, "group the workers run as (name or number; default: the uid's primary group)"),
    opt("chdir", Kind::Text, None, "directory the workers start in"),
    OptDef {
        name: "virtualenv",
        aliases: &["home", "venv", "pyhome"],
        kind: Kind::Text,
        repeatable: false,
        default: None,
        help: "virtualenv whose site-packages the embedded interpreter uses",
    },
    OptDef {
        name: "pythonpath",
        aliases: &["python-path", "pp"],
        kind: Kind::Text,
        repeatable: true,
        default: None,
        help: "directory prepended to sys.path (repeatable)",
    },
    opt("log-format", Kind::Text, Some("text"), "log format: text or json"),
    list("metric", "app metric, uWSGI syntax: name=NAME[,type=counter|gauge][,initial_value=N] (repeatable)"),
    opt("pyargv", Kind::Text, None, "arguments for the worker script's sys.argv (split like a shell, without one)"),
    opt(
        "log-level",
        Kind::Text,
        Some("info"),
        "least severe level logged (error, warn, info, debug, trace); RUST_LOG overrides",
    ),
    opt(
        "chain-reload-timeout",
        Kind::Seconds,
        Some("60"),
        "seconds a replacement worker gets to report accepting before a chain reload is aborted",
    ),
    list("touch-reload", "file whose modification triggers a graceful chain reload (repeatable)"),
    list("touch-chain-reload", "same as touch-reload (uWSGI name)"),
    opt("respawn-backoff-max", Kind::Seconds, Some("30"), "cap of the exponential respawn delay after crashes"),
    opt(
        "max-failed-starts",
        Kind::Uint,
        Some("10"),
        "consecutive failed starts of one slot after which /livez turns 503 (kubelet then restarts the pod)",
    ),
    opt("max-worker-lifetime", Kind::Seconds, None, "replace a worker (replacement first) after this many seconds"),
    opt("max-worker-lifetime-delta", Kind::Seconds, Some("0"), "random extra lifetime per worker, 0..delta seconds"),
    opt("reload-on-rss", Kind::Uint, None, "replace a worker (replacement first) whose RSS exceeds this many MB"),
    OptDef {
        name: "worker-exec",
        aliases: &["worker-command"],
        kind: Kind::Text,
        repeatable: false,
        default: None,
        help: "command each worker slot runs, with the sockets passed the systemd way (LISTEN_FDS, NOTIFY_SOCKET)",
    },
    opt(
        "worker-ready-mode",
        Kind::Text,
        Some("notify"),
        "notify: a worker accepts once it sends READY=1; spawn: as soon as it runs",
    ),
    list("attach-daemon", "supervised side process (repeatable): respawned with backoff, stopped last"),
    opt(
        "reload-on-config-change",
        Kind::Bool,
        Some("true"),
        "watch the config files/directories and roll the workers when they change",
    ),
    opt("config-check-interval", Kind::Seconds, Some("5"), "seconds between checks of config and touch files"),
    opt(
        "exit-grace",
        Kind::Seconds,
        Some("0"),
        "init mode: after the command exits, wait up to this long for its remaining descendants",
    ),
    opt("forward-to-group", Kind::Bool, Some("false"), "init mode: forward signals to the command's process group"),
    opt(
        "liveness-timeout",
        Kind::Seconds,
        Some("0.5"),
        "/livez fails if the main loop does not answer a wake-up within this many seconds",
    ),
];

/// uWSGI options podmaster accepts and ignores because its behaviour already
/// covers them (each is logged once as a notice).
pub static HARMLESS: &[&str] = &[
    "vacuum",
    "die-on-term",
    "enable-threads",
    "lazy-apps",
    "need-app",
    "strict",
    "single-interpreter",
    "thunder-lock",
    "py-call-osafterfork",
    "master-fifo",
    "memory-report",
    "auto-procname",
    "no-orphans",
];

/// uWSGI options that would change behaviour podmaster does not implement:
/// accepting them silently would run something other than what was asked.
pub static UNSUPPORTED: &[&str] = &[
    "module",
    "wsgi-file",
    "wsgi",
    "callable",
    "http",
    "http-socket",
    "https",
    "harakiri",
    "mount",
    "static-map",
    "plugin",
    "plugins",
    "emperor",
    "cheaper",
    "threads",
    "gevent",
];

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|o| o.name == name || o.aliases.contains(&name))
}

/// The known option closest to `name`, for "did you mean" hints.
pub fn suggest(name: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for o in OPTIONS {
        for candidate in std::iter::once(&o.name).chain(o.aliases.iter()) {
            let d = edit_distance(name, candidate);
            if d <= (candidate.len() / 3).max(2) && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, o.name));
            }
        }
    }
    best.map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            for n in std::iter::once(&o.name).chain(o.aliases.iter()) {
                assert!(seen.insert(*n), "{n} declared twice");
                assert!(!HARMLESS.contains(n) && !UNSUPPORTED.contains(n), "{n} also listed as uWSGI-only");
            }
        }
    }

    #[test]
    fn aliases_resolve_to_canonical() {
        assert_eq!(lookup("home").unwrap().name, "virtualenv");
        assert_eq!(lookup("processes").unwrap().name, "processes");
        assert!(lookup("procesess").is_none());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("procesess"), Some("processes"));
        assert_eq!(suggest("sockets"), Some("socket"));
        assert_eq!(suggest("zzzzzzzzzzzz"), None);
    }
}
