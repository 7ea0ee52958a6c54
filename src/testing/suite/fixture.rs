//! What every check needs: a [`Check`] context that turns findings into [`SuiteError`]s, and
//! makers of log ids, entries and memberships that work for any type config.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::Range;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::{StoreBuilder, SuiteError, Violation};
use crate::RaftTypeConfig;
use crate::error::StorageError;
use crate::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use crate::types::{Entry, LeaderId, LogId, Membership};

/// The receiving end of one append's flush callback.
pub(super) type FlushRx = oneshot::Receiver<Result<(), io::Error>>;

/// One running check: names it in every error it reports.
#[derive(Clone, Copy)]
pub(super) struct Check {
    name: &'static str,
}

impl Check {
    pub(super) const fn new(name: &'static str) -> Self {
        Self { name }
    }

    /// Pass a storage call's result through, turning an error into a violation.
    pub(super) fn call<T>(&self, call: &'static str, result: Result<T, StorageError>) -> Result<T, SuiteError> {
        result.map_err(|source| self.error(Violation::Storage { call, source }))
    }

    /// A [`Violation::Mismatch`] of `rule`.
    pub(super) fn mismatch(&self, rule: &'static str, expected: impl Debug, actual: impl Debug) -> SuiteError {
        self.error(Violation::Mismatch { rule, expected: format!("{expected:?}"), actual: format!("{actual:?}") })
    }

    /// Fail with a mismatch of `rule` unless `actual == expected`.
    pub(super) fn expect_eq<T: PartialEq + Debug>(
        &self,
        rule: &'static str,
        expected: T,
        actual: T,
    ) -> Result<(), SuiteError> {
        if actual == expected { Ok(()) } else { Err(self.mismatch(rule, expected, actual)) }
    }

    fn error(&self, violation: Violation) -> SuiteError {
        SuiteError { check: self.name, violation: Box::new(violation) }
    }

    /// Append `entries` and return the receiver of their flush callback.
    pub(super) async fn append<C: RaftTypeConfig>(
        &self,
        log: &mut impl RaftLogStorage<C>,
        entries: Vec<Entry<C>>,
    ) -> Result<FlushRx, SuiteError> {
        let (callback, rx) = IOFlushed::with_receiver();
        self.call("append", log.append(entries, callback).await)?;
        Ok(rx)
    }

    /// Append `entries` and wait until the store reports them durable.
    pub(super) async fn append_flushed<C: RaftTypeConfig>(
        &self,
        log: &mut impl RaftLogStorage<C>,
        entries: Vec<Entry<C>>,
        timeout: Duration,
    ) -> Result<(), SuiteError> {
        let rx = self.append(log, entries).await?;
        self.wait_flushed(rx, timeout).await
    }

    /// Wait until the flush callback of `rx` reports success.
    pub(super) async fn wait_flushed(&self, rx: FlushRx, timeout: Duration) -> Result<(), SuiteError> {
        const RULE: &str = "an append's callback is completed with Ok once the entries are durable";
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(self.mismatch(RULE, "Ok(())", format!("Err({e})"))),
            Ok(Err(_)) => Err(self.mismatch(RULE, "a completed callback", "the callback was dropped")),
            Err(_) => Err(self.mismatch(RULE, format!("completion within {timeout:?}"), "no completion")),
        }
    }

    /// Whether the flush of `rx` has been reported, without waiting; a failed or dropped
    /// callback is a violation.
    pub(super) fn is_flushed(&self, rx: &mut FlushRx) -> Result<bool, SuiteError> {
        const RULE: &str = "an append's callback is completed with Ok, never dropped";
        match rx.try_recv() {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(self.mismatch(RULE, "Ok(())", format!("Err({e})"))),
            Err(TryRecvError::Empty) => Ok(false),
            Err(TryRecvError::Closed) => Err(self.mismatch(RULE, "a completed callback", "the callback was dropped")),
        }
    }

    /// The entries of `range`, read through a new reader of `log`, described for comparison.
    pub(super) async fn read<C: RaftTypeConfig>(
        &self,
        log: &mut impl RaftLogStorage<C>,
        range: Range<u64>,
    ) -> Result<Vec<String>, SuiteError> {
        let mut reader = log.get_log_reader().await;
        self.read_with(&mut reader, range).await
    }

    /// The entries of `range`, read through `reader`, described for comparison.
    pub(super) async fn read_with<C: RaftTypeConfig>(
        &self,
        reader: &mut impl RaftLogReader<C>,
        range: Range<u64>,
    ) -> Result<Vec<String>, SuiteError> {
        let entries = self.call("try_get_log_entries", reader.try_get_log_entries(range).await)?;
        Ok(describe(&entries))
    }
}

/// The id of the entry at `index` proposed by the leader of `term`.
///
/// Node ids are the type config's default: the suite needs one node only, and `Default` is
/// all it can build generically.
pub(super) fn log_id<C: RaftTypeConfig>(term: u64, index: u64) -> LogId<C> {
    LogId::new(LeaderId::new(term, C::NodeId::default()), index)
}

/// A one-voter membership of the default node id.
pub(super) fn membership<C: RaftTypeConfig>() -> Membership<C> {
    // A single voter with its node is always a valid membership.
    Membership::new_voters(BTreeMap::from([(C::NodeId::default(), C::Node::default())])).unwrap_or_default()
}

/// Entries of `term` at `indexes`: a membership entry at index 0, a blank one at every index
/// `≡ 3 (mod 4)`, normal entries made by the builder elsewhere.
pub(super) fn entries<C: RaftTypeConfig>(
    builder: &impl StoreBuilder<C>,
    term: u64,
    indexes: Range<u64>,
) -> Vec<Entry<C>> {
    indexes
        .map(|i| {
            let id = log_id(term, i);
            match i {
                0 => Entry::new_membership(id, membership()),
                i if i % 4 == 3 => Entry::new_blank(id),
                i => Entry::new_normal(id, builder.make_request(i)),
            }
        })
        .collect()
}

/// Entries as comparable strings: log id and payload, the application data by its `Debug`.
pub(super) fn describe<C: RaftTypeConfig>(entries: &[Entry<C>]) -> Vec<String> {
    entries.iter().map(|e| format!("{e:?}")).collect()
}
