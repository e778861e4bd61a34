//! The zygote: one per code generation of Python workers. Exec'd by the
//! master as the workers' uid with the workers' fds (sockets, scoreboard)
//! plus its control socket, it initialises CPython once, imports every
//! `shared-import`, runs a full `gc.collect()` then `gc.freeze()` (so the
//! collector of a worker never writes into the pages it shares with the
//! zygote), says `Ready`, and from then on only forks a worker whenever
//! the master asks ([`crate::handoff::Stamp`] in, [`ZygoteReply`] out).
//! It is a factory, not a supervisor: the workers are the master's
//! children (see [`crate::sys::prefork`]).
//!
//! Forking a process that has more than one thread copies locks in
//! unknown states, so the zygote checks it is single-threaded after each
//! import and before each fork, and refuses (exit 78) naming the threads.

use std::os::fd::RawFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use pyo3::prelude::*;

use super::python::{exit_code_of, prepare_sys, shared_imports};
use crate::exit;
use crate::handoff::{CONTROL_MAX, Stamp, ZygoteReply};
use crate::sys::prefork::{ForkError, Forked, fork_worker};

/// How the zygote's loop ended.
pub enum Outcome {
    /// The zygote exits with this code.
    Exit(u8),
    /// This process is a worker just forked, for this slot.
    Worker(Stamp),
}

/// Imports, freezes, then forks on request until the master closes the
/// control socket (EOF: exit 0).
pub fn serve(py: Python<'_>, generation: u64, control: RawFd) -> Outcome {
    let t0 = Instant::now();
    if let Err(e) = prepare_sys(py) {
        return Outcome::Exit(exit_code_of(py, e));
    }
    // The collector is paused while the modules import (CPython's advice
    // for fork servers: an import that builds a large registry would
    // otherwise trigger many full collections on the way); one full
    // collection follows, then the freeze.
    let collector_was_on = match pause_collector(py) {
        Ok(on) => on,
        Err(e) => return Outcome::Exit(exit_code_of(py, e)),
    };
    for module in shared_imports() {
        if let Err(e) = py.import(module.as_str()) {
            tracing::error!(zygote = generation, module = module.as_str(), "shared-import failed (traceback below)");
            return Outcome::Exit(exit_code_of(py, e));
        }
        if let Some(threads) = other_threads(py) {
            refuse_threads(generation, &format!("shared-import {module}"), &threads);
            return Outcome::Exit(exit::CONFIG);
        }
    }
    if let Some(wsgi) = super::python::wsgi_spec() {
        // Imported before forking, as uWSGI does without lazy-apps: every
        // worker shares the app's pages and none imports it again.
        if let Err(e) = super::wsgi::load(py, wsgi) {
            tracing::error!(zygote = generation, "the WSGI app failed to load (traceback below)");
            return Outcome::Exit(exit_code_of(py, e));
        }
        if let Some(threads) = other_threads(py) {
            refuse_threads(generation, "importing the WSGI app", &threads);
            return Outcome::Exit(exit::CONFIG);
        }
    }
    let frozen = match freeze(py, collector_was_on) {
        Ok(n) => n,
        Err(e) => return Outcome::Exit(exit_code_of(py, e)),
    };
    tracing::info!(
        zygote = generation,
        pid = std::process::id(),
        modules = shared_imports().len(),
        frozen_objects = frozen,
        import_s = t0.elapsed().as_secs_f64(),
        "zygote ready"
    );
    if let Err(e) = reply(control, &ZygoteReply::Ready) {
        tracing::error!(
            zygote = generation,
            error = %e,
            "cannot tell the master the zygote is ready: its control socket is gone (closed or replaced by a \
             shared-import module?)"
        );
        return Outcome::Exit(exit::SOFTWARE);
    }
    requests(py, generation, control)
}

