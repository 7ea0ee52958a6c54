//! Rate-limited warnings, for what a stranger can trigger at will (refused connections): one
//! line per interval, saying how many were suppressed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one event through per `interval`; counts the others.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(suppressed since the last one)` if this event may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|l| now.duration_since(l) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}
