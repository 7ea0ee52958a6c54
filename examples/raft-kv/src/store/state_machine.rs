//! [`StateMachineStore`]: the key-value state machine and its snapshots.
//!
//! The map lives in memory. It survives a restart through the latest snapshot file plus the
//! log after it: [`applied_state`](RaftStateMachine::applied_state) reports what the snapshot
//! covers, and quorate re-applies the log from there (it purges only entries a snapshot covers).
//!
//! # Snapshot file
//!
//! `snapshot.bin` holds one line of JSON with the [`SnapshotMeta`], a newline, then the
//! snapshot data: the map as JSON. The data part alone is what travels to followers. The file
//! is replaced atomically (write to a temporary file, fsync, rename, fsync the directory), and
//! never by an older snapshot than the one it holds.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::storage::{Snapshot, SnapshotMeta};
use quorate::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, RaftStateMachine, StorageError, StoredMembership};

use super::fs_util::write_atomic;
use crate::{Request, Response, TypeConfig};

type C = TypeConfig;

const SNAPSHOT_FILE: &str = "snapshot.bin";

/// The applied state.
#[derive(Default)]
struct Applied {
    data: BTreeMap<String, String>,
    last_applied: Option<LogId<C>>,
    last_membership: StoredMembership<C>,
}

struct Shared {
    dir: PathBuf,
    applied: Mutex<Applied>,
    /// Held while the snapshot file is written; holds what the file covers, so an older
    /// snapshot never replaces a newer one.
    snapshot_file: tokio::sync::Mutex<Option<LogId<C>>>,
}

/// The key-value state machine of one node. Cheap to clone: clones share the state, so the
/// HTTP layer keeps one to read from while quorate owns another.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// Builds a snapshot from a copy of the map, off the apply path.
pub struct KvSnapshotBuilder {
    shared: Arc<Shared>,
}

fn lock(m: &Mutex<Applied>) -> MutexGuard<'_, Applied> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sm_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::new(ErrorSubject::StateMachine, verb, anyerror::AnyError::error(e.to_string()))
}

fn snapshot_error(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::new(ErrorSubject::Snapshot, verb, anyerror::AnyError::error(e.to_string()))
}

impl StateMachineStore {
    /// Open the state machine in `dir`, loading the latest snapshot if there is one.
    ///
    /// # Errors
    /// An I/O error or an unreadable snapshot file.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut applied = Applied::default();
        let mut covered = None;
        if let Some((meta, data)) = read_snapshot_file(dir)? {
            applied.data = serde_json::from_slice(&data).map_err(io::Error::other)?;
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership;
            covered = meta.last_log_id;
            tracing::info!(upto = ?covered, keys = applied.data.len(), "loaded the snapshot");
        }
        let shared = Shared {
            dir: dir.to_path_buf(),
            applied: Mutex::new(applied),
            snapshot_file: tokio::sync::Mutex::new(covered),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// The value of `key` in the local state machine (not necessarily up to date).
    pub fn get(&self, key: &str) -> Option<String> {
        lock(&self.shared.applied).data.get(key).cloned()
    }

    /// A copy of the whole local map and the last applied log id.
    pub fn dump(&self) -> (BTreeMap<String, String>, Option<LogId<C>>) {
        let a = lock(&self.shared.applied);
        (a.data.clone(), a.last_applied)
    }
}

impl Shared {
    /// Write the snapshot file unless it already holds a newer snapshot.
    async fn save_snapshot(&self, meta: &SnapshotMeta<C>, data: Arc<Vec<u8>>) -> Result<(), StorageError> {
        let mut covered = self.snapshot_file.lock().await;
        if *covered > meta.last_log_id {
            return Ok(());
        }
        let meta_line = serde_json::to_vec(meta).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let path = self.dir.join(SNAPSHOT_FILE);
        tokio::task::spawn_blocking(move || write_atomic(&path, &[&meta_line, b"\n", &data]))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        *covered = meta.last_log_id;
        Ok(())
    }
}

fn read_snapshot_file(dir: &Path) -> io::Result<Option<(SnapshotMeta<C>, Vec<u8>)>> {
    let bytes = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let split =
        bytes.iter().position(|b| *b == b'\n').ok_or_else(|| io::Error::other("snapshot file without meta line"))?;
    let meta = serde_json::from_slice(&bytes[..split]).map_err(io::Error::other)?;
    Ok(Some((meta, bytes[split + 1..].to_vec())))
}

fn apply_request(data: &mut BTreeMap<String, String>, req: Request) -> Response {
    match req {
        Request::Set { key, value } => Response { prev: data.insert(key, value), ok: true },
        Request::Delete { key } => Response { prev: data.remove(&key), ok: true },
        Request::CompareAndSet { key, expected, new } => {
            let current = data.get(&key);
            if current != expected.as_ref() {
                return Response { prev: current.cloned(), ok: false };
            }
            let prev = match new {
                Some(v) => data.insert(key, v),
                None => data.remove(&key),
            };
            Response { prev, ok: true }
        }
    }
}

impl RaftStateMachine<C> for StateMachineStore {
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        let a = lock(&self.shared.applied);
        Ok((a.last_applied, a.last_membership.clone()))
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Response>, StorageError> {
        let mut a = lock(&self.shared.applied);
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            if a.last_applied.is_some_and(|l| l.index >= entry.log_id.index) {
                return Err(sm_error(ErrorVerb::Write, format!("entry {} applied twice", entry.log_id)));
            }
            a.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response { prev: None, ok: true },
                EntryPayload::Normal(req) => apply_request(&mut a.data, req),
                EntryPayload::Membership(m) => {
                    a.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Response { prev: None, ok: true }
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> KvSnapshotBuilder {
        KvSnapshotBuilder { shared: self.shared.clone() }
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
        let data: BTreeMap<String, String> =
            serde_json::from_slice(&bytes).map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        self.shared.save_snapshot(meta, Arc::new(bytes)).await?;
        let mut a = lock(&self.shared.applied);
        a.data = data;
        a.last_applied = meta.last_log_id;
        a.last_membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        let dir = self.shared.dir.clone();
        let _file = self.shared.snapshot_file.lock().await;
        let found = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        Ok(found.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

impl RaftSnapshotBuilder<C> for KvSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        // Copy under the lock, serialize and write outside it: apply waits only for the copy.
        let (data, last_log_id, last_membership) = {
            let a = lock(&self.shared.applied);
            (a.data.clone(), a.last_applied, a.last_membership.clone())
        };
        let bytes = serde_json::to_vec(&data).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let bytes = Arc::new(bytes);
        self.shared.save_snapshot(&meta, bytes.clone()).await?;
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|b| Vec::clone(&b));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}
