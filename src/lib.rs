//! podmaster: a container init and process manager for Python services.
//!
//! One binary is PID 1 (or a child subreaper): it binds the listening
//! sockets, forks+execs itself once per worker slot to run a uWSGI
//! `python-worker-override` script in an embedded interpreter, reaps every
//! zombie, and reports readiness and metrics over HTTP.
//!
//! # Layout
//! - `main.rs`: entry; picks master or worker mode, maps errors to exit codes.
//! - [`config`]: the option table, ini reading, CLI, resolution to [`config::Config`].
//! - [`sockets`]: socket specs, binding, the listener table handed to workers.
//! - [`handoff`]: the master↔worker contract: fd layout, environment, `LISTEN_FDNAMES`, worker settings.
//! - [`master`]: the single-threaded main loop over a state machine (process table,
//!   phase, rollout, drain) that acts through an `Os` trait; snapshots for the probes.
//! - [`probes`]: the tiny_http probe server thread (/livez /readyz /metrics /status).
//! - [`metrics`]: prometheus-client collector over master snapshots; classic text or
//!   OpenMetrics by `Accept`.
//! - [`notify`]: the `NOTIFY_SOCKET` protocol (READY=1 / STOPPING=1).
//! - [`scoreboard`]: shared memory between master and workers (board, app metrics).
//! - [`worker`]: worker mode; [`worker::python`] embeds CPython and the `uwsgi` module.
//! - [`init`]: init mode (`-- COMMAND`), a tini-compatible PID 1 for one command.
//! - [`sys`]: process syscalls (spawn, reap, signal, /proc, poll, shared memory); the
//!   fork/exec boundary and the home of `unsafe`.
//! - [`cgroup`]: finding and reading the container's own cgroup (v1 and v2): CPU quota,
//!   memory use and limit, OOM kills, v1 memory thresholds.
//! - [`logging`]: tracing subscriber setup (text or JSON lines).
//! - `test_hooks`: fault injection for the tests; in test builds only.

pub mod cgroup;
pub mod config;
pub mod handoff;
pub mod init;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod notify;
pub mod probe_client;
pub mod probes;
pub mod scoreboard;
pub mod sockets;
pub mod sys;
#[cfg(any(debug_assertions, feature = "test-hooks"))]
pub mod test_hooks;
pub mod worker;

/// Process exit codes (documented in README).
pub mod exit {
    /// Clean drain, or `--help`/`--version`.
    pub const OK: u8 = 0;
    /// The drain finished, but some worker had to be SIGKILLed after
    /// `worker-reload-mercy`.
    pub const KILLED: u8 = 1;
    /// A worker exited before the instance first became ready: the app or
    /// its environment is broken (its own output says why).
    pub const STARTUP_FAILED: u8 = 69;
    /// Internal failure (cannot install signal handlers, cannot fork...).
    pub const SOFTWARE: u8 = 70;
    /// Configuration error (EX_CONFIG): bad option, file, socket or script.
    pub const CONFIG: u8 = 78;
    /// A command could not be executed (found but not executable).
    pub const NOT_EXECUTABLE: u8 = 126;
    /// A command was not found.
    pub const NOT_FOUND: u8 = 127;
}
