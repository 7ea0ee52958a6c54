//! Table-driven tests of the Engine's handlers: each feeds one input to a known state and
//! compares the whole command list.

mod fixture;

mod elect_test;
mod handle_append_entries_commit_test;
mod handle_append_entries_log_test;
mod handle_append_entries_test;
mod handle_timeout_test;
mod handle_vote_req_test;
mod handle_vote_resp_test;
mod initialize_test;
mod leader_append_entries_test;
mod lease_test;
mod membership_change_test;
mod on_log_flushed_test;
mod on_replication_progress_test;
mod pre_vote_test;
mod quiesce_test;
mod read_test;
mod snapshot_test;
mod startup_test;
mod stickiness_test;
mod transfer_test;
mod wake_rank_test;
