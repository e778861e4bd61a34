//! The built-in WSGI worker (`module` / `wsgi-file`): loads the app (in
//! the zygote, before forking, as uWSGI does by default; in the worker
//! itself with `lazy-apps`), then serves every socket with the Rust
//! [`front`](super::front) in `threads` threads. Python runs only inside
//! a request: the serving threads wait for connections and read and
//! write sockets with the GIL released, and take it to build `environ`,
//! call the app and pull each chunk of its response.
//!
//! The stop signals (SIGHUP from the master, SIGTERM, SIGINT on a fast
//! stop) set the front's drain flag from a Rust signal handler, so no
//! Python handler can swallow them while the main thread waits in Rust:
//! requests in flight finish, then the worker exits 0.
//!
//! # Layout
//! - this file: loading the app, the listeners, signals, `serve`.
//! - `call`: the [`Handler`](super::front::Handler): `start_response`,
//!   the app's iterable as a streamed body, errors as 500s.
//! - `environ`: PEP 3333's `environ`, `wsgi.input`, `wsgi.file_wrapper`.

mod call;
mod environ;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use pyo3::prelude::*;

use super::front::{self, Listener, Listening, Protocol};
use crate::config::{AppSource, SocketProtocol, WsgiApp};
use crate::handoff::WsgiSpec;

/// The app's callable, loaded once per process (in the zygote it is
/// inherited by every forked worker).
static APP: OnceLock<Py<PyAny>> = OnceLock::new();

/// Imports the app and keeps its callable; a failure is the app's
/// exception (its traceback is printed by the caller). Idempotent.
pub fn load(py: Python<'_>, app: &WsgiApp) -> PyResult<()> {
    if APP.get().is_some() {
        return Ok(());
    }
    let (module, what) = match &app.source {
        AppSource::Module(name) => (py.import(name.as_str())?.into_any(), format!("module {name}")),
        AppSource::File(path) => (load_file(py, path)?, format!("wsgi-file {}", path.display())),
    };
    let callable = module.getattr(app.callable.as_str()).map_err(|_| {
        pyo3::exceptions::PyAttributeError::new_err(format!(
            "{what} has no `{}`: set callable = NAME (the WSGI app's name in it)",
            app.callable
        ))
    })?;
    if !callable.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "`{}` in {what} is not callable: it must be the WSGI app",
            app.callable
        )));
    }
    environ::init(py)?;
    let _ = APP.set(callable.unbind());
    Ok(())
}

/// Loads a Python file as a module, as uWSGI's `wsgi-file` does (under a
/// name of its own, registered in `sys.modules`), with its directory in
/// `sys.path` so that it imports its neighbours.
fn load_file<'py>(py: Python<'py>, path: &std::path::Path) -> PyResult<Bound<'py, PyAny>> {
    let path_str = path.to_string_lossy().into_owned();
    if let Some(dir) = path.parent() {
        py.import("sys")?.getattr("path")?.call_method1("insert", (0, dir.to_string_lossy().into_owned()))?;
    }
    let name: String = path_str.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let name = format!("uwsgi_file_{name}");
    let util = py.import("importlib.util")?;
    let spec = util.call_method1("spec_from_file_location", (name.as_str(), path_str.as_str()))?;
    if spec.is_none() {
        return Err(pyo3::exceptions::PyImportError::new_err(format!("cannot load wsgi-file {path_str}")));
    }
    let module = util.call_method1("module_from_spec", (&spec,))?;
    py.import("sys")?.getattr("modules")?.set_item(name.as_str(), &module)?;
    spec.getattr("loader")?.call_method1("exec_module", (&module,))?;
    Ok(module)
}

/// A worker's life: loads the app if the zygote did not, serves until a
/// stop signal, returns when every request in flight has finished.
pub fn run(py: Python<'_>, spec: &WsgiSpec, nsockets: usize) -> PyResult<()> {
    load(py, &spec.app)?;
    let app = APP
        .get()
        .map(|a| a.clone_ref(py))
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("the WSGI app is not loaded (a bug in podmaster)"))?;
    let listeners = listeners(spec, nsockets).map_err(pyo3::exceptions::PyOSError::new_err)?;
    let drain = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&drain))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("signal handler for {sig}: {e}")))?;
    }
    let config =
        front::Config { buffer_size: spec.buffer_size, limit_post: spec.limit_post, ..front::Config::default() };
    let threads = spec.threads.max(1) as usize;
    let handler = call::WsgiHandler::new(py, app, threads > 1)?;
    // The sockets are listening already (the master bound them): from here
    // a connection waits in the backlog until a thread takes it.
    super::python::notify("READY=1")?;
    tracing::info!(threads, sockets = listeners.len(), "serving the WSGI app");
    let served = py.detach(|| front::serve(&listeners, threads, &handler, &config, &drain));
    served.map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("serving the WSGI app: {e}")))?;
    tracing::info!("WSGI worker drained; exiting");
    Ok(())
}

/// The sockets at fds 3.. as the front's listeners, each with its protocol.
fn listeners(spec: &WsgiSpec, nsockets: usize) -> Result<Vec<Listening>, String> {
    let start = crate::sys::LISTEN_FDS_START;
    let floor = start + nsockets as i32;
    (0..nsockets)
        .map(|i| {
            let fd = crate::sys::dup_inherited(start + i as i32, floor)
                .map_err(|e| format!("listening socket at fd {}: {e}", start + i as i32))?;
            let listener =
                Listener::from_fd(fd).map_err(|e| format!("listening socket at fd {}: {e}", start + i as i32))?;
            let protocol = match spec.protocols.get(i) {
                Some(SocketProtocol::Http) => Protocol::Http,
                Some(SocketProtocol::Uwsgi) | None => Protocol::Uwsgi,
            };
            Ok(Listening { listener, protocol })
        })
        .collect()
}
