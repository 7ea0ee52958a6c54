//! raft-kv: a replicated key-value store built on quorate, through its public API only.
//!
//! It links quorate with two features and writes only what is its own:
//!
//! - the durable Raft log and vote are quorate's `FileLogStore` (feature `file-store`);
//! - node-to-node RPCs are quorate's TCP transport, optionally in mutual TLS (features `tcp`
//!   and `tls`), set up in [`node`];
//! - the state machine ([`store::StateMachineStore`]) is raft-kv's: a `BTreeMap<String,
//!   String>` that survives restarts through snapshot files plus replay of the log after them;
//! - so is the HTTP API for clients and operators ([`http`]), optionally over HTTPS, with
//!   authenticated admin routes.
//!
//! With `--groups N` a node partitions the keys over N Raft groups ([`groups`]) run by one
//! quorate `GroupHost` over one shared log and one connection per peer ([`host`]).
//!
//! [`node::run`] wires them together; the `raft-kv` binary runs a node, a local demo cluster,
//! a load generator, or the comparison with etcd ([`compare`]).
#![deny(missing_docs)]

pub mod bench;
pub mod compare;
pub mod demo;
pub mod groups;
pub mod host;
pub mod http;
pub mod local_cluster;
pub mod node;
pub mod service;
pub mod store;
pub mod telemetry;
mod types;

pub use types::{KvNode, Request, Response, TypeConfig};

/// The quorate handle of a raft-kv node.
pub type Raft = quorate::Raft<TypeConfig>;
