//! [`SuiteError`]: which check failed and which rule of the storage contract the store broke.

use crate::error::StorageError;

/// A check of the suite failed.
#[derive(Debug, thiserror::Error)]
#[error("storage suite check `{check}` failed: {violation}")]
pub struct SuiteError {
    /// The name of the check, the same as the name of its function (e.g.
    /// `"vote_survives_reopen"`).
    pub check: &'static str,
    /// What went wrong (boxed: results of checks stay small).
    pub violation: Box<Violation>,
}

/// What a failed check found.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// A storage call returned an error although the suite used it as the contract allows.
    #[error("`{call}` returned an error: {source}")]
    Storage {
        /// The call that failed, e.g. `"append"`.
        call: &'static str,
        /// The store's error.
        source: StorageError,
    },
    /// The store answered something the contract rules out.
    #[error("{rule}: expected {expected}, got {actual}")]
    Mismatch {
        /// The rule of the contract that was broken, in words.
        rule: &'static str,
        /// What the contract requires, formatted for reading.
        expected: String,
        /// What the store answered.
        actual: String,
    },
}
