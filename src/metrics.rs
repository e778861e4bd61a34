//! Prometheus exposition of the master's state, encoded by
//! prometheus-client from a snapshot at scrape time (a [`Collector`]), so
//! metric values are derived from the same state as readiness and never
//! stored twice.
//!
//! Two formats from one encoding: prometheus-client writes OpenMetrics
//! text, served to clients whose `Accept` asks for it ([`accept`]);
//! everyone else gets Prometheus' classic text format, converted from it
//! ([`classic`]), which `promtool check metrics` and any older reader accept.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::master::state::{Phase, Shared, Snapshot};

pub mod accept;
pub mod classic;
mod http;

/// Content type of the OpenMetrics text format prometheus-client writes.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of Prometheus' classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition formats `/metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format 0.0.4: the default (what curl, older
    /// scrapers and `promtool check metrics` read).
    Classic,
    /// OpenMetrics 1.0.0 text, for a client whose `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header value asks for (empty: no header).
    pub fn negotiate(accept: &str) -> Format {
        accept::negotiate(accept)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => CLASSIC_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

#[derive(Debug)]
struct MasterCollector {
    shared: Arc<SharedRef>,
    app: crate::scoreboard::MetricsReader,
}

/// `requests` → `podmaster_app_requests`: characters Prometheus does not
/// allow in names become `_`.
pub fn app_metric_name(name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("podmaster_app_{clean}")
}

/// `Shared` holds fds and a condvar and is not `Debug`; this wrapper is.
struct SharedRef(Arc<Shared>);

impl std::fmt::Debug for SharedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A family with one label: `name{label="key"} value` per sample. Counter
/// values are clamped at 0 (an OpenMetrics counter cannot be negative).
fn labelled(
    enc: &mut DescriptorEncoder,
    (name, help, unit): (&str, &str, Option<&prometheus_client::registry::Unit>),
    counter: bool,
    label: &str,
    samples: &[(String, i64)],
) -> std::fmt::Result {
    let kind = if counter { MetricType::Counter } else { MetricType::Gauge };
    let mut fam = enc.encode_descriptor(name, help, unit, kind)?;
    for (key, v) in samples {
        let labels = [(label, key.as_str())];
        let m = fam.encode_family(&labels)?;

        if counter { ConstCounter::new((*v).max(0) as u64).encode(m)? } else { ConstGauge::new(*v).encode(m)? }
    }
    Ok(())
}

fn per_worker<T: Into<i64> + Copy>(pairs: impl Iterator<Item = (u32, T)>) -> Vec<(String, i64)> {
    pairs.map(|(id, v)| (id.to_string(), v.into())).collect()
}

impl Collector for MasterCollector {
    // Table-like and long on purpose: one block per metric family, in the
    // order they are exposed.
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s: Arc<Snapshot> = self.shared.0.load();
        {
            let mut fam = enc.encode_descriptor(
                "podmaster_build_info",
                "podmaster build information; the value is always 1",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1).encode(fam.encode_family(&[("version", s.version)])?)?;
        }
        {
            let mut fam =
                enc.encode_descriptor("podmaster_phase", "1 for the master's current phase", None, MetricType::Gauge)?;
            for p in Phase::ALL {
                ConstGauge::new(i64::from(s.phase == p)).encode(fam.encode_family(&[("phase", p.name())])?)?;
            }
        }
        {
            let mut fam =
                enc.encode_descriptor("podmaster_workers", "worker slots by state", None, MetricType::Gauge)?;
            for state in ["starting", "accepting", "stopping", "down"] {
                let n = s.workers.iter().chain(s.transitions.iter()).filter(|w| w.state == state).count() as i64;
                ConstGauge::new(n).encode(fam.encode_family(&[("state", state)])?)?;
            }
        }
        gauge(&mut enc, "podmaster_workers_accepting", "workers that reported accepting", i64::from(s.accepting()))?;
        gauge(&mut enc, "podmaster_workers_configured", "configured number of workers", i64::from(s.processes))?;
        gauge(&mut enc, "podmaster_ready", "1 when /readyz answers 200", i64::from(s.readiness().0))?;
        labelled(
            &mut enc,
            ("podmaster_worker_spawns", "processes started per worker slot", None),
            true,
            "worker",
            &per_worker(s.workers.iter().map(|w| (w.id, w.spawns_total as i64))),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "podmaster_worker_exits",
                "worker exits per slot and reason (exit_code=N or signal=NAME)",
                None,
                MetricType::Counter,
            )?;
            for w in &s.workers {
                let id = w.id.to_string();
                for (reason, n) in &w.exits {
                    ConstCounter::new(*n)
                        .encode(fam.encode_family(&[("worker", id.as_str()), ("reason", reason.as_str())])?)?;
                }
            }
        }
        let rss = s
            .workers
            .iter()
            .filter(|w| w.pid > 0)
            .filter_map(|w| crate::sys::rss_bytes(nix::unistd::Pid::from_raw(w.pid)).map(|r| (w.id, r as i64)));
        labelled(
            &mut enc,
            (
                "podmaster_worker_rss",
                "resident memory of each worker (read from /proc at scrape time)",
                Some(&prometheus_client::registry::Unit::Bytes),
            ),
            false,
            "worker",
            &per_worker(rss),
        )?;
        // RSS counts shared pages in every process; PSS divides them among
        // the processes sharing them; USS is what only this worker holds.
        {
            let mut fam = enc.encode_descriptor(
                "podmaster_worker_memory",
                "memory of each worker by kind: rss, pss, uss (read from /proc/PID/smaps_rollup at scrape time)",
                Some(&prometheus_client::registry::Unit::Bytes),
                MetricType::Gauge,
            )?;
            for w in s.workers.iter().filter(|w| w.pid > 0) {
                let Some(m) = crate::sys::memory(nix::unistd::Pid::from_raw(w.pid)) else { continue };
                let id = w.id.to_string();
                for (kind, v) in [("rss", m.rss), ("pss", m.pss), ("uss", m.uss)] {
                    ConstGauge::new(v as i64).encode(fam.encode_family(&[("worker", id.as_str()), ("kind", kind)])?)?;
                }
            }
        }
        if s.preforked {
            zygote_metrics(&mut enc, &s)?;
        }
        pod_metrics(&mut enc, &s)?;
        let results = |pairs: &[(&str, u64)]| -> Vec<(String, i64)> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v as i64)).collect()
        };
        labelled(
            &mut enc,
            ("podmaster_reloads", "chain reloads of all workers by result (ok, aborted)", None),
            true,
            "result",
            &results(&[("ok", s.reloads_ok), ("aborted", s.reloads_aborted)]),
        )?;
        labelled(
            &mut enc,
            (
                "podmaster_config_reloads",
                "configuration changes seen by result (ok, failed: invalid or not applicable)",
                None,
            ),
            true,
            "result",
            &results(&[("ok", s.config_reloads_ok), ("failed", s.config_reloads_failed)]),
        )?;
        if let Some(d) = s.drain_seconds {
            ConstGauge::new(d).encode(enc.encode_descriptor(
                "podmaster_drain_seconds",
                "duration of the last drain",
                None,
                MetricType::Gauge,
            )?)?;
        }
        gauge(
            &mut enc,
            "podmaster_crash_loop",
            "1 when a slot exceeded max-failed-starts (/livez fails)",
            i64::from(s.crash_loop.is_some()),
        )?;
        // App metrics from the scoreboard: the total, and per worker slot.
        let ids: Vec<u32> = s.workers.iter().map(|w| w.id).collect();
        for (i, d) in self.app.decls.iter().enumerate() {
            let (total, per) = self.app.values(i, &ids);
            let name = app_metric_name(&d.name);
            let help = format!("app metric {:?} (metric = ...), summed over workers", d.name);
            if d.counter {
                ConstCounter::new(total.max(0) as u64).encode(enc.encode_descriptor(
                    &name,
                    &help,
                    None,
                    MetricType::Counter,
                )?)?;
            } else {
                ConstGauge::new(total).encode(enc.encode_descriptor(&name, &help, None, MetricType::Gauge)?)?;
            }
            let help_w = format!("app metric {:?} per worker slot", d.name);
            let by_worker = format!("{name}_per_worker");
            labelled(&mut enc, (&by_worker, &help_w, None), d.counter, "worker", &per_worker(per.into_iter()))?;
        }
        http::encode(&mut enc, &s, &self.app.http)?;
        http::listen_queues(&mut enc, &s)?;
        ConstCounter::new(s.reaped_orphans).encode(enc.encode_descriptor(
            "podmaster_reaped_orphans",
            "orphaned descendants reaped by the master",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(crate::probes::guard::PANICS.load(std::sync::atomic::Ordering::Relaxed)).encode(
            enc.encode_descriptor(
                "podmaster_probe_panics",
                "panics caught in the probe threads (each answered 500 or followed by a restart of the guard)",
                None,
                MetricType::Counter,
            )?,
        )?;
        Ok(())
    }
}

