//! [`MemStoreBuilder`]: runs the [storage suite](super::suite) against [`MemLogStore`] and
//! [`MemStateMachine`], and shows how to write a [`StoreBuilder`] for your own storage.

use std::time::Duration;

use super::suite::{StateMachinePersistence, StoreBuilder};
use super::{MemLogStore, MemStateMachine, Request, TypeConfig};
use crate::error::StorageError;

/// A [`StoreBuilder`] of the in-memory stores.
///
/// A restart is what [`MemLogStore::reopen`] simulates: only what was flushed comes back. The
/// state machine restarts with its state ([`persistent`](Self::persistent), using
/// [`MemStateMachine::reopen`]) or from its last snapshot ([`from_snapshot`](Self::from_snapshot),
/// using [`MemStateMachine::reopen_empty_from_snapshot`]).
///
/// ```
/// use std::time::Duration;
///
/// use quorate::testing::MemStoreBuilder;
/// use quorate::testing::suite::{self, Suite};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), suite::SuiteError> {
/// // Flushes complete 1 ms after each append, off the append call.
/// let builder = MemStoreBuilder::from_snapshot().with_flush_delay(Duration::from_millis(1));
/// suite::flush_callbacks_fire_in_append_order(&builder).await?;
/// Suite::test_all(&builder).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MemStoreBuilder {
    persistence: StateMachinePersistence,
    flush_delay: Duration,
}

impl MemStoreBuilder {
    /// Stores whose state machine keeps its state across a restart; flushes complete during
    /// the append call.
    pub fn persistent() -> Self {
        Self { persistence: StateMachinePersistence::Persistent, flush_delay: Duration::ZERO }
    }

    /// Stores whose state machine restarts from its last snapshot; flushes complete during the
    /// append call.
    pub fn from_snapshot() -> Self {
        Self { persistence: StateMachinePersistence::Snapshot, flush_delay: Duration::ZERO }
    }

    /// The same, with every log store completing each append's flush `delay` after the append
    /// (see [`MemLogStore::set_flush_delay`]).
    pub fn with_flush_delay(self, delay: Duration) -> Self {
        Self { flush_delay: delay, ..self }
    }
}

impl StoreBuilder<TypeConfig> for MemStoreBuilder {
    type LogStore = MemLogStore;
    type StateMachine = MemStateMachine;

    async fn build(&self) -> Result<(MemLogStore, MemStateMachine), StorageError> {
        let log = MemLogStore::new();
        log.set_flush_delay(self.flush_delay);
        Ok((log, MemStateMachine::new()))
    }

    async fn reopen(
        &self,
        log: MemLogStore,
        sm: MemStateMachine,
    ) -> Result<(MemLogStore, MemStateMachine), StorageError> {
        let sm = match self.persistence {
            StateMachinePersistence::Persistent => sm.reopen(),
            StateMachinePersistence::Snapshot => sm.reopen_empty_from_snapshot(),
        };
        Ok((log.reopen(), sm))
    }

    fn make_request(&self, index: u64) -> Request {
        // A few keys, so that entries overwrite each other; values tell entries apart.
        Request::set(format!("k{}", index % 3), format!("v{index}"))
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        self.persistence
    }
}
