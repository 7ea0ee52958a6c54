//! Election safety, log replication, state machine safety on a healthy cluster.

use crate::cluster::{Cluster, config};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn elects_one_leader_and_replicates() {
    let mut c = Cluster::new(3, config(), 1, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    let mut last = 0;
    for i in 0..20 {
        last = c.write(l, &format!("k{i}"), &format!("v{i}")).await.expect("write").log_id.index;
    }
    c.all_applied(last, std::time::Duration::from_secs(5)).await;
    for id in 1..=3 {
        assert_eq!(c.sm(id).get("k19").as_deref(), Some("v19"));
    }
    c.check();
    c.shutdown().await;
}