/// Forks a worker per request until the master closes the socket.
fn requests(py: Python<'_>, generation: u64, control: RawFd) -> Outcome {
    let mut buf = vec![0u8; CONTROL_MAX];
    loop {
        // Children the app forked and left: not ours to keep as zombies.
        crate::sys::reap_all();
        let n = match py.detach(|| nix::sys::socket::recv(control, &mut buf, MsgFlags::empty())) {
            Ok(0) => return Outcome::Exit(exit::OK),
            Ok(n) => n,
            Err(Errno::EINTR) => {
                // A Python signal handler (the app's, or SIGINT's) runs here.
                if let Err(e) = py.check_signals() {
                    return Outcome::Exit(exit_code_of(py, e));
                }
                continue;
            }
            Err(e) => {
                tracing::error!(zygote = generation, error = %e, "control socket failed; exiting");
                return Outcome::Exit(exit::SOFTWARE);
            }
        };
        let Ok(stamp) = serde_json::from_slice::<Stamp>(&buf[..n]) else {
            let reason = "malformed fork request".to_owned();
            tracing::error!(zygote = generation, "{reason}");
            let _ = reply(control, &ZygoteReply::Refused { reason });
            continue;
        };
        match fork_worker(py) {
            Ok(Forked::Worker) => return Outcome::Worker(stamp),
            Ok(Forked::Zygote(pid)) => {
                if reply(control, &ZygoteReply::Forked { pid: pid.as_raw() }).is_err() {
                    return Outcome::Exit(exit::OK);
                }
            }
            Err(ForkError::Threads(_)) => {
                let threads = other_threads(py).unwrap_or_default();
                let reason =
                    refuse_threads(generation, "code run by the zygote (an import, an at-fork hook)", &threads);
                let _ = reply(control, &ZygoteReply::Refused { reason });
                return Outcome::Exit(exit::CONFIG);
            }
            Err(ForkError::Io(e)) => {
                let reason = format!("fork failed: {e}");
                tracing::error!(zygote = generation, worker = stamp.id, "{reason}");
                let _ = reply(control, &ZygoteReply::Refused { reason });
            }
        }
    }
}

fn reply(control: RawFd, r: &ZygoteReply) -> nix::Result<usize> {
    nix::sys::socket::send(control, &r.encode(), MsgFlags::MSG_NOSIGNAL)
}

/// Pauses the cyclic collector; returns whether it was on.
fn pause_collector(py: Python<'_>) -> PyResult<bool> {
    let gc = py.import("gc")?;
    let on = gc.call_method0("isenabled")?.extract()?;
    gc.call_method0("disable")?;
    Ok(on)
}

/// Full collection, then everything alive moves to the permanent
/// generation (a worker's collections never touch it again), then the
/// collector runs again if it ran before the imports. Returns how many
/// objects were frozen.
fn freeze(py: Python<'_>, enable: bool) -> PyResult<usize> {
    let gc = py.import("gc")?;
    gc.call_method0("collect")?;
    gc.call_method0("freeze")?;
    if enable {
        gc.call_method0("enable")?;
    }
    gc.call_method0("get_freeze_count")?.extract()
}

/// The threads besides this one, by name: Python's (`threading.enumerate`)
/// when the extra threads are Python threads, else the kernel's names.
fn other_threads(py: Python<'_>) -> Option<Vec<String>> {
    let os_threads = crate::sys::thread_names();
    if os_threads.len() <= 1 {
        return None;
    }
    let python_names = || -> PyResult<Vec<String>> {
        let threading = py.import("sys")?.getattr("modules")?.get_item("threading")?;
        let mut names = Vec::new();
        for t in threading.call_method0("enumerate")?.try_iter()? {
            let t = t?;
            if !t.is(threading.call_method0("main_thread")?) {
                names.push(t.getattr("name")?.extract()?);
            }
        }
        Ok(names)
    };
    match python_names() {
        Ok(names) if !names.is_empty() => Some(names),
        _ => Some(os_threads.into_iter().skip(1).collect()),
    }
}

/// Logs the one line that says why the zygote will not fork, and returns it.
fn refuse_threads(generation: u64, culprit: &str, threads: &[String]) -> String {
    let msg = format!(
        "{culprit} left {} thread(s) running ({}); forking a multi-threaded process copies locks in unknown \
         states, so the zygote refuses to fork. Start threads in the worker script, not at import time, or set \
         lazy-apps = true",
        threads.len(),
        threads.join(", ")
    );
    tracing::error!(zygote = generation, "{msg}");
    msg
}
