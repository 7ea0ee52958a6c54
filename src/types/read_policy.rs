//! [`ReadPolicy`]: how a linearizable read confirms the leadership.

/// How a linearizable read confirms that this node still leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ReadPolicy {
    /// ReadIndex (Raft §8): a quorum answers a request the leader sent *after* the read
    /// arrived — proven by a heartbeat round number each request carries and its answer brings
    /// back, never by comparing times. One round trip; safe whatever the clocks do.
    #[default]
    ReadIndex,
    /// Leader lease (dissertation §6.4.1): no round trip while the lease holds; falls back to
    /// ReadIndex when it does not. It is linearizable only under these assumptions:
    ///
    /// - **Bounded clock drift.** Between any two nodes, clocks drift apart by less than
    ///   [`Config::max_clock_drift`](crate::Config::max_clock_drift) over `election_timeout_min`. Clocks need not agree on the
    ///   time, only run at nearly the same rate. A leader whose clock stops while real time
    ///   passes breaks it: tokio's `Instant` reads `CLOCK_MONOTONIC` on Linux, which does not
    ///   count a system suspend (a laptop's sleep) and, on some hypervisors, a paused VM. A
    ///   process stopped with SIGSTOP does not: its clock runs on, and the lease simply expires
    ///   meanwhile. The lease lasts
    ///   `election_timeout_min - max_clock_drift` from the *send* time of the requests a
    ///   quorum answered.
    /// - **Leader stickiness** ([`Config::enable_check_quorum`](crate::Config::enable_check_quorum), required): a voter that heard
    ///   from a leader refuses votes for `election_timeout_min` on its own clock — also right
    ///   after it restarts — so no other leader can be elected inside the lease. With
    ///   check-quorum off there is never a lease: `LeaseRead` silently behaves exactly as
    ///   `ReadIndex`, a quorum round trip per read, with no error or warning.
    /// - **Only real answers count.** A newly elected leader has no lease until a quorum has
    ///   answered it, and none until its first entry (the blank one) is committed.
    /// - **Forced elections end it.** The vote requests of a leadership transfer's target pass
    ///   over stickiness, so a leader's lease ends for good the moment it tells the target to
    ///   campaign. [`Trigger::elect`](crate::Trigger::elect) on a follower is not forced: a
    ///   follower that heard from a live leader does not stand at all, and voters that did
    ///   refuse it; on the leader it stands that leader down, which ends its lease. No other
    ///   path forces an election, except a new cluster's first.
    ///
    /// If any of these may not hold in your deployment, use [`ReadIndex`](Self::ReadIndex).
    LeaseRead,
}
