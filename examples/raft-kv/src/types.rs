//! The application types: what the log carries ([`Request`]), what applying it answers
//! ([`Response`]), how a node is reached ([`KvNode`]), and the [`TypeConfig`] bundling them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How to reach a node: its Raft (node-to-node TCP) address and its client HTTP address.
///
/// It travels in every membership entry, so every node knows how to reach every other one's
/// HTTP API, which is what lets a follower forward a client's write to the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvNode {
    /// `host:port` of the node's Raft RPC listener.
    pub raft_addr: String,
    /// `host:port` of the node's HTTP API.
    pub http_addr: String,
}

/// The transport reaches a node at its Raft address.
impl quorate::tcp::PeerAddr for KvNode {
    fn peer_addr(&self) -> &str {
        &self.raft_addr
    }
}

impl fmt::Display for KvNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

/// A write proposed through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Set `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Set `key` to `new` (`None`: remove it) if it currently holds `expected` (`None`: absent).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value the key must hold for the swap to happen.
        expected: Option<String>,
        /// The value to store; `None` removes the key.
        new: Option<String>,
    },
}

impl Request {
    /// The key the request is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. } | Self::Delete { key } | Self::CompareAndSet { key, .. } => key,
        }
    }
}

impl quorate::PayloadSize for Request {
    /// A tag byte plus the strings it carries: a megabyte value counts a megabyte, so
    /// replication batches stay within `max_payload_bytes` and the transport's frame limit.
    fn payload_size(&self) -> usize {
        1 + match self {
            Self::Set { key, value } => key.payload_size() + value.payload_size(),
            Self::Delete { key } => key.payload_size(),
            Self::CompareAndSet { key, expected, new } => {
                key.payload_size() + expected.payload_size() + new.payload_size()
            }
        }
    }
}

/// The state machine's answer to one applied entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The value the key held before the entry applied.
    pub prev: Option<String>,
    /// Whether the request took effect: `false` only for a compare-and-set whose expected
    /// value did not match.
    pub ok: bool,
}

quorate::declare_raft_types!(
    /// The raft-kv type config: [`Request`] entries, [`Response`] answers, `u64` node ids,
    /// [`KvNode`] addresses and in-memory snapshot buffers (`Cursor<Vec<u8>>`).
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = KvNode,
);
