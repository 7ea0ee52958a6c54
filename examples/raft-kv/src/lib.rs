//! raft-kv: a replicated key-value store built on quorate, through its public API only.
//!
//! Each node owns:
//!
//! - a durable Raft log and vote ([`store::LogStore`]): a segmented append-only file with
//!   crc-framed records, written by one thread that fsyncs many appends at once (group commit);
//! - a state machine ([`store::StateMachineStore`]): a `BTreeMap<String, String>` that survives
//!   restarts through snapshot files plus replay of the log after them;
//! - a TCP transport for node-to-node RPCs ([`network`]), with pipelined replication streams;
//! - an HTTP API for clients and operators ([`http`]).
//!
//! [`node::run`] wires them together; the `raft-kv` binary runs a node, a local demo cluster,
//! or a load generator.
#![deny(missing_docs)]

pub mod bench;
pub mod demo;
pub mod http;
pub mod local_cluster;
pub mod network;
pub mod node;
pub mod service;
pub mod store;
mod types;

pub use types::{KvNode, Request, Response, TypeConfig};

/// The quorate handle of a raft-kv node.
pub type Raft = quorate::Raft<TypeConfig>;
