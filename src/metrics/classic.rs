//! Prometheus' classic text exposition format (version 0.0.4), made from
//! the OpenMetrics text prometheus-client writes (the crate encodes
//! nothing else). The samples are the same in both formats; the metadata
//! around them is not:
//! - a counter family is named after its samples in classic text
//!   (`# TYPE x_total counter` where OpenMetrics writes `# TYPE x counter`),
//!   and its `x_created` series goes (classic text has none; histograms and
//!   summaries lose theirs too);
//! - an info family becomes a gauge named `x_info`; `unknown` and the
//!   OpenMetrics-only types (stateset, gaugehistogram) become `untyped`;
//! - `# UNIT` and `# EOF` go, and so do exemplars (` # {...} v` after a
//!   value); a timestamp turns from seconds into milliseconds;
//! - HELP text loses OpenMetrics' `\"` escape (classic text escapes only
//!   `\\` and `\n` there and rejects any other escape).
//!
//! Metric names never change: a sample keeps its name and labels byte for
//! byte (label values escape the same way in both formats). This code reads
//! only what the encoder wrote, but still never panics: a line it cannot
//! read passes as it is.

use std::borrow::Cow;
use std::fmt::Write;

/// Classic text for the OpenMetrics exposition `om`.
pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut family = Family { name: "", kind: "unknown" };
    // HELP comes before TYPE, and a counter's HELP takes the name TYPE implies.
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if line == "# EOF" {
            break;
        }
        let pending = help.take();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = Family { name, kind };
            let classic = family.classic_name();
            match pending {
                Some((n, text)) if n == name => write_help(&mut out, &classic, text),
                Some((n, text)) => write_help(&mut out, n, text),
                None => {}
            }
            let _ = writeln!(out, "# TYPE {classic} {}", family.classic_type());
            continue;
        }
        // A HELP that no TYPE follows: an untyped family in both formats.
        if let Some((n, text)) = pending {
            write_help(&mut out, n, text);
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            family = Family { name, kind: "unknown" };
        } else if line.starts_with("# UNIT ") || line.trim().is_empty() {
            continue;
        } else if line.starts_with('#') {
            // Not written by prometheus-client; a comment in classic text too.
            out.push_str(line);
            out.push('\n');
        } else if let Some(sample) = family.sample(line) {
            out.push_str(&sample);
            out.push('\n');
        }
    }
    if let Some((n, text)) = help {
        write_help(&mut out, n, text);
    }
    out
}

/// The family the samples being read belong to (its OpenMetrics name and type).
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
}

impl Family<'_> {
    fn classic_name(&self) -> Cow<'_, str> {
        match self.kind {
            "counter" => format!("{}_total", self.name).into(),
            "info" => format!("{}_info", self.name).into(),
            _ => self.name.into(),
        }
    }

    fn classic_type(&self) -> &'static str {
        match self.kind {
            "counter" => "counter",
            "gauge" | "info" => "gauge",
            "histogram" => "histogram",
            "summary" => "summary",
            _ => "untyped",
        }
    }

    /// A sample line in classic text; None for a series classic text does
    /// not have (`_created`).
    fn sample<'l>(&self, line: &'l str) -> Option<Cow<'l, str>> {
        let Some((name_end, series_end)) = series_end(line) else { return Some(line.into()) };
        let created = line[..name_end].strip_prefix(self.name) == Some("_created");
        if created && matches!(self.kind, "counter" | "histogram" | "summary") {
            return None;
        }
        let rest = &line[series_end..];
        let rest = rest.split_once(" # ").map_or(rest, |(r, _exemplar)| r).trim();
        let Some((value, timestamp)) = rest.split_once(' ') else {
            // The common case, `series value`, is the line as it is.
            return Some(if line[series_end..].strip_prefix(' ') == Some(rest) {
                line.into()
            } else {
                with_value(line, series_end, rest)
            });
        };
        Some(match millis(timestamp.trim()) {
            Some(ms) => format!("{} {value} {ms}", &line[..series_end]).into(),
            None => with_value(line, series_end, value),
        })
    }
}

/// `series value`: the line's series (name and labels) and `value`.
fn with_value<'l>(line: &'l str, series_end: usize, value: &str) -> Cow<'l, str> {
    format!("{} {value}", &line[..series_end]).into()
}

