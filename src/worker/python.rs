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
use crate::handoff::{Stamp, ZygoteSpec};
use crate::scoreboard::{Update, WorkerBoard};

/// What the `uwsgi` module functions read; set once, before Python starts
/// (in a zygote: the settings every worker it forks shares).
struct Ctx {
    spec: WorkerSpec,
    notify: Option<String>,
    hostname: String,
}

/// What only a worker has: its slot, generation and scoreboard. Set before
/// the script runs — in an exec'd worker before Python starts, in a forked
/// one right after the fork; never in a zygote.
struct WorkerCtx {
    id: u32,
    numproc: u32,
    is_a_reload: bool,
    /// The shared scoreboard (None if the master did not pass one).
    board: Option<WorkerBoard>,
}

static CTX: OnceLock<Ctx> = OnceLock::new();
static WORKER: OnceLock<WorkerCtx> = OnceLock::new();

fn ctx() -> &'static Ctx {
    CTX.get().expect("uwsgi module used before worker setup")
}

fn worker() -> Option<&'static WorkerCtx> {
    WORKER.get()
}

fn board() -> Option<&'static WorkerBoard> {
    worker()?.board.as_ref()
}

/// This worker's request-metrics row, if the master gave it one.
pub(crate) fn http_row() -> Option<&'static crate::scoreboard::http::HttpRow> {
    board()?.http.as_ref()
}

/// App metric `name`'s value across all workers (`%(metric.NAME)`).
pub(crate) fn metric_value(name: &str) -> Option<i64> {
    board()?.get(name)
}

/// This worker's slot id (0 outside a worker).
pub(crate) fn slot_id() -> u32 {
    worker().map_or(0, |w| w.id)
}

pub(crate) fn notify(msg: &str) -> PyResult<()> {
    if worker().is_none() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "called in the zygote, while a shared-import module was imported: call it from the worker script",
        ));
    }
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
    board().is_some_and(WorkerBoard::draining)
}

fn metric_update(name: &str, op: Update) -> Option<bool> {
    board()?.update(name, op).then_some(true)
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
    board()?.get(name)
}

