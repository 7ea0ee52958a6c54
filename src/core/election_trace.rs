//! [`ElectionTrace`]: one tracing span per election this node runs, from its first (pre-)vote
//! request to its outcome, so an operator can follow an election as one unit.

use tracing::{Span, info, info_span};

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::{DisplayOption, Vote};

/// The election in progress, if any, and its span.
#[derive(Default)]
pub(crate) struct ElectionTrace<C: RaftTypeConfig> {
    /// Boxed: most of the time no election runs, and every idle group would carry the span
    /// inline.
    current: Option<Box<(Vote<C>, bool, Span)>>,
}

impl<C: RaftTypeConfig> ElectionTrace<C> {
    /// The span of the election in progress, to handle its vote answers in; a disabled span
    /// when there is none.
    pub(crate) fn span(&self) -> Span {
        self.current.as_ref().map_or_else(Span::none, |current| current.2.clone())
    }

    /// After an input: open a span when the Engine started a (pre-)vote round, close it with
    /// its outcome when the round is over.
    pub(crate) fn observe(&mut self, engine: &Engine<C>) {
        let now = engine.candidate.as_ref().map(|c| (c.vote, c.pre_vote));
        if self.current.as_ref().map(|current| (current.0, current.1)) == now {
            return;
        }
        if let Some(current) = self.current.take() {
            let (vote, pre_vote, span) = *current;
            let outcome = match (&engine.leader, &engine.candidate) {
                (Some(l), _) if l.vote.leader_id() == vote.candidate_leader_id() => "won",
                (_, Some(c)) if pre_vote && !c.pre_vote && c.vote == vote => "pre_vote_won",
                (_, Some(_)) => "superseded",
                // A pre-candidate that gave way to a survivor whose turn came first has seen no
                // newer vote and follows nobody: abandoned, not lost.
                _ if pre_vote && engine.state.vote.term < vote.term && engine.state.leader_id.is_none() => "abandoned",
                _ if engine.state.vote.term > vote.term || engine.state.vote.leader_id().is_some() => "lost",
                _ => "abandoned",
            };
            info!(parent: &span, outcome, term = engine.state.vote.term, "election ended");
        }
        if let Some((vote, pre_vote)) = now {
            let span = info_span!("election", id = %engine.id(), term = vote.term, pre_vote);
            info!(parent: &span, last = %DisplayOption(&engine.state.last_log_id()), "election started");
            self.current = Some(Box::new((vote, pre_vote, span)));
        }
    }
}