/// Where a sample line's name ends, and where its label set (if any)
/// ends; None when there is no space or closing brace to end them. A `}`
/// or space inside a quoted label value does not count.
fn series_end(line: &str) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let name_end = bytes.iter().position(|b| *b == b'{' || *b == b' ')?;
    if bytes[name_end] == b' ' {
        return Some((name_end, name_end));
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, b) in bytes.iter().enumerate().skip(name_end + 1) {
        match (quoted, escaped, *b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b'}') => return Some((name_end, i + 1)),
            _ => {}
        }
    }
    None
}

/// An OpenMetrics timestamp (seconds, may have a fraction) in classic
/// text's milliseconds; None when it is not a finite number.
fn millis(seconds: &str) -> Option<i64> {
    let ms = (seconds.parse::<f64>().ok()? * 1000.0).round();
    // `as` saturates; the range check keeps a huge value from becoming i64::MAX.
    (ms.is_finite() && ms.abs() < 9e18).then_some(ms as i64)
}

/// `# HELP name text`, the text re-escaped for classic text: OpenMetrics'
/// `\"` becomes `"`, `\\` and `\n` stay, and a backslash that escapes
/// nothing becomes `\\` (classic parsers reject an unknown escape).
fn write_help(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "# HELP {name} ");
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('n') => out.push_str("\\n"),
            Some('\\') => out.push_str("\\\\"),
            Some(other) => {
                out.push_str("\\\\");
                out.push(other);
            }
            None => out.push_str("\\\\"),
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_by_hand() {
        let om = concat!(
            "# HELP podmaster_reloads chain reloads by result\n",
            "# TYPE podmaster_reloads counter\n",
            "podmaster_reloads_total{result=\"ok\"} 2\n",
            "podmaster_reloads_created{result=\"ok\"} 1700000000.5\n",
            "# HELP podmaster_worker_rss_bytes resident memory, \\\"RSS\\\" (a \\\\ and a\\nline)\n",
            "# TYPE podmaster_worker_rss_bytes gauge\n",
            "# UNIT podmaster_worker_rss_bytes bytes\n",
            "podmaster_worker_rss_bytes{worker=\"1\"} 123\n",
            "# HELP podmaster_cgroup_cpu_throttled_seconds time throttled\n",
            "# TYPE podmaster_cgroup_cpu_throttled_seconds counter\n",
            "# UNIT podmaster_cgroup_cpu_throttled_seconds seconds\n",
            "podmaster_cgroup_cpu_throttled_seconds_total 1.5 # {trace_id=\"a\"} 1.0 1700000000\n",
            "# HELP build build information\n",
            "# TYPE build info\n",
            "build_info{version=\"0.1.0\",odd=\"a} b\\\"c\\\\ # {x} 1\"} 1\n",
            "# HELP latency_seconds request latency\n",
            "# TYPE latency_seconds histogram\n",
            "latency_seconds_bucket{le=\"0.1\"} 1\n",
            "latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "latency_seconds_sum 0.3\n",
            "latency_seconds_count 2\n",
            "latency_seconds_created 1700000000.0\n",
            "# HELP thing no type given\n",
            "thing{x=\"y\"} 7 1700000000.25\n",
            "# TYPE mystery unknown\n",
            "mystery NaN\n",
            "# HELP a_lone backslash \\d\n",
            "# EOF\n",
            "after_eof 1\n",
        );
        let want = concat!(
            "# HELP podmaster_reloads_total chain reloads by result\n",
            "# TYPE podmaster_reloads_total counter\n",
            "podmaster_reloads_total{result=\"ok\"} 2\n",
            "# HELP podmaster_worker_rss_bytes resident memory, \"RSS\" (a \\\\ and a\\nline)\n",
            "# TYPE podmaster_worker_rss_bytes gauge\n",
            "podmaster_worker_rss_bytes{worker=\"1\"} 123\n",
            "# HELP podmaster_cgroup_cpu_throttled_seconds_total time throttled\n",
            "# TYPE podmaster_cgroup_cpu_throttled_seconds_total counter\n",
            "podmaster_cgroup_cpu_throttled_seconds_total 1.5\n",
            "# HELP build_info build information\n",
            "# TYPE build_info gauge\n",
            "build_info{version=\"0.1.0\",odd=\"a} b\\\"c\\\\ # {x} 1\"} 1\n",
            "# HELP latency_seconds request latency\n",
            "# TYPE latency_seconds histogram\n",
            "latency_seconds_bucket{le=\"0.1\"} 1\n",
            "latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "latency_seconds_sum 0.3\n",
            "latency_seconds_count 2\n",
            "# HELP thing no type given\n",
            "thing{x=\"y\"} 7 1700000000250\n",
            "# TYPE mystery untyped\n",
            "mystery NaN\n",
            "# HELP a_lone backslash \\\\d\n",
        );
        assert_eq!(from_openmetrics(om), want);
    }

    /// The encoder's own output for the metric kinds it has, so a new
    /// prometheus-client release that writes something else fails here.
    #[test]
    fn what_prometheus_client_writes() {
        use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info};
        use prometheus_client::registry::{Registry, Unit};
        let mut r = Registry::default();
        let spawns = Family::<Vec<(String, String)>, Counter>::default();
        spawns.get_or_create(&vec![("worker".into(), "1".into())]).inc_by(3);
        r.register("podmaster_worker_spawns", "processes started per worker slot", spawns);
        let throttled = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        throttled.inc_by(0.25);
        r.register_with_unit("podmaster_cgroup_cpu_throttled", "time throttled", Unit::Seconds, throttled);
        let rss = Gauge::<i64>::default();
        rss.set(42);
        r.register_with_unit("podmaster_worker_rss", "resident memory", Unit::Bytes, rss);
        r.register("podmaster_build", "build", Info::new(vec![("version".to_owned(), "1\"2".to_owned())]));
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).unwrap();
        assert!(om.ends_with("# EOF\n") && om.contains("# UNIT "), "{om}");
        let want = concat!(
            "# HELP podmaster_worker_spawns_total processes started per worker slot.\n",
            "# TYPE podmaster_worker_spawns_total counter\n",
            "podmaster_worker_spawns_total{worker=\"1\"} 3\n",
            "# HELP podmaster_cgroup_cpu_throttled_seconds_total time throttled.\n",
            "# TYPE podmaster_cgroup_cpu_throttled_seconds_total counter\n",
            "podmaster_cgroup_cpu_throttled_seconds_total 0.25\n",
            "# HELP podmaster_worker_rss_bytes resident memory.\n",
            "# TYPE podmaster_worker_rss_bytes gauge\n",
            "podmaster_worker_rss_bytes 42\n",
            "# HELP podmaster_build_info build.\n",
            "# TYPE podmaster_build_info gauge\n",
            "podmaster_build_info{version=\"1\\\"2\"} 1\n",
        );
        assert_eq!(from_openmetrics(&om), want, "from:\n{om}");
    }

    #[test]
    fn odd_lines_pass_or_go_without_panic() {
        let om = "x{unterminated=\"} 1\n# TYPE\n# HELP\n\n   \n# other comment\nnovalue\nx{a=\"b\"}1\n";
        assert_eq!(
            from_openmetrics(om),
            "x{unterminated=\"} 1\n# TYPE\n# HELP\n# other comment\nnovalue\nx{a=\"b\"} 1\n"
        );
        assert_eq!(from_openmetrics(""), "");
        assert_eq!(from_openmetrics("# EOF\n"), "");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any text, and text made of exposition pieces: no panic, and
            /// no OpenMetrics-only line in the result.
            #[test]
            fn any_text(text in any::<String>(), pieces in proptest::collection::vec(
                "(# (HELP|TYPE|UNIT|EOF) ?)?[a-z_]{0,6}(\\{[a-z]=\"[\"\\\\}{ #a-z]{0,6}\"?\\}?)?( [0-9.e+-]{0,6}){0,3}( # \\{\\} 1)?",
                0..12,
            )) {
                for om in [text, pieces.join("\n")] {
                    let classic = from_openmetrics(&om);
                    prop_assert!(!classic.lines().any(|l| l == "# EOF" || l.starts_with("# UNIT ")), "{}", classic);
                }
            }
        }
    }
}
