//! Certificates made at test time, and nodes on the test kit's storage served over TCP: single
//! Rafts ([`Cluster`]) and group hosts ([`HostCluster`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quorate::multi::{GroupHost, GroupId, HostConfig};
use quorate::tcp::{ServerHandle, TcpConfig, TcpHostNetwork, TcpNetworkFactory, TcpServer, TlsConfig, node_name};
use quorate::testing::{MemLogStore, MemStateMachine, TypeConfig};
use quorate::{BasicNode, Config, Raft};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub type C = TypeConfig;

/// How long a test waits for a condition.
pub const WAIT: Duration = Duration::from_secs(20);

/// A throwaway certificate authority.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A certificate (and its key) carrying the DNS names `names`, signed by this CA.
    pub fn cert(&self, names: &[String]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.to_vec()).unwrap().signed_by(&key, &self.ca).unwrap();
        (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// The TLS config of a node whose certificate names `names`, trusting this CA.
    pub fn tls_for(&self, names: &[String]) -> TlsConfig {
        let (cert, key) = self.cert(names);
        TlsConfig::new(vec![self.ca_der()], vec![cert], key).unwrap()
    }

    /// The TLS config of node `id` of cluster `cluster`.
    pub fn node(&self, cluster: &str, id: u64) -> TlsConfig {
        self.tls_for(&[node_name(cluster, id)])
    }
}

/// Raft settings for loopback: fast elections.
pub fn raft_config() -> Arc<Config> {
    Arc::new(Config {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..Config::default()
    })
}

/// One node: its Raft, its state machine, and its server.
pub struct Node {
    pub raft: Raft<C>,
    pub sm: MemStateMachine,
    pub log: MemLogStore,
    pub addr: String,
    pub server: Option<ServerHandle>,
}

impl Node {
    /// Start node `id` with `tcp` on a fresh loopback port.
    pub async fn start(id: u64, tcp: TcpConfig) -> Self {
        let server = TcpServer::bind("127.0.0.1:0".parse().unwrap(), tcp.clone()).await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let (sm, log) = (MemStateMachine::new(), MemLogStore::new());
        let network = TcpNetworkFactory::<C>::new(id, tcp);
        let raft = Raft::new(id, raft_config(), network, log.clone(), sm.clone()).await.unwrap();
        let server = server.serve(raft.clone()).unwrap();
        Self { raft, sm, log, addr, server: Some(server) }
    }

    pub fn basic(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    /// Stop serving and shut the node down.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = self.raft.shutdown().await;
    }
}

/// A cluster of `n` nodes; `tcp(id)` gives each node its settings.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub async fn start(n: u64, tcp: impl Fn(u64) -> TcpConfig) -> Self {
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node::start(id, tcp(id)).await);
        }
        Self { nodes }
    }

    pub fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.nodes.iter().enumerate().map(|(i, n)| (i as u64 + 1, n.basic())).collect()
    }

    /// Initialize through node 1 and wait until a leader is known to node 1; its id.
    pub async fn init(&self) -> u64 {
        self.nodes[0].raft.initialize(self.members()).await.unwrap();
        self.leader(None).await
    }

    /// Wait until a running node other than `not` leads, as node 1 (or the first running node)
    /// sees it; its id.
    pub async fn leader(&self, not: Option<u64>) -> u64 {
        let watcher = self.nodes.iter().enumerate().find(|(i, n)| n.server.is_some() && Some(*i as u64 + 1) != not);
        let (_, watcher) = watcher.expect("a running node");
        let m = watcher
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != not, "a leader")
            .await
            .unwrap();
        m.current_leader.unwrap()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub async fn stop(&mut self) {
        for n in &mut self.nodes {
            n.stop().await;
        }
    }
}