/// The pod's resources: OOM kills and recycles (always), and what the
/// container's cgroup provides, read at scrape time (absent when it
/// provides nothing: no controller, or no limit).
fn pod_metrics(enc: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    ConstCounter::new(s.oom_kills).encode(enc.encode_descriptor(
        "podmaster_worker_oom_kills",
        "workers killed by the kernel's OOM killer (SIGKILL while the cgroup's oom_kill counter rose)",
        None,
        MetricType::Counter,
    )?)?;
    let recycles: Vec<(String, i64)> = s.recycles.iter().map(|(k, v)| ((*k).to_owned(), *v as i64)).collect();
    labelled(
        enc,
        ("podmaster_worker_recycles", "workers replaced by reason: lifetime, rss, cgroup_memory", None),
        true,
        "reason",
        &recycles,
    )?;
    let Some(cg) = &s.cgroup else { return Ok(()) };
    let bytes = Some(&prometheus_client::registry::Unit::Bytes);
    if let Some(m) = cg.memory() {
        let usage = "the container's memory use minus inactive file cache (kubelet's working set)";
        ConstGauge::new(m.working_set as i64).encode(enc.encode_descriptor(
            "podmaster_cgroup_memory_usage",
            usage,
            bytes,
            MetricType::Gauge,
        )?)?;
        if let Some(limit) = m.limit {
            ConstGauge::new(limit as i64).encode(enc.encode_descriptor(
                "podmaster_cgroup_memory_limit",
                "the container's memory limit",
                bytes,
                MetricType::Gauge,
            )?)?;
        }
    }
    if let Some(q) = cg.cpu_quota() {
        ConstGauge::new(q.cores()).encode(enc.encode_descriptor(
            "podmaster_cgroup_cpu_quota_cores",
            "the container's CPU limit in cores (CFS quota / period)",
            None,
            MetricType::Gauge,
        )?)?;
    }
    if let Some(t) = cg.cpu_throttled() {
        ConstCounter::new(t.as_secs_f64()).encode(enc.encode_descriptor(
            "podmaster_cgroup_cpu_throttled",
            "time the container's processes were throttled by its CPU quota",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Counter,
        )?)?;
    }
    Ok(())
}

