//! quorate: an embeddable, async Raft consensus library.
//!
//! An application implements three traits and gets a replicated, linearizable state machine:
//!
//! - [`RaftLogStorage`] (+ [`RaftLogReader`]): the durable log and vote;
//! - [`RaftStateMachine`] (+ [`RaftSnapshotBuilder`]): applies committed entries, builds and
//!   installs snapshots;
//! - [`RaftNetworkFactory`] / [`RaftNetwork`]: sends RPCs to other nodes.
//!
//! Its application types (request, response, node id, node address, snapshot buffer) are
//! bundled in one [`RaftTypeConfig`], usually declared with [`declare_raft_types!`]. Every
//! generic type of the crate takes that one parameter `C`.
//!
//! # A tour of the API
//!
//! - **Start a node** with [`Raft::new`]: it loads the node's state from storage and spawns its
//!   tasks on the current tokio runtime. [`Raft::initialize`] a new cluster once, on one node.
//! - **Write** with [`Raft::client_write`] on the leader (or [`Raft::try_client_write`] to fail
//!   fast with `Overloaded` instead of waiting for room). The error says what happened to the
//!   write: [`ClientWriteError`] separates "not proposed" (`ForwardToLeader`, `Overloaded`),
//!   "never applied" (`Discarded`) and "maybe applied" (`OutcomeUnknown`).
//! - **Read** linearizably with [`Raft::ensure_linearizable`] then your state machine; on a
//!   follower, with [`Raft::get_read_index`] (on the leader) and [`Raft::wait_applied`]. See
//!   [`ReadPolicy`] for ReadIndex and lease reads.
//! - **Change the membership** with [`Raft::add_learner`] and [`Raft::change_membership`]
//!   (joint consensus; [`ChangeMembers`] says what to change).
//! - **Act now** through [`Raft::trigger`]: [`Trigger::snapshot`], [`Trigger::purge_log`],
//!   [`Trigger::transfer_leader`], [`Trigger::elect`].
//! - **Observe** through [`Raft::metrics`] (a watch channel of [`RaftMetrics`]: role, log,
//!   commit, apply, and since when each is stuck) and [`Raft::wait`].
//! - **Serve peers**: your server hands received requests to [`Raft::append_entries`],
//!   [`Raft::stream_append`], [`Raft::vote`], [`Raft::install_snapshot`] and
//!   [`Raft::handle_transfer_leader`].
//! - **Stop** with [`Raft::shutdown`]. A storage failure stops the node too: every call then
//!   fails with [`Fatal`].
//! - **Tune** with [`Config`] (every field documents its default; [`Config::validate`]).
//!
//! What storage must make durable, and when, is the table in [`storage`]; what a pipelined
//! network must guarantee is in [`network`].
//!
//! # Example
//!
//! A three-node cluster on the `testing` feature's in-memory storage and network:
//!
#![cfg_attr(feature = "testing", doc = "```")]
#![cfg_attr(not(feature = "testing"), doc = "```ignore")]
//! use std::sync::Arc;
//!
//! use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
//! use quorate::{BasicNode, Config, Raft, ReadPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new();
//! let config = Arc::new(Config::default());
//! let mut state_machines = Vec::new();
//! for id in 1..=3 {
//!     let sm = MemStateMachine::new();
//!     let raft = Raft::new(id, config.clone(), router.factory(id), MemLogStore::new(), sm.clone()).await?;
//!     router.add_node(id, raft);
//!     state_machines.push(sm);
//! }
//!
//! let node1 = router.node(1).ok_or("node 1")?;
//! node1.initialize((1..=3).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect()).await?;
//! let metrics = node1.wait(None).metrics(|m| m.current_leader.is_some(), "a leader").await?;
//! let leader_id = metrics.current_leader.ok_or("a leader")?;
//! let leader = router.node(leader_id).ok_or("the leader")?;
//!
//! leader.client_write(Request::set("greeting", "hello")).await?;
//! leader.ensure_linearizable(ReadPolicy::ReadIndex).await?;
//! assert_eq!(state_machines[leader_id as usize - 1].data()["greeting"], "hello");
//! # for id in 1..=3 { router.node(id).ok_or("node")?.shutdown().await?; }
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `testing`: the `quorate::testing` kit (in-memory log store, state machine and network with fault
//!   injection, the storage conformance suite, a linearizability checker). For tests and
//!   examples; the library itself needs no feature.
//! - `file-store`: `quorate::file_store`, a durable log store to link instead of writing one:
//!   segment files with group commit, recovery that cuts only a torn tail, a directory lock.
//!   Needs Rust 1.89.
//! - `tcp`: `quorate::tcp`, a TCP transport to link: one multiplexed connection per peer,
//!   pipelined replication, bounded frames, a handshake with the cluster id and node ids.
//! - `tls` (implies `tcp`): mutual TLS 1.3 for that transport (rustls, ring), every node
//!   proving its node id with a certificate of the cluster's CA.
//!
//! With `file-store` and `tls`, an application implements only its state machine.
//!
//! # The layers inside
//!
//! - The **Engine** (`src/engine`) is Raft's protocol logic as a deterministic state machine:
//!   inputs are method calls, outputs are `Command` values; it never awaits, reads a clock or
//!   touches I/O.
//! - **RaftCore** (`src/core`) is one tokio task per node that owns the Engine and executes its
//!   commands against the log store, the state machine task and the replication tasks.
//! - **ReplicationCore** (`src/replication`) is one task per follower: it finds the follower's
//!   match point by binary search, then streams entries through
//!   [`RaftNetwork::stream_append`].
//!
//! The guide (`guide/` in the repository, an mdBook) covers getting started, the architecture,
//! storage durability, the network contract, membership, snapshots, reads, operations and
//! testing.
#![deny(missing_docs)]

mod config;
mod core;
mod engine;
pub mod error;
#[cfg(feature = "file-store")]
pub mod file_store;
pub mod metrics;
pub mod multi;
pub mod network;
mod raft;
mod replication;
pub mod storage;
#[cfg(feature = "tcp")]
pub mod tcp;
mod type_config;
pub mod types;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;

#[cfg(test)]
pub(crate) mod testing_types;

// The guide's code blocks, compiled and run as doc tests.
#[cfg(all(doctest, feature = "testing"))]
mod guide_doctests;

pub use config::{Config, ConfigError, SnapshotPolicy};
pub use engine::ServerState;
pub use error::{
    ClientWriteError, Fatal, ForwardToLeader, InitializeError, LinearizableReadError, RPCError, RaftError,
    StorageError, TransferLeaderError,
};
pub use metrics::{Queues, RaftMetrics, Wait};
pub use network::{RPCOption, RaftNetwork, RaftNetworkFactory};
pub use raft::{ChangeMembershipResponse, ClientWriteResponse, ClientWriteResult, Raft, ReadIndex, Trigger};
pub use storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
pub use type_config::{AppData, BasicNode, Node, NodeId, PayloadSize, RaftTypeConfig};
pub use types::{
    AppendEntriesRequest, AppendEntriesResponse, ChangeMembers, Entry, EntryPayload, InstallSnapshotRequest,
    InstallSnapshotResponse, LeaderId, LogId, Membership, QuiesceMark, ReadPolicy, StoredMembership,
    TransferLeaderRequest, Vote, VoteRequest, VoteResponse,
};
