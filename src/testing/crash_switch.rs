//! [`CrashSwitch`]: freeze a node between two storage calls, so that a test can crash it at
//! exactly that point.
//!
//! A node carries out one batch of Engine commands as a sequence of storage calls: save the
//! vote, truncate, append, install a snapshot, purge, apply. Each boundary between two of them
//! is a state a crash can leave behind, and a restart must recover from every one. A crash
//! injected "at some time" almost never lands between two calls of one batch, because a batch
//! runs within one instant of virtual time; a crash switch makes it land there on purpose.
//!
//! Share one switch between a node's [`MemLogStore`](super::MemLogStore) and
//! [`MemStateMachine`](super::MemStateMachine) (`set_crash_switch` on each) and
//! [`arm`](CrashSwitch::arm) it with a [`CrashPoint`]. The call that completes the point does
//! its work and then, instead of returning, pends: the node is frozen mid-batch, and every
//! later storage call of the node pends as well, so nothing the node does after that point
//! reaches its storage. The test then crashes the node (reopens its stores, which keep only
//! what the storage contract says is durable) and [`release`](CrashSwitch::release)s the
//! switch: every frozen call then fails with [`StorageError`], as a crashed process's calls
//! never complete, so the old node stops and its shutdown returns.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyerror::AnyError;
use tokio::sync::watch;

use crate::error::{ErrorSubject, ErrorVerb, StorageError};

/// A storage call that changes what a node holds: the calls a [`CrashSwitch`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StorageCall {
    /// [`RaftLogStorage::save_vote`](crate::storage::RaftLogStorage::save_vote).
    SaveVote,
    /// [`RaftLogStorage::append`](crate::storage::RaftLogStorage::append).
    Append,
    /// [`RaftLogStorage::truncate`](crate::storage::RaftLogStorage::truncate).
    Truncate,
    /// [`RaftLogStorage::purge`](crate::storage::RaftLogStorage::purge).
    Purge,
    /// [`RaftLogStorage::save_committed`](crate::storage::RaftLogStorage::save_committed).
    SaveCommitted,
    /// [`RaftStateMachine::apply`](crate::storage::RaftStateMachine::apply).
    Apply,
    /// [`RaftStateMachine::install_snapshot`](crate::storage::RaftStateMachine::install_snapshot).
    InstallSnapshot,
    /// [`RaftSnapshotBuilder::build_snapshot`](crate::storage::RaftSnapshotBuilder::build_snapshot).
    BuildSnapshot,
}

/// Where a [`CrashSwitch`] freezes its node: right after the `calls`-th mutating storage call,
/// counting from the first call of kind `from` (which counts as the first), or from the next
/// call of any kind if `from` is `None`.
///
/// `CrashPoint { from: Some(StorageCall::InstallSnapshot), calls: 1 }` freezes the node right
/// after it installs a snapshot, before it purges its log; `calls: 2` right after the call
/// that follows the install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// The kind of call that starts the count; `None`: any.
    pub from: Option<StorageCall>,
    /// How many mutating calls complete before the node freezes; at least 1.
    pub calls: u64,
}

/// Freezes a node's storage at a [`CrashPoint`]; see the [module docs](self). Cheap to clone;
/// clones share the switch.
#[derive(Clone)]
pub struct CrashSwitch {
    state: Arc<Mutex<SwitchState>>,
    /// `true` while the node is frozen; frozen calls wait for it to turn `false`. Made when
    /// first needed: a host's thousands of groups each have a switch that is never armed.
    frozen: Arc<OnceLock<watch::Sender<bool>>>,
}

#[derive(Default)]
struct SwitchState {
    armed: Option<Armed>,
    /// The call after which the switch froze the node, until released.
    tripped: Option<StorageCall>,
}

struct Armed {
    from: Option<StorageCall>,
    /// Whether the call that starts the count has happened.
    counting: bool,
    /// Mutating calls still to complete before the freeze.
    left: u64,
}

impl Default for CrashSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl CrashSwitch {
    /// A switch that is not armed: storage calls pass through it.
    pub fn new() -> Self {
        Self { state: Arc::new(Mutex::new(SwitchState::default())), frozen: Arc::new(OnceLock::new()) }
    }

