//! [`ConnectionPool`]: a node's connections to its peers, one per peer, shared by every client
//! of the node: the single Raft's [`TcpNetworkFactory`](super::TcpNetworkFactory), or every
//! group's factory and the beats of a [`TcpHostNetwork`](super::TcpHostNetwork).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::config::TcpConfig;
use super::connection::{Connection, connect};
use super::error::TcpError;
use crate::RaftTypeConfig;
use crate::error::RPCError;

/// One peer's connection slot: callers that find no open connection wait here for the one
/// being opened, so a peer gets one connection however many callers race.
type Slot<C> = Arc<tokio::sync::Mutex<Option<Arc<Connection<C>>>>>;

/// The connections of node `node_id` to its peers: at most one open per peer at a time.
///
/// Dropping the pool (when the last client holding it is dropped) closes them all.
pub(crate) struct ConnectionPool<C: RaftTypeConfig> {
    pub(crate) node_id: C::NodeId,
    config: TcpConfig,
    peers: Mutex<HashMap<C::NodeId, Slot<C>>>,
}

impl<C: RaftTypeConfig> ConnectionPool<C> {
    pub(crate) fn new(node_id: C::NodeId, config: TcpConfig) -> Self {
        Self { node_id, config, peers: Mutex::new(HashMap::new()) }
    }

    /// The open connection to `target` at `addr`, or a new one. A connection to another
    /// address (the membership moved the peer) or a closed one is replaced.
    async fn connection(&self, target: C::NodeId, addr: &str) -> Result<Arc<Connection<C>>, TcpError> {
        let slot = self.peers.lock().unwrap_or_else(|e| e.into_inner()).entry(target).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.is_closed() && conn.addr == addr {
                return Ok(conn.clone());
            }
            conn.close("replaced");
        }
        *slot = None;
        let conn = connect::<C>(&self.config, self.node_id, target, addr).await?;
        tracing::debug!(target: "quorate::tcp", node = %self.node_id, peer = %target, %addr, "connected");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// As [`connection`](Self::connection), given up at `deadline` (reported as a timeout of
    /// `timeout`, the caller's whole budget). Cancel safe: a connection half-opened when the
    /// future is dropped is dropped with it, and the slot stays empty.
    pub(crate) async fn connection_by(
        &self,
        target: C::NodeId,
        addr: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Connection<C>>, RPCError> {
        match timeout_at(deadline, self.connection(target, addr)).await {
            Err(_) => Err(RPCError::Timeout(timeout)),
            Ok(conn) => Ok(conn?),
        }
    }
}

impl<C: RaftTypeConfig> Drop for ConnectionPool<C> {
    fn drop(&mut self) {
        // The node is gone: close its connections instead of leaving them to the peers' idle
        // timeout.
        for slot in self.peers.get_mut().unwrap_or_else(|e| e.into_inner()).values() {
            if let Some(conn) = slot.try_lock().ok().as_deref().and_then(Option::as_ref) {
                conn.close("the node stopped");
            }
        }
    }
}
