//! Log setup (tracing + tracing-subscriber): one event per line on stderr,
//! `text` (timestamp, level, message, key=value fields) or `json` (one
//! object per line). `RUST_LOG` filters as usual; the default is `info`.
//! Each event is formatted into one buffer and written with a single
//! write, so lines from the master and its workers do not interleave.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `level` is the `log-level` option; `RUST_LOG`, when set, wins.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}
