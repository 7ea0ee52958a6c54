//! Counting what the groups' elections do, from the Engine's own tracing events.
//!
//! The failover table says how long orphans took to re-elect; these counters say why: how
//! many pre-vote and real campaigns the survivors started for them, and how the (pre-)votes
//! they asked for were answered (granted, refused by leader stickiness, refused otherwise:
//! already voted in that term, or a shorter log). They are read from the events quorate's
//! Engine emits in `quorate::engine::election` (`starting election` at info, `vote request`
//! at debug, `became leader` at info), by a [`tracing_subscriber::Layer`] that counts and
//! formats nothing: a snapshot before and after a kill gives that kill's elections.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;
use tracing_subscriber::{Layer, filter::Filtered};

/// The Engine's election module, whose events are counted.
const TARGET: &str = "quorate::engine::election";

/// Counts of election events across every node and group of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionCounts {
    /// Pre-vote rounds started (`starting election`, `pre_vote = true`).
    pub pre_votes: u64,
    /// Real elections started, each in a new term.
    pub elections: u64,
    /// Pre-vote requests granted.
    pub pre_vote_granted: u64,
    /// Pre-vote requests refused because the voter heard a leader within the minimum election
    /// timeout (leader stickiness).
    pub pre_vote_sticky: u64,
    /// Pre-vote requests refused otherwise (a shorter log, an older term).
    pub pre_vote_refused: u64,
    /// Vote requests granted.
    pub vote_granted: u64,
    /// Vote requests refused by stickiness.
    pub vote_sticky: u64,
    /// Vote requests refused otherwise: mostly a voter that already voted for itself in that
    /// term (a split vote).
    pub vote_refused: u64,
    /// Candidates that won.
    pub leaders: u64,
}

impl ElectionCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ElectionCounts) -> ElectionCounts {
        ElectionCounts {
            pre_votes: self.pre_votes - earlier.pre_votes,
            elections: self.elections - earlier.elections,
            pre_vote_granted: self.pre_vote_granted - earlier.pre_vote_granted,
            pre_vote_sticky: self.pre_vote_sticky - earlier.pre_vote_sticky,
            pre_vote_refused: self.pre_vote_refused - earlier.pre_vote_refused,
            vote_granted: self.vote_granted - earlier.vote_granted,
            vote_sticky: self.vote_sticky - earlier.vote_sticky,
            vote_refused: self.vote_refused - earlier.vote_refused,
            leaders: self.leaders - earlier.leaders,
        }
    }
}

/// One counter per field of [`ElectionCounts`], in its order.
static COUNTERS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

/// The counts so far.
pub fn snapshot() -> ElectionCounts {
    let c = |i: usize| COUNTERS[i].load(Ordering::Relaxed);
    ElectionCounts {
        pre_votes: c(0),
        elections: c(1),
        pre_vote_granted: c(2),
        pre_vote_sticky: c(3),
        pre_vote_refused: c(4),
        vote_granted: c(5),
        vote_sticky: c(6),
        vote_refused: c(7),
        leaders: c(8),
    }
}

/// The layer to install (with `tracing_subscriber::registry().with(layer())`): it sees only
/// the election module's events at debug and above.
pub fn layer<S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>()
-> Filtered<ElectionCounter, Targets, S> {
    ElectionCounter.with_filter(Targets::new().with_target(TARGET, tracing::Level::DEBUG))
}

/// The counting layer; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct ElectionCounter;

impl<S: Subscriber> Layer<S> for ElectionCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let index = match fields.message {
            Some(Message::Starting) if fields.pre_vote == Some(true) => 0,
            Some(Message::Starting) => 1,
            Some(Message::VoteRequest) => {
                let base = if fields.pre_vote == Some(true) { 2 } else { 5 };
                match (fields.granted, fields.sticky) {
                    (Some(true), _) => base,
                    (_, Some(true)) => base + 1,
                    _ => base + 2,
                }
            }
            Some(Message::BecameLeader) => 8,
            None => return,
        };
        COUNTERS[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// The events counted, by message.
#[derive(Debug, Clone, Copy)]
enum Message {
    Starting,
    VoteRequest,
    BecameLeader,
}

/// The fields of one event that matter here.
#[derive(Debug, Default)]
struct Fields {
    message: Option<Message>,
    pre_vote: Option<bool>,
    granted: Option<bool>,
    sticky: Option<bool>,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "pre_vote" => self.pre_vote = Some(value),
            "granted" => self.granted = Some(value),
            "sticky" => self.sticky = Some(value),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = classify(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // A literal message arrives as `fmt::Arguments`; only it is formatted, and only for the
        // few events of this module.
        if field.name() == "message" {
            self.message = classify(&format!("{value:?}"));
        }
    }
}

fn classify(message: &str) -> Option<Message> {
    match message {
        "starting election" => Some(Message::Starting),
        "vote request" => Some(Message::VoteRequest),
        "became leader" => Some(Message::BecameLeader),
        _ => None,
    }
}
