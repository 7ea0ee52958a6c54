//! [`MemStateMachine`]: an in-memory key-value [`RaftStateMachine`] with snapshots.
//!
//! It applies [`Request`]s to a map of `String` keys to `String` values and records the last applied log id
//! and membership, so [`applied_state`](RaftStateMachine::applied_state) reports them. It
//! checks that entries arrive once each and in log order, and fails with a [`StorageError`]
//! otherwise, so a test catches a node that applies twice or skips an entry.
//!
//! # Snapshot format
//!
//! The snapshot data holds the key-value map only; what it covers (last log id, membership)
//! travels beside it in [`SnapshotMeta`], as every snapshot transfer carries one. The map is
//! encoded by hand, so the crate needs no serialization format: for each pair in key order, the
//! key then the value, each as a little-endian `u64` byte length followed by its UTF-8 bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyerror::AnyError;

use super::crash_switch::{CrashSwitch, StorageCall, StoreSwitch};
use super::{Request, Response, TypeConfig};
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use crate::types::{DisplayOption, Entry, EntryPayload, LogId, LogIdOptionExt, StoredMembership};

type C = TypeConfig;

/// An in-memory key-value state machine for tests: cloneable and restartable.
///
/// Every clone is a handle to the same state machine; keep one to inspect it while a node
/// runs. It models a *persistent* state machine: [`reopen`](Self::reopen) restarts it with
/// everything applied so far. [`reopen_empty_from_snapshot`](Self::reopen_empty_from_snapshot)
/// models a volatile one, which restarts from its last snapshot. Either way, handles from
/// before the restart fail their state machine calls with [`StorageError`].
#[derive(Clone)]
pub struct MemStateMachine {
    shared: Arc<Mutex<SmInner>>,
    /// The restart this handle belongs to; calls fail once it is not the current one.
    generation: u64,
}

/// Builds snapshots of a [`MemStateMachine`]; see
/// [`get_snapshot_builder`](RaftStateMachine::get_snapshot_builder).
///
/// It shares the state machine and snapshots the state as of the moment it builds.
pub struct MemSnapshotBuilder {
    shared: Arc<Mutex<SmInner>>,
    generation: u64,
}

struct SmInner {
    /// Bumped by every reopen; handles of an older generation belong to a crashed node.
    generation: u64,
    state: SmState,
    /// The last snapshot built or installed, if any.
    snapshot: Option<StoredSnapshot>,
    apply_count: u64,
    apply_delay: Duration,
    /// Freezes the node between two storage calls; none unless a test sets one.
    crash: StoreSwitch,
}

/// What the state machine holds.
#[derive(Default)]
struct SmState {
    /// A hash map, not a B-tree: a B-tree's first node has room for eleven pairs, which every
    /// idle group of a many-groups benchmark, holding one or two keys, would pay for.
    kv: HashMap<String, String>,
    applied: Option<LogId<C>>,
    membership: StoredMembership<C>,
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<C>,
    data: Vec<u8>,
}

impl SmState {
    fn apply_request(&mut self, req: Request) -> Response {
        match req {
            Request::Set { key, value } => Response::ok(self.kv.insert(key, value)),
            Request::Delete { key } => Response::ok(self.kv.remove(&key)),
            Request::CompareAndSet { key, expected, new } => {
                let current = self.kv.get(&key).cloned();
                if current != expected {
                    return Response { value: current, ok: false };
                }
                match new {
                    Some(v) => self.kv.insert(key, v),
                    None => self.kv.remove(&key),
                };
                Response::ok(current)
            }
            Request::Noop => Response::ok(None),
        }
    }

    fn apply_entry(&mut self, entry: Entry<C>) -> Response {
        self.applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => Response::ok(None),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
                Response::ok(None)
            }
            EntryPayload::Normal(req) => self.apply_request(req),
        }
    }
}

fn lock(shared: &Mutex<SmInner>) -> MutexGuard<'_, SmInner> {
    // A panic while holding the lock only happens in a test that is already failing.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_current(shared: &Mutex<SmInner>, generation: u64) -> Result<MutexGuard<'_, SmInner>, StorageError> {
    let inner = lock(shared);
    if inner.generation != generation {
        return Err(sm_error(
            ErrorSubject::StateMachine,
            ErrorVerb::Write,
            "this state machine handle predates a reopen: its node has crashed",
        ));
    }
    Ok(inner)
}

