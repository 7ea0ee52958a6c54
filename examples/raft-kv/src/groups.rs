//! Keys partitioned over Raft groups (`raft-kv node --groups N`): which group holds a key,
//! each group's id on the wire, and the record of `N` in the data directory.
//!
//! # Routing: a stable hash of the key, modulo N
//!
//! Key `k` lives in shard `fnv1a64(k) % N`. A hash spreads any key pattern (sequential ids,
//! one hot prefix) evenly over the groups, so that N groups carry N leaders' worth of writes
//! without anyone choosing split points; key ranges would keep neighbouring keys together
//! (range scans) but need split points chosen ahead, and quorate does not split or merge groups
//! (so a range that turns hot stays on one group forever). raft-kv has no range reads, so the
//! hash wins. FNV-1a is written out below rather than taken from std, whose hashers are
//! seeded per process or not promised stable across releases: a key's group must be the same
//! on every node and after every upgrade.
//!
//! The price of modulo N is that N is fixed for the life of a cluster: another N sends most
//! keys to another group. So a node records N in its data directory ([`check_layout`]) and
//! refuses to start with another, and the group ids carry N ([`group_id`]), so a node started
//! with another N by mistake hosts groups no other node knows: its peers refuse its messages
//! and it joins nothing, instead of serving keys from the wrong group.

use std::path::Path;
use std::sync::Arc;

use quorate::multi::GroupId;

use crate::service::KvService;
use crate::store::StoreError;

/// The file in a data directory that records the number of groups (absent: one group).
pub const GROUPS_FILE: &str = "groups";

/// The most groups a node runs: quorate's multi-group host is measured up to 10,000.
pub const MAX_GROUPS: u32 = 10_000;

/// FNV-1a, 64 bits: a fixed function of the key's bytes, the same on every platform.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard (0 to `count - 1`) that holds `key`.
///
/// # Panics
/// If `count` is 0 (a node always runs at least one group).
pub fn shard_of(key: &str, count: u32) -> u32 {
    (fnv1a64(key.as_bytes()) % u64::from(count)) as u32
}

/// The id of shard `shard` of `count` in the group host and on the wire: `count` in the high
/// 32 bits, `shard` in the low ones. Nodes started with different counts share no group id.
pub fn group_id(shard: u32, count: u32) -> GroupId {
    (u64::from(count) << 32) | u64::from(shard)
}

/// The directory of shard `shard`'s state machine (its snapshot file) in a multi-group node.
pub fn shard_dir(data_dir: &Path, shard: u32) -> std::path::PathBuf {
    data_dir.join(format!("group-{shard}"))
}

/// The directory of the log every group of a multi-group node shares.
pub fn shared_log_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("shared-log")
}

/// Why a data directory cannot be used with the number of groups given.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} holds a node of --groups {recorded}, and this node was started with --groups {given}: \
     the number of groups decides which group holds each key, so a data directory keeps the one \
     it was created with (start with --groups {recorded}, or use a new --data-dir)",
    dir.display()
)]
pub struct GroupCountMismatch {
    /// The data directory.
    pub dir: std::path::PathBuf,
    /// The count it was created with.
    pub recorded: u32,
    /// The count given on the command line.
    pub given: u32,
}

/// Check that `data_dir` (locked by the caller) may run `count` groups, and record `count` in
/// a new directory.
///
/// A directory without [`GROUPS_FILE`] is a one-group node's (raft-kv's layout before
/// `--groups`, kept as it was for `--groups 1`): it may run one group, and if it holds a
/// one-group node's state (`log/`, `snapshot.bin`) nothing else. A new directory started with
/// more than one group gets the file, durably, before any group state is written.
///
/// # Errors
/// [`StoreError::GroupCount`] if the directory was created with another count; an I/O error
/// reading or writing the file.
pub fn check_layout(data_dir: &Path, count: u32) -> Result<(), StoreError> {
    let path = data_dir.join(GROUPS_FILE);
    let mismatch =
        |recorded| StoreError::GroupCount(GroupCountMismatch { dir: data_dir.to_path_buf(), recorded, given: count });
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: u32 = text
                .trim()
                .parse()
                .map_err(|_| StoreError::corrupt(&path, 0, format!("not a number of groups: {:?}", text.trim())))?;
            return if recorded == count { Ok(()) } else { Err(mismatch(recorded)) };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&path, e)),
    }
    if count == 1 {
        // A directory of many groups whose `groups` file is gone: not a one-group node's.
        let many = std::fs::read_dir(shared_log_dir(data_dir)).is_ok_and(|mut entries| entries.next().is_some());
        return match many {
            true => Err(StoreError::corrupt(
                &path,
                0,
                "missing, while shared-log/ holds the logs of a node of many groups: start it with its --groups, and \
                 restore the file (its count of groups)",
            )),
            false => Ok(()),
        };
    }
    if data_dir.join("log").exists() || data_dir.join("snapshot.bin").exists() {
        return Err(mismatch(1));
    }
    crate::store::write_atomic(&path, &[format!("{count}\n").as_bytes()]).map_err(|e| StoreError::io(&path, e))
}

/// The file of a data directory that names whose it is: the node id and the cluster id.
pub const IDENTITY_FILE: &str = "identity";

