//! A real 3-node cluster over loopback: writes, a leader that stops, writes again; in plain
//! TCP and in mutual TLS.

use quorate::tcp::TcpConfig;
use quorate::testing::Request;

use crate::fixture::{Cluster, Pki, WAIT};

/// Write `keys` through the leader, wait until every running node applied them.
async fn write_and_check(cluster: &Cluster, leader: u64, keys: std::ops::Range<u64>) {
    let raft = &cluster.node(leader).raft;
    let mut last = None;
    for k in keys.clone() {
        let resp = raft.client_write(Request::set(format!("k{k}"), format!("v{k}"))).await.unwrap();
        last = Some(resp.log_id);
    }
    for node in cluster.nodes.iter().filter(|n| n.server.is_some()) {
        node.raft.wait(Some(WAIT)).applied_index_at_least(last.map(|l| l.index), "the writes").await.unwrap();
        let data = node.sm.data();
        for k in keys.clone() {
            assert_eq!(data.get(&format!("k{k}")).map(String::as_str), Some(format!("v{k}").as_str()));
        }
    }
}

async fn cluster_survives_its_leader(mut cluster: Cluster) {
    let leader = cluster.init().await;
    write_and_check(&cluster, leader, 0..200).await;
    cluster.nodes[leader as usize - 1].stop().await;
    let new_leader = cluster.leader(Some(leader)).await;
    assert_ne!(new_leader, leader);
    write_and_check(&cluster, new_leader, 200..300).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_cluster_replicates_and_survives_its_leader() {
    cluster_survives_its_leader(Cluster::start(3, |_| TcpConfig::new("plain")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_replicates_and_survives_its_leader() {
    let pki = Pki::new("test CA");
    cluster_survives_its_leader(
        Cluster::start(3, |id| TcpConfig::new("secure").with_tls(pki.node("secure", id))).await,
    )
    .await;
}
