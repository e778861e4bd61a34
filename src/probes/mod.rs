//! The probe server: `/livez`, `/readyz`, `/startupz`, `/metrics`,
//! `/status` over HTTP (tiny_http), on its own threads. It reads published
//! snapshots and pings the main loop's heartbeat; it never changes master
//! state. Any other path is 404, any method but GET/HEAD is 405. The
//! network side is [`guard`]: tiny_http only ever sees complete requests.

pub mod guard;

use std::sync::Arc;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::master::state::Shared;

/// A bound probe server, not yet serving (bound early so an address
/// error stops startup before any worker exists).
pub struct ProbeServer {
    listener: std::net::TcpListener,
    server: Server,
    inner: std::os::unix::net::SocketAddr,
    pub address: String,
}

impl ProbeServer {
    /// Binds `address` (host:port) with the same code and backlog as the
    /// worker sockets; std's `TcpListener::bind` would fix the backlog at 128.
    pub fn bind(address: &str, backlog: i32) -> Result<ProbeServer, String> {
        use std::os::linux::net::SocketAddrExt;
        let err = |e: String| format!("probe-socket {address}: cannot listen: {e}");
        let spec = crate::sockets::SocketSpec::parse(address).map_err(err)?;
        if !matches!(spec, crate::sockets::SocketSpec::Tcp { .. }) {
            return Err(err("expected host:port".into()));
        }
        let opts = crate::sockets::BindOptions { backlog, ..Default::default() };
        let (mut ls, _) = crate::sockets::bind_all(&[(address.to_owned(), spec)], &opts, &mut Default::default())
            .map_err(|e| format!("probe-{e}"))?;
        let listener = std::net::TcpListener::from(ls.remove(0).fd);

        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| address.to_owned());
        // tiny_http listens on a private abstract UNIX socket behind the guard.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
        let name = format!("podmaster-probe-{}-{}", std::process::id(), nanos.unwrap_or(0));
        let inner = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("probe server: {e}"))?;
        let unix = std::os::unix::net::UnixListener::bind_addr(&inner).map_err(|e| format!("probe server: {e}"))?;
        let server = Server::from_listener(unix, None).map_err(|e| format!("probe server: {e}"))?;
        Ok(ProbeServer { listener, server, inner, address })
    }

    /// Serves on a new thread. `liveness` is how long `/livez` waits for
    /// the main loop to answer a wake-up (`liveness-timeout`, default 0.5 s:
    /// under kubelet's default 1 s probe timeout, far above a healthy turn).
    pub fn start(
        self,
        shared: Arc<Shared>,
        app: crate::scoreboard::MetricsReader,
        liveness: Duration,
    ) -> std::io::Result<()> {
        let (listener, inner) = (self.listener, self.inner);
        std::thread::Builder::new().name("probe-guard".into()).spawn(move || guard::run(listener, inner))?;
        let server = self.server;
        std::thread::Builder::new().name("probes".into()).spawn(move || {
            let registry = crate::metrics::registry(shared.clone(), app);
            loop {
                // recv only fails if tiny_http's accept loop ended; it accepts
                // from our private socket only, so that does not happen.
                match server.recv() {
                    Ok(req) => respond(req, &shared, &registry, liveness),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
        Ok(())
    }
}

fn text(code: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body).with_status_code(code).with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header is valid")
}

fn respond(req: Request, shared: &Shared, registry: &prometheus_client::registry::Registry, liveness: Duration) {
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    let resp = if !matches!(req.method(), Method::Get | Method::Head) {
        text(405, "method not allowed: probes are read-only (GET, HEAD)\n".into())
            .with_header(header("Allow", "GET, HEAD"))
    } else {
        match path.as_str() {
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
                if req.url().split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "verbose")) {
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
            "/metrics" => Response::from_string(crate::metrics::encode(registry))
                .with_header(header("Content-Type", crate::metrics::CONTENT_TYPE)),
            "/status" => {
                let snap = shared.load();
                let mut v = serde_json::to_value(&*snap).unwrap_or_default();
                // RSS and queues are read here, on the probe thread, not by the master loop.
                for key in ["workers", "transitions"] {
                    if let Some(ws) = v.get_mut(key).and_then(|w| w.as_array_mut()) {
                        for w in ws {
                            let pid = w.get("pid").and_then(|p| p.as_i64()).unwrap_or(0) as i32;
                            let rss =
                                if pid > 0 { crate::sys::rss_bytes(nix::unistd::Pid::from_raw(pid)) } else { None };
                            w["rss"] = rss.unwrap_or(0).into();
                        }
                    }
                }
                if let Some(socks) = v.get_mut("sockets").and_then(|s| s.as_array_mut()) {
                    for s in socks {
                        let fd = s.get("fd").and_then(|f| f.as_i64()).unwrap_or(-1) as i32;
                        if let Some(q) = crate::sys::listen_queue(fd) {
                            s["listen_queue"] = q.into();
                        }
                    }
                }

                Response::from_string(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
                    .with_header(header("Content-Type", "application/json"))
            }
            _ => text(404, format!("not found: {path} (try /livez /readyz /metrics /status)\n")),
        }
    };
    let _ = req.respond(resp);
}
