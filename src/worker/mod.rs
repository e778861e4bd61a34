//! Worker mode: what the podmaster binary does when the master execs it for
//! a worker slot. The master passes a [`WorkerSpec`] in the environment;
//! the sockets are already at fds 3.. with `LISTEN_FDS`/`LISTEN_FDNAMES`,
//! and `NOTIFY_SOCKET` names the master's notify socket. Worker mode sets
//! `LISTEN_PID` to its own pid (only the process that uses the fds can know
//! it), then runs the Python override script in an embedded interpreter.

pub mod python;
pub mod zygote;

pub use crate::handoff::{SPEC_ENV, WorkerSpec};

/// `LISTEN_FDNAMES` encoding; kept here for callers of the old path.
pub use crate::handoff::encode_fdnames as fdnames;

/// True when this process was started by a master as a worker or zygote.
pub fn requested() -> bool {
    std::env::var_os(SPEC_ENV).is_some() || std::env::var_os(crate::handoff::ZYGOTE_ENV).is_some()
}

/// Runs worker (or zygote) mode; returns the process exit code.
pub fn run() -> u8 {
    if std::env::var_os(crate::handoff::ZYGOTE_ENV).is_some() {
        return run_zygote();
    }
    let spec = match crate::handoff::take_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("podmaster: worker: malformed {SPEC_ENV} from the master: {e}");
            return crate::exit::CONFIG;
        }
    };
    crate::logging::init(spec.log_format, &spec.log_level);
    if let Err(code) = enter(&spec) {
        return code;
    }
    match &spec.command {
        Some(argv) => exec_command(spec.id, argv),
        None => python::run(spec),
    }
}

/// The zygote of one code generation (see [`zygote`]).
fn run_zygote() -> u8 {
    let z = match crate::handoff::take_zygote_spec() {
        Ok(z) => z,
        Err(e) => {
            eprintln!("podmaster: zygote: malformed {} from the master: {e}", crate::handoff::ZYGOTE_ENV);
            return crate::exit::CONFIG;
        }
    };
    crate::logging::init(z.template.log_format, &z.template.log_level);
    if let Err(code) = enter(&z.template) {
        return code;
    }
    python::zygote(z)
}

/// Checks the uid the master dropped to and enters `chdir`.
fn enter(spec: &WorkerSpec) -> Result<(), u8> {
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
fn exec_command(id: u32, argv: &[String]) -> u8 {
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
