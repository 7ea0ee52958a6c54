//! The application types: a KV request whose writes carry unique values.

use quorate::PayloadSize;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Req {
    pub key: String,
    pub value: String,
}

impl Req {
    pub fn set(key: impl ToString, value: impl ToString) -> Self {
        Self { key: key.to_string(), value: value.to_string() }
    }
}

impl PayloadSize for Req {
    fn payload_size(&self) -> usize {
        2 + self.key.len() + self.value.len()
    }
}

quorate::declare_raft_types!(
    /// The conformance suite's types.
    pub C:
        D = Req,
        R = Option<String>,
);