/// A TCP proxy in front of `upstream` that counts the connections it accepts.
pub struct CountingProxy {
    pub addr: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { addr, accepted, task }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A group host on the TCP transport.
pub type TcpHost = GroupHost<C, TcpHostNetwork<C>>;

/// Host settings for loopback on a busy machine: a peer is suspected only after several
/// missed beats.
pub fn host_config() -> HostConfig {
    HostConfig {
        beat_interval: Duration::from_millis(50),
        suspect_after: Duration::from_millis(250),
        ..HostConfig::default()
    }
}

/// Raft settings of a hosted group: elections slower than the host's `suspect_after`.
pub fn group_config() -> Arc<Config> {
    Arc::new(Config {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(400),
        election_timeout_max: Duration::from_millis(800),
        ..Config::default()
    })
}

/// One group of a host: its Raft and its state machine.
pub struct Group {
    pub raft: Raft<C>,
    pub sm: MemStateMachine,
}

/// One node running a group host, served over TCP.
pub struct HostNode {
    pub id: u64,
    pub host: TcpHost,
    pub addr: String,
    pub server: ServerHandle,
    pub groups: BTreeMap<GroupId, Group>,
}

impl HostNode {
    /// Start node `id`'s host with `config`, served with `tcp` on a fresh loopback port.
    pub async fn start(id: u64, tcp: TcpConfig, config: HostConfig) -> Self {
        let server = TcpServer::bind("127.0.0.1:0".parse().unwrap(), tcp.clone()).await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let host = GroupHost::new(id, config, TcpHostNetwork::new(id, tcp)).unwrap();
        let server = server.serve_host(host.clone()).unwrap();
        Self { id, host, addr, server, groups: BTreeMap::new() }
    }

    /// Create group `group` on this host, on the test kit's storage.
    pub async fn create_group(&mut self, group: GroupId) {
        let sm = MemStateMachine::new();
        let raft = self.host.create_group(group, group_config(), MemLogStore::new(), sm.clone()).await.unwrap();
        self.groups.insert(group, Group { raft, sm });
    }

    pub fn basic(&self) -> BasicNode {
        BasicNode::new(&self.addr)
    }

    pub fn group(&self, group: GroupId) -> &Group {
        &self.groups[&group]
    }
}

/// Nodes `1..=n`, each a group host running the same groups.
pub struct HostCluster {
    pub nodes: Vec<HostNode>,
}

impl HostCluster {
    /// Start `n` hosts (`tcp(id)` gives each its settings), each serving before any group
    /// exists, and create `groups` on every one.
    pub async fn start(n: u64, groups: std::ops::Range<GroupId>, tcp: impl Fn(u64) -> TcpConfig) -> Self {
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(HostNode::start(id, tcp(id), host_config()).await);
        }
        for node in &mut nodes {
            for group in groups.clone() {
                node.create_group(group).await;
            }
        }
        Self { nodes }
    }

    pub fn node(&self, id: u64) -> &HostNode {
        &self.nodes[id as usize - 1]
    }

    pub fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.nodes.iter().map(|n| (n.id, n.basic())).collect()
    }

    /// The ids of the groups every node runs.
    pub fn groups(&self) -> Vec<GroupId> {
        self.nodes[0].groups.keys().copied().collect()
    }

    /// Initialize every group, each through another node in turn (so that leaders spread over
    /// the nodes), and wait until each has a leader; the leaders by group.
    pub async fn init(&self) -> BTreeMap<GroupId, u64> {
        let members = self.members();
        for (k, group) in self.groups().into_iter().enumerate() {
            let node = &self.nodes[k % self.nodes.len()];
            node.group(group).raft.initialize(members.clone()).await.unwrap();
        }
        let mut leaders = BTreeMap::new();
        for (k, group) in self.groups().into_iter().enumerate() {
            let node = &self.nodes[k % self.nodes.len()];
            let m = node
                .group(group)
                .raft
                .wait(Some(WAIT))
                .metrics(|m| m.current_leader.is_some(), format!("a leader of group {group}"))
                .await
                .unwrap();
            leaders.insert(group, m.current_leader.unwrap());
        }
        leaders
    }

    pub async fn stop(&self) {
        for node in &self.nodes {
            node.host.shutdown().await.unwrap();
        }
    }
}
