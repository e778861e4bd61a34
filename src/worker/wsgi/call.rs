//! One request through the app: the [`Handler`] the front calls on a
//! serving thread. It takes the GIL to build `environ` and call the app,
//! then once per chunk of the response (the app's iterable becomes a
//! [`ResponseBody::Stream`]); its `close()` is always called, when the
//! response is done or abandoned. `start_response` follows PEP 3333: a
//! second call needs `exc_info`, and re-raises it once the headers are
//! sent. An exception from the app is a 500 with its traceback on stderr;
//! the worker goes on serving.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::Loaded;
use super::environ;
use super::harakiri::{Harakiri, Watched};
use super::observe::Observer;
use super::route::Router;
use super::supervise::RequestBudget;
use crate::sys::lend::lend;
use crate::worker::front::{FileBody, Handler, Outcome, Request, RequestBody, Response, ResponseBody};
use crate::worker::statics::Statics;

/// The front's handler for the WSGI apps.
pub(super) struct WsgiHandler {
    apps: Vec<Loaded>,
    router: Router,
    /// The `environ` each request's is copied from.
    template: Py<PyDict>,
    /// A request for an app that failed to load was logged (once per worker).
    said_unloaded: AtomicBool,
    budget: RequestBudget,
    harakiri: Option<Arc<Harakiri>>,
    statics: Statics,
    observer: Observer,
}

/// What a WSGI worker serves besides the apps.
pub(super) struct Extras {
    pub budget: RequestBudget,
    pub harakiri: Option<Arc<Harakiri>>,
    pub statics: Statics,
    pub observer: Observer,
}

impl WsgiHandler {
    pub(super) fn new(
        py: Python<'_>,
        apps: Vec<Loaded>,
        router: Router,
        multithread: bool,
        extras: Extras,
    ) -> PyResult<WsgiHandler> {
        let Extras { budget, harakiri, statics, observer } = extras;
        let template = environ::template(py, multithread)?;
        let said_unloaded = AtomicBool::new(false);
        Ok(WsgiHandler { apps, router, template, said_unloaded, budget, harakiri, statics, observer })
    }

    /// A 500 for an app that did not load (`need-app = false`).
    fn unloaded(&self, why: &str) -> Response {
        if !self.said_unloaded.swap(true, Ordering::Relaxed) {
            tracing::error!(error = why, "a request for a WSGI app that failed to load: 500 (said once per worker)");
        }
        Response::text(500, "Internal Server Error", "Internal Server Error: the app failed to load")
    }
}

/// Status code, reason phrase and header fields (latin-1 bytes).
type Head = (u16, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// What `start_response` was given, shared with the response's iterator.
#[derive(Default)]
struct Started {
    /// Status code, reason, headers (latin-1 bytes).
    head: Option<Head>,
    /// The head has gone to the client (the first non-empty chunk was
    /// taken): a later `start_response(..., exc_info)` re-raises.
    sent: bool,
    /// Bytes passed to `write()`, sent before the iterable's.
    written: Vec<u8>,
}

type Shared = Arc<Mutex<Started>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Started> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `start_response(status, headers, exc_info=None)`.
#[pyclass(module = "podmaster")]
struct StartResponse {
    state: Shared,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = lock(&self.state);
            match (&exc_info, st.head.is_some(), st.sent) {
                (Some(info), _, true) => return Err(reraise(info)),
                (None, true, _) => {
                    return Err(PyAssertionError::new_err("start_response called a second time without exc_info"));
                }
                _ => {}
            }
        }
        let head = parse_head(status, headers)?;
        lock(&self.state).head = Some(head);
        Ok(Write { state: Arc::clone(&self.state) })
    }
}

/// `exc_info[1]` with its traceback, as the exception to raise.
fn reraise(info: &Bound<'_, PyAny>) -> PyErr {
    match info.get_item(1).and_then(|v| v.call_method1("with_traceback", (info.get_item(2)?,))) {
        Ok(v) => PyErr::from_value(v),
        Err(e) => e,
    }
}

/// The `write(data)` callable `start_response` returns (PEP 3333's
/// imperative API): the bytes go out before the iterable's.
#[pyclass(module = "podmaster")]
struct Write {
    state: Shared,
}

#[pymethods]
impl Write {
    fn __call__(&self, data: &Bound<'_, PyBytes>) {
        lock(&self.state).written.extend_from_slice(data.as_bytes());
    }
}

/// `GET /path` for the harakiri log (with the headers when verbose),
/// bounded: 1 KiB of request line, 8 KiB of headers.
fn describe(req: &Request<'_>, verbose: bool) -> String {
    let text = |b: &[u8], max: usize| String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    let mut out = format!("{} {}", text(req.method, 32), text(req.request_uri, 1024));
    if verbose {
        for (name, value) in req.headers.iter() {
            if out.len() > 9 * 1024 {
                out.push_str("\n...");
                break;
            }
            out.push_str(&format!("\n{}: {}", text(name, 256), text(value, 1024)));
        }
    }
    out
}

