//! The messages on the wire and their framing.

use bytes::{Bytes, BytesMut};
use quorate::error::RaftError;
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::TypeConfig;

type C = TypeConfig;

/// The largest frame sent or accepted. The node checks at start that it holds the largest
/// message it can send (an AppendEntries of `max_payload_bytes`, which quorate keeps by the
/// entries' `PayloadSize`, or a single entry; a snapshot chunk). A peer's frame over it ends
/// the connection; a message of this node over it is refused with [`WireError::TooLarge`]
/// before anything is written, instead of breaking the connection half-way.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Why a message could not be framed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Serialization failed.
    #[error("cannot encode the message: {0}")]
    Encode(#[from] postcard::Error),
    /// The encoded message does not fit a frame.
    #[error("a message of {bytes} bytes is over the {MAX_FRAME_BYTES} byte frame limit")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
    },
}

/// A framed TCP connection.
pub type Conn = Framed<TcpStream, LengthDelimitedCodec>;

/// Frame a TCP stream.
pub fn framed(stream: TcpStream) -> Conn {
    let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec();
    Framed::new(stream, codec)
}

/// A request on a unary connection, or the switch to a stream.
#[derive(Serialize, Deserialize)]
pub enum RpcRequest {
    /// For [`Raft::vote`](quorate::Raft::vote).
    Vote(VoteRequest<C>),
    /// For [`Raft::append_entries`](quorate::Raft::append_entries).
    AppendEntries(AppendEntriesRequest<C>),
    /// For [`Raft::install_snapshot`](quorate::Raft::install_snapshot).
    InstallSnapshot(InstallSnapshotRequest<C>),
    /// For [`Raft::handle_transfer_leader`](quorate::Raft::handle_transfer_leader).
    TransferLeader(TransferLeaderRequest<C>),
    /// From now on this connection is a replication stream: every further frame from the
    /// client is an [`AppendEntriesRequest`], every frame from the server a [`StreamReply`].
    OpenStream,
    /// From now on this connection relays client operations to this (leader) node: every
    /// further frame from the client is a [`ForwardRequest`](super::forward::ForwardRequest),
    /// every frame from the server a [`ForwardReply`](super::forward::ForwardReply).
    OpenForward,
}

/// The answer to an [`RpcRequest`], of the same variant.
#[derive(Serialize, Deserialize)]
pub enum RpcReply {
    /// Answers [`RpcRequest::Vote`].
    Vote(Result<VoteResponse<C>, RaftError>),
    /// Answers [`RpcRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<C>, RaftError>),
    /// Answers [`RpcRequest::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<C>, RaftError>),
    /// Answers [`RpcRequest::TransferLeader`]: whether the target started an election.
    TransferLeader(Result<bool, RaftError>),
}

/// One response of a replication stream.
pub type StreamReply = Result<AppendEntriesResponse<C>, RaftError>;

/// Encode a message as a frame body.
///
/// # Errors
/// [`WireError::TooLarge`] if it does not fit a frame; [`WireError::Encode`] if it cannot be
/// serialized (never for these types).
pub fn encode<T: Serialize>(msg: &T) -> Result<Bytes, WireError> {
    let body = postcard::to_allocvec(msg)?;
    if body.len() > MAX_FRAME_BYTES {
        tracing::warn!(bytes = body.len(), limit = MAX_FRAME_BYTES, "refusing to send a message over the frame limit");
        return Err(WireError::TooLarge { bytes: body.len() });
    }
    Ok(Bytes::from(body))
}

/// Decode a frame body.
///
/// # Errors
/// If the frame is not a valid encoding of `T`.
pub fn decode<T: DeserializeOwned>(frame: &BytesMut) -> Result<T, postcard::Error> {
    postcard::from_bytes(frame)
}

#[cfg(test)]
mod tests {
    use super::{MAX_FRAME_BYTES, WireError, encode};

    #[test]
    fn a_message_over_the_frame_limit_is_refused_before_it_is_sent() {
        let too_large = vec![7u8; MAX_FRAME_BYTES];
        assert!(matches!(encode(&too_large), Err(WireError::TooLarge { .. })));
        assert!(encode(&vec![7u8; 1024]).is_ok());
    }
}