fn sm_error(subject: ErrorSubject, verb: ErrorVerb, msg: impl ToString) -> StorageError {
    StorageError::new(subject, verb, AnyError::error(msg))
}

impl Default for MemStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStateMachine {
    /// An empty state machine: nothing applied, no snapshot, no apply delay.
    pub fn new() -> Self {
        let inner = SmInner {
            generation: 0,
            state: SmState::default(),
            snapshot: None,
            apply_count: 0,
            apply_delay: Duration::ZERO,
            crash: StoreSwitch::default(),
        };
        Self { shared: Arc::new(Mutex::new(inner)), generation: 0 }
    }

    /// Restart as a persistent state machine: a handle to the same state, with everything
    /// applied so far. Older handles and builders fail their calls from now on.
    pub fn reopen(&self) -> MemStateMachine {
        let mut inner = lock(&self.shared);
        inner.generation += 1;
        MemStateMachine { shared: self.shared.clone(), generation: inner.generation }
    }

    /// Restart as a volatile state machine: the state is what the last snapshot holds (empty
    /// if there is none), so the node re-applies the log after it. Older handles and builders
    /// fail their calls from now on.
    pub fn reopen_empty_from_snapshot(&self) -> MemStateMachine {
        let mut inner = lock(&self.shared);
        inner.generation += 1;
        inner.state = match &inner.snapshot {
            Some(s) => SmState {
                // Invariant: stored snapshot data was produced by `encode_kv`, or checked by
                // `decode_kv` when it was installed.
                kv: decode_kv(&s.data).expect("a stored snapshot decodes"),
                applied: s.meta.last_log_id,
                membership: s.meta.last_membership.clone(),
            },
            None => SmState::default(),
        };
        MemStateMachine { shared: self.shared.clone(), generation: inner.generation }
    }

    /// Sleep for `delay` in every [`apply`](RaftStateMachine::apply) call (default: none),
    /// modelling a slow state machine.
    pub fn set_apply_delay(&self, delay: Duration) {
        lock(&self.shared).apply_delay = delay;
    }

    /// A copy of the key-value map.
    pub fn data(&self) -> BTreeMap<String, String> {
        sorted(&lock(&self.shared).state.kv)
    }

    /// A copy of the key-value map if this handle is still its node's current one (no
    /// [`reopen`](Self::reopen) since): what the running process could read. `None` after a
    /// crash and reopen, which may have rolled the shared state back: a read through a handle
    /// of the crashed process would see state that process never had.
    pub fn data_if_current(&self) -> Option<BTreeMap<String, String>> {
        let inner = lock(&self.shared);
        (inner.generation == self.generation).then(|| sorted(&inner.state.kv))
    }

    /// Whether this handle is still its node's current one (no [`reopen`](Self::reopen)
    /// since): whether the process it belongs to is still running.
    pub fn is_current(&self) -> bool {
        lock(&self.shared).generation == self.generation
    }

    /// The id of the last applied entry, or of the installed snapshot.
    pub fn applied(&self) -> Option<LogId<C>> {
        lock(&self.shared).state.applied
    }

    /// The last log id the stored snapshot (built or installed) covers, if there is one.
    pub fn snapshot_last_log_id(&self) -> Option<LogId<C>> {
        lock(&self.shared).snapshot.as_ref().and_then(|s| s.meta.last_log_id)
    }

    /// How many entries were applied, of every kind (blank, membership, normal), since the
    /// state machine was created (across reopens). Entries covered by an installed snapshot
    /// are not counted.
    pub fn apply_count(&self) -> u64 {
        lock(&self.shared).apply_count
    }

    /// Freeze this state machine's node at the crash points `switch` is armed with (see
    /// [`crash_switch`](super::crash_switch)). Share the switch with the node's log store.
    /// Carries over a reopen.
    pub fn set_crash_switch(&self, switch: CrashSwitch) {
        lock(&self.shared).crash.set(switch);
    }

    fn crash_switch(&self) -> StoreSwitch {
        lock(&self.shared).crash.clone()
    }

    fn lock_current(&self) -> Result<MutexGuard<'_, SmInner>, StorageError> {
        lock_current(&self.shared, self.generation)
    }
}

