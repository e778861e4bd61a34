//! The probe server: `/livez`, `/readyz`, `/metrics`, `/status` over HTTP
//! (tiny_http), on its own thread. It reads published snapshots and pings
//! the main loop's heartbeat; it never changes master state. Any other path
//! is 404, any method but GET/HEAD is 405.

use std::sync::Arc;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::master::state::Shared;

/// A bound probe server, not yet serving (bound early so an address
/// error stops startup before any worker exists).
pub struct ProbeServer {
    server: Server,
    pub address: String,
}

impl ProbeServer {
    pub fn bind(address: &str) -> Result<ProbeServer, String> {
        let server = Server::http(address).map_err(|e| format!("probe-socket {address}: cannot listen: {e}"))?;
        let address = server.server_addr().to_string();
        Ok(ProbeServer { server, address })
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
        std::thread::Builder::new().name("probes".into()).spawn(move || {
            let registry = crate::metrics::registry(shared.clone(), app);

            for req in self.server.incoming_requests() {
                respond(req, &shared, &registry, liveness);
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
                let (ok, body) = shared.load().readiness();
                text(if ok { 200 } else { 503 }, body + "\n")
            }
            "/metrics" => Response::from_string(crate::metrics::encode(registry))
                .with_header(header("Content-Type", crate::metrics::CONTENT_TYPE)),
            "/status" => {
                let snap = shared.load();
                let mut v = serde_json::to_value(&*snap).unwrap_or_default();
                // RSS is read here, on the probe thread, not by the master loop.
                if let Some(ws) = v.get_mut("workers").and_then(|w| w.as_array_mut()) {
                    for w in ws {
                        let pid = w.get("pid").and_then(|p| p.as_i64()).unwrap_or(0) as i32;
                        let rss = if pid > 0 { crate::sys::rss_bytes(nix::unistd::Pid::from_raw(pid)) } else { None };
                        w["rss"] = rss.unwrap_or(0).into();
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
