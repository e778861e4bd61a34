//! Options about the workers' lives: stopping (drain, mercy, stop signal),
//! reloading (chain reloads, touch files, config watches), respawning and
//! recycling, liveness, and init mode (`-- COMMAND`).

use nix::sys::signal::Signal;

use super::{Kind, OptDef};
use crate::config::values::{flag, parse_signal, path, positive_seconds, seconds, whole_in};
use crate::config::{Config, ConfigError, Entry};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "drain-delay",
        Kind::Seconds,
        "seconds between SIGTERM (readiness turns 503) and stopping the workers; covers endpoint-removal lag",
        |c, e| seconds(e).map(|d| c.drain_delay = d),
    )
    .default("0"),
    OptDef::new(
        "worker-reload-mercy",
        Kind::Seconds,
        "seconds a stopping worker gets before SIGKILL (default fits Kubernetes' 30 s grace period)",
        |c, e| seconds(e).map(|d| c.worker_reload_mercy = d),
    )
    .aliases(&["reload-mercy"])
    .default("25"),
    OptDef::new(
        "worker-stop-signal",
        Kind::Text,
        "signal that asks a worker to stop gracefully (default: HUP for Python workers)",
        worker_stop_signal,
    ),
    OptDef::new(
        "chain-reload-timeout",
        Kind::Seconds,
        "seconds a replacement worker gets to report accepting before a chain reload is aborted",
        |c, e| positive_seconds(e).map(|d| c.chain_reload_timeout = d),
    )
    .default("60"),
    OptDef::new(
        "touch-reload",
        Kind::Text,
        "file whose modification triggers a graceful chain reload (repeatable)",
        |c, e| {
            c.touch_reload.push(path(e));
            Ok(())
        },
    )
    .repeatable(),
    OptDef::new("touch-chain-reload", Kind::Text, "same as touch-reload (uWSGI name)", |c, e| {
        c.touch_reload.push(path(e));
        Ok(())
    })
    .repeatable(),
    OptDef::new("respawn-backoff-max", Kind::Seconds, "cap of the exponential respawn delay after crashes", |c, e| {
        positive_seconds(e).map(|d| c.respawn_backoff_max = d)
    })
    .default("30"),
    OptDef::new(
        "max-failed-starts",
        Kind::Uint,
        "consecutive failed starts of one slot after which /livez turns 503 (kubelet then restarts the pod)",
        |c, e| whole_in(e, 1..=u64::from(u32::MAX), "at least 1").map(|n| c.max_failed_starts = n as u32),
    )
    .default("10"),
    OptDef::new(
        "max-worker-lifetime",
        Kind::Seconds,
        "replace a worker (replacement first) after this many seconds",
        |c, e| positive_seconds(e).map(|d| c.max_worker_lifetime = Some(d)),
    ),
    OptDef::new(
        "max-worker-lifetime-delta",
        Kind::Seconds,
        "random extra lifetime per worker, 0..delta seconds",
        |c, e| seconds(e).map(|d| c.max_worker_lifetime_delta = d),
    )
    .default("0"),
    OptDef::new(
        "pidfile",
        Kind::Text,
        "file the master writes its pid to once the sockets are bound (removed on exit)",
        |c, e| {
            c.pidfile = Some(path(e));
            Ok(())
        },
    )
    .aliases(&["pidfile2", "safe-pidfile"]),
    OptDef::new(
        "reload-on-rss",
        Kind::Uint,
        "replace a worker (replacement first) whose RSS exceeds this many MB",
        |c, e| whole_in(e, 1..=1 << 30, "megabytes >= 1").map(|mb| c.reload_on_rss = Some(mb * 1024 * 1024)),
    ),
    OptDef::new(
        "reload-on-config-change",
        Kind::Bool,
        "watch the config files/directories and roll the workers when they change",
        |c, e| {
            c.reload_on_config_change = flag(e);
            Ok(())
        },
    )
    .default("true"),
    OptDef::new("config-check-interval", Kind::Seconds, "seconds between checks of config and touch files", |c, e| {
        // Below 50 ms the checks would keep the master busy re-reading files.
        let d = positive_seconds(e)?;
        if d < std::time::Duration::from_millis(50) {
            return Err(ConfigError::at(e, "must be at least 0.05 seconds"));
        }
        c.config_check_interval = d;
        Ok(())
    })
    .default("5"),
    OptDef::new(
        "exit-grace",
        Kind::Seconds,
        "init mode: after the command exits, wait up to this long for its remaining descendants",
        |c, e| seconds(e).map(|d| c.exit_grace = d),
    )
    .default("0"),
    OptDef::new("forward-to-group", Kind::Bool, "init mode: forward signals to the command's process group", |c, e| {
        c.forward_to_group = flag(e);
        Ok(())
    })
    .default("false"),
    OptDef::new(
        "liveness-timeout",
        Kind::Seconds,
        "/livez fails if the main loop does not answer a wake-up within this many seconds",
        |c, e| positive_seconds(e).map(|d| c.liveness_timeout = d),
    )
    .default("0.5"),
];

fn worker_stop_signal(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let sig =
        parse_signal(&e.value).ok_or_else(|| ConfigError::at(e, format!("unknown signal {:?}", e.value.trim())))?;
    if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
        return Err(ConfigError::at(e, "SIGKILL/SIGSTOP cannot be a graceful stop signal"));
    }
    c.worker_stop_signal = Some(sig);
    Ok(())
}