/// Check that `data_dir` (locked by the caller) is node `id`'s of cluster `cluster`, and
/// record that, durably, in a directory that does not say yet (a new one, or one of a raft-kv
/// that did not record it). A directory of another node (a copy, or two nodes' directories
/// swapped: each would vote again in terms it voted in under the other id) or of another
/// cluster is refused (found in review).
///
/// # Errors
/// [`StoreError::Foreign`] if the directory is another node's or cluster's; an I/O error
/// reading or writing the file; [`StoreError::Corrupt`] if it does not parse.
pub fn check_identity(data_dir: &Path, id: u64, cluster: &str) -> Result<(), StoreError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let field =
                |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('=')).map(str::to_string);
            let (Some(recorded_id), Some(recorded_cluster)) =
                (field("node_id").and_then(|v| v.parse::<u64>().ok()), field("cluster_id"))
            else {
                return Err(StoreError::corrupt(&path, 0, format!("not a node_id= and cluster_id= pair: {text:?}")));
            };
            if recorded_id == id && recorded_cluster == cluster {
                return Ok(());
            }
            Err(StoreError::Foreign { path, recorded_id, recorded_cluster, id, cluster: cluster.to_string() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!("node_id={id}\ncluster_id={cluster}\n");
            crate::store::write_atomic(&path, &[text.as_bytes()]).map_err(|e| StoreError::io(&path, e))
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// The key-value services of a node's groups, shard `s` at index `s`. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    services: Arc<[KvService]>,
}

impl Groups {
    /// The groups of a node, shard `s` at index `s`.
    ///
    /// # Panics
    /// If `services` is empty or has more than [`MAX_GROUPS`].
    pub fn new(services: Vec<KvService>) -> Self {
        assert!(!services.is_empty() && services.len() <= MAX_GROUPS as usize, "1 to {MAX_GROUPS} groups");
        Self { services: services.into() }
    }

    /// How many groups the node runs.
    pub fn count(&self) -> u32 {
        self.services.len() as u32
    }

    /// Whether the node runs one group, as raft-kv did before `--groups`: its API answers
    /// exactly as then.
    pub fn is_single(&self) -> bool {
        self.services.len() == 1
    }

    /// The one group of a one-group node; `None` on a node of many.
    pub fn single(&self) -> Option<&KvService> {
        match &*self.services {
            [service] => Some(service),
            _ => None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.services[0].raft.id()
    }

    /// The shard that holds `key`, and its service.
    pub fn of_key(&self, key: &str) -> (u32, &KvService) {
        let shard = shard_of(key, self.count());
        (shard, &self.services[shard as usize])
    }

    /// Shard `shard`'s service, if the node runs that many groups.
    pub fn get(&self, shard: u32) -> Option<&KvService> {
        self.services.get(shard as usize)
    }

    /// Every group's service, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &KvService)> {
        self.services.iter().enumerate().map(|(s, service)| (s as u32, service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // The published FNV-1a 64 test vectors: a change here moves keys between groups.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keys_spread_over_every_group() {
        let mut per_shard = [0u32; 8];
        for k in 0..8000 {
            per_shard[shard_of(&format!("key-{k}"), 8) as usize] += 1;
        }
        assert!(per_shard.iter().all(|n| (800..1200).contains(n)), "{per_shard:?}");
    }

    #[test]
    fn group_ids_of_different_counts_never_meet() {
        assert_eq!(group_id(3, 8), (8 << 32) | 3);
        assert_ne!(group_id(3, 8), group_id(3, 4));
    }

    #[test]
    fn a_data_dir_is_one_nodes_of_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        check_identity(dir.path(), 1, "a").unwrap();
        check_identity(dir.path(), 1, "a").unwrap();
        for (id, cluster) in [(2, "a"), (1, "b")] {
            let e = check_identity(dir.path(), id, cluster).unwrap_err().to_string();
            assert!(e.contains("node 1's of cluster \"a\""), "{e}");
        }
        std::fs::write(dir.path().join(IDENTITY_FILE), "garbage").unwrap();
        assert!(check_identity(dir.path(), 1, "a").is_err(), "an unreadable identity is refused");
    }

    #[test]
    fn a_node_of_many_groups_without_its_groups_file_is_refused_as_one_group() {
        let dir = tempfile::tempdir().unwrap();
        check_layout(dir.path(), 4).unwrap();
        std::fs::create_dir(shared_log_dir(dir.path())).unwrap();
        std::fs::write(shared_log_dir(dir.path()).join("00000001.seg"), b"x").unwrap();
        std::fs::remove_file(dir.path().join(GROUPS_FILE)).unwrap();
        let e = check_layout(dir.path(), 1).unwrap_err().to_string();
        assert!(e.contains("shared-log"), "{e}");
    }

    #[test]
    fn a_data_dir_keeps_its_group_count() {
        let dir = tempfile::tempdir().unwrap();
        check_layout(dir.path(), 1).unwrap();
        assert!(!dir.path().join(GROUPS_FILE).exists(), "--groups 1 keeps the old layout");
        check_layout(dir.path(), 8).unwrap();
        check_layout(dir.path(), 8).unwrap();
        let e = check_layout(dir.path(), 4).unwrap_err().to_string();
        assert!(e.contains("--groups 8") && e.contains("--groups 4"), "{e}");
        assert!(check_layout(dir.path(), 1).is_err());

        let single = tempfile::tempdir().unwrap();
        std::fs::create_dir(single.path().join("log")).unwrap();
        let e = check_layout(single.path(), 8).unwrap_err().to_string();
        assert!(e.contains("--groups 1"), "{e}");
    }
}
