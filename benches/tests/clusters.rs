//! Both adapters under every setting the bench uses: a cluster starts, takes single writes and
//! batches, replicates them to every node (verify) and shuts down. The numbers are not looked
//! at; what is checked is that each table's configuration really runs.

use std::time::Duration;

use quorate_bench::openraft_cluster::OpenraftCluster;
use quorate_bench::quorate_cluster::QuorateCluster;
use quorate_bench::tuning::{Replication, Settings, Tuning};
use quorate_bench::workload::{self, Load};
use quorate_bench::{BenchCluster, PhaseError};

const LIMIT: Duration = Duration::from_secs(10);

/// Start `L` with `settings`, write 40 single entries and then 4 × 10 batches of 4 from two
/// clients, verify every node applied them all, shut down.
async fn writes_and_batches_replicate<L: BenchCluster>(settings: Settings) -> Result<(), PhaseError> {
    let cluster = L::start(LIMIT, settings).await?;
    let single = workload::run(cluster.writer(), Load::single(2, 40), LIMIT).await;
    assert_eq!((single.failure.as_deref(), single.completed), (None, 40));
    let batches = workload::run(cluster.writer(), Load::batches(2, 4, 40, 1), LIMIT).await;
    assert_eq!((batches.failure.as_deref(), batches.completed), (None, 40));
    assert_eq!(batches.latency.len(), 10, "one latency per call");
    cluster.verify(single.completed + batches.completed, LIMIT).await?;
    cluster.shutdown().await
}

fn tuned(replication: Replication) -> Settings {
    let mut tuning = Tuning::default();
    tuning.openraft.replication = replication;
    Settings::Tuned(tuning)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorate_runs_with_the_same_settings_and_tuned() -> Result<(), PhaseError> {
    writes_and_batches_replicate::<QuorateCluster>(Settings::Same { snapshots: false }).await?;
    writes_and_batches_replicate::<QuorateCluster>(tuned(Replication::Sequential)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_runs_with_the_same_settings_and_tuned_both_ways() -> Result<(), PhaseError> {
    writes_and_batches_replicate::<OpenraftCluster>(Settings::Same { snapshots: false }).await?;
    writes_and_batches_replicate::<OpenraftCluster>(tuned(Replication::Sequential)).await?;
    writes_and_batches_replicate::<OpenraftCluster>(tuned(Replication::Pipelined)).await
}

#[test]
fn each_library_describes_the_settings_it_runs_with() {
    let tuned = QuorateCluster::describe(Settings::Tuned(Tuning::default()));
    assert!(tuned.contains("max_payload_entries 1024"), "{tuned}");
    let same = OpenraftCluster::describe(Settings::Same { snapshots: false });
    assert!(same.contains("max_payload_entries 300") && same.contains("snapshots never"), "{same}");
    let openraft_tuned = OpenraftCluster::describe(Settings::Tuned(Tuning::default()));
    for fact in ["election_timeout 200..2000 ms", "purge_batch_size 1024", "max_payload_entries 1024", "sequential"] {
        assert!(openraft_tuned.contains(fact), "{openraft_tuned} lacks {fact}");
    }
}
