//! The probe server: `/livez`, `/readyz`, `/startupz`, `/metrics`,
//! `/status` over HTTP, on its own threads. It reads published snapshots
//! and pings the main loop's heartbeat; it never changes master state. Any
//! other path is 404, any method but GET/HEAD is 405.
//!
//! The network side is [`guard`], the only code that reads client bytes.
//! It answers `/readyz` and `/startupz` itself (a snapshot read: no thread
//! switch on kubelet's most frequent probe, which matters when the workers
//! keep every CPU busy) and hands other parsed requests to two handler
//! threads (one for kubelet's `/livez`, which waits for the main loop's
//! heartbeat, one for the rest, so a scrape of a large `/metrics` never
//! queues in front of a probe) over bounded channels; they answer with tiny_http responses serialised into bytes that
//! the guard writes back. There is no internal socket: nothing but the
//! guard reaches the HTTP library, and the thread count is fixed whoever
//! connects. A panic in a handler is caught and answered 500; a panic in
//! the guard restarts it on the same listener.
//!
//! Who sees what: the probe socket is meant for kubelet (`/livez`,
//! `/readyz`, `/startupz`) and Prometheus (`/metrics`); `/status` is for
//! operators and shows pids, states, counters and socket names, never a
//! command's arguments beyond `argv[0]` nor any environment value.

pub mod guard;
mod head;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tiny_http::{HTTPVersion, Header, Response};

use crate::master::state::Shared;
use guard::{Job, Method};

/// The time slice the probe threads ask for: short, so that a probe
/// waking up while workers keep every CPU busy runs within about this
/// long (EEVDF picks the earliest deadline), at the same priority.
const PROBE_SLICE: Duration = Duration::from_micros(100);

/// Why the probe socket cannot be listened on.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSocketError {
    #[error("probe-socket {address}: cannot listen: {source}")]
    Spec { address: String, source: crate::sockets::SpecError },
    #[error("probe-socket {0}: cannot listen: expected host:port")]
    NotTcp(String),
    /// `socket ADDRESS: ...` from binding, shown as `probe-socket ADDRESS: ...`.
    #[error("probe-{0}")]
    Bind(crate::sockets::BindError),
}

/// A bound probe server, not yet serving (bound early so an address
/// error stops startup before any worker exists).
pub struct ProbeServer {
    listener: std::net::TcpListener,
    pub address: String,
}

impl ProbeServer {
    /// Binds `address` (host:port) with the same code and backlog as the
    /// worker sockets; std's `TcpListener::bind` would fix the backlog at 128.
    pub fn bind(address: &str, backlog: i32) -> Result<ProbeServer, ProbeSocketError> {
        let spec = crate::sockets::SocketSpec::parse(address)
            .map_err(|source| ProbeSocketError::Spec { address: address.to_owned(), source })?;
        if !matches!(spec, crate::sockets::SocketSpec::Tcp { .. }) {
            return Err(ProbeSocketError::NotTcp(address.to_owned()));
        }
        let opts = crate::sockets::BindOptions { backlog, ..Default::default() };
        let (mut ls, _) = crate::sockets::bind_all(&[(address.to_owned(), spec)], &opts, &mut Default::default())
            .map_err(ProbeSocketError::Bind)?;
        let listener = std::net::TcpListener::from(ls.remove(0).fd);
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| address.to_owned());
        Ok(ProbeServer { listener, address })
    }

    /// Serves on new threads. `liveness` is how long `/livez` waits for
    /// the main loop to answer a wake-up (`liveness-timeout`, default 0.5 s:
    /// under kubelet's default 1 s probe timeout, far above a healthy turn).
    pub fn start(
        self,
        shared: Arc<Shared>,
        app: crate::scoreboard::MetricsReader,
        liveness: Duration,
    ) -> std::io::Result<()> {
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<guard::Answer>();
        let (wake_rx, wake_tx) = std::os::unix::net::UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let registry = Arc::new(crate::metrics::registry(shared.clone(), app));
        let mut queues = Vec::new();
        for name in ["probes-kubelet", "probes-other"] {
            let (job_tx, jobs) = std::sync::mpsc::sync_channel::<Job>(guard::MAX_CONNS);
            queues.push(job_tx);
            let (answers, wake) = (answer_tx.clone(), wake_tx.try_clone()?);
            let (shared, registry) = (shared.clone(), registry.clone());
            std::thread::Builder::new().name(name.into()).spawn(move || {
                crate::sys::request_short_slice(PROBE_SLICE);
                while let Ok(job) = jobs.recv() {
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        answer(&job.request, &shared, &registry, liveness)
                    }))
                    .unwrap_or_else(|panic| {
                        guard::PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(panic = guard::panic_message(&panic), "probe handler panicked");
                        guard::plain_answer(500, "internal error")
                    });
                    if answers.send((job.token, out)).is_err() {
                        return;
                    }
                    // A full pipe means a wake-up is already pending.
                    let _ = (&wake).write(b"!");
                }
            })?;
        }
        let (others, probes) = (queues.pop().expect("two queues"), queues.pop().expect("two queues"));
        let listener = self.listener;
        let (snap, reg) = (shared.clone(), registry.clone());
        let immediate = Box::new(move |req: &guard::Request| {
            let path = req.target.split('?').next().unwrap_or_default();
            matches!(path, "/readyz" | "/startupz").then(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(req, &snap, &reg, liveness)))
                    .unwrap_or_else(|panic| {
                        guard::PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::error!(panic = guard::panic_message(&panic), "probe answer panicked");
                        guard::plain_answer(500, "internal error")
                    })
            })
        });
        std::thread::Builder::new().name("probe-guard".into()).spawn(move || {
            if !crate::sys::request_short_slice(PROBE_SLICE) {
                tracing::debug!("the kernel takes no slice request (before Linux 6.12); probe threads use the default");
            }
            guard::serve(listener, guard::Channels { probes, others, answers: answer_rx, wake: wake_rx, immediate })
        })?;
        Ok(())
    }
}

