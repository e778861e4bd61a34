//! `podmaster-worker`: the Python side of podmaster, and the only binary
//! that links libpython. The master execs it (found next to its own
//! executable) as the zygote of each code generation and, with
//! `lazy-apps = true`, once per Python worker; it is not meant to be run by
//! hand. Keeping CPython out of the `podmaster` binary keeps it out of
//! PID 1: no libpython mapped in the process that lives as long as the pod,
//! and `podmaster -- CMD` runs in images with no Python at all.

use std::process::ExitCode;

fn main() -> ExitCode {
    if !podmaster::worker::requested() {
        eprintln!(
            "podmaster-worker: started without a spec from a master; it runs Python workers for podmaster \
             (run podmaster instead)"
        );
        return ExitCode::from(podmaster::exit::CONFIG);
    }
    ExitCode::from(podmaster::worker::python::entry())
}