/// A streamed response keeps its request watched until it ends.
fn watch_stream(mut resp: Response, watched: Watched) -> Response {
    if let ResponseBody::Stream { chunks, length } = resp.body {
        let mut watched = Some(watched);
        let chunks = chunks.chain(std::iter::from_fn(move || {
            drop(watched.take());
            None
        }));
        resp.body = ResponseBody::Stream { chunks: Box::new(chunks), length };
    }
    resp
}

/// The status line and headers as PEP 3333 gives them: `str`s of latin-1.
fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let not_str = || PyTypeError::new_err("status must be a str like '200 OK'");
    let status = status.cast::<PyString>().map_err(|_| not_str())?;
    let status = status.to_str().map_err(|_| not_str())?;
    let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..=999).contains(c) && code.len() == 3)
        .ok_or_else(|| PyValueError::new_err(format!("status must start with a 3-digit code, found {status:?}")))?;
    let list = headers.cast::<PyList>().map_err(|_| PyTypeError::new_err("headers must be a list of (name, value)"))?;
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let not_pair = || PyTypeError::new_err("each header must be a (str, str) tuple");
        let (name, value): (Bound<'_, PyString>, Bound<'_, PyString>) = item.extract().map_err(|_| not_pair())?;
        let (name, value) = (name.to_str().map_err(|_| not_pair())?, value.to_str().map_err(|_| not_pair())?);
        out.push((bytes_of(name)?, bytes_of(value)?));
    }
    Ok((code, bytes_of(reason)?, out))
}

/// A PEP 3333 "native string" as bytes: latin-1 code points only.
fn bytes_of(s: &str) -> PyResult<Vec<u8>> {
    if s.is_ascii() {
        return Ok(s.as_bytes().to_vec());
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| PyValueError::new_err(format!("not latin-1: {s:?}"))))
        .collect()
}

impl Handler for WsgiHandler {
    /// The serving thread gets its Python thread state once, here, and
    /// keeps it: `Python::attach` on a thread without one makes a thread
    /// state and destroys it again on release — per request, a malloc'd
    /// state, an mmap'd frame stack, and `gettid`.
    fn run_thread(&self, serve: &mut (dyn FnMut() + Send)) {
        Python::attach(|py| py.detach(serve));
    }

    fn call(&self, req: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        self.observer.begin(req);
        // Static files: no Python, not counted against max-requests.
        if let Some(resp) = self.statics.serve(req) {
            return resp;
        }
        let watched = self.harakiri.as_ref().map(|h| h.begin(describe(req, h.verbose()), req.conn_fd));
        let mut resp = self.answer(req, body);
        if let Some(w) = watched {
            // From here the front writes the head: no 504 any more. A
            // streamed body stays watched until its last chunk.
            w.responding();
            resp = watch_stream(resp, w);
        }
        self.budget.served_one(|msg| {
            if let Err(e) = crate::worker::python::notify(msg) {
                tracing::warn!(error = %e, "cannot ask the master for a replacement (max-requests)");
            }
        });
        resp
    }

    fn done(&self, req: &Request<'_>, outcome: &Outcome) {
        self.observer.done(req, outcome);
    }
}

impl WsgiHandler {
    /// The app's response to one request.
    fn answer(&self, req: &Request<'_>, body: &mut RequestBody<'_>) -> Response {
        let routed = self.router.route(req.script_name, &req.path_info);
        let app = match self.apps.get(routed.app) {
            Some(Ok(app)) => app,
            Some(Err(why)) => return self.unloaded(why),
            None => return self.unloaded("no app is loaded"),
        };
        let state: Shared = Arc::default();
        let outcome = lend(body, |loan| {
            Python::attach(|py| -> PyResult<Response> {
                let env = environ::build(py, self.template.bind(py), req, &routed, loan)?;
                let start = Py::new(py, StartResponse { state: Arc::clone(&state) })?;
                let result = app.bind(py).call1((env, start))?;
                respond(result, &state)
            })
        });
        outcome.unwrap_or_else(|err| {
            Python::attach(|py| {
                eprintln!("podmaster: the WSGI app raised an exception; answered 500 (traceback below)");
                err.print(py);
            });
            Response::text(500, "Internal Server Error", "Internal Server Error")
        })
    }
}

