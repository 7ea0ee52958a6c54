//! [`SharedLog`]: the logs of every Raft group of a node in one stream of segment files, with
//! one writer thread; [`GroupLogStore`]: one group's log in it, a
//! [`RaftLogStorage`](crate::RaftLogStorage).
//!
//! The name says what it is to the host: the node's one log, shared by its groups. It is not a
//! log store itself (it implements no storage trait); a group's store is taken from it with
//! [`SharedLog::group`]. See the [module docs](super#many-groups-one-log) for why and for
//! what it costs.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};

use tokio::sync::oneshot;

use super::disk::Disk;
use super::error::FileStoreError;
use super::handle::{LogHandle, LogQueue, delegate_log_storage};
use super::lock::DataDirLock;
use super::log_store::{FileStoreOptions, open_locked};
use super::mem_log::{MemLog, read_lock};
use super::record::RecordRef;
use super::shared_format::{self, SharedJournal, SharedOp};
use super::writer::{Queued, WriteOp, Writer, WriterThread};
use crate::RaftTypeConfig;
use crate::types::Entry;

/// The durable Raft logs and votes of every group of one node, in one directory of segment
/// files written by one thread.
///
/// Every group's records go into one stream, each tagged with its group id, so the appends of
/// many groups queued at the same time are made durable by one `write` and one `fdatasync`.
/// Take a group's store with [`group`](Self::group), hand it to that group's `Raft`, and
/// forget a group with [`remove_group`](Self::remove_group). At startup,
/// [`groups`](Self::groups) says which groups have state to resume.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::file_store::SharedLog;
///
/// quorate::declare_raft_types!(pub MyTypes: D = String);
///
/// let log: SharedLog<MyTypes> = SharedLog::open("/var/lib/my-app/log".as_ref())?;
/// for group in log.groups() {
///     let store = log.group(group)?;
///     // Raft::new(id, config, network_of(group), store, state_machine_of(group)).await?
/// #   drop(store);
/// }
/// # Ok(())
/// # }
/// ```
///
/// Dropping it stops the writer thread after the operations already queued are written (the
/// drop waits for that), then releases the directory's lock. Group stores still alive then
/// fail every later operation: drop (shut down) the groups first.
pub struct SharedLog<C: RaftTypeConfig> {
    registry: Arc<Mutex<Registry<C>>>,
    writer: WriterThread<SharedOp<C>>,
    dir: PathBuf,
    /// Held until the writer thread has stopped (fields drop in order).
    _lock: Option<DataDirLock>,
}

/// The log of one group of a [`SharedLog`]: implements [`RaftLogStorage`](crate::RaftLogStorage)
/// exactly as [`FileLogStore`](super::FileLogStore) does, for this group only (its own vote,
/// committed id, entries, truncations and purges), with the same durability (see the
/// [module docs](super#durability)).
///
/// One store per group at a time: [`SharedLog::group`] refuses a second while this one lives.
/// Dropping it lets the group be taken again, or removed; its state stays in the shared log.
pub struct GroupLogStore<C: RaftTypeConfig> {
    handle: LogHandle<C, GroupQueue<C>>,
    registry: Arc<Mutex<Registry<C>>>,
}

/// Every group the shared log knows, by id: what its readers see, and whether a store of it
/// is out.
struct Registry<C: RaftTypeConfig> {
    groups: HashMap<u64, Slot<C>>,
}

struct Slot<C: RaftTypeConfig> {
    log: Arc<RwLock<MemLog<C>>>,
    /// A [`GroupLogStore`] of the group is alive.
    open: bool,
}

fn lock<C: RaftTypeConfig>(registry: &Mutex<Registry<C>>) -> MutexGuard<'_, Registry<C>> {
    // No update of the registry can panic half-way.
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// The queue of a [`GroupLogStore`]: its records go to the writer behind its group id.
struct GroupQueue<C: RaftTypeConfig> {
    group: u64,
    tx: mpsc::Sender<Queued<SharedOp<C>>>,
}

impl<C: RaftTypeConfig> LogQueue<C> for GroupQueue<C> {
    fn frame_entry(&self, entry: &Entry<C>, buf: &mut Vec<u8>) -> io::Result<()> {
        shared_format::encode_group_record(self.group, &RecordRef::Entry(entry), buf)
    }

    fn send(&self, op: WriteOp<C>) -> bool {
        self.tx.send(Queued::Op(SharedOp::Log(self.group, op))).is_ok()
    }
}

