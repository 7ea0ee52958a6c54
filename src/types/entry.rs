//! Log entries.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{LogId, Membership};
use crate::{PayloadSize, RaftTypeConfig};

/// One entry of the replicated log.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Entry<C: RaftTypeConfig> {
    /// Where the entry sits in the log and which leader proposed it.
    pub log_id: LogId<C>,
    /// What the entry carries.
    pub payload: EntryPayload<C>,
}

/// What a log entry carries.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum EntryPayload<C: RaftTypeConfig> {
    /// An empty entry: a new leader appends one to commit the entries of earlier terms
    /// (Raft §5.4.2, §8).
    Blank,
    /// An application request, handed to the state machine when committed.
    Normal(C::D),
    /// A cluster configuration. It takes effect on a node as soon as it is appended to that
    /// node's log, not when it commits (Raft dissertation §4.1).
    Membership(Membership<C>),
}

impl<C: RaftTypeConfig> Entry<C> {
    /// A blank entry at `log_id`.
    pub fn new_blank(log_id: LogId<C>) -> Self {
        Self { log_id, payload: EntryPayload::Blank }
    }

    /// An application entry at `log_id`.
    pub fn new_normal(log_id: LogId<C>, data: C::D) -> Self {
        Self { log_id, payload: EntryPayload::Normal(data) }
    }

    /// A membership entry at `log_id`.
    pub fn new_membership(log_id: LogId<C>, membership: Membership<C>) -> Self {
        Self { log_id, payload: EntryPayload::Membership(membership) }
    }

    /// The approximate size of the entry in bytes, for replication's byte bounds: the log id
    /// plus the request's [`PayloadSize`] (or an estimate for a membership).
    pub fn approx_size(&self) -> u64 {
        const LOG_ID: usize = 32;
        let payload = match &self.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Normal(d) => d.payload_size(),
            EntryPayload::Membership(m) => 64 * m.nodes().len(),
        };
        (LOG_ID + payload) as u64
    }

    /// The membership this entry carries, if it is a membership entry.
    pub fn membership(&self) -> Option<&Membership<C>> {
        match &self.payload {
            EntryPayload::Membership(m) => Some(m),
            _ => None,
        }
    }
}

impl<C: RaftTypeConfig> Clone for Entry<C> {
    fn clone(&self) -> Self {
        Self { log_id: self.log_id, payload: self.payload.clone() }
    }
}

impl<C: RaftTypeConfig> Clone for EntryPayload<C> {
    fn clone(&self) -> Self {
        match self {
            Self::Blank => Self::Blank,
            Self::Normal(d) => Self::Normal(d.clone()),
            Self::Membership(m) => Self::Membership(m.clone()),
        }
    }
}

impl<C: RaftTypeConfig> PartialEq for EntryPayload<C>
where
    C::D: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Blank, Self::Blank) => true,
            (Self::Normal(a), Self::Normal(b)) => a == b,
            (Self::Membership(a), Self::Membership(b)) => a == b,
            _ => false,
        }
    }
}

impl<C: RaftTypeConfig> PartialEq for Entry<C>
where
    C::D: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.log_id == other.log_id && self.payload == other.payload
    }
}

impl<C: RaftTypeConfig> fmt::Debug for Entry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:?}", self.log_id, self.payload)
    }
}

impl<C: RaftTypeConfig> fmt::Debug for EntryPayload<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Blank => f.write_str("blank"),
            Self::Normal(d) => write!(f, "normal({d:?})"),
            Self::Membership(m) => write!(f, "membership({m})"),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Display for Entry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.payload {
            EntryPayload::Blank => write!(f, "{}:blank", self.log_id),
            EntryPayload::Normal(_) => write!(f, "{}:normal", self.log_id),
            EntryPayload::Membership(m) => write!(f, "{}:membership({m})", self.log_id),
        }
    }
}
