"""The planted mistakes of issue #15: each bug it found, and classic Raft mistakes.

Each mutant is one textual change to the library (plus, in `also`, the further changes of a
mistake that takes more than one), applied to a throwaway copy by run.py. A change must match
its file exactly once; when the code moves on and a mutant stops matching,
run.py says so and the mutant needs rewriting, not deleting.
"""

MUTANTS = [
    # --- the findings of issue #15 -------------------------------------------------------------
    dict(
        name="lease-counts-unanswered",
        what="#1: the lease counts members that never answered as acknowledging at election time",
        file="src/engine/lease.rs",
        old="if *id == me { Some(now) } else { leader.acked.get(id).map(|a| a.sent_at) }",
        new="if *id == me { Some(now) } else { Some(leader.acked.get(id).map_or(leader.since, |a| a.sent_at)) }",
    ),
    dict(
        name="lease-before-blank-commits",
        what="#1: a lease read is answered before the leader's blank entry is committed",
        file="src/engine/lease.rs",
        old="if leader.blank_log_id.is_none_or(|b| Some(b) > self.state.committed) {",
        new="if false && leader.blank_log_id.is_none_or(|b| Some(b) > self.state.committed) {",
    ),
    dict(
        name="lease-as-found",
        what="#1 as found: both of the above (each alone is covered by the other's check)",
        file="src/engine/lease.rs",
        old="if *id == me { Some(now) } else { leader.acked.get(id).map(|a| a.sent_at) }",
        new="if *id == me { Some(now) } else { Some(leader.acked.get(id).map_or(leader.since, |a| a.sent_at)) }",
        also=[
            dict(
                file="src/engine/lease.rs",
                old="if leader.blank_log_id.is_none_or(|b| Some(b) > self.state.committed) {",
                new="if false && leader.blank_log_id.is_none_or(|b| Some(b) > self.state.committed) {",
            )
        ],
    ),
    dict(
        name="no-stickiness-after-restart",
        what="#1: a restarted voter grants votes at once, inside a lease that counts on it",
        file="src/engine/mod.rs",
        old="if self.state.vote.term > 0 && !sole_voter {",
        new="if false && self.state.vote.term > 0 && !sole_voter {",
    ),
    dict(
        name="lease-kept-after-timeout-now",
        what="#2: the leader keeps its lease after telling a transfer target to campaign",
        file="src/engine/transfer.rs",
        old="leader.lease_revoked = true;",
        new="leader.lease_revoked = false;",
    ),
    dict(
        name="operator-election-forced",
        what="#2: trigger().elect() on a follower sends forced vote requests past stickiness",
        file="src/engine/election.rs",
        old="        } else {\n            self.elect(now);\n        }",
        new="        } else {\n            self.elect_forced(now);\n        }",
    ),
    dict(
        name="candidate-not-sticky-to-itself",
        what="#2 (review): a follower told to stand counts its own vote while a leader is alive",
        file="src/engine/election.rs",
        old="if !force && self.leader.is_none() && self.leader_alive(now) {",
        new="if false && !force && self.leader.is_none() && self.leader_alive(now) {",
    ),
    dict(
        name="heartbeat-behind-request",
        what="#3a: a heartbeat repeating the last log id of a request in flight; one answer pops both",
        file="src/replication/mod.rs",
        old="let may_heartbeat = in_flight.may_send(last_sent) && !send_now;",
        new="let may_heartbeat = !send_now;",
    ),
    dict(
        name="read-confirmed-by-earlier-round",
        what="#3b: a read confirmed by answers to requests of the round before it (sent before it arrived)",
        file="src/engine/read.rs",
        old="round.is_some_and(|r| r >= ticket.round)",
        new="round.is_some_and(|r| r + 1 >= ticket.round)",
    ),
    dict(
        name="read-outlives-its-leadership",
        what="#3: a read confirmed under a later leadership than the one it arrived under",
        file="src/engine/read.rs",
        old="let Some(leader) = self.leader.as_ref().filter(|l| l.vote == ticket.vote) else {",
        new="let Some(leader) = self.leader.as_ref() else {",
    ),
    dict(
        name="no-reconcile-at-startup",
        what="#4: restart trusts a log tail that an installed snapshot replaced",
        file="src/core/startup.rs",
        old="    if let Some(a) = applied {\n        if reconcile_log_with_applied(",
        new="    if let Some(a) = applied.filter(|_| false) {\n        if reconcile_log_with_applied(",
    ),
    dict(
        name="snapshot-counts-as-matched",
        what="#5: a snapshot sent (maybe ignored) raises the follower's matched",
        file="src/replication/snapshot.rs",
        old='debug!(snapshot = %meta, "snapshot sent; searching the match point again");',
        new='debug!(snapshot = %meta, "snapshot sent; searching the match point again");\n        st.report(meta.last_log_id, None);',
    ),
    dict(
        name="snapshot-replaces-committed-membership",
        what="#6: a snapshot install replaces a committed membership that is after it in the log",
        file="src/engine/state.rs",
        old="        if replaced(&self.committed) {",
        new="        if true {",
    ),
    # --- classic protocol mistakes -------------------------------------------------------------
    dict(
        name="commit-older-term",
        what="classic: commit by counting replicas of an older term's entry (Raft §5.4.2)",
        file="src/engine/leader.rs",
        old="if Some(matched.leader_id) != leader.vote.leader_id() {",
        new="if false && Some(matched.leader_id) != leader.vote.leader_id() {",
    ),
    dict(
        name="ack-before-flush",
        what="classic: a follower acknowledges entries before they are durable",
        file="src/core/mod.rs",
        old="Some(io) if io.seq > self.engine.state.io.flushed.seq => {",
        new="Some(io) if false && io.seq > self.engine.state.io.flushed.seq => {",
    ),
    dict(
        name="vote-twice-in-a-term",
        what="classic: a voter grants a second vote in a term it already voted in",
        file="src/engine/election.rs",
        old="req.vote.is_ge(&self.state.vote) && !req.vote.committed",
        new="req.vote.term >= self.state.vote.term && !req.vote.committed",
    ),
    dict(
        name="truncate-on-matching-entry",
        what="classic: a follower truncates at an entry it already holds (a stale request cuts its log)",
        file="src/engine/follower.rs",
        old=".take_while(|e| e.log_id.index < purged_next || self.state.log_ids.get(e.log_id.index) == Some(e.log_id))",
        new=".take_while(|e| e.log_id.index < purged_next)",
    ),
    dict(
        name="apply-past-commit",
        what="classic: entries are applied beyond the committed index",
        file="src/engine/mod.rs",
        old="self.output.push_back(Command::Apply { first, last: committed });",
        new="self.output.push_back(Command::Apply { first, last: self.state.last_log_id().unwrap_or(committed) });",
    ),
]
