//! Black-box cluster tests: several quorate nodes in one process, connected by the `testing`
//! kit's in-memory router, driven only through the public API.
//!
//! Every test runs on tokio's paused clock: timers fire in virtual time, so elections and
//! heartbeats happen in a deterministic order and a test never sleeps for real.

mod fixture;
mod multi_fixture;

mod t10_single_node;
mod t20_election;
mod t30_replication;
mod t35_batch_writes;
mod t40_leader_failover;
mod t50_lagging_follower;
mod t60_divergent_follower;
mod t70_membership;
mod t80_snapshot;
mod t85_crash_points;
mod t86_snapshot_meets;
mod t90_reads_leadership;
mod t95_overload;
mod t96_payload_bytes;
mod t97_metrics;
mod t98_multi;
mod t99_multi_quiesce;
mod t99_multi_restart;
