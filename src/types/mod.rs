//! The values Raft is made of: log ids, votes, entries and memberships.

mod change_members;
mod entry;
mod log_id;
mod membership;
mod vote;

pub use change_members::ChangeMembers;
pub use entry::{Entry, EntryPayload};
pub use log_id::{DisplayOption, LeaderId, LogId, LogIdOptionExt};
pub use membership::{Membership, MembershipError, StoredMembership};
pub use vote::Vote;
