//! [`Clock`]: where a node reads the time.
//!
//! Every instant RaftCore hands to the Engine, and every send time a replication stream
//! records, is read here, and every deadline the node sleeps until is turned back into the
//! runtime's time here. A node's clock normally *is* the runtime's; the test kit can make one
//! run faster or slower than the others to check what the leader lease assumes about clock
//! drift (`Raft::new_with_clock_rate`, feature `testing`).

use std::time::Duration;

use tokio::time::Instant;

/// A node's clock: the runtime's, or one running at `rate` times its speed since `origin`.
///
/// Invariant: `rate > 0`. With `rate == 1.0` every method is the identity on the runtime's
/// clock, at no cost beyond one comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
    rate: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self { origin: Instant::now(), rate: 1.0 }
    }
}

impl Clock {
    /// A clock that agrees with the runtime's now and then runs `rate` times as fast.
    /// A rate that is not a positive finite number is taken as 1.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn with_rate(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 1.0 };
        Self { origin: Instant::now(), rate }
    }

    /// The time on this node's clock.
    pub(crate) fn now(&self) -> Instant {
        let runtime = Instant::now();
        if self.rate == 1.0 {
            return runtime;
        }
        self.origin + runtime.saturating_duration_since(self.origin).mul_f64(self.rate)
    }

    /// The runtime instant at which this node's clock shows `t`.
    pub(crate) fn runtime_instant(&self, t: Instant) -> Instant {
        if self.rate == 1.0 {
            return t;
        }
        self.origin + t.saturating_duration_since(self.origin).div_f64(self.rate)
    }

    /// Sleep until this node's clock shows `t`.
    ///
    /// A bare [`Sleep`](tokio::time::Sleep), not an `async fn`'s future around one: every task
    /// of an idle group that waits on a timer holds it.
    ///
    /// # Cancel safety
    /// Cancel safe: it only sleeps.
    pub(crate) fn sleep_until(&self, t: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(self.runtime_instant(t))
    }

    /// Sleep for `d` of this node's time.
    ///
    /// # Cancel safety
    /// Cancel safe: it only sleeps.
    pub(crate) async fn sleep(&self, d: Duration) {
        self.sleep_until(self.now() + d).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fast_clock_shows_more_time_and_wakes_on_its_own_time() {
        let fast = Clock::with_rate(1.5);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(Clock::default().now(), start + Duration::from_millis(100));
        let shown = fast.now().saturating_duration_since(start);
        assert!(shown >= Duration::from_millis(149) && shown <= Duration::from_millis(151), "{shown:?}");
        // 150 ms more of the fast clock's time is 100 ms of the runtime's.
        let before = Instant::now();
        fast.sleep(Duration::from_millis(150)).await;
        let slept = Instant::now() - before;
        assert!(slept >= Duration::from_millis(99) && slept <= Duration::from_millis(101), "{slept:?}");
    }

    #[test]
    fn a_nonsense_rate_is_the_runtime_clock() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Clock::with_rate(rate).rate, 1.0);
        }
    }
}
