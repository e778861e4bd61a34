//! Starting and stopping the embedded CPython (worker mode only): the two
//! places the worker calls CPython's C API directly, kept here with the
//! rest of the crate's `unsafe`.

use std::ffi::CString;
use std::path::Path;

use pyo3::ffi;

/// Why the interpreter could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("program name {0} holds a NUL byte")]
    Nul(String),
    #[error("setting program name {0}")]
    ProgramName(String),
    /// CPython's own message.
    #[error("{0}")]
    Python(String),
}

/// Initialises CPython as `program` (its `sys.executable`, from which it
/// computes `sys.prefix`), without parsing any command line. Call once, on
/// the thread that will run Python.
pub fn initialize(program: Option<&Path>) -> Result<(), InitError> {
    let program = program
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| InitError::Nul(p.display().to_string())))
        .transpose()?;
    // SAFETY: PyConfig is initialised by CPython before use and cleared on
    // every path; strings passed are NUL-terminated and outlive the calls.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        if let Some(c) = &program {
            let st = ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, c.as_ptr());
            if ffi::PyStatus_Exception(st) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(InitError::ProgramName(c.to_string_lossy().into_owned()));
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
            return Err(InitError::Python(msg));
        }
    }
    Ok(())
}

/// Finalises the interpreter [`initialize`] started; call on the same
/// thread once nothing Python-related runs any more.
pub fn finalize() {
    // SAFETY: the interpreter was initialised by this thread (see above),
    // which holds the GIL; the caller runs no Python after this.
    unsafe {
        ffi::Py_FinalizeEx();
    }
}
