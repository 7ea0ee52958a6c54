//! The server side: accept connections and hand each request to the local [`Raft`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

use super::forward::serve_forward;
use super::wire::{Conn, RpcReply, RpcRequest, decode, encode, framed};
use crate::Raft;
use crate::service::KvService;

/// A connection silent this long is closed (the client reconnects on its next call), so
/// connections of peers that vanished in a partition do not pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve Raft RPCs, and operations forwarded by followers, from `listener` until the process
/// ends.
pub async fn serve(listener: TcpListener, service: KvService) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a raft connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_conn(framed(stream), service).await {
                tracing::debug!(%peer, error = %e, "raft connection ended");
            }
        });
    }
}

async fn serve_conn(mut conn: Conn, service: KvService) -> Result<(), String> {
    let raft = &service.raft;
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, conn.next()).await {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(f)) => f.map_err(frame_error)?,
        };
        let req: RpcRequest = decode(&frame).map_err(|e| format!("undecodable request: {e}"))?;
        let reply = match req {
            RpcRequest::Vote(r) => RpcReply::Vote(raft.vote(r).await),
            RpcRequest::AppendEntries(r) => RpcReply::AppendEntries(raft.append_entries(r).await),
            RpcRequest::InstallSnapshot(r) => RpcReply::InstallSnapshot(raft.install_snapshot(r).await),
            RpcRequest::TransferLeader(r) => RpcReply::TransferLeader(raft.handle_transfer_leader(r).await),
            RpcRequest::OpenStream => return serve_stream(conn, raft.clone()).await,
            RpcRequest::OpenForward => return serve_forward(conn, service).await,
        };
        let frame = encode(&reply).map_err(|e| e.to_string())?;
        conn.send(frame).await.map_err(|e| e.to_string())?;
    }
}

/// A frame that could not be read: over the limit or malformed is a peer to warn about.
fn frame_error(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::InvalidData {
        tracing::warn!(error = %e, "a peer sent a frame over the limit or malformed; closing its connection");
    }
    e.to_string()
}

/// Feed the connection's AppendEntries frames to [`Raft::stream_append`](quorate::Raft::stream_append)
/// and write its responses back, flushing once per batch of ready responses.
async fn serve_stream(conn: Conn, raft: Raft) -> Result<(), String> {
    let (mut sink, source) = conn.split();
    // The input ends at the first frame that fails or does not decode (the node answers what
    // it got, then the connection closes and the leader opens a new stream), and when the
    // leader is silent for IDLE_TIMEOUT: it sends heartbeats on the stream, so such a leader
    // is gone (crashed, partitioned away) and its stream is only holding a task here.
    let requests = futures_util::stream::unfold(source, |mut source| async move {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, source.next()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => return None,
        };
        match decode(&frame) {
            Ok(req) => Some((req, source)),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable AppendEntries on a replication stream");
                None
            }
        }
    });
    let mut responses = std::pin::pin!(raft.stream_append(requests).ready_chunks(64));
    while let Some(batch) = responses.next().await {
        for reply in batch {
            let frame = encode(&reply).map_err(|e| e.to_string())?;
            sink.feed(frame).await.map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
