//! The embedded CPython of a Python override worker and its `uwsgi`
//! module (also importable as `podmaster`).
//!
//! The interpreter is initialised with a `PyConfig` whose program name is a
//! real Python executable: the one podmaster was built against, or the
//! virtualenv's. CPython derives `sys.prefix`, the stdlib location and
//! virtualenv detection (`pyvenv.cfg`) from it, exactly as for `python3`
//! itself. The override script then runs as `__main__` with `__file__` set.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use super::WorkerSpec;
use crate::config::check_virtualenv;
use crate::exit;
use crate::scoreboard::{Update, WorkerBoard};

/// What the `uwsgi` module functions read; set once before the script runs.
struct Ctx {
    spec: WorkerSpec,
    notify: Option<String>,
    hostname: String,
    /// The shared scoreboard (None if the master did not pass one).
    board: Option<WorkerBoard>,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

fn ctx() -> &'static Ctx {
    CTX.get().expect("uwsgi module used before worker setup")
}

fn notify(msg: &str) -> PyResult<()> {
    let Some(addr) = &ctx().notify else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("NOTIFY_SOCKET is not set: not started by podmaster"));
    };
    crate::notify::send(addr, msg)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("notify master ({addr}): {e}")))
}

/// `uwsgi.accepting(flag=True)`: tells the master this worker accepts
/// requests (or, with False, that it stopped). Safe from any thread.
#[pyfunction]
#[pyo3(signature = (flag = true))]
fn accepting(flag: bool) -> PyResult<()> {
    notify(if flag { "READY=1" } else { "STOPPING=1" })
}

/// `uwsgi.reload()`: asks the master for a graceful chain reload.
#[pyfunction]
fn reload() -> PyResult<bool> {
    notify("PODMASTER_RELOAD=1").map(|_| true)
}

/// `uwsgi.stop()`: asks the master to drain the whole instance.
#[pyfunction]
fn stop() -> PyResult<bool> {
    notify("PODMASTER_STOP=1").map(|_| true)
}

/// True once the master has started a drain (before this worker's stop
/// signal arrives, when drain-delay is set).
#[pyfunction]
fn is_draining() -> bool {
    ctx().board.as_ref().is_some_and(WorkerBoard::draining)
}

fn metric_update(name: &str, op: Update) -> Option<bool> {
    ctx().board.as_ref()?.update(name, op).then_some(true)
}

/// `uwsgi.metric_inc(name, value=1)`: True, or None for an unknown metric.
#[pyfunction]
#[pyo3(signature = (name, value = 1))]
fn metric_inc(name: &str, value: i64) -> Option<bool> {
    metric_update(name, Update::Add(value))
}

#[pyfunction]
#[pyo3(signature = (name, value = 1))]
fn metric_dec(name: &str, value: i64) -> Option<bool> {
    metric_update(name, Update::Add(value.wrapping_neg()))
}

#[pyfunction]
#[pyo3(signature = (name, value = 0))]
fn metric_set(name: &str, value: i64) -> Option<bool> {
    metric_update(name, Update::Set(value))
}

#[pyfunction]
#[pyo3(signature = (name, value = 0))]
fn metric_set_max(name: &str, value: i64) -> Option<bool> {
    metric_update(name, Update::Max(value))
}

#[pyfunction]
#[pyo3(signature = (name, value = 0))]
fn metric_set_min(name: &str, value: i64) -> Option<bool> {
    metric_update(name, Update::Min(value))
}

/// The metric's value over all workers, or None for an unknown metric.
#[pyfunction]
fn metric_get(name: &str) -> Option<i64> {
    ctx().board.as_ref()?.get(name)
}

/// `uwsgi.workers()`: a tuple of dicts, one per worker slot.
#[pyfunction]
fn workers(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyTuple>> {
    let slots = ctx().board.as_ref().map(WorkerBoard::slots).unwrap_or_default();
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        let d = PyDict::new(py);
        d.set_item("id", s.id)?;
        d.set_item("pid", s.pid)?;
        d.set_item("accepting", u8::from(s.accepting))?;
        d.set_item("respawn_count", s.respawn_count)?;
        d.set_item("last_spawn", s.last_spawn)?;
        d.set_item("generation", s.generation)?;
        let rss = if s.pid > 0 { crate::sys::rss_bytes(nix::unistd::Pid::from_raw(s.pid)).unwrap_or(0) } else { 0 };
        d.set_item("rss", rss)?;
        out.push(d);
    }
    pyo3::types::PyTuple::new(py, out)
}

