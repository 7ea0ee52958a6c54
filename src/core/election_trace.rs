//! [`ElectionTrace`]: one tracing span per election this node runs, from its first (pre-)vote
//! request to its outcome, so an operator can follow an election as one unit.

use tracing::{Span, info, info_span};

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::{DisplayOption, Vote};

/// The election in progress, if any, and its span.
#[derive(Default)]
pub(crate) struct ElectionTrace<C: RaftTypeConfig> {
    current: Option<(Vote<C>, bool, Span)>,
}

impl<C: RaftTypeConfig> ElectionTrace<C> {
    /// The span of the election in progress, to handle its vote answers in; a disabled span
    /// when there is none.
    pub(crate) fn span(&self) -> Span {
        self.current.as_ref().map_or_else(Span::none, |(_, _, span)| span.clone())
    }

    /// After an input: open a span when the Engine started a (pre-)vote round, close it with
    /// its outcome when the round is over.
    pub(crate) fn observe(&mut self, engine: &Engine<C>) {
        let now = engine.candidate.as_ref().map(|c| (c.vote, c.pre_vote));
        if self.current.as_ref().map(|(v, p, _)| (*v, *p)) == now {
            return;
        }
        if let Some((vote, pre_vote, span)) = self.current.take() {
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
            self.current = Some((vote, pre_vote, span));
        }
    }
}
