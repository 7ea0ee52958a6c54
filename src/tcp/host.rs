//! [`TcpHostNetwork`]: the client side of a [`GroupHost`](crate::multi::GroupHost)'s
//! transport, every group's messages and the node's beats over one connection per peer.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::client::TcpNetworkFactory;
use super::config::{PeerAddr, TcpConfig};
use super::pool::ConnectionPool;
use crate::RaftTypeConfig;
use crate::error::RPCError;
use crate::multi::{GroupId, HostNetwork, NodeBeat};
use crate::network::RPCOption;

/// quorate's [`HostNetwork`] over TCP: the network of every group of a
/// [`GroupHost`](crate::multi::GroupHost), over one connection per peer node.
///
/// [`group`](HostNetwork::group) hands each group a [`TcpNetworkFactory`] whose calls and
/// replication streams name the group; all of them, and the host's beats, share the host's
/// connections: a node with a thousand groups on three peers keeps three connections. The peer
/// serves them with [`TcpServer::serve_host`](super::TcpServer::serve_host).
///
/// Cheap to clone; clones share the connections.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::multi::{GroupHost, HostConfig};
/// use quorate::tcp::{TcpConfig, TcpHostNetwork, TcpServer};
/// # use quorate::testing::TypeConfig as MyTypes;
///
/// let tcp = TcpConfig::new("shards");
/// let server = TcpServer::bind("10.0.0.1:7001".parse()?, tcp.clone()).await?;
/// let host = GroupHost::<MyTypes, _>::new(1, HostConfig::default(), TcpHostNetwork::new(1, tcp))?;
/// let _serving = server.serve_host(host.clone())?;
/// // host.create_group(...) for each group this node runs.
/// # Ok(())
/// # }
/// ```
pub struct TcpHostNetwork<C: RaftTypeConfig> {
    pool: Arc<ConnectionPool<C>>,
}

impl<C: RaftTypeConfig> Clone for TcpHostNetwork<C> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for TcpHostNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpHostNetwork").field("node_id", &self.pool.node_id).finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> TcpHostNetwork<C> {
    /// The client side of node `node_id`'s host transport. It connects to nobody until a
    /// group sends its first RPC or the host its first beat.
    ///
    /// With TLS, the node's certificate must name it (see [`TlsConfig`](super::TlsConfig));
    /// [`TcpServer::serve_host`](super::TcpServer::serve_host) checks that when it starts.
    pub fn new(node_id: C::NodeId, config: TcpConfig) -> Self {
        Self { pool: Arc::new(ConnectionPool::new(node_id, config)) }
    }
}

impl<C> HostNetwork<C> for TcpHostNetwork<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
{
    type Group = TcpNetworkFactory<C>;

    fn group(&self, group: GroupId) -> TcpNetworkFactory<C> {
        TcpNetworkFactory::for_group(self.pool.clone(), group)
    }

    /// Queue `beat` on the connection to `target` (opening it if needed), bounded by
    /// `option.timeout`. It leaves with whatever else is queued for that peer.
    ///
    /// Cancel safe: dropped before it is queued, the beat is not sent, and the connection
    /// (or the slot of one being opened) stays usable.
    async fn send_beat(
        &self,
        target: C::NodeId,
        node: &C::Node,
        beat: NodeBeat<C>,
        option: RPCOption,
    ) -> Result<(), RPCError> {
        let deadline = Instant::now() + option.timeout;
        let conn = self.pool.connection_by(target, node.peer_addr(), deadline, option.timeout).await?;
        match tokio::time::timeout_at(deadline, conn.send_beat(beat)).await {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(RPCError::Timeout(option.timeout)),
        }
    }
}
