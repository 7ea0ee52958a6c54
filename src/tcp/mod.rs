//! A TCP transport to link instead of writing one: [`TcpNetworkFactory`] (quorate's
//! [`RaftNetworkFactory`](crate::RaftNetworkFactory), the client side) and [`TcpServer`] (the
//! server side, feeding a [`Raft`](crate::Raft)). Feature `tcp`; mutual TLS with feature `tls`.
//! For many Raft groups per node, [`TcpHostNetwork`] and [`TcpServer::serve_host`] carry a
//! [`GroupHost`](crate::multi::GroupHost)'s groups the same way: see [Many groups](#many-groups).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use quorate::tcp::{TcpConfig, TcpNetworkFactory, TcpServer};
//! use quorate::{Config, Raft};
//! # use quorate::testing::{MemLogStore as MyLogStore, MemStateMachine as MyStateMachine, TypeConfig as MyTypes};
//!
//! let node_id = 1;
//! let tcp = TcpConfig::new("payments");
//! // Bind first: peers that connect while the node starts wait in the backlog.
//! let server = TcpServer::bind("10.0.0.1:7001".parse()?, tcp.clone()).await?;
//! let network = TcpNetworkFactory::<MyTypes>::new(node_id, tcp);
//! let raft = Raft::new(node_id, Arc::new(Config::default()), network, MyLogStore::new(), MyStateMachine::new()).await?;
//! let _serving = server.serve(raft.clone())?;
//! # Ok(())
//! # }
//! ```
//!
//! Peers' addresses come from the membership: the node type implements [`PeerAddr`]
//! ([`BasicNode`](crate::BasicNode) does, with its `addr`).
//!
//! # One connection per peer
//!
//! A node keeps one connection to each peer and multiplexes every RPC over it: votes,
//! AppendEntries probes, snapshot chunks and leadership transfers as *calls* (each has an id;
//! its answer carries it back; any number may be in flight), and the pipelined replication of
//! [`RaftNetwork::stream_append`](crate::RaftNetwork::stream_append) as *streams* (each has an
//! id; its requests and answers travel in order). The server runs each call in a task of its own
//! and feeds each stream to [`Raft::stream_append`](crate::Raft::stream_append).
//!
//! The connection is opened on the first RPC to the peer and replaced when it fails. A call
//! that times out while nothing at all arrived from the peer closes it (the peer or the path
//! is hung); a call that times out on a live connection leaves it open for the others.
//!
//! # Many groups
//!
//! A [`GroupHost`](crate::multi::GroupHost) runs many Raft groups on one node. Its network,
//! [`TcpHostNetwork`], keeps **one connection per peer node for all of its groups**, not one
//! per group: [`HostNetwork::group`](crate::multi::HostNetwork::group) hands each group a
//! [`TcpNetworkFactory`] over the host's connections, whose calls and replication streams
//! carry the group's id. A thousand groups on three nodes cost each node two connections. The
//! peer serves them with [`TcpServer::serve_host`].
//!
//! - **Routing.** The server hands each call and stream to
//!   [`GroupHost::group`](crate::multi::GroupHost::group) of the group it names. A call for a
//!   group the host does not run (not created yet, or removed) is answered with an error that
//!   the caller reports as [`RPCError::Unreachable`](crate::RPCError::Unreachable): the leader
//!   backs off and retries, as for a node that is down, and the connection serves on. A stream
//!   for such a group ends at once with the same error. A single-Raft server
//!   ([`TcpServer::serve`]) answers group messages so too, and a host answers messages that
//!   name no group so: a misconfigured peer gets an error, never another Raft's answer.
//! - **Beats.** The host's [`NodeBeat`](crate::multi::NodeBeat)s travel on the same
//!   connections, one frame per peer and interval, unanswered; the server hands each to
//!   [`GroupHost::receive_beat`](crate::multi::GroupHost::receive_beat). A beat keeps the
//!   groups quiesced under its node asleep, so a server takes beats only from the node that
//!   opened the connection: the node id of its hello, proven by its certificate with TLS. A
//!   beat that claims another node is dropped and logged at WARN (at most once a second): a
//!   stranger cannot keep a dead node's groups from electing. (In plain TCP the hello itself
//!   is only a claim, as for every other message.)
//! - **Batching.** Each connection has one writer task, which takes every frame queued at the
//!   moment it runs and writes them with one flush (through a 64 KiB buffer): the messages of
//!   many groups queued together — a tick's heartbeats, votes and answers — leave in one write
//!   call, and with TLS in one record.
//!
//! [`ServerHandle::accepted_connections`] counts the connections a server accepted, so an
//! operator (or a test) can see that each peer keeps one.
//!
//! # The network's promises
//!
//! The [network contract](crate::network) asks four things of `stream_append`; they hold here
//! because:
//!
//! 1. **Whole requests.** A request is one frame; the server decodes a frame only once all of
//!    it has arrived, so a connection that breaks mid-frame delivers nothing of that request.
//! 2. **In order, at most once.** A stream's requests are queued in the order the leader yields
//!    them onto one TCP connection, whose bytes arrive in order; the server feeds them to the
//!    node in that order. Nothing is ever resent: a stream lives and dies with its connection.
//! 3. **Answers in order.** The server writes a stream's answers in the order the node yields
//!    them, each the node's own answer to one request, on the same connection.
//! 4. **Errors end the stream.** A failure (connection closed, timeout, an error answer) is
//!    yielded once, and the stream ends; the server drops any request of an ended stream.
//!
//! # Frames and their bound
//!
//! A frame is a 4-byte little-endian length and a body: one message, encoded with postcard
//! (the format of the [`wire`] module). The messages are an enum per direction whose variant
//! order is part of the format: variants are only ever appended. The group host's messages
//! were appended so, and a single-Raft node's frames are unchanged: after the hello and its
//! answer, a client sends calls, stream requests and stream ends, and since the group host
//! also group calls (a group id, a call id, the call), group stream requests (a group id, a
//! stream id, the request) and beats; a server sends answers, stream answers and stream ends,
//! and since the group host also "not served" (a call or stream id and the reason: call ids
//! and stream ids are one sequence per connection, so the id names one of them). A peer's frame longer than
//! [`TcpConfig::max_frame_bytes`] closes the connection; the length is checked before any room
//! is reserved for the frame, so what a peer sends never makes a node allocate more than the
//! bound. A message of this node over the bound fails its call (it is not sent, and the
//! connection stays up).
//!
//! # Back-pressure
//!
//! Each connection's client side has a bounded send queue ([`TcpConfig::send_queue`]): callers
//! wait when it is full. The server runs at most [`TcpConfig::max_calls_per_connection`] calls
//! of a connection at once and buffers a bounded number of each stream's requests; past those,
//! it stops reading the connection, and TCP's flow control pushes back on the client. A call
//! the client gives up on (its timeout, a dropped future) is cancelled on the server, which
//! frees its slot, and every call carries how long its caller waits, after which the server
//! stops it even if the cancel is not read yet (the reader may be waiting for a slot): calls a
//! stuck group never answers cannot hold the slots of a connection that every group between
//! the two nodes shares for longer than their callers wait. It keeps
//! at most [`TcpConfig::max_streams_per_connection`] streams of a connection open, and
//! refuses a stream past them; a stream the client ends is dropped with its queued requests. The
//! leader bounds what it has in flight per follower (`Config::max_in_flight_requests`).
//!
//! # Timeouts
//!
//! Every call and stream is bounded by quorate's [`RPCOption`](crate::RPCOption) timeout
//! (connecting and the handshake included). The server gives a new connection
//! [`TcpConfig::handshake_timeout`] to finish its TLS handshake and hello — at most
//! [`TcpConfig::max_pending_handshakes`] at once, past which a silent one, or else the oldest
//! of the source holding the most, is dropped, and none
//! of them holding a [`TcpConfig::max_connections`] slot, so strangers that never finish a
//! handshake cannot lock the members out — and closes a
//! connection on which nothing arrived for [`TcpConfig::idle_timeout`] while no call ran (open
//! streams do not keep it: their leaders send on them every heartbeat interval).
//!
//! # Who may call: the handshake
//!
//! A client writes [`wire::PREAMBLE`] and a hello: its cluster id, its node id and the node id
//! it means to reach. The server answers with its own cluster id and node id, or refuses, with
//! the reason, and closes the connection:
//!
//! - a caller of **another cluster** (another cluster id) is refused: "cluster id mismatch:
//!   this node is in cluster "a", the caller in "b"". A node configured with another cluster's
//!   peers therefore never joins their elections, and its operator reads why in its errors;
//! - a caller that meant to reach **another node** (an address book that points at the wrong
//!   host) is refused, and so is a server that turns out to be another node or cluster;
//! - bytes that are **not this protocol** (no preamble, an undecodable message, a frame over
//!   the bound) close the connection without an answer.
//!
//! Refusals are logged at WARN with the peer's address and the reason, at most once a second
//! (a stranger could otherwise flood the log); accepted connections at INFO with the node id.
//!
//! **Plain TCP authenticates nothing**: a hello is only a claim, so anyone who can reach the
//! port can vote and append. Use it only on networks whose every host you trust. With the
//! `tls` feature and [`TcpConfig::with_tls`], every connection is mutual TLS 1.3 and the
//! claims are proven by certificates: see [`TlsConfig`] for what a certificate must name.

mod client;
mod config;
mod connection;
mod error;
mod host;
mod io;
mod log_limit;
mod message;
mod pool;
mod server;
mod service;
#[cfg(feature = "tls")]
mod tls;
pub mod wire;

pub use client::{TcpNetwork, TcpNetworkFactory};
pub use config::{PeerAddr, TcpConfig};
pub use error::TcpError;
pub use host::TcpHostNetwork;
pub use server::{ServerHandle, TcpServer};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsConfigError, node_name};

/// The certificate and key types [`TlsConfig::new`] takes (and their PEM parsing): rustls'
/// `rustls-pki-types`, re-exported so that an application needs no dependency of its own.
#[cfg(feature = "tls")]
pub use rustls_pki_types as pki_types;
