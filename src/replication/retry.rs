//! [`Retries`]: how long a failing stream waits before trying again, and when its failures
//! are worth a WARN line.
//!
//! A stream that fails again and again without the follower's match point moving — a
//! follower that keeps conflicting, an unreachable one, a request too big for the transport —
//! backs off exponentially instead of spinning, and says so at WARN once the failures repeat,
//! at most once per [`WARN_EVERY`] with the count of failures logged only at DEBUG since.

use std::time::Duration;

use tokio::time::Instant;

/// The least time between two WARN lines of one stream.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Failures in a row, without progress, before they are logged at WARN.
const WARN_AFTER: u32 = 3;

/// What a failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Wait this long before the next attempt.
    pub(crate) backoff: Duration,
    /// Log this failure at WARN, with this many failures logged at DEBUG since the last WARN;
    /// `None`: log it at DEBUG.
    pub(crate) warn: Option<u64>,
    /// Failures in a row without progress, this one included.
    pub(crate) in_a_row: u32,
}

/// The failure history of one stream.
///
/// Failures count "in a row" until the stream makes progress: the follower's match point
/// rises, or a pipeline gets a `Success` answer ([`succeeded`](Self::succeeded)). Answers to
/// probes and snapshot chunks are no progress: a follower that keeps conflicting, or keeps
/// refusing a snapshot, answers those too.
#[derive(Debug)]
pub(crate) struct Retries<P> {
    /// The progress (the follower's matched log id) when the last failure happened.
    progress_at_failure: Option<P>,
    /// A pipeline answered `Success` since the last failure.
    succeeded: bool,
    in_a_row: u32,
    last_warn: Option<Instant>,
    quiet: u64,
    base: Duration,
    max: Duration,
}

impl<P: PartialOrd + Copy> Retries<P> {
    /// Back off from `base`, doubling up to `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            progress_at_failure: None,
            succeeded: false,
            in_a_row: 0,
            last_warn: None,
            quiet: 0,
            base,
            max: max.max(base),
        }
    }

    /// The stream worked since the last failure (a pipeline answered `Success`): the next
    /// failure is a first one again.
    pub(crate) fn succeeded(&mut self) {
        self.succeeded = true;
    }

    /// An attempt failed at `now` with the follower matched up to `progress`. `immediate_first`:
    /// the first failure after progress is retried at once (a conflict is part of finding the
    /// match point; only a repeated one is a problem).
    pub(crate) fn failed(&mut self, now: Instant, progress: P, immediate_first: bool) -> Verdict {
        let progressed = std::mem::take(&mut self.succeeded) || self.progress_at_failure.is_none_or(|p| progress > p);
        self.progress_at_failure = Some(progress);
        self.in_a_row = if progressed { 1 } else { self.in_a_row.saturating_add(1) };
        let doublings = self.in_a_row.saturating_sub(if immediate_first { 2 } else { 1 });
        let backoff = if immediate_first && self.in_a_row == 1 {
            Duration::ZERO
        } else {
            self.base.saturating_mul(1u32.checked_shl(doublings.min(16)).unwrap_or(u32::MAX)).min(self.max)
        };
        let warn = if self.in_a_row >= WARN_AFTER && self.last_warn.is_none_or(|t| now >= t + WARN_EVERY) {
            self.last_warn = Some(now);
            Some(std::mem::take(&mut self.quiet))
        } else {
            self.quiet += 1;
            None
        };
        Verdict { backoff, warn, in_a_row: self.in_a_row }
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn repeated_failures_without_progress_back_off_and_warn_at_a_bounded_rate() {
        let t0 = Instant::now();
        let mut r = Retries::new(ms(50), ms(300));
        let backoffs: Vec<_> = (0..6).map(|i| r.failed(t0 + ms(i), 7u64, false)).map(|v| v.backoff).collect();
        assert_eq!(backoffs, vec![ms(50), ms(100), ms(200), ms(300), ms(300), ms(300)]);

        let mut r = Retries::new(ms(50), ms(300));
        let warns: Vec<_> = (0..5).map(|_| r.failed(t0, 7u64, false).warn).collect();
        // The third failure in a row warns; the next ones within WARN_EVERY are counted.
        assert_eq!(warns, vec![None, None, Some(2), None, None]);
        assert_eq!(r.failed(t0 + WARN_EVERY, 7, false).warn, Some(2));
    }

    /// Found in review: on an idle cluster the match point never moves, so without this a
    /// healthy follower's rare failures, hours apart, would all back off to the maximum.
    #[test]
    fn a_working_pipeline_in_between_makes_the_next_failure_a_first_one() {
        let t0 = Instant::now();
        let mut r = Retries::new(ms(50), ms(300));
        for _ in 0..5 {
            r.failed(t0, 7u64, false);
        }
        r.succeeded();
        let v = r.failed(t0, 7, false);
        assert_eq!((v.backoff, v.in_a_row), (ms(50), 1));
    }

    #[test]
    fn a_first_conflict_is_retried_at_once_and_progress_resets_the_count() {
        let t0 = Instant::now();
        let mut r = Retries::new(ms(50), ms(300));
        assert_eq!(r.failed(t0, 1u64, true).backoff, Duration::ZERO);
        assert_eq!(r.failed(t0, 1, true).backoff, ms(50));
        assert_eq!(r.failed(t0, 1, true).backoff, ms(100));
        // The follower's match point moved: the next conflict starts over.
        let v = r.failed(t0, 2, true);
        assert_eq!((v.backoff, v.in_a_row), (Duration::ZERO, 1));
    }
}
