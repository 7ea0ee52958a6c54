//! The application types of the test kit: a key-value [`Request`], its [`Response`], and the
//! [`TypeConfig`] that bundles them with `u64` node ids and [`BasicNode`](crate::BasicNode).

use serde::{Deserialize, Serialize};

crate::declare_raft_types!(
    /// The type config of the test kit: [`Request`] entries answered by [`Response`]s, `u64`
    /// node ids, [`BasicNode`](crate::BasicNode) addresses and in-memory snapshots
    /// (`Cursor<Vec<u8>>`).
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// A write to the key-value store of [`MemStateMachine`](super::MemStateMachine).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request {
    /// Set `key` to `value`. Answers the previous value.
    Set {
        /// The key to write.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Remove `key`. Answers the previous value.
    Delete {
        /// The key to remove.
        key: String,
    },
    /// Replace the value of `key` with `new` if it is currently `expected` (`None`: absent).
    /// `new == None` deletes the key. Answers the value before, and whether it swapped.
    CompareAndSet {
        /// The key to write.
        key: String,
        /// The value the key must hold for the swap to happen; `None` means "absent".
        expected: Option<String>,
        /// The value to store; `None` deletes the key.
        new: Option<String>,
    },
    /// Change nothing. Benchmarks propose it to measure the replication path alone.
    Noop,
}

impl Request {
    /// A [`Request::Set`].
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self::Set { key: key.into(), value: value.into() }
    }

    /// A [`Request::Delete`].
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// A [`Request::CompareAndSet`].
    pub fn compare_and_set(key: impl Into<String>, expected: Option<&str>, new: Option<&str>) -> Self {
        Self::CompareAndSet { key: key.into(), expected: expected.map(str::to_string), new: new.map(str::to_string) }
    }
}

impl crate::PayloadSize for Request {
    /// A tag byte plus the lengths of the strings it carries.
    fn payload_size(&self) -> usize {
        1 + match self {
            Self::Set { key, value } => key.payload_size() + value.payload_size(),
            Self::Delete { key } => key.payload_size(),
            Self::CompareAndSet { key, expected, new } => {
                key.payload_size() + expected.payload_size() + new.payload_size()
            }
            Self::Noop => 0,
        }
    }
}

/// The state machine's answer to one applied entry.
///
/// | entry | `value` | `ok` |
/// |---|---|---|
/// | [`Request::Set`], [`Request::Delete`] | the previous value | `true` |
/// | [`Request::CompareAndSet`] | the value before the call | whether it swapped |
/// | [`Request::Noop`], blank, membership | `None` | `true` |
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Response {
    /// The value the key held before the entry was applied.
    pub value: Option<String>,
    /// Whether the request took effect (only a compare-and-set can fail).
    pub ok: bool,
}

impl Response {
    /// A successful response carrying `value`.
    pub fn ok(value: Option<String>) -> Self {
        Self { value, ok: true }
    }
}
