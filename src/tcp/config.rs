//! [`TcpConfig`]: what both ends of the transport are configured with, and [`PeerAddr`]: how
//! the transport finds a member's address in the membership.

use std::fmt;
use std::time::Duration;

use crate::BasicNode;

/// The address a member listens on for the transport, read from the membership's node
/// descriptions (its address book).
///
/// Implement it for your `RaftTypeConfig::Node`; [`BasicNode`] implements it with its `addr`.
pub trait PeerAddr {
    /// `host:port` of the node's transport listener.
    fn peer_addr(&self) -> &str;
}

impl PeerAddr for BasicNode {
    fn peer_addr(&self) -> &str {
        &self.addr
    }
}

/// The settings of the transport, shared by a node's client and its server.
///
/// Build it with [`TcpConfig::new`] and the `with_*` methods. Both ends of a connection must
/// agree on `cluster_id` and, with TLS, on the cluster's CA.
#[derive(Clone)]
#[non_exhaustive]
pub struct TcpConfig {
    /// The cluster's id. A node refuses connections from nodes of another cluster, and a
    /// client refuses a server of another one. With TLS it is also part of every node's
    /// certificate name (see [`TlsConfig`](super::TlsConfig)), so it must be a valid DNS name
    /// label sequence: letters, digits, `-` and `.`.
    pub cluster_id: String,
    /// The largest frame sent or accepted, in bytes. A peer's frame over it closes the
    /// connection (checked before anything is allocated for it); a message of this node over
    /// it fails its call with an error instead of being sent. It must hold an AppendEntries
    /// of `Config::max_payload_bytes` (or one entry, if entries can be larger) and a snapshot
    /// chunk of `Config::snapshot_max_chunk_size`, plus a little. Default: 64 MiB.
    pub max_frame_bytes: usize,
    /// How long the server waits for a new connection's TLS handshake and hello. Default: 5 s.
    pub handshake_timeout: Duration,
    /// The server closes a connection on which nothing arrived for this long while none of
    /// its calls was running; the client reconnects on its next call. Open replication
    /// streams do not keep a silent connection: a leader sends on its stream every heartbeat
    /// interval, so a stream silent for this long has lost its peer. Keep it well above
    /// `Config::heartbeat_interval`. Default: 60 s.
    pub idle_timeout: Duration,
    /// The most connections a server serves at once, counting those that have completed
    /// their handshake; one that completes it when all are taken waits up to
    /// `handshake_timeout` for one to close, then is dropped. Default: 1024.
    pub max_connections: usize,
    /// The most connections a server keeps while they do their TLS handshake and hello; a new
    /// one past it makes the server drop one of those that got least far (sent nothing; sent
    /// something; past TLS and the preamble; hello read — a member sends its TLS hello, or its
    /// preamble, at once), and among those, the oldest of the source holding the most (an IPv4
    /// address, or an IPv6 /64). Handshakes take
    /// no `max_connections` slot, so strangers that connect and never finish one cannot lock
    /// the members out (found in review), and a flood of silent connections drops its own,
    /// wherever it comes from; so does a flood that speaks, from a source other than the
    /// members', and a member past its TLS handshake (with mutual TLS, proof that it holds a
    /// certificate of the cluster's CA) is never dropped for strangers that are not. Strangers
    /// that send anything at all, from more sources than this bound per round trip of a
    /// member's handshake, or from the members' own source (a shared NAT), can still crowd out
    /// a member far away before its TLS handshake is done: only a firewall stops those. In
    /// plain TCP "past TLS and the preamble" proves nothing (the preamble is public), so a
    /// stranger that sends it ranks with the members. Default: 128.
    pub max_pending_handshakes: usize,
    /// The most calls a server executes at once for one connection; it reads no more of that
    /// connection until one finishes or its client cancels it (back-pressure). Default: 64.
    pub max_calls_per_connection: usize,
    /// The most `stream_append` streams a server keeps open at once for one connection; a
    /// stream opened past it is answered that it is not served (its leader retries later).
    /// Each open stream holds a task and a queue of requests, so this bounds what one peer
    /// can make a node hold. One connection carries a stream per group that the peer leads
    /// and this node follows, while the group is awake: a host of many groups needs as many
    /// as it has groups. Default: 65,536.
    pub max_streams_per_connection: usize,
    /// Frames a client queues for one connection before callers wait (back-pressure).
    /// Default: 256.
    pub send_queue: usize,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<super::TlsConfig>,
}

impl TcpConfig {
    /// The defaults, for cluster `cluster_id`, in plain TCP.
    ///
    /// Plain TCP authenticates nothing and encrypts nothing: anyone who can reach the port can
    /// send votes and entries. Use it only on a network every host of which you trust (a
    /// private link, a test); elsewhere add [`with_tls`](Self::with_tls).
    pub fn new(cluster_id: impl Into<String>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            max_frame_bytes: 64 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_pending_handshakes: 128,
            max_calls_per_connection: 64,
            max_streams_per_connection: 65_536,
            send_queue: 256,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// These settings with mutual TLS: every connection is encrypted, and each end proves with
    /// a certificate of the cluster's CA which node it is.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: super::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These settings with frames of at most `bytes` bytes.
    pub fn with_max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// These settings with the given handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// These settings with the given idle timeout.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConfig")
            .field("cluster_id", &self.cluster_id)
            .field("tls", &self.is_tls())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}