/// `uwsgi.mem()`: (rss, vsz) of this worker, bytes.
#[pyfunction]
fn mem() -> (u64, u64) {
    let (vsz, rss) = crate::sys::own_memory().unwrap_or((0, 0));
    (rss, vsz)
}

/// `uwsgi.setprocname(name)`: the process name `ps -o comm`/`top` show
/// (the kernel keeps 15 bytes).
#[pyfunction]
fn setprocname(name: &str) -> PyResult<()> {
    let short: String = name.chars().filter(|c| *c != '\0').take(15).collect();
    let c = CString::new(short).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    nix::sys::prctl::set_name(&c).map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
}

/// Microseconds since the Unix epoch.
#[pyfunction]
fn micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[pyfunction]
fn worker_id() -> u32 {
    ctx().spec.id
}

#[pyfunction]
fn masterpid() -> i32 {
    ctx().spec.master_pid
}

/// `uwsgi.log(msg)`: one line through podmaster's log formatter, tagged
/// with the worker id.
#[pyfunction]
fn log(msg: &str) {
    tracing::info!(target: "app", worker = ctx().spec.id, "{msg}");
}

#[pymodule]
fn uwsgi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let c = ctx();
    let py = m.py();
    m.add_function(wrap_pyfunction!(accepting, m)?)?;
    m.add_function(wrap_pyfunction!(worker_id, m)?)?;
    m.add_function(wrap_pyfunction!(masterpid, m)?)?;
    m.add_function(wrap_pyfunction!(log, m)?)?;
    for f in [
        wrap_pyfunction!(reload, m)?,
        wrap_pyfunction!(stop, m)?,
        wrap_pyfunction!(is_draining, m)?,
        wrap_pyfunction!(metric_inc, m)?,
        wrap_pyfunction!(metric_dec, m)?,
        wrap_pyfunction!(metric_set, m)?,
        wrap_pyfunction!(metric_set_max, m)?,
        wrap_pyfunction!(metric_set_min, m)?,
        wrap_pyfunction!(metric_get, m)?,
        wrap_pyfunction!(workers, m)?,
        wrap_pyfunction!(mem, m)?,
        wrap_pyfunction!(setprocname, m)?,
        wrap_pyfunction!(micros, m)?,
    ] {
        m.add_function(f)?;
    }
    let fds: Vec<i32> = (0..c.spec.sockets.len() as i32).map(|i| crate::sys::LISTEN_FDS_START + i).collect();
    m.add("sockets", PyList::new(py, fds)?)?;
    m.add("numproc", c.spec.numproc)?;
    m.add("version", env!("CARGO_PKG_VERSION"))?;
    let v: Vec<u32> = env!("CARGO_PKG_VERSION").split('.').filter_map(|p| p.parse().ok()).collect();
    m.add("version_info", pyo3::types::PyTuple::new(py, v)?)?;
    m.add("hostname", c.hostname.as_str())?;
    m.add("started_on", c.spec.started_on)?;
    m.add("is_a_reload", c.spec.is_a_reload)?;
    let opt = PyDict::new(py);
    for (k, v) in &c.spec.opt {
        // Flags (options that are on or off) given as `true` read as True.
        let flag = v == "true"
            && (crate::config::options::HARMLESS.contains(&k.as_str())
                || crate::config::options::lookup(k).is_some_and(|d| d.kind == crate::config::options::Kind::Bool));
        let value = if flag { true.into_pyobject(py)?.to_owned().into_any() } else { v.into_pyobject(py)?.into_any() };
        match opt.get_item(k)? {
            None => opt.set_item(k, value)?,
            Some(prev) => {
                if let Ok(list) = prev.cast::<PyList>() {
                    list.append(value)?;
                } else {
                    opt.set_item(k, PyList::new(py, [prev, value])?)?;
                }
            }
        }
    }
    m.add("opt", opt)?;
    Ok(())
}