/// `uwsgi.workers()`: a tuple of dicts, one per worker slot.
#[pyfunction]
fn workers(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyTuple>> {
    let slots = board().map(WorkerBoard::slots).unwrap_or_default();
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
    worker().map_or(0, |w| w.id)
}

#[pyfunction]
fn masterpid() -> i32 {
    ctx().spec.master_pid
}

/// `uwsgi.log(msg)`: one line through podmaster's log formatter, tagged
/// with the worker id.
#[pyfunction]
fn log(msg: &str) {
    tracing::info!(target: "app", worker = worker_id(), "{msg}");
}

/// `str` or `bytes` (as uWSGI takes either), as text (bytes that are not
/// UTF-8 replaced).
fn text_of<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, str>> {
    if let Ok(b) = v.cast::<pyo3::types::PyBytes>() {
        return Ok(String::from_utf8_lossy(b.as_bytes()).into_owned().into());
    }
    Ok(v.extract::<String>()?.into())
}

/// `uwsgi.set_logvar(name, value)`: `%(name)` on this request's access
/// log line (WSGI worker; see `wsgi::logvars`). `str` or `bytes`.
#[pyfunction]
fn set_logvar(name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    super::wsgi::logvars::set(&text_of(name)?, &text_of(value)?);
    Ok(())
}

/// `uwsgi.get_logvar(name)`: what `set_logvar` set for this request, as
/// `bytes` (as uWSGI returns it), or None.
#[pyfunction]
fn get_logvar<'py>(py: Python<'py>, name: &Bound<'_, PyAny>) -> PyResult<Option<Bound<'py, pyo3::types::PyBytes>>> {
    let name = text_of(name)?;
    Ok(super::wsgi::logvars::get(&name, |v| pyo3::types::PyBytes::new(py, v)))
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
        wrap_pyfunction!(set_logvar, m)?,
        wrap_pyfunction!(get_logvar, m)?,
    ] {
        m.add_function(f)?;
    }
    let fds: Vec<i32> = (0..c.spec.sockets.len() as i32).map(|i| crate::sys::LISTEN_FDS_START + i).collect();
    m.add("sockets", PyList::new(py, fds)?)?;
    m.add("numproc", worker().map_or(c.spec.numproc, |w| w.numproc))?;
    m.add("version", env!("CARGO_PKG_VERSION"))?;
    let v: Vec<u32> = env!("CARGO_PKG_VERSION").split('.').filter_map(|p| p.parse().ok()).collect();
    m.add("version_info", pyo3::types::PyTuple::new(py, v)?)?;
    m.add("hostname", c.hostname.as_str())?;
    m.add("started_on", c.spec.started_on)?;
    m.add("is_a_reload", worker().is_some_and(|w| w.is_a_reload))?;
    let opt = PyDict::new(py);
    for (k, v) in &c.spec.opt {
        // Flags (options that are on or off) given as `true` read as True.
        let flag = v == "true"
            && (crate::config::options::uwsgi::ignored(k).is_some()
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

/// `podmaster-worker`'s entry: a zygote, a Python worker (`lazy-apps`),
/// or a command worker; returns the exit code.
pub fn entry() -> u8 {
    if std::env::var_os(crate::handoff::ZYGOTE_ENV).is_some() {
        let z = match crate::handoff::take_zygote_spec() {
            Ok(z) => z,
            Err(e) => {
                eprintln!("podmaster: zygote: malformed {} from the master: {e}", crate::handoff::ZYGOTE_ENV);
                return exit::CONFIG;
            }
        };
        crate::logging::init(z.template.log_format, &z.template.log_level);
        if let Err(code) = super::enter(&z.template) {
            return code;
        }
        return zygote(z);
    }
    let spec = match super::take() {
        Ok(s) => s,
        Err(code) => return code,
    };
    match &spec.command {
        Some(argv) => super::exec_command(spec.id, argv),
        None => run(spec),
    }
}

/// An exec'd worker (`lazy-apps = true`): a cold interpreter, the
/// `shared-import` modules, then the override script. Returns the exit code.
pub fn run(spec: WorkerSpec) -> u8 {
    let id = spec.id;
    let board = match adopt_board(&spec) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let stamp = WorkerCtx { id, numproc: spec.numproc, is_a_reload: spec.is_a_reload, board };
    if let Err(code) = start_interpreter(spec) {
        return code;
    }
    let _ = WORKER.set(stamp);
    let code = Python::attach(|py| {
        let imported = prepare_sys(py)
            .and_then(|()| ctx().spec.shared_imports.iter().try_for_each(|m| py.import(m.as_str()).map(drop)));
        match imported.and_then(|()| run_main(py)) {
            Ok(()) => exit::OK,
            Err(err) => exit_code_of(py, err),
        }
    });
    crate::sys::python::finalize();
    code
}

fn adopt_board(spec: &WorkerSpec) -> Result<Option<WorkerBoard>, u8> {
    match spec.board_fd {
        Some(fd) => WorkerBoard::adopt(fd, spec.id, &spec.metrics, spec.http_row).map(Some).map_err(|e| {
            tracing::error!(worker = spec.id, "{e}");
            exit::SOFTWARE
        }),
        None => Ok(None),
    }
}

/// Sets the shared context and initialises CPython with the `uwsgi`
/// module built in.
fn start_interpreter(spec: WorkerSpec) -> Result<(), u8> {
    let id = spec.id;
    let program = interpreter_program(spec.virtualenv.as_deref()).map_err(|e| {
        tracing::error!(worker = id, "{e}");
        exit::CONFIG
    })?;
    let _ = CTX.set(Ctx {
        notify: std::env::var("NOTIFY_SOCKET").ok(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        spec,
    });
    pyo3::append_to_inittab!(uwsgi);
    crate::sys::python::initialize(program.as_deref()).map_err(|e| {
        tracing::error!(worker = id, "cannot initialise Python: {e}");
        exit::CONFIG
    })
}

/// The zygote: imports once, then forks workers until the master closes
/// the control socket. Returns the zygote's exit code — or, in a worker it
/// forked, runs that worker to its end and returns the worker's.
pub fn zygote(z: ZygoteSpec) -> u8 {
    let generation = z.generation;
    if let Err(code) = start_interpreter(z.template) {
        return code;
    }
    let outcome = Python::attach(|py| super::zygote::serve(py, generation, z.control_fd));
    match outcome {
        super::zygote::Outcome::Exit(code) => {
            crate::sys::python::finalize();
            code
        }
        super::zygote::Outcome::Worker(stamp) => {
            let code = Python::attach(|py| forked_worker(py, stamp, z.control_fd));
            crate::sys::python::finalize();
            code
        }
    }
}

/// Prepares `sys` the way every worker sees it before the script: the
/// `podmaster` alias of the `uwsgi` module, the script's directory and
/// `pythonpath` in `sys.path`.
pub(super) fn prepare_sys(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    sys.getattr("modules")?.set_item("podmaster", py.import("uwsgi")?)?;
    let sys_path = sys.getattr("path")?;
    let script = &ctx().spec.script;
    let dir = script.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    sys_path.call_method1("insert", (0, dir))?;
    for (i, p) in ctx().spec.pythonpath.iter().enumerate() {
        sys_path.call_method1("insert", (i, p.to_string_lossy().into_owned()))?;
    }
    Ok(())
}

/// The modules to import in the zygote, in order.
pub(super) fn shared_imports() -> &'static [String] {
    &ctx().spec.shared_imports
}

/// A worker just forked by the zygote: finish the hand-off (see
/// [`crate::sys::prefork::become_worker`]), become slot `stamp.id`, then
/// run the override script exactly as an exec'd worker does.
fn forked_worker(py: Python<'_>, stamp: Stamp, control_fd: i32) -> u8 {
    let spec = &ctx().spec;
    if let Err(e) = crate::sys::prefork::become_worker(spec.master_pid, control_fd, REPARENT_WITHIN) {
        tracing::error!(worker = stamp.id, "forked worker cannot start: {e}");
        return exit::SOFTWARE;
    }
    crate::sys::prefork::set_cmdline(&format!("podmaster: worker {}", stamp.id));
    // Before anything of the app runs: a master that does not know us (its
    // request failed after the fork) kills us here, before we can serve.
    if let Some(addr) = &ctx().notify {
        if let Err(e) = crate::notify::send(addr, "PODMASTER_FORKED=1") {
            tracing::error!(worker = stamp.id, "cannot reach the master: {e}");
            return exit::SOFTWARE;
        }
    }
    let board = match adopt_board(&WorkerSpec { id: stamp.id, http_row: stamp.http_row, ..spec.clone() }) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let _ = WORKER.set(WorkerCtx { id: stamp.id, numproc: stamp.numproc, is_a_reload: stamp.is_a_reload, board });
    let set_up = || -> PyResult<()> {
        // The C environment and os.environ both (os.environ's setter calls putenv).
        let pid = std::process::id().to_string();
        py.import("os")?.getattr("environ")?.set_item("LISTEN_PID", pid)?;
        // Module attributes fixed when a shared-import imported `uwsgi`.
        let m = py.import("uwsgi")?;
        m.setattr("numproc", stamp.numproc)?;
        m.setattr("is_a_reload", stamp.is_a_reload)?;
        Ok(())
    };
    match set_up().and_then(|()| run_main(py)) {
        Ok(()) => exit::OK,
        Err(err) => exit_code_of(py, err),
    }
}

/// How long a forked worker waits to be re-parented to the master (the
/// intermediate process exits right after forking it: microseconds).
const REPARENT_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

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

/// What a worker runs once set up: the WSGI app (`module`/`wsgi-file`)
/// or the override script.
fn run_main(py: Python<'_>) -> PyResult<()> {
    let spec = &ctx().spec;
    match &spec.wsgi {
        Some(w) => super::wsgi::run(py, w, spec.sockets.len()).inspect_err(|_| {
            tracing::error!("the WSGI worker failed (traceback below)");
        }),
        None => exec_script(py),
    }
}

/// The WSGI apps to load in the zygote, if workers serve them.
pub(super) fn wsgi_spec() -> Option<&'static crate::handoff::WsgiSpec> {
    ctx().spec.wsgi.as_ref()
}

/// Runs the override script as `__main__` with `sys.argv` set.
fn exec_script(py: Python<'_>) -> PyResult<()> {
    let script = &ctx().spec.script;
    let sys = py.import("sys")?;
    let path_str = script.to_string_lossy().into_owned();
    let argv: Vec<&str> =
        std::iter::once(path_str.as_str()).chain(ctx().spec.pyargv.iter().map(String::as_str)).collect();
    sys.setattr("argv", PyList::new(py, argv)?)?;
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
pub(super) fn exit_code_of(py: Python<'_>, err: PyErr) -> u8 {
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
