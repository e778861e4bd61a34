//! The WSGI worker's side of request-aware supervision: `max-requests`
//! counted here (one atomic add per request) and reported to the master
//! once, which replaces the worker replacement-first — this worker keeps
//! serving until its replacement accepts, so no request waits for a
//! restart, unlike uWSGI, whose worker exits at the limit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests served against this worker's `max-requests` share.
#[derive(Debug)]
pub(super) struct RequestBudget {
    limit: Option<u64>,
    served: AtomicU64,
}

impl RequestBudget {
    /// `max` plus this worker's random share of `delta` (0..=delta), so
    /// workers started together do not all ask at once.
    pub(super) fn new(max: Option<u64>, delta: u64) -> RequestBudget {
        let jitter = if delta == 0 { 0 } else { seed() % (delta + 1) };
        RequestBudget { limit: max.map(|m| m.saturating_add(jitter)), served: AtomicU64::new(0) }
    }

    /// This worker's limit, if any.
    pub(super) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Counts one request; the one that reaches the limit asks the master
    /// for a replacement (`notify` sends it). Returns whether it asked.
    pub(super) fn served_one(&self, notify: impl FnOnce(&str)) -> bool {
        let Some(limit) = self.limit else { return false };
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if n != limit {
            return false;
        }
        tracing::info!(requests = n, "max-requests reached; asking the master for a replacement");
        notify("PODMASTER_RECYCLE=max-requests");
        true
    }
}

/// A per-process random number: the clock's nanoseconds and the pid.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_once_at_the_limit_with_the_delta_drawn_in_range() {
        let b = RequestBudget::new(Some(3), 0);
        let asked: Vec<bool> =
            (0..6).map(|_| b.served_one(|m| assert_eq!(m, "PODMASTER_RECYCLE=max-requests"))).collect();
        assert_eq!(asked, [false, false, true, false, false, false]);
        assert!(!RequestBudget::new(None, 5).served_one(|_| panic!("no limit")));
        for _ in 0..100 {
            let l = RequestBudget::new(Some(100), 10).limit().unwrap();
            assert!((100..=110).contains(&l), "{l}");
        }
        assert_eq!(RequestBudget::new(Some(u64::MAX), 10).limit(), Some(u64::MAX));
    }
}