    /// Freeze the node at `point`, replacing any earlier arming. A `calls` of 0 counts as 1.
    pub fn arm(&self, point: CrashPoint) {
        self.lock().armed = Some(Armed { from: point.from, counting: point.from.is_none(), left: point.calls.max(1) });
    }

    /// Cancel the arming if the switch has not tripped yet; a frozen node stays frozen.
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// The call after which the node froze, if it has.
    pub fn tripped(&self) -> Option<StorageCall> {
        self.lock().tripped
    }

    /// Wait until the switch trips; returns the call after which the node froze.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub async fn wait_tripped(&self) -> StorageCall {
        let mut rx = self.frozen().subscribe();
        loop {
            if let Some(call) = self.tripped() {
                return call;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; this cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// End the freeze after the node was crashed: every frozen call, and every later call that
    /// reaches the switch while it stays unarmed, fails no more; frozen calls fail with
    /// [`StorageError`] (the crashed process never saw them complete). Disarms the switch.
    pub fn release(&self) {
        let mut state = self.lock();
        state.armed = None;
        state.tripped = None;
        self.frozen().send_replace(false);
    }

    /// Before a storage call: pend while the node is frozen, then fail.
    ///
    /// # Errors
    /// [`StorageError`] if the node was frozen when the call began.
    pub(crate) async fn enter(&self) -> Result<(), StorageError> {
        if !self.is_frozen() {
            return Ok(());
        }
        self.wait_released().await;
        Err(crashed_error())
    }

    /// After a mutating storage call did its work: count it, and if it completes the crash
    /// point, freeze the node here.
    ///
    /// # Errors
    /// [`StorageError`] if the call froze the node (once the switch is released).
    pub(crate) async fn after(&self, call: StorageCall) -> Result<(), StorageError> {
        let froze = {
            let mut state = self.lock();
            let trips = match state.armed.as_mut() {
                Some(armed) => {
                    if !armed.counting && armed.from == Some(call) {
                        armed.counting = true;
                    }
                    if armed.counting {
                        armed.left -= 1;
                    }
                    armed.counting && armed.left == 0
                }
                None => false,
            };
            if trips {
                state.armed = None;
                state.tripped = Some(call);
                self.frozen().send_replace(true);
            }
            trips || self.is_frozen()
        };
        if froze {
            self.wait_released().await;
            return Err(crashed_error());
        }
        Ok(())
    }

    async fn wait_released(&self) {
        let mut rx = self.frozen().subscribe();
        // The sender lives as long as `self`, so this only ends on release.
        let _ = rx.wait_for(|frozen| !*frozen).await;
    }

    fn frozen(&self) -> &watch::Sender<bool> {
        self.frozen.get_or_init(|| watch::channel(false).0)
    }

    fn is_frozen(&self) -> bool {
        self.frozen.get().is_some_and(|tx| *tx.borrow())
    }

    fn lock(&self) -> MutexGuard<'_, SwitchState> {
        // A panic while holding the lock only happens in a test that is already failing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn crashed_error() -> StorageError {
    StorageError::new(
        ErrorSubject::Logs,
        ErrorVerb::Write,
        AnyError::error("the node crashed at a crash point: this storage call never completed"),
    )
}

/// A store's crash switch: none until a test sets one, so that the thousands of stores of a
/// many-groups benchmark, never armed, allocate nothing for it. Passes every call through while
/// unset.
#[derive(Clone, Default)]
pub(crate) struct StoreSwitch(Option<CrashSwitch>);

impl StoreSwitch {
    /// Use `switch` from now on.
    pub(crate) fn set(&mut self, switch: CrashSwitch) {
        self.0 = Some(switch);
    }

    /// [`CrashSwitch::enter`], if a switch is set.
    pub(crate) async fn enter(&self) -> Result<(), StorageError> {
        match &self.0 {
            Some(switch) => switch.enter().await,
            None => Ok(()),
        }
    }

    /// [`CrashSwitch::after`], if a switch is set.
    pub(crate) async fn after(&self, call: StorageCall) -> Result<(), StorageError> {
        match &self.0 {
            Some(switch) => switch.after(call).await,
            None => Ok(()),
        }
    }
}
