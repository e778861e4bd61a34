//! Worker mode: what a process the master execs for a worker slot does.
//! The master passes a [`WorkerSpec`] in the environment; the sockets are
//! already at fds 3.. with `LISTEN_FDS`/`LISTEN_FDNAMES`, and
//! `NOTIFY_SOCKET` names the master's notify socket. Worker mode sets
//! `LISTEN_PID` to its own pid (only the process that uses the fds can know
//! it), then execs the command (`worker-exec`, in `podmaster` itself) or
//! runs the Python override script in an embedded interpreter (in
//! [`PYTHON_WORKER_BIN`], with the zygote: [`python`], [`zygote`]).

pub mod front;
pub mod python;
pub mod statics;
mod wsgi;
pub mod zygote;

pub use crate::handoff::{SPEC_ENV, WorkerSpec};

/// `LISTEN_FDNAMES` encoding; kept here for callers of the old path.
pub use crate::handoff::encode_fdnames as fdnames;

/// The binary that runs Python workers and zygotes (it links libpython;
/// `podmaster` does not), installed next to `podmaster`.
pub const PYTHON_WORKER_BIN: &str = "podmaster-worker";

/// Where [`PYTHON_WORKER_BIN`] is: next to the running executable (the
/// same directory, whatever installed them: `cargo install`, the
/// Dockerfile, a package).
pub fn python_worker_exe() -> Result<std::path::PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot locate the podmaster executable: {e}"))?;
    let exe = me.with_file_name(PYTHON_WORKER_BIN);
    match std::fs::metadata(&exe) {
        Ok(m) if m.is_file() => Ok(exe),
        _ => Err(format!(
            "{} not found next to {}: Python workers run in it; install both binaries (cargo install --path . \
             and the Dockerfile do)",
            exe.display(),
            me.display()
        )),
    }
}

/// True when this process was started by a master as a worker or zygote.
pub fn requested() -> bool {
    std::env::var_os(SPEC_ENV).is_some() || std::env::var_os(crate::handoff::ZYGOTE_ENV).is_some()
}

/// Worker mode in `podmaster` itself: a command worker (`worker-exec`),
/// which needs no Python. Python workers and zygotes are
/// [`PYTHON_WORKER_BIN`]'s; asked for one, this says so and fails.
pub fn run_command() -> u8 {
    if std::env::var_os(crate::handoff::ZYGOTE_ENV).is_some() {
        eprintln!("podmaster: zygote mode runs in {PYTHON_WORKER_BIN}, not in podmaster");
        return crate::exit::SOFTWARE;
    }
    let spec = match take() {
        Ok(s) => s,
        Err(code) => return code,
    };
    match &spec.command {
        Some(argv) => exec_command(spec.id, argv),
        None => {
            tracing::error!(worker = spec.id, "Python workers run in {PYTHON_WORKER_BIN}, not in podmaster");
            crate::exit::SOFTWARE
        }
    }
}

/// Takes the worker spec from the environment, sets up logging, checks
/// the uid and enters `chdir`.
pub(crate) fn take() -> Result<WorkerSpec, u8> {
    let spec = crate::handoff::take_spec().map_err(|e| {
        eprintln!("podmaster: worker: malformed {SPEC_ENV} from the master: {e}");
        crate::exit::CONFIG
    })?;
    crate::logging::init(spec.log_format, &spec.log_level);
    enter(&spec)?;
    Ok(spec)
}

/// Checks the uid the master dropped to and enters `chdir`.
pub(crate) fn enter(spec: &WorkerSpec) -> Result<(), u8> {
    if let Some(uid) = spec.uid {
        let (real, eff) = (nix::unistd::getuid().as_raw(), nix::unistd::geteuid().as_raw());
        if real != uid || eff != uid {
            tracing::error!(worker = spec.id, uid, real, eff, "refusing to run: not running as the configured uid");
            return Err(crate::exit::CONFIG);
        }
    }
    if let Some(dir) = &spec.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            tracing::error!(worker = spec.id, error = %e, "chdir {} failed", dir.display());
            return Err(crate::exit::CONFIG);
        }
    }
    Ok(())
}

/// Replaces this process with a command worker; the sockets, LISTEN_* and
/// NOTIFY_SOCKET are already in place. Returns only on failure, with the
/// shell's codes: 127 not found, 126 not executable.
pub(crate) fn exec_command(id: u32, argv: &[String]) -> u8 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        eprintln!("podmaster: worker {id}: empty command");
        return crate::exit::NOT_FOUND;
    };
    let err = std::process::Command::new(program).args(args).exec();
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => crate::exit::NOT_FOUND,
        _ => crate::exit::NOT_EXECUTABLE,
    };
    eprintln!("podmaster: worker {id}: cannot run {program}: {err}");
    code
}
