//! Options about podmaster's own logs (workers get the same settings).

use super::{Kind, OptDef};
use crate::config::{Config, ConfigError, Entry, LogFormat};

/// Table-like (one declaration per option), exempt from the 80-line limit.
pub(super) const OPTIONS: &[OptDef] = &[
    OptDef::new(
        "log-format",
        Kind::Text,
        "log format: text or json (anything else is taken as uWSGI's request-log format: noted, podmaster logs text)",
        |c, e| {
            match e.value.trim() {
                "text" => c.log_format = LogFormat::Text,
                "json" => c.log_format = LogFormat::Json,
                other => {
                    c.log_format = LogFormat::Text;
                    let text = format!(
                        "log-format {other:?} is a uWSGI request-log format: podmaster does not log requests \
                         and logs its own events as text (log-format = text or json)"
                    );
                    c.notices.push((e.key.clone(), e.origin.clone(), text));
                }
            }
            Ok(())
        },
    )
    .aliases(&["logformat"])
    .default("text"),
    OptDef::new(
        "log-level",
        Kind::Text,
        "least severe level logged (error, warn, info, debug, trace); RUST_LOG overrides",
        log_level,
    )
    .default("info"),
];

fn log_level(c: &mut Config, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.trim().to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
        return Err(ConfigError::at(e, format!("expected error, warn, info, debug or trace, found {v:?}")));
    }
    c.log_level = v;
    Ok(())
}
