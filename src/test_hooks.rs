//! Fault injection for the integration tests. Compiled only into test
//! builds (debug assertions on, as `cargo test` builds the binary) or with
//! the `test-hooks` cargo feature; release builds — the image, `cargo
//! install`, the benchmarks — carry none of it. Each hook is also off
//! unless its environment variable is set.

use std::sync::OnceLock;
use std::time::Duration;

/// `PODMASTER_TEST_PANIC_PROBES=1`: a request for `/test-hooks/panic-guard`
/// panics the probe guard thread, one for `/test-hooks/panic-handler`
/// panics a probe handler thread.
fn probe_panics() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PODMASTER_TEST_PANIC_PROBES").is_some_and(|v| v == "1"))
}

pub fn maybe_panic_guard(head: &[u8]) {
    if probe_panics() && head.starts_with(b"GET /test-hooks/panic-guard ") {
        panic!("test hook: probe guard panic");
    }
}

pub fn maybe_panic_handler(target: &str) {
    if probe_panics() && target == "/test-hooks/panic-handler" {
        panic!("test hook: probe handler panic");
    }
}

/// `PODMASTER_TEST_WEDGE_ON_USR2=SECONDS`: SIGUSR2 blocks the main loop
/// that long (at most 60 s), so tests can prove `/livez` notices a wedged
/// master. A value that is not a finite, non-negative number is ignored
/// with a warning.
pub fn wedge_on_usr2() -> Option<Duration> {
    let raw = std::env::var_os("PODMASTER_TEST_WEDGE_ON_USR2")?;
    match raw.to_str().and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0) {
        Some(s) => Some(Duration::from_secs_f64(s.min(60.0))),
        None => {
            tracing::warn!(value = ?raw, "PODMASTER_TEST_WEDGE_ON_USR2 is not a number of seconds; ignored");
            None
        }
    }
}
