//! The code of the guide's "Getting started" chapter: a replicated key-value map in one
//! process, built on quorate with nothing but the three traits implemented by hand.
//!
//! Run it with `cargo run --example getting_started`. It starts three nodes, initializes the
//! cluster, writes through the leader, reads back linearizably, and shuts down.
//!
//! The log store and state machine here keep everything in memory: they show the shape of an
//! implementation, not a durable one. `examples/raft-kv` is the durable version.
//!
//! The guide includes the parts between `ANCHOR` markers; keep them readable on their own.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quorate::error::RPCError;
use quorate::network::RPCOption;
use quorate::storage::{Snapshot, SnapshotMeta};
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, BasicNode, Config, Entry, EntryPayload, IOFlushed,
    InstallSnapshotRequest, InstallSnapshotResponse, LogId, LogState, Raft, RaftError, RaftLogReader, RaftLogStorage,
    RaftNetwork, RaftNetworkFactory, RaftSnapshotBuilder, RaftStateMachine, ReadPolicy, StorageError, StoredMembership,
    TransferLeaderRequest, Vote, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

// ANCHOR: types
/// What a client proposes: the log replicates these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
    },
}

/// What an entry costs to replicate, for the byte bounds of replication (every request type
/// says it; a `String` counts its length).
impl quorate::PayloadSize for Command {
    fn payload_size(&self) -> usize {
        match self {
            Command::Set { key, value } => key.payload_size() + value.payload_size(),
        }
    }
}

quorate::declare_raft_types!(
    /// The application's types: `Command`s in the log, the previous value as the answer.
    /// Node ids are `u64` and nodes are `BasicNode { addr }` by default.
    pub KvTypes:
        D = Command,
        R = Option<String>,
);
// ANCHOR_END: types

type C = KvTypes;

// ANCHOR: log_store
/// The Raft log and vote, in memory. Every clone is a handle to the same log, so the store
/// can hand out readers that see what is appended later.
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<LogData>>,
}

#[derive(Default)]
struct LogData {
    vote: Option<Vote<C>>,
    committed: Option<LogId<C>>,
    last_purged: Option<LogId<C>>,
    entries: BTreeMap<u64, Entry<C>>,
}

impl LogStore {
    fn lock(&self) -> MutexGuard<'_, LogData> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let log = self.lock();
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last.or(log.last_purged) })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        // A disk-backed store writes and fsyncs here, before returning.
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let mut log = self.lock();
        for entry in entries {
            log.entries.insert(entry.log_id.index, entry);
        }
        // The entries are readable now. A disk-backed store calls the callback once they
        // are fsynced, possibly later and from another task.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        self.lock().entries.split_off(&since.index);
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        let mut log = self.lock();
        log.entries = log.entries.split_off(&(upto.index + 1));
        log.last_purged = Some(upto);
        Ok(())
    }
}
// ANCHOR_END: log_store

// ANCHOR: state_machine
/// The replicated key-value map. Clones share it, so the application can read it while the
/// node applies to it.
#[derive(Clone, Default)]
pub struct StateMachine {
    inner: Arc<Mutex<SmData>>,
}

#[derive(Default)]
struct SmData {
    last_applied: Option<LogId<C>>,
    last_membership: StoredMembership<C>,
    kv: BTreeMap<String, String>,
    /// The last snapshot built or installed: what it covers and its bytes.
    snapshot: Option<(SnapshotMeta<C>, Vec<u8>)>,
}

