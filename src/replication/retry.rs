//! [`Retries`]: how long a failing stream waits before trying again, and when its failures
//! are worth a WARN line; [`Jitter`]: how a stream's waits are spread so that the streams of
//! thousands of groups do not all retry at the same instant.
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

/// A stream's own spread of its waits.
///
/// In a host of thousands of groups, the streams of every group to one node fail together
/// (the node died, the one connection to it broke) or find the node reached but not heard
/// together (one beat got through): waits of equal length would retry them all at one instant
/// again, and again at each doubling, a burst of one RPC per group. Each stream lengthens its
/// waits by its own draws instead, from a seed that differs between groups and targets (the
/// group's election seed mixed with the target, see `RaftCore`), and is the same every run.
///
/// Timing is liveness only: a wait is only ever lengthened, never shortened, so no stream
/// retries sooner than it did without the spread.
#[derive(Debug)]
pub(crate) struct Jitter {
    /// SplitMix64's counter: each draw adds the golden gamma and mixes the sum.
    state: u64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// `wait` lengthened by a draw from `[0, wait / 2)`: a wait in `[wait, 1.5 · wait)`.
    pub(crate) fn spread(&mut self, wait: Duration) -> Duration {
        self.spread_below(wait, wait.saturating_add(wait / 2))
    }

    /// `wait` lengthened by a draw, to a wait in `[wait, min(1.5 · wait, ceiling))`; `wait`
    /// itself if `ceiling` is not above it (a wait is never shortened to fit).
    pub(crate) fn spread_below(&mut self, wait: Duration, ceiling: Duration) -> Duration {
        let room = (wait / 2).min(ceiling.saturating_sub(wait));
        let room_ns = u64::try_from(room.as_nanos()).unwrap_or(u64::MAX);
        if room_ns == 0 {
            return wait;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        wait + Duration::from_nanos(crate::engine::splitmix64(self.state) % room_ns)
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

    #[test]
    fn a_spread_wait_is_never_shorter_and_at_most_half_again_as_long() {
        for seed in 0..1000 {
            let mut jitter = Jitter::new(seed);
            for wait in [ms(0), ms(1), ms(75), ms(300), Duration::from_secs(10)] {
                let spread = jitter.spread(wait);
                assert!(spread >= wait, "seed {seed}: {wait:?} became {spread:?}");
                assert!(spread == wait || spread < wait + wait / 2, "seed {seed}: {wait:?} became {spread:?}");
            }
            // A ceiling narrows the spread but never shortens the wait.
            let spread = jitter.spread_below(ms(100), ms(120));
            assert!(spread >= ms(100) && spread < ms(120), "seed {seed}: {spread:?}");
            assert_eq!(jitter.spread_below(ms(100), ms(80)), ms(100));
        }
    }

    /// Review finding F1: the waits of a thousand streams (a thousand groups' streams to one
    /// node) fall on many instants, not one.
    #[test]
    fn streams_with_different_seeds_wait_different_times() {
        let waits: std::collections::BTreeSet<Duration> =
            (0..1000u64).map(|seed| Jitter::new(crate::engine::splitmix64(seed)).spread(ms(300))).collect();
        assert!(waits.len() > 900, "{} distinct waits of 1000", waits.len());
        // The same seed draws the same waits every run.
        let draws = |seed| {
            let mut j = Jitter::new(seed);
            [j.spread(ms(300)), j.spread(ms(600))]
        };
        assert_eq!(draws(42), draws(42));
    }
}