/// The serialised answer to one request (tiny_http builds the response).
fn answer(
    req: &guard::Request,
    shared: &Shared,
    registry: &prometheus_client::registry::Registry,
    liveness: Duration,
) -> Vec<u8> {
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    crate::test_hooks::maybe_panic_handler(&req.target);
    // Always Content-Length, never chunked: the body is in memory and the
    // connection closes after it anyway.
    let resp = respond(req, shared, registry, liveness).with_chunked_threshold(usize::MAX);
    let mut out = Vec::with_capacity(512);
    let version = HTTPVersion(req.version.0, req.version.1);
    // Writing into a Vec cannot fail.
    let _ = resp.raw_print(&mut out, version, &[], req.method == Method::Head, None);
    // One request per connection. tiny_http drops a `Connection` header
    // set on a response, so it goes in right after the status line.
    let status_end = out.windows(2).position(|w| w == b"\r\n").map_or(out.len(), |p| p + 2);
    out.splice(status_end..status_end, b"Connection: close\r\n".iter().copied());
    out
}

fn text(code: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body).with_status_code(code).with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header is valid")
}

fn respond(
    req: &guard::Request,
    shared: &Shared,
    registry: &prometheus_client::registry::Registry,
    liveness: Duration,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let url = req.target.as_str();
    let path = url.split('?').next().unwrap_or("");
    {
        match path {
            "/livez" => {
                if !shared.heartbeat.ping(liveness) {
                    text(503, format!("not alive: master loop did not turn within {} ms\n", liveness.as_millis()))
                } else if let Some(why) = &shared.load().crash_loop {
                    text(503, format!("not alive: {why}\n"))
                } else {
                    text(200, "ok: master loop alive\n".into())
                }
            }
            "/readyz" => {
                let snap = shared.load();
                let (ok, mut body) = snap.readiness();
                body.push('\n');
                if url.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "verbose")) {
                    for w in snap.workers.iter().chain(snap.transitions.iter()) {
                        body.push_str(&format!(
                            "worker {} pid {} generation {}: {}\n",
                            w.id, w.pid, w.generation, w.state
                        ));
                    }
                }
                text(if ok { 200 } else { 503 }, body)
            }
            "/startupz" => {
                if shared.load().ever_ready {
                    text(200, "started: the instance has been ready\n".into())
                } else {
                    text(503, "starting: not ready yet\n".into())
                }
            }
            // Classic text unless `Accept` asks for OpenMetrics (a HEAD
            // negotiates alike and gets the same headers); `Vary` tells a
            // cache in between that the answer depends on `Accept`.
            "/metrics" => {
                let format = crate::metrics::Format::negotiate(&req.accept);
                Response::from_string(crate::metrics::encode(registry, format))
                    .with_header(header("Content-Type", format.content_type()))
                    .with_header(header("Vary", "Accept"))
            }
            "/status" => {
                let snap = shared.load();
                let mut v = serde_json::to_value(&*snap).unwrap_or_default();
                // RSS and queues are read here, on the probe thread, not by the master loop.
                for key in ["workers", "transitions", "zygotes"] {
                    if let Some(ws) = v.get_mut(key).and_then(|w| w.as_array_mut()) {
                        for w in ws {
                            let pid = w.get("pid").and_then(|p| p.as_i64()).unwrap_or(0) as i32;
                            let mem = if pid > 0 { crate::sys::memory(nix::unistd::Pid::from_raw(pid)) } else { None };
                            let mem = mem.unwrap_or_default();
                            w["rss"] = mem.rss.into();
                            w["pss"] = mem.pss.into();
                            w["uss"] = mem.uss.into();
                        }
                    }
                }
                if let Some(cg) = &snap.cgroup {
                    v["cgroup"] = cgroup_status(cg);
                }
                if let Some(socks) = v.get_mut("sockets").and_then(|s| s.as_array_mut()) {
                    for s in socks {
                        let fd = s.get("fd").and_then(|f| f.as_i64()).unwrap_or(-1) as i32;
                        if let Some(q) = crate::sys::listen_queue(fd) {
                            s["listen_queue"] = q.queued.into();
                            s["listen_backlog"] = q.backlog.into();
                        }
                    }
                }

                Response::from_string(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
                    .with_header(header("Content-Type", "application/json"))
            }
            _ => text(404, format!("not found: {path} (try /livez /readyz /metrics /status)\n")),
        }
    }
}

/// `/status`'s `cgroup`: what the container's cgroup says now (read here,
/// on the probe thread). Absent values are null.
fn cgroup_status(cg: &crate::cgroup::Cgroup) -> serde_json::Value {
    let m = cg.memory();
    serde_json::json!({
        "path": cg.describe(),
        "cpu_quota_cores": cg.cpu_quota().map(|q| q.cores()),
        "cpu_throttled_seconds": cg.cpu_throttled().map(|t| t.as_secs_f64()),
        "memory_usage": m.map(|m| m.usage),
        "memory_working_set": m.map(|m| m.working_set),
        "memory_limit": m.and_then(|m| m.limit),
        "oom_kills": cg.oom_kills(),
    })
}