impl RaftStateMachine<C> for MemStateMachine {
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        self.crash_switch().enter().await?;
        let inner = self.lock_current()?;
        Ok((inner.state.applied, inner.state.membership.clone()))
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Response>, StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        let delay = self.lock_current()?.apply_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let responses = self.apply_entries(entries)?;
        crash.after(StorageCall::Apply).await?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> MemSnapshotBuilder {
        MemSnapshotBuilder { shared: self.shared.clone(), generation: self.generation }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        self.crash_switch().enter().await?;
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        let data = snapshot.into_inner();
        // Decode before taking the lock: a bad snapshot leaves the state untouched.
        let kv = decode_kv(&data)?;
        {
            let mut inner = self.lock_current()?;
            inner.state = SmState { kv, applied: meta.last_log_id, membership: meta.last_membership.clone() };
            inner.snapshot = Some(StoredSnapshot { meta: meta.clone(), data });
        }
        crash.after(StorageCall::InstallSnapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        self.crash_switch().enter().await?;
        let inner = self.lock_current()?;
        Ok(inner.snapshot.clone().map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

impl MemStateMachine {
    /// The body of [`apply`](RaftStateMachine::apply), between the crash switch's checks.
    fn apply_entries(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Response>, StorageError> {
        let mut inner = self.lock_current()?;
        let first = inner.state.applied.next_index();
        if let Some(e) = entries.iter().zip(first..).find_map(|(e, i)| (e.log_id.index != i).then_some(e)) {
            return Err(sm_error(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                format!(
                    "entry {} applied out of order: last applied is {}",
                    e.log_id,
                    DisplayOption(&inner.state.applied)
                ),
            ));
        }

        inner.apply_count += entries.len() as u64;
        Ok(entries.into_iter().map(|e| inner.state.apply_entry(e)).collect())
    }
}

impl RaftSnapshotBuilder<C> for MemSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        let crash = lock(&self.shared).crash.clone();
        crash.enter().await?;
        let (meta, data) = {
            let mut inner = lock_current(&self.shared, self.generation)?;
            let meta = SnapshotMeta {
                last_log_id: inner.state.applied,
                last_membership: inner.state.membership.clone(),
                snapshot_id: format!("{}-{}", DisplayOption(&inner.state.applied), next_snapshot_number()),
            };
            let data = encode_kv(&inner.state.kv);
            inner.snapshot = Some(StoredSnapshot { meta: meta.clone(), data: data.clone() });
            (meta, data)
        };
        crash.after(StorageCall::BuildSnapshot).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// A number no other snapshot built in this process has. Every node of the test kit lives in
/// one process, so ids made with it are unique across nodes, as `build_snapshot`'s contract
/// asks, without a per-node field in every group's state machine.
fn next_snapshot_number() -> u64 {
    static BUILT: AtomicU64 = AtomicU64::new(0);
    BUILT.fetch_add(1, Ordering::Relaxed) + 1
}

/// A copy of the map in key order.
fn sorted(kv: &HashMap<String, String>) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Encode the map in the [snapshot format](self#snapshot-format): pairs in key order, so that
/// equal maps encode alike.
fn encode_kv(kv: &HashMap<String, String>) -> Vec<u8> {
    let mut pairs: Vec<_> = kv.iter().collect();
    pairs.sort_unstable();
    let mut out = Vec::new();
    for s in pairs.into_iter().flat_map(|(k, v)| [k, v]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// Decode the [snapshot format](self#snapshot-format).
///
/// # Errors
/// [`StorageError`] if the data is truncated or a string is not UTF-8.
fn decode_kv(mut data: &[u8]) -> Result<HashMap<String, String>, StorageError> {
    let mut kv = HashMap::new();
    while !data.is_empty() {
        let key = take_string(&mut data)?;
        let value = take_string(&mut data)?;
        kv.insert(key, value);
    }
    Ok(kv)
}

/// Take one length-prefixed string off the front of `data`.
fn take_string(data: &mut &[u8]) -> Result<String, StorageError> {
    let corrupt = |what: &str| sm_error(ErrorSubject::Snapshot, ErrorVerb::Read, what);
    let (len, rest) = data.split_first_chunk::<8>().ok_or_else(|| corrupt("snapshot data truncated in a length"))?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| corrupt("snapshot string length overflows"))?;
    if rest.len() < len {
        return Err(corrupt("snapshot data truncated in a string"));
    }
    let (bytes, rest) = rest.split_at(len);
    let s = String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("snapshot string is not UTF-8"))?;
    *data = rest;
    Ok(s)
}
