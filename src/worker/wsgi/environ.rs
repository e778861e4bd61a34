//! PEP 3333's `environ` for one request, and the objects in it:
//! `wsgi.input` (the request body, readable only while the app's call
//! runs: it borrows the connection) and `wsgi.file_wrapper`.
//!
//! Bytes become `str` as PEP 3333 says: each byte is one code point
//! (latin-1), so `PATH_INFO` round-trips with `.encode('latin-1')`.

use std::io::{BufRead, Read};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyModule, PyString, PyTuple};
use std::sync::OnceLock;

use super::route::Routed;
use crate::sys::lend::Loan;
use crate::worker::front::request::cgi_name;
use crate::worker::front::{Protocol, Request, Scheme};

/// `wsgi.file_wrapper`: a small Python class (iterating the file in
/// 64 KiB blocks, closing it with the response), compiled once. When the
/// app returns one wrapping a real file (`fileno()` and `tell()` work, a
/// regular file), the front sends the file with `sendfile` instead of
/// iterating it (`call::respond`).
static FILE_WRAPPER: OnceLock<Py<PyAny>> = OnceLock::new();

const FILE_WRAPPER_SRC: &str = r#"
class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks."""
    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close
    def __iter__(self):
        return self
    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
"#;

/// Compiles what every `environ` shares; called once, when the app loads.
pub(super) fn init(py: Python<'_>) -> PyResult<()> {
    if FILE_WRAPPER.get().is_some() {
        return Ok(());
    }
    let globals = PyDict::new(py);
    globals.set_item("__name__", "podmaster.wsgi")?;
    let code = std::ffi::CString::new(FILE_WRAPPER_SRC).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.run(&code, Some(&globals), None)?;
    let class = globals.get_item("FileWrapper")?.ok_or_else(|| PyValueError::new_err("FileWrapper missing"))?;
    let _ = FILE_WRAPPER.set(class.unbind());
    Ok(())
}

/// `wsgi.file_wrapper`'s class, once loaded.
pub(super) fn file_wrapper(py: Python<'_>) -> Option<&Bound<'_, PyAny>> {
    FILE_WRAPPER.get().map(|c| c.bind(py))
}

/// A `str` whose code points are `bytes` (latin-1 decoding); ASCII, by
/// far the common case, goes straight to Python without a Rust copy.
pub(super) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    if bytes.is_ascii() {
        if let Ok(s) = std::str::from_utf8(bytes) {
            return PyString::new(py, s);
        }
    }
    let s: String = bytes.iter().map(|b| char::from(*b)).collect();
    PyString::new(py, &s)
}

/// The `environ` every request starts from: each key the front always
/// sets, with the values that are the same for every request of the
/// process (the rest are placeholders, replaced per request). Copying it
/// is a copy of a dict whose table is already the right size, and the
/// per-request `set_item`s replace values under interned keys instead of
/// hashing and inserting new ones.
pub(super) fn template(py: Python<'_>, multithread: bool) -> PyResult<Py<PyDict>> {
    let env = PyDict::new(py);
    let none = py.None();
    for key in [
        intern!(py, "REQUEST_METHOD"),
        intern!(py, "SCRIPT_NAME"),
        intern!(py, "PATH_INFO"),
        intern!(py, "QUERY_STRING"),
        intern!(py, "REQUEST_URI"),
        intern!(py, "SERVER_NAME"),
        intern!(py, "SERVER_PORT"),
        intern!(py, "SERVER_PROTOCOL"),
        intern!(py, "REMOTE_ADDR"),
        intern!(py, "REMOTE_PORT"),
        intern!(py, "wsgi.url_scheme"),
        intern!(py, "wsgi.input"),
        intern!(py, "wsgi.errors"),
    ] {
        env.set_item(key, &none)?;
    }
    env.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    // gunicorn's and mod_wsgi's flag: read() ends at the body's end even
    // without CONTENT_LENGTH (a chunked body).
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(intern!(py, "wsgi.multithread"), multithread)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), true)?;
    env.set_item(intern!(py, "wsgi.run_once"), false)?;
    if let Some(fw) = FILE_WRAPPER.get() {
        env.set_item(intern!(py, "wsgi.file_wrapper"), fw.bind(py))?;
    }
    Ok(env.unbind())
}

/// `sys`, for `wsgi.errors` (looked up per request: an app may replace
/// `sys.stderr`).
static SYS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Builds `environ` for `req` as routed to its app, whose body `input`
/// reads, from `template`.
pub(super) fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    req: &Request<'_>,
    routed: &Routed<'_>,
    input: Loan,
) -> PyResult<Bound<'py, PyDict>> {
    let env = template.copy()?;
    // uwsgi: every var nginx sent is the base (as uWSGI does); the fields
    // below, which the front derived from them, agree with it.
    for (k, v) in req.vars.iter() {
        env.set_item(latin1(py, k), latin1(py, v))?;
    }
    let s = |b: &[u8]| latin1(py, b);
    let method = match req.method {
        b"GET" => intern!(py, "GET").clone(),
        b"POST" => intern!(py, "POST").clone(),
        other => s(other),
    };
    env.set_item(intern!(py, "REQUEST_METHOD"), method)?;
    env.set_item(intern!(py, "SCRIPT_NAME"), s(routed.script_name))?;
    env.set_item(intern!(py, "PATH_INFO"), s(routed.path_info))?;
    env.set_item(intern!(py, "QUERY_STRING"), s(req.query_string))?;
    env.set_item(intern!(py, "REQUEST_URI"), s(req.request_uri))?;
    env.set_item(intern!(py, "SERVER_NAME"), s(req.server_name))?;
    env.set_item(intern!(py, "SERVER_PORT"), s(req.server_port))?;
    let protocol = match req.server_protocol {
        b"HTTP/1.1" => intern!(py, "HTTP/1.1").clone(),
        b"HTTP/1.0" => intern!(py, "HTTP/1.0").clone(),
        other => s(other),
    };
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    env.set_item(intern!(py, "REMOTE_ADDR"), s(req.remote_addr))?;
    env.set_item(intern!(py, "REMOTE_PORT"), s(req.remote_port))?;
    headers(py, req, &env)?;
    let scheme = match req.scheme {
        Scheme::Http => intern!(py, "http"),
        Scheme::Https => intern!(py, "https"),
    };
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    super::access::current_id(|id| -> PyResult<()> {
        if let Some(id) = id {
            // The id of this request's access-log line, for the app's own
            // logs; as the header too when the client sent none, which is
            // where request-id middleware looks.
            env.set_item(intern!(py, "podmaster.request_id"), id)?;
            if req.header("x-request-id").is_none() {
                env.set_item(intern!(py, "HTTP_X_REQUEST_ID"), id)?;
            }
        }
        Ok(())
    })?;
    env.set_item(intern!(py, "wsgi.input"), Input { loan: input })?;
    let sys = SYS.get_or_try_init(py, || py.import("sys").map(Bound::unbind))?;
    env.set_item(intern!(py, "wsgi.errors"), sys.bind(py).getattr(intern!(py, "stderr"))?)?;
    Ok(env)
}

/// The header fields as `HTTP_*` (and bare `CONTENT_TYPE`/`CONTENT_LENGTH`),
/// repeated ones joined with ", " (but `CONTENT_LENGTH` is the body's
/// validated length). An HTTP field whose name has `_` is
/// dropped: `X_Token` and `X-Token` would both be `HTTP_X_TOKEN`, and a
/// client must not be able to pass one off as the other behind a proxy
/// that checks only the dash form (nginx drops them too by default).
fn headers(py: Python<'_>, req: &Request<'_>, env: &Bound<'_, PyDict>) -> PyResult<()> {
    let http = req.protocol == Protocol::Http;
    let mut key = Vec::with_capacity(64);
    for (i, (raw, value)) in req.headers.iter().enumerate() {
        if http && raw.contains(&b'_') {
            continue;
        }
        // HTTP: no key the front set before is an `HTTP_*` or `CONTENT_*`
        // one, so a key already there came from an earlier field. uwsgi:
        // the vars put every key there already; look at the fields.
        key.clear();
        let earlier = if http {
            cgi_name(raw, &mut key);
            None
        } else {
            key.extend_from_slice(raw);
            Some(req.headers.iter().take(i).any(|(n, _)| n == raw))
        };
        if http && key == b"CONTENT_LENGTH" {
            // The length the front framed the body by: a repeated field or
            // a list of one repeated value (`5, 5`, RFC 9110 §8.6) is one
            // number to the app, not a string int() refuses.
            env.set_item(intern!(py, "CONTENT_LENGTH"), req.content_length.unwrap_or(0).to_string())?;
            continue;
        }
        let key_str = latin1(py, &key);
        let repeated = match earlier {
            Some(seen) => seen,
            None => env.contains(&key_str)?,
        };
        if repeated {
            let prev: String = env.get_item(&key_str)?.map(|p| p.extract()).transpose()?.unwrap_or_default();
            let joined: String = prev.chars().chain(", ".chars()).chain(value.iter().map(|b| char::from(*b))).collect();
            env.set_item(key_str, joined)?;
        } else {
            env.set_item(key_str, latin1(py, value))?;
        }
    }
    Ok(())
}

/// `wsgi.input`: the request body, read from the connection with the GIL
/// released. Only readable while the app's call runs (the body belongs to
/// the connection); after that every read raises `ValueError`.
#[pyclass(module = "podmaster")]
pub(super) struct Input {
    loan: Loan,
}

/// Reads with the GIL released; `ValueError` once the request is over,
/// `OSError` for a failed read (the front answers the client for it).
fn with_body<R: Send>(
    py: Python<'_>,
    loan: &Loan,
    f: impl FnOnce(&mut (dyn BufRead + Send)) -> std::io::Result<R> + Send,
) -> PyResult<R> {
    match py.detach(|| loan.with(f)) {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(pyo3::exceptions::PyOSError::new_err(format!("reading the request body: {e}"))),
        None => Err(PyValueError::new_err(
            "wsgi.input read after the app's call returned: the request body is readable only during the call",
        )),
    }
}

/// A size argument: None or negative means "all".
fn limit(size: Option<i64>) -> Option<u64> {
    size.and_then(|n| u64::try_from(n).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes (fewer only at the end), or all.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let max = limit(size);
        let data = with_body(py, &self.loan, move |r| {
            let mut out = Vec::new();
            match max {
                Some(n) => r.take(n).read_to_end(&mut out)?,
                None => r.read_to_end(&mut out)?,
            };
            Ok(out)
        })?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readline(size=-1)`: up to and including the next `\n`.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let max = limit(size).unwrap_or(u64::MAX);
        let data = with_body(py, &self.loan, move |r| {
            let mut out = Vec::new();
            r.take(max).read_until(b'\n', &mut out)?;
            Ok(out)
        })?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readlines(hint=-1)`: lines until the end, or until `hint` bytes.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<i64>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint).filter(|h| *h > 0);
        let mut lines = Vec::new();
        let mut total = 0u64;
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len() as u64;
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
