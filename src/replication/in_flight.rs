//! [`InFlight`]: the requests of one pipeline that were sent and not yet answered.
//!
//! An answer names only the last log id of the request it answers (`Success { matched }`).
//! To know which request that is — its send time and heartbeat round are what the answer
//! proves — no two requests in flight may end at the same log id: a request without new
//! entries (a heartbeat) is sent only when nothing is in flight. Then `matched` identifies
//! exactly one request, and an answer can never lend its proof to a request sent after the
//! one it answers.

use std::collections::VecDeque;

use crate::RaftTypeConfig;
use crate::engine::Ack;
use crate::types::LogId;

/// One request sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent<C: RaftTypeConfig> {
    last_log_id: Option<LogId<C>>,
    ack: Ack,
    bytes: u64,
}

/// What an answer acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The answer is for the request that ended at `matched`: what it proves.
    Request(Ack),
    /// No request in flight ends at `matched`: a late or repeated answer to a request
    /// already acknowledged. It proves nothing new.
    Nothing,
    /// `matched` is beyond every request sent: the follower is confused, or the answer is not
    /// from this stream.
    NeverSent,
}

/// The requests of one pipeline in flight, in send order, each ending at a greater log id.
#[derive(Debug)]
pub(crate) struct InFlight<C: RaftTypeConfig> {
    sent: VecDeque<Sent<C>>,
    bytes: u64,
}

impl<C: RaftTypeConfig> Default for InFlight<C> {
    fn default() -> Self {
        Self { sent: VecDeque::new(), bytes: 0 }
    }
}

impl<C: RaftTypeConfig> InFlight<C> {
    pub(crate) fn len(&self) -> usize {
        self.sent.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Hand back the memory of an empty queue (a stream that goes quiet for long).
    pub(crate) fn release_capacity(&mut self) {
        debug_assert!(self.sent.is_empty(), "only an empty queue is released");
        self.sent.shrink_to_fit();
    }

    /// Bytes of entries in flight.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a request ending at `last_log_id` may be sent now: it must end beyond every
    /// request in flight, so that its answer identifies it.
    pub(crate) fn may_send(&self, last_log_id: Option<LogId<C>>) -> bool {
        self.sent.back().is_none_or(|s| last_log_id > s.last_log_id)
    }

    /// A request ending at `last_log_id`, carrying `bytes` of entries, was sent; `ack` is what
    /// its answer will prove. It must pass [`may_send`](Self::may_send).
    pub(crate) fn push(&mut self, last_log_id: Option<LogId<C>>, ack: Ack, bytes: u64) {
        debug_assert!(self.may_send(last_log_id), "two requests in flight would end at one log id");
        self.sent.push_back(Sent { last_log_id, ack, bytes });
        self.bytes += bytes;
    }

    /// A `Success { matched }` arrived. Requests are answered in order, so every request
    /// ending at or before `matched` is done; the one ending at `matched` is the one answered.
    pub(crate) fn on_success(&mut self, matched: Option<LogId<C>>) -> Answered {
        if self.sent.back().is_none_or(|s| matched > s.last_log_id) {
            return if self.sent.is_empty() { Answered::Nothing } else { Answered::NeverSent };
        }
        let mut answered = Answered::Nothing;
        while let Some(front) = self.sent.front().filter(|s| s.last_log_id <= matched) {
            if front.last_log_id == matched {
                answered = Answered::Request(front.ack);
            }
            self.bytes -= front.bytes;
            self.sent.pop_front();
        }
        answered
    }

    /// A conflict or another failure answered some request in flight, which one is unknown:
    /// what the oldest one proves, which every other one proves too.
    pub(crate) fn oldest(&self) -> Option<Ack> {
        self.sent.front().map(|s| s.ack)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pretty_assertions::assert_eq;
    use tokio::time::Instant;

    use super::*;
    use crate::testing_types::{UTConfig, log_id};

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn ack(sent_at: Instant, round: u64) -> Ack {
        Ack { sent_at, round, marked: false }
    }

    #[test]
    fn an_answer_proves_what_its_own_request_proves() {
        let t0 = Instant::now();
        let mut f = InFlight::<UTConfig>::default();
        f.push(Some(log_id(1, 3)), ack(at(t0, 1), 1), 10);
        f.push(Some(log_id(1, 5)), ack(at(t0, 2), 2), 20);
        f.push(Some(log_id(1, 9)), ack(at(t0, 3), 2), 40);
        assert_eq!(f.bytes(), 70);

        // The answer to the second request also settles the first, and proves the second's.
        assert_eq!(f.on_success(Some(log_id(1, 5))), Answered::Request(ack(at(t0, 2), 2)));
        assert_eq!((f.len(), f.bytes()), (1, 40));
        // A late answer to the first proves nothing new.
        assert_eq!(f.on_success(Some(log_id(1, 3))), Answered::Nothing);
        assert_eq!(f.on_success(Some(log_id(1, 12))), Answered::NeverSent);
        assert_eq!(f.on_success(Some(log_id(1, 9))), Answered::Request(ack(at(t0, 3), 2)));
        assert!(f.is_empty());
        assert_eq!(f.on_success(Some(log_id(1, 9))), Answered::Nothing);
    }

    /// The bug this type exists for: a heartbeat repeating the last log id of the request
    /// before it would make one answer look like the answer to both, lending the earlier
    /// request's answer the heartbeat's later send time and round.
    #[test]
    fn a_heartbeat_waits_until_nothing_ending_at_its_log_id_is_in_flight() {
        let t0 = Instant::now();
        let mut f = InFlight::<UTConfig>::default();
        assert!(f.may_send(None), "an empty pipeline takes anything");
        f.push(Some(log_id(1, 5)), ack(at(t0, 1), 1), 10);
        assert!(!f.may_send(Some(log_id(1, 5))), "a heartbeat at the same log id");
        assert!(!f.may_send(Some(log_id(1, 4))));
        assert!(f.may_send(Some(log_id(1, 6))));
        assert_eq!(f.on_success(Some(log_id(1, 5))), Answered::Request(ack(at(t0, 1), 1)));
        assert!(f.may_send(Some(log_id(1, 5))));
    }

    #[test]
    fn a_failure_proves_what_the_oldest_request_proves() {
        let t0 = Instant::now();
        let mut f = InFlight::<UTConfig>::default();
        assert_eq!(f.oldest(), None);
        f.push(Some(log_id(1, 3)), ack(at(t0, 1), 4), 0);
        f.push(Some(log_id(1, 5)), ack(at(t0, 2), 5), 0);
        assert_eq!(f.oldest(), Some(ack(at(t0, 1), 4)));
    }
}
