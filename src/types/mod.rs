//! The values Raft is made of: log ids, votes, entries and memberships, and the messages nodes
//! exchange. Everything here sits below the Engine: it imports nothing of the layers above.

mod change_members;
mod entry;
mod log_id;
mod membership;
mod message;
mod read_policy;
mod snapshot_meta;
mod vote;

pub use change_members::ChangeMembers;
pub use entry::{Entry, EntryPayload};
pub use log_id::{DisplayOption, LeaderId, LogId, LogIdOptionExt};
pub use membership::{Membership, MembershipError, StoredMembership};
pub use message::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, QuiesceMark,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
pub use read_policy::ReadPolicy;
pub use snapshot_meta::SnapshotMeta;
pub use vote::Vote;
