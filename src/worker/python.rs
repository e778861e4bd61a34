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
use crate::exit;

/// What the `uwsgi` module functions read; set once before the script runs.
struct Ctx {
    spec: WorkerSpec,
    notify: Option<String>,
    hostname: String,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

fn ctx() -> &'static Ctx {
    CTX.get().expect("uwsgi module used before worker setup")
}

/// `uwsgi.accepting(flag=True)`: tells the master this worker accepts
/// requests (or, with False, that it stopped).
#[pyfunction]
#[pyo3(signature = (flag = true))]
fn accepting(flag: bool) -> PyResult<()> {
    let Some(addr) = &ctx().notify else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("NOTIFY_SOCKET is not set: not started by podmaster"));
    };
    let msg = if flag { "READY=1" } else { "STOPPING=1" };
    crate::notify::send(addr, msg)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("notify master ({addr}): {e}")))
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
        match opt.get_item(k)? {
            None => opt.set_item(k, v)?,
            Some(prev) => {
                if let Ok(list) = prev.cast::<PyList>() {
                    list.append(v)?;
                } else {
                    opt.set_item(k, PyList::new(py, [prev, v.into_pyobject(py)?.into_any()])?)?;
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
    let _ = CTX.set(Ctx {
        notify: std::env::var("NOTIFY_SOCKET").ok(),
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        spec,
    });
    pyo3::append_to_inittab!(uwsgi);
    if let Err(e) = initialize(program.as_deref()) {
        tracing::error!(worker = id, "cannot initialise Python: {e}");
        return exit::CONFIG;
    }
    let code = Python::attach(|py| match exec_script(py, &script) {
        Ok(()) => exit::OK,
        Err(err) => exit_code_of(py, err),
    });
    // SAFETY: the interpreter was initialised above by this thread, which
    // still holds the GIL; nothing Python-related runs after this.
    unsafe {
        pyo3::ffi::Py_FinalizeEx();
    }
    code
}

/// The executable CPython should believe it is: the virtualenv's python
/// when one is configured (or `VIRTUAL_ENV` is set), else the build's.
fn interpreter_program(venv: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let venv = venv.map(Path::to_path_buf).or_else(|| std::env::var_os("VIRTUAL_ENV").map(PathBuf::from));
    if let Some(v) = venv {
        if !v.is_dir() {
            return Err(format!("virtualenv {}: not a directory", v.display()));
        }
        for name in ["bin/python3", "bin/python"] {
            let p = v.join(name);
            if p.exists() {
                return Ok(Some(p));
            }
        }
        return Err(format!("virtualenv {}: no bin/python3 in it (create it with python3 -m venv)", v.display()));
    }
    let build = env!("PODMASTER_BUILD_PYTHON");
    Ok((!build.is_empty() && Path::new(build).exists()).then(|| PathBuf::from(build)))
}

fn initialize(program: Option<&Path>) -> Result<(), String> {
    use pyo3::ffi;
    // SAFETY: PyConfig is initialised by CPython before use and cleared on
    // every path; strings passed are NUL-terminated and outlive the calls.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        if let Some(p) = program {
            let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            let st = ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, c.as_ptr());
            if ffi::PyStatus_Exception(st) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(format!("setting program name {}", p.display()));
            }
        }
        // Arguments are not parsed as python's command line.
        config.parse_argv = 0;
        let st = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(st) != 0 {
            let msg = if st.err_msg.is_null() {
                "unknown error".to_owned()
            } else {
                std::ffi::CStr::from_ptr(st.err_msg).to_string_lossy().into_owned()
            };
            return Err(msg);
        }
    }
    Ok(())
}

fn exec_script(py: Python<'_>, script: &Path) -> PyResult<()> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;
    modules.set_item("podmaster", py.import("uwsgi")?)?;
    let path_str = script.to_string_lossy().into_owned();
    sys.setattr("argv", PyList::new(py, [path_str.as_str()])?)?;
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
