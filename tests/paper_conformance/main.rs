//! Raft-paper conformance (Ongaro & Ousterhout 2014; Ongaro's dissertation), through quorate's
//! public API only, on storage, a state machine and a network written from the public docs.

mod cluster;
mod net;
mod store;
mod types;

mod t_basic;
mod t_durability;
mod t_fig8;
mod t_leadership;
mod t_membership;
mod t_nemesis;
mod t_reads;
mod t_snapshot;
