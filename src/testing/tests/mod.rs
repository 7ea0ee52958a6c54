//! Unit tests of the test kit.

mod linearizability;
mod linearizability_random;
mod log_store;
mod router;
mod state_machine;
mod suite;

use super::TypeConfig;
use crate::types::{Entry, LeaderId, LogId};

/// The id of the entry at `index` written by the leader of `term`, node 1.
fn log_id(term: u64, index: u64) -> LogId<TypeConfig> {
    LogId::new(LeaderId::new(term, 1), index)
}

/// Blank entries of `term` at `indexes`.
fn blanks(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry<TypeConfig>> {
    indexes.map(|i| Entry::new_blank(log_id(term, i))).collect()
}
