//! Tests of the `file-store` feature's [`FileLogStore`](quorate::file_store::FileLogStore)
//! and [`SharedLog`](quorate::file_store::SharedLog): the storage conformance suite, recovery
//! from what crashes leave, and a fault layer that models a power loss.

mod faults;
mod mem_disk;
mod recovery;
mod shared;
mod shared_faults;
mod shared_memory;
mod shared_suite;
mod suite;

use quorate::testing::{Request, TypeConfig};
use quorate::{Entry, LeaderId, LogId};

type C = TypeConfig;

fn log_id(term: u64, index: u64) -> LogId<C> {
    LogId::new(LeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<C> {
    Entry::new_normal(log_id(term, index), Request::set(format!("k{index}"), format!("t{term}")))
}