/// Pulls the app's iterable up to its first non-empty chunk (a generator
/// may call `start_response` only then), and makes the response: the rest
/// streams through [`Chunks`].
fn respond(result: Bound<'_, PyAny>, state: &Shared) -> PyResult<Response> {
    if let Some(file) = file_of(&result, state) {
        let closer = Closer(Some(result.clone().unbind()));
        let (resp, _) = head_of(state, Vec::new())?;
        drop(closer);
        return Ok(Response { body: ResponseBody::File(file), ..resp });
    }
    // A list or tuple (the usual `[body]`) is already in memory: one
    // body with its Content-Length, as PEP 3333 suggests for len() == 1.
    if result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>() {
        // A plain list or tuple has no close() to call (a subclass may).
        let exact = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
        let closer = Closer((!exact).then(|| result.clone().unbind()));
        let mut body = Vec::new();
        for item in result.try_iter()? {
            let chunk = chunk_of(&item?)?;
            if body.is_empty() {
                body = chunk;
            } else {
                body.extend_from_slice(&chunk);
            }
        }
        let resp = head_of(state, body)?;
        drop(closer);
        return Ok(resp.0.body(resp.1));
    }
    let closer = Closer(Some(result.clone().unbind()));
    let mut iter = result.try_iter()?;
    let mut first = Vec::new();
    let mut ended = true;
    for item in iter.by_ref() {
        let item = item?;
        let chunk = chunk_of(&item)?;
        if !chunk.is_empty() {
            first = chunk;
            ended = false;
            break;
        }
    }
    let (resp, first) = head_of(state, first)?;
    if ended {
        drop(closer);
        return Ok(resp.body(first));
    }
    let rest = Chunks { iter: Some(iter.unbind().into_any()), closer };
    Ok(resp.stream(std::iter::once(Ok(first)).chain(rest), None))
}

/// The file behind a `wsgi.file_wrapper` the app returned, for
/// `sendfile`: only a regular file with a working `fileno()` and `tell()`,
/// and nothing passed to `write()` before it; else None (the wrapper is
/// iterated). The fd is duplicated: the app's `close()` closes its own.
fn file_of(result: &Bound<'_, PyAny>, state: &Shared) -> Option<FileBody> {
    let class = environ::file_wrapper(result.py())?;
    if !result.is_instance(class).unwrap_or(false) || !lock(state).written.is_empty() {
        return None;
    }
    let filelike = result.getattr("filelike").ok()?;
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    let pos: u64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    // SAFETY: `fd` is open (the file object is alive and just gave it);
    // it is only borrowed to duplicate it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().ok()?;
    FileBody::rest_of(std::fs::File::from(owned), pos).ok()
}

/// The response head `start_response` set, and `first` after what the
/// app passed to `write()`; from here the head counts as sent.
fn head_of(state: &Shared, first: Vec<u8>) -> PyResult<(Response, Vec<u8>)> {
    let mut st = lock(state);
    st.sent = true;
    let mut body = std::mem::take(&mut st.written);
    if body.is_empty() {
        body = first;
    } else {
        body.extend_from_slice(&first);
    }
    let (code, reason, headers) =
        st.head.take().ok_or_else(|| PyAssertionError::new_err("the app returned without calling start_response"))?;
    let mut resp = Response::new(code, reason);
    resp.headers = headers;
    Ok((resp, body))
}

/// A chunk of the app's iterable: `bytes` (or another bytes-like object).
fn chunk_of(item: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    item.extract::<Vec<u8>>()
        .map_err(|_| PyTypeError::new_err(format!("the app yielded {}, not bytes", type_name(item))))
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "an object".into())
}

/// Calls the iterable's `close()` when dropped (PEP 3333: always, also
/// when the client went away mid-response).
struct Closer(Option<Py<PyAny>>);

impl Drop for Closer {
    fn drop(&mut self) {
        if let Some(result) = self.0.take() {
            Python::attach(|py| {
                let result = result.bind(py);
                if result.hasattr("close").unwrap_or(false) {
                    if let Err(e) = result.call_method0("close") {
                        eprintln!("podmaster: the WSGI response's close() raised (traceback below)");
                        e.print(py);
                    }
                }
            });
        }
    }
}

/// The rest of the app's iterable, one chunk per `next`, each under the GIL.
struct Chunks {
    iter: Option<Py<PyAny>>,
    closer: Closer,
}

impl Iterator for Chunks {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        let iter = self.iter.as_ref()?;
        let next = Python::attach(|py| -> PyResult<Option<Vec<u8>>> {
            let it = iter.bind(py);
            loop {
                let item = match it.call_method0("__next__") {
                    Ok(item) => item,
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let chunk = chunk_of(&item)?;
                if !chunk.is_empty() {
                    return Ok(Some(chunk));
                }
            }
        });
        match next {
            Ok(Some(chunk)) => Some(Ok(chunk)),
            Ok(None) => {
                self.iter = None;
                // close() now, not when the front drops the iterator.
                drop(Closer(self.closer.0.take()));
                None
            }
            Err(err) => {
                self.iter = None;
                Python::attach(|py| {
                    eprintln!("podmaster: the WSGI app raised while streaming its response (traceback below)");
                    err.print(py);
                });
                Some(Err(io::Error::other("the WSGI app raised while streaming its response")))
            }
        }
    }
}
