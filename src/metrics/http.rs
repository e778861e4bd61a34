//! The request metrics of the WSGI workers (read from the scoreboard's
//! request-metrics region at scrape time, see [`crate::scoreboard::http`])
//! and the listening sockets' accept queues (asked of the kernel at
//! scrape time, on the probe thread).
//!
//! Names are part of the contract (DESIGN.md): `podmaster_http_requests_total{code_class}`,
//! `podmaster_http_request_duration_seconds` (histogram),
//! `podmaster_http_requests_in_flight{worker}`, plus
//! `podmaster_http_request_queue_seconds` (histogram: how long a request
//! waited before the app was called) and `podmaster_socket_listen_queue{socket}`
//! / `podmaster_socket_listen_backlog{socket}`.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::master::state::Snapshot;
use crate::scoreboard::http::{CLASSES, Histogram, HttpReader};

/// A histogram read at scrape time, for the encoder.
#[derive(Debug)]
struct ConstHistogram(Histogram);

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        // The encoder adds the buckets up without checking for overflow:
        // make the running total saturate here instead (values are untrusted).
        let mut running = 0u64;
        let buckets: Vec<(f64, u64)> = self
            .0
            .pairs()
            .into_iter()
            .map(|(le, n)| {
                let before = running;
                running = running.saturating_add(n);
                (le, running - before)
            })
            .collect();
        let sum = self.0.sum_us as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, running, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The `podmaster_http_*` families (only when a WSGI app is served).
pub(super) fn encode(enc: &mut DescriptorEncoder, s: &Snapshot, reader: &HttpReader) -> std::fmt::Result {
    if !s.serves_http {
        return Ok(());
    }
    let t = reader.read(s.http_rows_used, &s.http_rows);
    {
        let mut fam = enc.encode_descriptor(
            "podmaster_http_requests",
            "requests the WSGI workers answered, by status class (1xx..5xx; other: 600..999)",
            None,
            MetricType::Counter,
        )?;
        for (class, n) in CLASSES.iter().zip(t.classes) {
            ConstCounter::new(n).encode(fam.encode_family(&[("code_class", *class)])?)?;
        }
    }
    ConstHistogram(t.duration).encode(enc.encode_descriptor(
        "podmaster_http_request_duration",
        "time from a request's head to the end of its response's write, per request answered",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?)?;
    ConstHistogram(t.queue).encode(enc.encode_descriptor(
        "podmaster_http_request_queue",
        "time a request waited from its last bytes' arrival to the app's call (accept queue, busy threads, \
         pipelining); TCP sockets only, at the kernel's clock-tick resolution",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?)?;
    let mut fam = enc.encode_descriptor(
        "podmaster_http_requests_in_flight",
        "requests inside the WSGI app now (or writing their response), per worker slot",
        None,
        MetricType::Gauge,
    )?;
    for (worker, n) in &t.in_flight {
        let id = worker.to_string();
        ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
            .encode(fam.encode_family(&[("worker", id.as_str())])?)?;
    }
    Ok(())
}

/// `podmaster_socket_listen_queue{socket}` and `..._backlog{socket}`: the
/// kernel's accept queue of each listening socket it tells about (TCP;
/// UNIX where the kernel has `unix_diag`).
pub(super) fn listen_queues(enc: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let queues: Vec<(&str, crate::sys::ListenQueue)> =
        s.sockets.iter().filter_map(|sock| Some((sock.name.as_str(), crate::sys::listen_queue(sock.fd)?))).collect();
    let families = [
        ("podmaster_socket_listen_queue", "connections waiting to be accepted on each listening socket now"),
        ("podmaster_socket_listen_backlog", "the most connections each listening socket's accept queue holds"),
    ];
    for (i, (name, help)) in families.into_iter().enumerate() {
        let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (socket, q) in &queues {
            let v = if i == 0 { q.queued } else { q.backlog };
            ConstGauge::new(i64::from(v)).encode(fam.encode_family(&[("socket", *socket)])?)?;
        }
    }
    Ok(())
}
