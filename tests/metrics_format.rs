//! `/metrics` content negotiation against a real podmaster: Prometheus'
//! classic text by default, OpenMetrics when `Accept` asks for it (as
//! Prometheus does), the same series in both, HEAD negotiating like GET,
//! and the classic text checked by `promtool check metrics`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "Accept: application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// App metrics too, so their families (a counter already named `_total`,
/// per-worker families) go through the conversion as well.
const APP_METRICS: &str = "metric = name=requests.total,type=counter\nmetric = name=temp,type=gauge";

fn get(inst: &Instance, headers: &[&str]) -> Response {
    http_request(&inst.probe, "GET", "/metrics", headers).expect("GET /metrics")
}

/// The series (name and labels) of every sample line.
fn series(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned())
        .collect()
}

#[test]
fn classic_by_default_openmetrics_when_asked() {
    let inst = Instance::start(&example_script(), 2, 1, APP_METRICS);
    inst.wait_ready();

    let classic = get(&inst, &[]);
    assert_eq!(classic.status, 200);
    assert_eq!(classic.header("Content-Type"), Some(CLASSIC));
    assert_eq!(classic.header("Vary"), Some("Accept"));
    let body = &classic.body;
    assert!(!body.contains("# EOF") && !body.contains("# UNIT"), "{body}");
    assert_eq!(metric(body, "podmaster_workers_accepting"), Some(2.0), "{body}");
    for line in body.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        assert!(kind != "counter" || name.ends_with("_total"), "{line}");
        let help = format!("# HELP {name} ");
        assert!(body.lines().any(|l| l.starts_with(&help)), "no HELP for {name}:\n{body}");
    }
    assert!(body.contains("# TYPE podmaster_reloads_total counter\n"), "{body}");
    assert!(body.contains("# TYPE podmaster_worker_rss_bytes gauge\n"), "{body}");

    let om = get(&inst, &[PROMETHEUS_ACCEPT]);
    assert_eq!(om.status, 200);
    assert_eq!(om.header("Content-Type"), Some(OPENMETRICS));
    assert_eq!(om.header("Vary"), Some("Accept"));
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE podmaster_reloads counter\n"), "{}", om.body);
    assert!(om.body.contains("# UNIT podmaster_worker_rss_bytes bytes\n"), "{}", om.body);

    // The same series in both: only the metadata differs, no name changes.
    assert_eq!(series(body), series(&om.body), "classic:\n{body}\nOpenMetrics:\n{}", om.body);
}

#[test]
fn accept_headers_pick_the_format() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    for (accept, want) in [
        ("Accept: */*", CLASSIC),
        ("Accept: text/plain", CLASSIC),
        ("Accept: application/openmetrics-text", OPENMETRICS),
        ("Accept: application/openmetrics-text; version=1.0.0", OPENMETRICS),
        ("Accept: application/openmetrics-text;q=0, */*", CLASSIC),
        ("Accept: text/plain;q=0.5, application/openmetrics-text;q=0.4", CLASSIC),
        ("Accept: garbage;;;\"", CLASSIC),
    ] {
        let r = get(&inst, &[accept]);
        assert_eq!((r.status, r.header("Content-Type")), (200, Some(want)), "{accept}");
        assert_eq!(r.body.contains("# EOF"), want == OPENMETRICS, "{accept}:\n{}", r.body);
    }
    // Two Accept fields are one list (RFC 9110 5.3).
    let r = get(&inst, &["Accept: text/plain;q=0.5", "Accept: application/openmetrics-text"]);
    assert_eq!(r.header("Content-Type"), Some(OPENMETRICS));
}

#[test]
fn head_negotiates_like_get() {
    let inst = Instance::start(&example_script(), 1, 1, "");
    inst.wait_ready();
    for (headers, want) in [(&[][..], CLASSIC), (&[PROMETHEUS_ACCEPT][..], OPENMETRICS)] {
        let r = http_request(&inst.probe, "HEAD", "/metrics", headers).expect("HEAD /metrics");
        assert_eq!((r.status, r.header("Content-Type")), (200, Some(want)), "{headers:?}");
        assert_eq!(r.header("Vary"), Some("Accept"));
        let length: usize = r.header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
        assert!(length > 0 && r.body.is_empty(), "HEAD: length {length}, body {:?}", r.body);
    }
}

#[test]
#[cfg_attr(not(have_promtool), ignore = "needs promtool: run bash scripts/test-deps.sh")]
fn classic_text_passes_promtool() {
    for extra in ["", APP_METRICS] {
        let inst = Instance::start(&example_script(), 2, 1, extra);
        inst.wait_ready();
        let body = get(&inst, &[]).body;
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = p.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.is_empty(), "promtool ({}) says:\n{said}\non:\n{body}", out.status);
    }
}
