//! quorate: an embeddable, async Raft consensus library.
//!
//! An application implements three traits and gets a replicated, linearizable state machine:
//!
//! - [`RaftLogStorage`] (+ [`RaftLogReader`]): the durable log and vote;
//! - [`RaftStateMachine`]: applies committed entries, builds and installs snapshots;
//! - [`RaftNetworkFactory`] / [`RaftNetwork`]: sends RPCs to other nodes.
//!
//! Then it starts a node with [`Raft::new`], [`Raft::initialize`]s the cluster once, proposes
//! with [`Raft::client_write`], and routes RPCs received from peers to the node's
//! [`Raft::append_entries`], [`Raft::stream_append`] and [`Raft::vote`].
//!
//! # A tour of the layers
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
//! See the `guide/` book for architecture, storage durability rules and operations.
#![deny(missing_docs)]

mod config;
mod core;
mod engine;
pub mod error;
pub mod metrics;
pub mod network;
mod raft;
mod replication;
pub mod storage;
mod type_config;
pub mod types;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals;

#[cfg(test)]
pub(crate) mod testing_types;

pub use config::{Config, ConfigError, SnapshotPolicy};
pub use engine::ServerState;
pub use error::{
    ClientWriteError, Fatal, ForwardToLeader, InitializeError, LinearizableReadError, RPCError, RaftError,
    StorageError, TransferLeaderError,
};
pub use metrics::{Queues, RaftMetrics, Wait};
pub use network::{RPCOption, RaftNetwork, RaftNetworkFactory};
pub use raft::{
    AppendEntriesRequest, AppendEntriesResponse, ChangeMembershipResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, Raft, ReadIndex, ReadPolicy, TransferLeaderRequest, Trigger, VoteRequest, VoteResponse,
};
pub use storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
pub use type_config::{AppData, BasicNode, Node, NodeId, RaftTypeConfig};
pub use types::{ChangeMembers, Entry, EntryPayload, LeaderId, LogId, Membership, StoredMembership, Vote};