impl<C: RaftTypeConfig> SharedLog<C> {
    /// Open (or create) the shared log in directory `dir` with default [`FileStoreOptions`]:
    /// lock the directory, recover every group from what a crash left, and start the writer
    /// thread.
    ///
    /// It blocks while it reads and syncs the log: call it before starting the groups, or
    /// from `spawn_blocking`.
    ///
    /// # Errors
    /// [`FileStoreError::Locked`] if another process uses `dir`; [`FileStoreError::Io`] if a
    /// file cannot be read, written or synced; [`FileStoreError::Corrupt`] if the log cannot
    /// be read back as it was written (see [recovery](super#recovery)), including segments of
    /// a [`FileLogStore`](super::FileLogStore). Each names the file.
    pub fn open(dir: &Path) -> Result<Self, FileStoreError> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// [`open`](Self::open) with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(dir: &Path, options: FileStoreOptions) -> Result<Self, FileStoreError> {
        let (mut log, lock) = open_locked(dir, options, Self::open_on)?;
        log._lock = Some(lock);
        Ok(log)
    }

    /// [`open_with`](Self::open_with) on any [`Disk`], e.g. a test's fault layer. It takes no
    /// lock: the disk is the caller's.
    ///
    /// # Errors
    /// As [`open`](Self::open), but for the lock.
    pub fn open_on(disk: Arc<dyn Disk>, options: FileStoreOptions) -> Result<Self, FileStoreError> {
        let recovered = shared_format::recover::<C>(disk.as_ref())?;
        let dir = disk.path("");
        tracing::info!(
            dir = %dir.display(),
            groups = recovered.groups.len(),
            segments = recovered.segments.len(),
            "recovered the shared log"
        );
        let journal = SharedJournal { groups: recovered.groups.iter().map(|(g, log)| (*g, log.meta)).collect() };
        let writer = Writer::open(disk, recovered.segments, journal, options.segment_bytes, options.on_sync)
            .map_err(|e| FileStoreError::io(&dir, e))?;
        let writer = WriterThread::spawn(writer, &dir)?;
        let groups = recovered
            .groups
            .into_iter()
            .map(|(group, log)| (group, Slot { log: Arc::new(RwLock::new(log)), open: false }))
            .collect();
        Ok(Self { registry: Arc::new(Mutex::new(Registry { groups })), writer, dir, _lock: None })
    }

    /// The store of group `group`'s log: what was recovered of it, or an empty log for a
    /// group the shared log does not know (a new group, or one removed).
    ///
    /// # Errors
    /// [`FileStoreError::GroupInUse`] if a store of `group` is alive: two `Raft`s on one
    /// group's log would each believe it is theirs.
    pub fn group(&self, group: u64) -> Result<GroupLogStore<C>, FileStoreError> {
        let mut registry = lock(&self.registry);
        let slot = registry.groups.entry(group).or_insert_with(|| Slot { log: Arc::default(), open: false });
        if slot.open {
            return Err(FileStoreError::GroupInUse { group });
        }
        slot.open = true;
        let queue = GroupQueue { group, tx: self.writer.sender() };
        let handle = LogHandle { log: slot.log.clone(), queue };
        Ok(GroupLogStore { handle, registry: self.registry.clone() })
    }

    /// The groups that have state in the log (a vote, a committed or purged id, or entries),
    /// in increasing order: those to start again after a restart.
    pub fn groups(&self) -> Vec<u64> {
        let registry = lock(&self.registry);
        let mut groups: Vec<u64> =
            registry.groups.iter().filter(|(_, slot)| !read_lock(&slot.log).is_empty()).map(|(g, _)| *g).collect();
        groups.sort_unstable();
        groups
    }

    /// Forget group `group` durably: write a record saying so, and return after the `fdatasync`
    /// that makes it durable. Its entries leave memory at once, its hold on old segments goes
    /// (they are deleted once no other group needs them), and a later [`group`](Self::group)
    /// (in this process or after a restart) starts it empty.
    ///
    /// First shut down the group's `Raft` and drop its [`GroupLogStore`] (and readers: what
    /// they read is no longer the group's log). A removed group's log is gone: do it when the
    /// group itself is gone from the cluster (or this node left it), not to reset it, and do
    /// not give its id to a new group (see [`GroupHost::create_group`]). Remove the group's
    /// state machine data with it: a node added back to the group later starts it empty, and
    /// a state machine that kept what it applied beside an empty log (no vote) is refused at
    /// startup (its vote could have been lost).
    ///
    /// [`GroupHost::create_group`]: crate::multi::GroupHost::create_group
    ///
    /// # Errors
    /// [`FileStoreError::GroupInUse`] if a store of `group` is alive (nothing is removed then);
    /// [`FileStoreError::Io`] if the record could not be made durable: the group is gone from
    /// memory, but may come back after a restart, and the writer fails every later operation.
    pub async fn remove_group(&self, group: u64) -> Result<(), FileStoreError> {
        let done = {
            let mut registry = lock(&self.registry);
            match registry.groups.get(&group) {
                None => return Ok(()),
                Some(slot) if slot.open => return Err(FileStoreError::GroupInUse { group }),
                Some(_) => {}
            }
            registry.groups.remove(&group);
            let (tx, rx) = oneshot::channel();
            // Queued while the registry is locked: a store of the group taken after this
            // (a new, empty log) queues its records after the removal.
            if self.writer.sender().send(Queued::Op(SharedOp::Remove(group, tx))).is_err() {
                return Err(self.writer_gone());
            }
            rx
        };
        match done.await {
            Ok(result) => result.map_err(|e| FileStoreError::io(&self.dir, e)),
            Err(_) => Err(self.writer_gone()),
        }
    }

    fn writer_gone(&self) -> FileStoreError {
        FileStoreError::io(&self.dir, io::Error::other("the log writer thread has stopped"))
    }
}

impl<C: RaftTypeConfig> fmt::Debug for SharedLog<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = lock(&self.registry).groups.len();
        f.debug_struct("SharedLog").field("dir", &self.dir).field("groups", &groups).finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> GroupLogStore<C> {
    /// The group whose log this is.
    pub fn group_id(&self) -> u64 {
        self.handle.queue.group
    }
}

delegate_log_storage!(GroupLogStore, handle);

impl<C: RaftTypeConfig> Drop for GroupLogStore<C> {
    fn drop(&mut self) {
        if let Some(slot) = lock(&self.registry).groups.get_mut(&self.handle.queue.group) {
            slot.open = false;
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for GroupLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = read_lock(&self.handle.log);
        f.debug_struct("GroupLogStore")
            .field("group", &self.handle.queue.group)
            .field("purged", &log.meta.purged)
            .field("last_log_id", &log.last_log_id())
            .finish_non_exhaustive()
    }
}
