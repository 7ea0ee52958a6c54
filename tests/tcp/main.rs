//! Tests of the `tcp` transport (with `tls`): the network's four written promises, one test
//! each; a 3-node cluster over loopback, in plain TCP and in mutual TLS; and the ways a stranger
//! is kept out (no certificate, another cluster's CA or id, a certificate of another node,
//! random bytes, frames over the bound), with the cluster serving on; and group hosts, many
//! Raft groups per node over one connection per node pair.

mod cluster;
mod decoder;
mod fixture;
mod groups;
mod promises;
mod security;
mod versions;
