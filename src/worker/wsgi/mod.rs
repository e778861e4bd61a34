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
//! - `observe`: request metrics and the access log, after each response;
//!   `access`: the access log's lines.

mod access;
pub(crate) use access::logvars;
mod call;
mod environ;
mod harakiri;
mod observe;
mod route;
mod supervise;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use pyo3::prelude::*;

use super::front::{self, Listener, Listening, Protocol};
use crate::config::{AppSource, SocketProtocol, WsgiApp};
use crate::handoff::WsgiSpec;

/// One app as loaded: its callable, or (with `need-app = false`) why it
/// failed to load.
pub(super) type Loaded = Result<Py<PyAny>, String>;

/// The apps' callables in the spec's order, loaded once per process (in
/// the zygote they are inherited by every forked worker).
static APPS: OnceLock<Vec<Loaded>> = OnceLock::new();

/// Imports every app and keeps its callable. A failure is the app's
/// exception (its traceback is printed by the caller) — unless
/// `need-app = false`: then the traceback is printed here and that app's
/// requests get 500s. Idempotent.
pub fn load(py: Python<'_>, spec: &WsgiSpec) -> PyResult<()> {
    if APPS.get().is_some() {
        return Ok(());
    }
    let mut apps = Vec::with_capacity(spec.apps.len());
    for m in &spec.apps {
        match load_one(py, &m.app) {
            Ok(app) => apps.push(Ok(app)),
            Err(e) if !spec.need_app => {
                let at = if m.mount.is_empty() { "/" } else { m.mount.as_str() };
                tracing::error!(
                    mount = at,
                    "the WSGI app failed to load; need-app = false: its requests get 500s (traceback below)"
                );
                let why = e.to_string();
                e.print(py);
                apps.push(Err(why));
            }
            Err(e) => return Err(e),
        }
    }
    environ::init(py)?;
    let _ = APPS.set(apps);
    Ok(())
}

/// Imports one app and returns its callable.
fn load_one(py: Python<'_>, app: &WsgiApp) -> PyResult<Py<PyAny>> {
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
    Ok(callable.unbind())
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
    // An explicit source loader: `app.wsgi` (mod_wsgi's and uWSGI's usual
    // name) has no suffix importlib would recognise.
    let loader =
        py.import("importlib.machinery")?.getattr("SourceFileLoader")?.call1((name.as_str(), path_str.as_str()))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("loader", loader)?;
    let spec = util.call_method("spec_from_file_location", (name.as_str(), path_str.as_str()), Some(&kwargs))?;
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
    load(py, spec)?;
    let apps: Vec<Loaded> = APPS
        .get()
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("the WSGI app is not loaded (a bug in podmaster)"))?
        .iter()
        .map(|a| a.as_ref().map(|a| a.clone_ref(py)).map_err(Clone::clone))
        .collect();
    let mounts = spec.apps.iter().map(|m| m.mount.as_bytes().to_vec()).collect();
    let router = route::Router::new(mounts, spec.manage_script_name);
    let listeners = listeners(spec, nsockets).map_err(pyo3::exceptions::PyOSError::new_err)?;
    let drain = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGHUP, signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&drain))
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("signal handler for {sig}: {e}")))?;
    }
    let config =
        front::Config { buffer_size: spec.buffer_size, limit_post: spec.limit_post, ..front::Config::default() };
    let threads = spec.threads.max(1) as usize;
    let budget = supervise::RequestBudget::new(spec.max_requests, spec.max_requests_delta);
    if let Some(limit) = budget.limit() {
        tracing::debug!(
            max_requests = limit,
            "replaced after this many requests (max-requests and this worker's delta)"
        );
    }
    let harakiri = spec.harakiri.map(|limit| start_harakiri(py, limit, spec.harakiri_verbose, &drain)).transpose()?;
    let statics = crate::worker::statics::Statics::open(&spec.static_maps, spec.static_gzip_all, &spec.static_expires)
        .map_err(pyo3::exceptions::PyOSError::new_err)?;
    let access = access::AccessLog::new(&spec.access_log, spec.json_log, super::python::slot_id());
    let observer = observe::Observer::new(super::python::http_row(), access);
    let extras = call::Extras { budget, harakiri, statics, observer };
    let handler = call::WsgiHandler::new(py, apps, router, threads > 1, extras)?;
    // The sockets are listening already (the master bound them): from here
    // a connection waits in the backlog until a thread takes it.
    super::python::notify("READY=1")?;
    tracing::info!(threads, sockets = listeners.len(), "serving the WSGI app");
    let served = py.detach(|| front::serve(&listeners, threads, &handler, &config, &drain));
    access::flush();
    served.map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("serving the WSGI app: {e}")))?;
    tracing::info!("WSGI worker drained; exiting");
    Ok(())
}

/// `harakiri`: registers `faulthandler` for the stack signal (every
/// thread's stack to stderr) and starts the watchdog thread.
fn start_harakiri(
    py: Python<'_>,
    limit: std::time::Duration,
    verbose: bool,
    drain: &Arc<AtomicBool>,
) -> PyResult<Arc<harakiri::Harakiri>> {
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("all_threads", true)?;
    kwargs.set_item("chain", false)?;
    py.import("faulthandler")?.call_method("register", (harakiri::stack_signal(),), Some(&kwargs))?;
    let h = harakiri::Harakiri::new(limit, verbose);
    let (watchdog, drain) = (Arc::clone(&h), Arc::clone(drain));
    std::thread::Builder::new()
        .name("harakiri".into())
        .spawn(move || {
            watchdog.watch(
                |msg| {
                    if let Err(e) = super::python::notify(msg) {
                        tracing::warn!(error = %e, "cannot ask the master for a replacement (harakiri)");
                    }
                },
                &drain,
            )
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot start the harakiri thread: {e}")))?;
    Ok(h)
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