/// The zygotes (preforked mode only): restarts, the current one's
/// readiness and generation, and its memory by kind.
fn zygote_metrics(enc: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    ConstCounter::new(s.zygote_restarts).encode(enc.encode_descriptor(
        "podmaster_zygote_restarts",
        "zygotes started again after one died (workers kept serving meanwhile)",
        None,
        MetricType::Counter,
    )?)?;
    let current = s.zygotes.iter().find(|z| z.role == "current");
    gauge(enc, "podmaster_zygote_ready", "1 when the current zygote is ready to fork workers", {
        i64::from(current.is_some_and(|z| z.state == "ready"))
    })?;
    gauge(
        enc,
        "podmaster_zygote_generation",
        "code generation of the current zygote (a chain reload imports a new one)",
        current.map_or(0, |z| z.generation as i64),
    )?;
    let mut fam = enc.encode_descriptor(
        "podmaster_zygote_memory",
        "memory of the current zygote by kind: rss, pss, uss (read from /proc/PID/smaps_rollup at scrape time)",
        Some(&prometheus_client::registry::Unit::Bytes),
        MetricType::Gauge,
    )?;
    if let Some(m) = current.and_then(|z| crate::sys::memory(nix::unistd::Pid::from_raw(z.pid))) {
        for (kind, v) in [("rss", m.rss), ("pss", m.pss), ("uss", m.uss)] {
            ConstGauge::new(v as i64).encode(fam.encode_family(&[("kind", kind)])?)?;
        }
    }
    Ok(())
}

/// A registry whose only collector reads the current snapshot and the
/// app metrics in the scoreboard.
pub fn registry(shared: Arc<Shared>, app: crate::scoreboard::MetricsReader) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(MasterCollector { shared: Arc::new(SharedRef(shared)), app }));
    r
}

/// Encodes the registry in `format` (empty if a collector fails).
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::with_capacity(4096);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    match format {
        Format::OpenMetrics => out,
        Format::Classic => classic::from_openmetrics(&out),
    }
}
