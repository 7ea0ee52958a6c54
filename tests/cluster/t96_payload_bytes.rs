//! Replication's byte bound holds for large values: no AppendEntries request carries more than
//! `max_payload_bytes` of entries unless it carries a single entry, and a follower that lagged
//! while megabyte values were written catches up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use quorate::network::AppendResponseStream;
use quorate::testing::{
    MemLogStore, MemStateMachine, Request, Router, RouterNetwork, RouterNetworkFactory, TypeConfig,
};
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, BasicNode, Config, EntryPayload, InstallSnapshotRequest,
    InstallSnapshotResponse, RPCError, RPCOption, Raft, RaftNetwork, RaftNetworkFactory, TransferLeaderRequest,
    VoteRequest, VoteResponse,
};

use crate::fixture::{TestCluster, TestNode, init_tracing, test_config};

type C = TypeConfig;

/// The bytes of application data a request really carries: the lengths of its keys and values,
/// independent of how quorate estimates them.
fn carried_bytes(req: &AppendEntriesRequest<C>) -> usize {
    req.entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(Request::Set { key, value }) => key.len() + value.len(),
            _ => 0,
        })
        .sum()
}

/// Every AppendEntries a node sent: (entries, bytes carried).
type Sent = Arc<Mutex<Vec<(usize, usize)>>>;

fn record(sent: &Sent, req: &AppendEntriesRequest<C>) {
    sent.lock().unwrap().push((req.entries.len(), carried_bytes(req)));
}

/// The router's network, recording the size of every AppendEntries request on its way.
struct RecordingFactory {
    inner: RouterNetworkFactory,
    sent: Sent,
}

struct RecordingNetwork {
    inner: RouterNetwork,
    sent: Sent,
}

impl RaftNetworkFactory<C> for RecordingFactory {
    type Network = RecordingNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> RecordingNetwork {
        RecordingNetwork { inner: self.inner.new_client(target, node).await, sent: self.sent.clone() }
    }
}

impl RaftNetwork<C> for RecordingNetwork {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        record(&self.sent, &req);
        self.inner.append_entries(req, option).await
    }

    async fn vote(&mut self, req: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        self.inner.vote(req, option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        self.inner.install_snapshot(req, option).await
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, option: RPCOption) -> Result<(), RPCError> {
        self.inner.transfer_leader(req, option).await
    }

    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        let sent = self.sent.clone();
        self.inner.stream_append(input.inspect(move |req| record(&sent, req)), option).await
    }
}

/// A cluster whose nodes send through [`RecordingNetwork`]s, all recording into `sent`.
async fn recording_cluster(ids: &[u64], config: Config, sent: &Sent) -> TestCluster {
    let (config, router) = (Arc::new(config), Router::new());
    let mut nodes = BTreeMap::new();
    for id in ids {
        let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
        let network = RecordingFactory { inner: router.factory(*id), sent: sent.clone() };
        let raft = Raft::new(*id, config.clone(), network, log.clone(), sm.clone()).await.expect("start node");
        router.add_node(*id, raft.clone());
        nodes.insert(*id, TestNode { raft, log, sm });
    }
    TestCluster { config, router, nodes }
}

/// Values of 1 MiB, 4 MiB per request: a follower that missed 24 of them gets them in requests
/// of at most 4 MiB each (never the 300 entries `max_payload_entries` allows), and catches up.
#[tokio::test(start_paused = true)]
async fn requests_stay_within_max_payload_bytes_for_megabyte_values() {
    init_tracing();
    const VALUE: usize = 1 << 20;
    let max_payload_bytes = 4 * VALUE as u64;
    let config = Config { max_payload_bytes, ..test_config() };
    let sent = Sent::default();
    let c = recording_cluster(&[1, 2, 3], config, &sent).await;
    let leader = c.initialize(1).await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();

    c.router.isolate(lagging);
    let value = "v".repeat(VALUE);
    for i in 0..24 {
        c.set(leader, &format!("k{i}"), &value).await;
    }
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.router.restore(lagging);
    c.wait_applied(&[lagging], last).await;
    assert_eq!(c.nodes[&lagging].sm.data(), c.nodes[&leader].sm.data());

    let sent = sent.lock().unwrap();
    let large = sent.iter().filter(|(entries, _)| *entries > 1).map(|(_, bytes)| *bytes).max().unwrap_or(0);
    assert!(
        large as u64 <= max_payload_bytes,
        "a request of several entries carried {large} bytes, over max_payload_bytes = {max_payload_bytes}"
    );
    assert!(sent.iter().any(|(entries, _)| *entries > 1), "the follower was caught up in batches, not one by one");
    c.check_safety();
}

/// One entry larger than `max_payload_bytes` still travels, alone.
#[tokio::test(start_paused = true)]
async fn an_entry_over_max_payload_bytes_travels_alone() {
    init_tracing();
    let config = Config { max_payload_bytes: 1024, ..test_config() };
    let sent = Sent::default();
    let c = recording_cluster(&[1, 2, 3], config, &sent).await;
    let leader = c.initialize(1).await;
    for i in 0..5 {
        c.set(leader, &format!("big{i}"), &"x".repeat(4096)).await;
    }
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    let sent = sent.lock().unwrap();
    assert!(sent.iter().all(|(entries, bytes)| *entries <= 1 || *bytes <= 1024), "{sent:?}");
    c.check_safety();
}