impl StateMachine {
    fn lock(&self) -> MutexGuard<'_, SmData> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read a key from this node's copy of the map.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().kv.get(key).cloned()
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        let sm = self.lock();
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Option<String>>, StorageError> {
        let mut sm = self.lock();
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(Command::Set { key, value }) => sm.kv.insert(key, value),
                EntryPayload::Membership(m) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut sm = self.lock();
        sm.kv = decode(&bytes);
        sm.last_applied = meta.last_log_id;
        sm.last_membership = meta.last_membership.clone();
        sm.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        Ok(self
            .lock()
            .snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}

impl RaftSnapshotBuilder<C> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        let mut sm = self.lock();
        let meta = SnapshotMeta {
            last_log_id: sm.last_applied,
            last_membership: sm.last_membership.clone(),
            snapshot_id: format!("upto-{}", sm.last_applied.map_or(0, |l| l.index)),
        };
        let bytes = encode(&sm.kv);
        sm.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

/// The snapshot format: for each pair, the key and the value, each as a little-endian `u64`
/// length and its bytes. Any serialization works; quorate only moves the bytes.
fn encode(kv: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in kv.iter().flat_map(|(k, v)| [k, v]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> BTreeMap<String, String> {
    let mut next = || {
        let (len, rest) = bytes.split_first_chunk::<8>()?;
        let (s, rest) = rest.split_at_checked(u64::from_le_bytes(*len) as usize)?;
        bytes = rest;
        Some(String::from_utf8_lossy(s).into_owned())
    };
    std::iter::from_fn(|| Some((next()?, next()?))).collect()
}
// ANCHOR_END: state_machine

// ANCHOR: network
/// The nodes of this process by id: the "network" delivers an RPC by calling the target's
/// `Raft` handle directly. A real network serializes the request (every RPC type is serde)
/// and the receiving server calls the same `Raft` method.
#[derive(Clone, Default)]
pub struct Nodes {
    inner: Arc<Mutex<BTreeMap<u64, Raft<C>>>>,
}

impl Nodes {
    fn get(&self, id: u64) -> Result<Raft<C>, RPCError> {
        let nodes = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let raft = nodes.get(&id).cloned();
        raft.ok_or_else(|| RPCError::Unreachable(anyerror::AnyError::error(format!("no node {id}"))))
    }
}

impl RaftNetworkFactory<C> for Nodes {
    type Network = Client;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Client {
        // A socket-based network would remember `node.addr` and connect on first use.
        Client { nodes: self.clone(), target }
    }
}

/// The client one node uses to reach `target`.
pub struct Client {
    nodes: Nodes,
    target: u64,
}

/// A call into a node that has stopped is, for the caller, a node that is down.
fn remote<E: std::fmt::Display>(e: RaftError<E>) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(e) => RPCError::Network(anyerror::AnyError::error(e.to_string())),
    }
}

impl RaftNetwork<C> for Client {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        self.nodes.get(self.target)?.append_entries(req).await.map_err(remote)
    }

    async fn vote(&mut self, req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        self.nodes.get(self.target)?.vote(req).await.map_err(remote)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        self.nodes.get(self.target)?.install_snapshot(req).await.map_err(remote)
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        self.nodes.get(self.target)?.handle_transfer_leader(req).await.map(|_| ()).map_err(remote)
    }

    // `stream_append` keeps its default: one AppendEntries at a time through
    // `append_entries`. The network chapter shows a pipelined one.
}
// ANCHOR_END: network

// ANCHOR: main
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Arc::new(Config { cluster_name: "getting-started".into(), ..Config::default() }.validate()?);
    let nodes = Nodes::default();

    // Start three nodes. Each gets its own log store and state machine; keep a handle to the
    // state machine to read from it.
    let mut state_machines = BTreeMap::new();
    for id in 1..=3u64 {
        let sm = StateMachine::default();
        let raft = Raft::new(id, config.clone(), nodes.clone(), LogStore::default(), sm.clone()).await?;
        nodes.inner.lock().unwrap_or_else(|p| p.into_inner()).insert(id, raft);
        state_machines.insert(id, sm);
    }

    // Initialize the cluster once, on one node, with every voter and its address.
    let members: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
    let node1 = nodes.get(1)?;
    node1.initialize(members).await?;

    // Wait until some node leads; writes go to the leader.
    let metrics = node1.wait(Some(Duration::from_secs(5))).metrics(|m| m.current_leader.is_some(), "a leader").await?;
    let leader_id = metrics.current_leader.ok_or("a leader was elected")?;
    let leader = nodes.get(leader_id)?;
    println!("node {leader_id} leads");

    // Write: returns once the entry is committed and applied on the leader.
    let written = leader.client_write(Command::Set { key: "greeting".into(), value: "hello".into() }).await?;
    println!("committed at {}, previous value {:?}", written.log_id, written.data);

    // Read linearizably: confirm leadership with a quorum, wait until the leader's state
    // machine has applied everything committed, then read it locally.
    leader.ensure_linearizable(ReadPolicy::ReadIndex).await?;
    let value = state_machines[&leader_id].get("greeting");
    println!("read greeting = {value:?}");
    assert_eq!(value.as_deref(), Some("hello"));

    // Every node applies the entry; a follower's copy is up to date once it has applied it.
    for (id, sm) in &state_machines {
        let raft = nodes.get(*id)?;
        raft.wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(written.log_id.index), "applied the write")
            .await?;
        assert_eq!(sm.get("greeting").as_deref(), Some("hello"));
    }

    for id in 1..=3 {
        nodes.get(id)?.shutdown().await?;
    }
    Ok(())
}
// ANCHOR_END: main
