//! Test kit (feature `testing`): an in-memory log store, an in-memory key-value state machine
//! and an in-memory network with fault injection.
//!
//! The in-memory parts work with one type config, [`TypeConfig`]: nodes are `u64`s, entries
//! are key-value [`Request`]s answered by [`Response`]s. The storage suite works with any.
//!
//! - [`MemLogStore`] keeps the log in memory, in two views: what was submitted and what was
//!   flushed. Its disk can be slowed ([`MemLogStore::set_flush_delay`]) or stalled
//!   ([`MemLogStore::set_flush_stalled`]); [`MemLogStore::reopen`] restarts from the flushed
//!   view only, as a crash would, and [`MemLogStore::reopen_keeping`] from a crash that cut the
//!   unflushed writes anywhere.
//! - [`MemStateMachine`] applies requests to a `BTreeMap`, checks that entries come once and
//!   in order, and builds and installs snapshots. It restarts with its state
//!   ([`MemStateMachine::reopen`]) or from its last snapshot
//!   ([`MemStateMachine::reopen_empty_from_snapshot`]).
//! - [`Router`] connects the nodes of a test and can cut, delay or freeze links, lose,
//!   duplicate or reorder messages (seeded); it counts every message by [`RpcKind`].
//! - [`CrashSwitch`] freezes a node between two storage calls of one batch, so a test can
//!   crash it exactly there ([`crash_switch`]).
//! - [`invariants`] checks Raft's safety properties across nodes.
//! - [`suite`] checks that a log store and a state machine keep the
//!   [storage contract](crate::storage); [`MemStoreBuilder`] runs it on the stores above.
//! - [`linearizability`] checks that a history of key-value operations, as clients observed
//!   them, is linearizable.
//!
//! Storage and state machine are cloneable handles: a test keeps one, gives a clone to the
//! node, and inspects the state while the node runs.
//!
//! # Example
//!
//! A one-node cluster, a write, and a restart that keeps the log:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
//! use quorate::{BasicNode, Config, Raft, ServerState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new();
//! let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
//! let config = Arc::new(Config::default());
//!
//! let raft = Raft::new(1, config.clone(), router.factory(1), log.clone(), sm.clone()).await?;
//! router.add_node(1, raft.clone());
//! raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
//! raft.wait(None).state(ServerState::Leader, "elected").await?;
//!
//! let written = raft.client_write(Request::set("k", "v")).await?;
//! assert_eq!(sm.data()["k"], "v");
//!
//! // Crash and restart from what was durable.
//! raft.shutdown().await?;
//! let raft = Raft::new(1, config, router.factory(1), log.reopen(), sm.reopen()).await?;
//! router.add_node(1, raft.clone());
//! assert_eq!(log.last_log_id(), Some(written.log_id));
//! # raft.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod crash_switch;
mod host_router;
pub mod invariants;
pub mod linearizability;
mod log_store;
mod mem_store_builder;
mod router;
mod state_machine;
pub mod suite;
mod types;

#[cfg(test)]
mod tests;

pub use crash_switch::{CrashPoint, CrashSwitch, StorageCall};
pub use host_router::{HostRouter, HostRouterClient, HostRouterGroupNetwork, HostRouterNetwork, RouterHost};
pub use log_store::{MemLogReader, MemLogStore};
pub use mem_store_builder::MemStoreBuilder;
pub use router::{Router, RouterNetwork, RouterNetworkFactory, RpcKind};
pub use state_machine::{MemSnapshotBuilder, MemStateMachine};
pub use types::{Request, Response, TypeConfig};

/// The seeded xorshift generator the test kit's networks draw their random faults from: cheap,
/// deterministic for a seed, and good enough to spread faults.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Xorshift(u64);

impl Xorshift {
    /// Start from `seed` (any value; the state is never zero).
    pub(crate) fn seed(&mut self, seed: u64) {
        self.0 = seed | 1;
    }

    /// A uniform draw in [0, 1).
    pub(crate) fn draw(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