/// Runs the override script; returns the worker's exit code.
pub fn run(spec: WorkerSpec) -> u8 {
    let script = spec.script.clone();
    let id = spec.id;
    let program = match interpreter_program(spec.virtualenv.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(worker = id, "{e}");
            return exit::CONFIG;
        }
    };
    let board = match spec.board_fd {
        Some(fd) => match WorkerBoard::adopt(fd, id, &spec.metrics) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(worker = id, "{e}");
                return exit::SOFTWARE;
            }
        },
        None => None,
    };
    let _ = CTX.set(Ctx {
        board,
        notify: std::env::var("NOTIFY_SOCKET").ok(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        spec,
    });
    pyo3::append_to_inittab!(uwsgi);
    if let Err(e) = crate::sys::python::initialize(program.as_deref()) {
        tracing::error!(worker = id, "cannot initialise Python: {e}");
        return exit::CONFIG;
    }
    let code = Python::attach(|py| match exec_script(py, &script) {
        Ok(()) => exit::OK,
        Err(err) => exit_code_of(py, err),
    });
    crate::sys::python::finalize();
    code
}

/// The executable CPython should believe it is: the virtualenv's python
/// when one is configured (or `VIRTUAL_ENV` is set), else the build's.
fn interpreter_program(venv: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let venv = venv.map(Path::to_path_buf).or_else(|| std::env::var_os("VIRTUAL_ENV").map(PathBuf::from));
    if let Some(v) = venv {
        return check_virtualenv(&v).map(Some).map_err(|e| format!("virtualenv {e}"));
    }
    let build = env!("PODMASTER_BUILD_PYTHON");
    Ok((!build.is_empty() && Path::new(build).exists()).then(|| PathBuf::from(build)))
}

fn exec_script(py: Python<'_>, script: &Path) -> PyResult<()> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;
    modules.set_item("podmaster", py.import("uwsgi")?)?;
    let path_str = script.to_string_lossy().into_owned();
    let argv: Vec<&str> =
        std::iter::once(path_str.as_str()).chain(ctx().spec.pyargv.iter().map(String::as_str)).collect();
    sys.setattr("argv", PyList::new(py, argv)?)?;

    let sys_path = sys.getattr("path")?;
    let dir = script.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    sys_path.call_method1("insert", (0, dir))?;
    for (i, p) in ctx().spec.pythonpath.iter().enumerate() {
        sys_path.call_method1("insert", (i, p.to_string_lossy().into_owned()))?;
    }
    let source = std::fs::read(script).map_err(|e| {
        pyo3::exceptions::PyOSError::new_err(format!("cannot read worker script {}: {e}", script.display()))
    })?;
    let main = py.import("__main__")?;
    let globals = main.dict();
    globals.set_item("__file__", path_str.as_str())?;
    let builtins = py.import("builtins")?;
    let code = builtins.getattr("compile")?.call1((PyBytes::new(py, &source), path_str.as_str(), "exec"))?;
    builtins.getattr("exec")?.call1((code, globals))?;
    Ok(())
}

/// Maps a Python exception that ended the script to an exit code, the way
/// the `python3` command does: `SystemExit(None|int|other)`, Ctrl-C → 130,
/// anything else prints its traceback and gives 1.
fn exit_code_of(py: Python<'_>, err: PyErr) -> u8 {
    if err.is_instance_of::<PySystemExit>(py) {
        let code = err.value(py).getattr("code").ok();
        return match code {
            None => exit::OK,
            Some(c) if c.is_none() => exit::OK,
            Some(c) => match c.extract::<i64>() {
                Ok(n) => (n & 0xff) as u8,
                Err(_) => {
                    eprintln!("{}", c.str().map(|s| s.to_string()).unwrap_or_default());
                    1
                }
            },
        };
    }
    if err.is_instance_of::<PyKeyboardInterrupt>(py) {
        return 130;
    }
    err.print(py);
    1
}
