//! [`TcpError`]: why the transport could not reach a peer, or could not serve one.

use std::io;

use super::wire::FrameError;
use crate::error::RPCError;

/// Why a connection could not be made, or failed. The client turns it into the [`RPCError`]
/// quorate retries ([`RPCError::Unreachable`] for a peer that cannot be reached or refuses,
/// [`RPCError::Network`] for a connection that broke); its message says which.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// Connecting, reading or writing failed.
    #[error("{addr}: {source}")]
    Io {
        /// The peer's address.
        addr: String,
        /// What failed.
        source: io::Error,
    },
    /// The TLS handshake failed: a certificate that does not chain to the cluster's CA, that
    /// names another node or cluster, or no certificate at all.
    #[error("{addr}: TLS handshake failed: {reason}")]
    Tls {
        /// The peer's address.
        addr: String,
        /// rustls' reason.
        reason: String,
    },
    /// The peer refused the handshake, and said why (e.g. another cluster id).
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The peer's address.
        addr: String,
        /// The peer's reason.
        reason: String,
    },
    /// The peer at the address is not the node the membership says is there.
    #[error("{addr} is {got}, not the {expected} this node meant to reach")]
    WrongPeer {
        /// The peer's address.
        addr: String,
        /// Cluster and node id expected.
        expected: String,
        /// Cluster and node id the peer gave.
        got: String,
    },
    /// The bytes on the connection are not this protocol.
    #[error("{addr}: {source}")]
    Frame {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        source: FrameError,
    },
    /// The peer serves nothing for this call or stream: it runs no group of the id asked for,
    /// or it is a single-group server asked for a group (or a group host asked for none). The
    /// connection stays up for the other calls.
    #[error("{addr} does not serve it: {reason}")]
    NotServed {
        /// The peer's address.
        addr: String,
        /// The peer's reason.
        reason: String,
    },
    /// The connection was closed (by the peer, or after an earlier failure).
    #[error("{addr}: connection closed: {reason}")]
    Closed {
        /// The peer's address.
        addr: String,
        /// Why, as far as this side knows.
        reason: String,
    },
}

impl TcpError {
    /// Whether this says the peer cannot be reached at all (rather than a connection that
    /// broke), or that what was asked is not there (a group the peer does not run): quorate
    /// backs off before retrying such a peer.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::Tls { .. } | Self::Refused { .. } | Self::WrongPeer { .. } | Self::NotServed { .. }
        )
    }
}

impl From<TcpError> for RPCError {
    fn from(e: TcpError) -> Self {
        if e.is_unreachable() { RPCError::unreachable(&e) } else { RPCError::network(&e) }
    }
}
