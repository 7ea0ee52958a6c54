//! Node-to-node RPC over TCP.
//!
//! Every message is a length-prefixed frame (tokio-util's `LengthDelimitedCodec`: a 4-byte
//! big-endian length, then the body) whose body is the message encoded with `postcard`, a
//! compact serde format: quorate's RPC types are serde types, so they go on the wire as they
//! are, and an AppendEntries of small entries costs a few bytes more than its payload.
//!
//! A connection carries one of two conversations, chosen by its first frame:
//!
//! - **unary**: request, answer, request, answer... ([`wire::RpcRequest`] /
//!   [`wire::RpcReply`]); used for vote, install-snapshot, transfer-leader and the probes
//!   of replication. The client keeps one such connection per target and reconnects when it
//!   fails.
//! - **stream** (first frame [`wire::RpcRequest::OpenStream`]): a pipelined replication
//!   stream. The client writes AppendEntries requests as the leader produces them, without
//!   waiting; the server hands the incoming requests to [`Raft::stream_append`](quorate::Raft::stream_append)
//!   and writes its responses back in order as they come.
//! - **forward** (first frame [`wire::RpcRequest::OpenForward`]): a follower relays client
//!   writes and linearizable reads to the leader, many at a time ([`forward`]).

mod client;
pub mod forward;
mod server;
pub mod wire;

pub use client::{NetworkClient, NetworkFactory};
pub use server::serve;
