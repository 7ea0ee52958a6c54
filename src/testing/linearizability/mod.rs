//! A linearizability checker for histories of key-value operations.
//!
//! # What it checks
//!
//! A test drives a cluster with concurrent clients and records, for every operation, when the
//! client called it, when it returned and what it answered: a *history*. The history is
//! *linearizable* if the operations can be put in one sequence that (1) a single, sequential
//! key-value map would answer exactly as the clients saw, and (2) respects real time: an
//! operation that returned before another was called comes first. That is the promise a Raft
//! state machine makes to its clients; a stale read served by a deposed leader, a write
//! applied twice or a write lost in a failover all break it.
//!
//! An operation whose outcome the client never learned (it timed out, or the client crashed)
//! may have taken effect at any time after its call, or never: record it with
//! [`KvOp::unknown`]. The checker lets it take effect anywhere after its call, or not at all,
//! and accepts any answer for it.
//!
//! # The model
//!
//! Each key holds an optional string. [`KvInput`] lists the operations: `Get` answers the
//! value, `Put` and `Delete` set and remove it, and `CompareAndSet` replaces the value with
//! `new` (`None` removes it) only if it is `expected` (`None`: absent), answering whether it
//! did. This matches [`Request`](super::Request) of the test kit.
//!
//! # How
//!
//! Linearizability is local (Herlihy & Wing, 1990): a history is linearizable exactly when
//! each key's sub-history is, because operations on different keys never constrain each
//! other. So the checker splits the history by key and checks each part on its own. Within a
//! key it runs a depth-first search in the style of Wing & Gong, refined by Lowe: walk the
//! calls and returns in time order; linearize a called operation whenever the model allows
//! it, and back up to the last choice when the return of an operation not yet linearized is
//! reached. Every (set of linearized operations, value) pair reached is remembered, so a
//! configuration that already failed is never explored twice; the set is a bitset hashed
//! incrementally, so each step costs a few word operations.
//!
//! The search is exponential in the worst case (checking linearizability is NP-complete). It
//! is fast for histories of a Raft cluster, where each key has a handful of operations in
//! flight at a time: thousands of operations check in milliseconds. A limit on the steps of
//! each key's search ([`check_kv_history_with_limit`]) turns a pathological case into
//! [`CheckResult::Unknown`] instead of a hang.
//!
//! # Example
//!
//! ```
//! use quorate::testing::linearizability::{CheckResult, KvInput, KvOp, KvOutput, check_kv_history};
//!
//! let history = [
//!     // Client 1 writes "a" during [0, 10].
//!     KvOp::returned(1, KvInput::put("k", "a"), 0, 10, KvOutput::Put),
//!     // Client 2, called after the write returned, still reads nothing: a stale read.
//!     KvOp::returned(2, KvInput::get("k"), 11, 12, KvOutput::Get(None)),
//! ];
//! match check_kv_history(&history)? {
//!     CheckResult::NotLinearizable { key, ops } => {
//!         assert_eq!(key, "k");
//!         assert_eq!(ops.len(), 2);
//!     }
//!     other => panic!("a stale read went unnoticed: {other:?}"),
//! }
//! # Ok::<(), quorate::testing::linearizability::HistoryError>(())
//! ```

mod history;
mod search;

use std::collections::BTreeMap;

pub use history::{HistoryError, KvInput, KvOp, KvOutput, KvReturn};

use history::compile_key;
use search::{Outcome, search};

/// How many steps [`check_kv_history`] lets the search of one key take.
///
/// A step linearizes or backs out one operation. Ten million steps take a few seconds; a
/// history of a Raft cluster needs a few per operation.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Some order of the operations explains every answer and respects real time.
    Linearizable,
    /// No order of the operations on `key` explains what the clients saw.
    NotLinearizable {
        /// The first key, in key order, whose operations are not linearizable.
        key: String,
        /// A witness: the operations on `key` from the start of the history up to the point
        /// past which no order could be extended, sorted by call time. This part of the
        /// history is not linearizable on its own.
        ops: Vec<KvOp>,
    },
    /// The search of `key` ran out of steps before it reached a verdict; every other key is
    /// linearizable.
    Unknown {
        /// The first key, in key order, whose search ran out of steps.
        key: String,
    },
}

impl CheckResult {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }
}

/// Check whether `history` is linearizable, searching each key for at most
/// [`DEFAULT_MAX_STEPS`] steps.
///
/// The operations may come in any order.
///
/// # Errors
/// [`HistoryError`] if an operation returns before its call or answers with the output of
/// another kind of operation.
pub fn check_kv_history(history: &[KvOp]) -> Result<CheckResult, HistoryError> {
    check_kv_history_with_limit(history, DEFAULT_MAX_STEPS)
}

/// Check whether `history` is linearizable, searching each key for at most `max_steps` steps.
///
/// If a key is found not linearizable, that is the verdict, even if the search of another key
/// ran out of steps.
///
/// # Errors
/// [`HistoryError`] if an operation returns before its call or answers with the output of
/// another kind of operation.
pub fn check_kv_history_with_limit(history: &[KvOp], max_steps: u64) -> Result<CheckResult, HistoryError> {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        op.validate(index)?;
        by_key.entry(op.input.key()).or_default().push(index);
    }

    let mut out_of_steps = None;
    for (key, indexes) in by_key {
        let ops: Vec<&KvOp> = indexes.iter().map(|&i| &history[i]).collect();
        let compiled = compile_key(&ops);
        match search(&compiled, max_steps) {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable { frontier } => {
                let mut witness: Vec<KvOp> = ops.into_iter().filter(|op| op.call <= frontier).cloned().collect();
                witness.sort_by_key(|op| (op.call, op.ret.as_ref().map(|r| r.at)));
                return Ok(CheckResult::NotLinearizable { key: key.to_string(), ops: witness });
            }
            Outcome::OutOfSteps => {
                out_of_steps.get_or_insert_with(|| key.to_string());
            }
        }
    }
    Ok(match out_of_steps {
        Some(key) => CheckResult::Unknown { key },
        None => CheckResult::Linearizable,
    })
}
