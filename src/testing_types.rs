//! Types for the library's own unit tests.

use crate::types::{LeaderId, LogId};

crate::declare_raft_types!(
    /// The type config of unit tests: u64 node ids, no node info, string requests.
    pub(crate) UTConfig:
        D = String,
        R = String,
        Node = (),
);

/// The log id at `index` of the leader of `term`, node 1 (one leader per term in these tests).
pub(crate) fn log_id(term: u64, index: u64) -> LogId<UTConfig> {
    LogId::new(LeaderId::new(term, 1), index)
}
