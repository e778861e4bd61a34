//! Log setup (tracing + tracing-subscriber): one event per line on stderr,
//! `text` (timestamp, level, message, key=value fields) or `json` (one
//! object per line). `RUST_LOG` filters by level, optionally per target
//! (`warn`, `info,app=debug`: tracing-subscriber's `Targets` syntax, no
//! span or field filters, which would bring a regex engine into PID 1);
//! the default is the `log-level` option (`info`).
//! Each event is formatted into one buffer and written with a single
//! write, so lines from the master and its workers do not interleave.

use tracing_subscriber::filter::Targets;

use crate::config::LogFormat;

/// `level` is the `log-level` option; `RUST_LOG`, when set, wins.
pub fn init(format: LogFormat, level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| parse_filter(&v))
        .or_else(|| parse_filter(level))
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry().with(layer.with_ansi(false).with_filter(filter)).try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_current_span(false).with_filter(filter))
            .try_init(),
    };
}

/// `level` or `target=level` directives, comma-separated; anything else
/// (a bare word would mean "everything of that target, nothing else")
/// makes the whole value invalid, so a typo never silences the log.
fn parse_filter(value: &str) -> Option<Targets> {
    let is_level = |l: &str| l.eq_ignore_ascii_case("off") || l.parse::<tracing::Level>().is_ok();
    let valid = !value.trim().is_empty()
        && value.split(',').all(|d| match d.split_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level.trim()),
            None => is_level(d.trim()),
        });
    if valid { value.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    #[test]
    fn only_levels_and_target_levels_are_filters() {
        for ok in ["info", "WARN", "off", "info,app=debug", "podmaster=trace", " debug "] {
            assert!(parse_filter(ok).is_some(), "{ok:?}");
        }
        for bad in ["", "((not a filter", "app", "app=loud", "=info", "info,", "info;debug"] {
            assert!(parse_filter(bad).is_none(), "{bad:?}");
        }
    }
}
