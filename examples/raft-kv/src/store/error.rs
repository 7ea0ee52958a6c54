//! [`StoreError`]: why a data directory cannot be opened, naming the file (and the offset).

use std::io;
use std::path::PathBuf;

/// Why the storage of a node cannot be opened. Every variant names the file; a node that gets
/// one refuses to start rather than guess, because guessing (e.g. dropping what it cannot
/// parse) could lose acknowledged writes or let two processes share one node's state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// `path` does not hold what raft-kv wrote: an unknown format or version, a bad checksum
    /// before the end of the log, a gap, a snapshot that does not decode.
    #[error("{} at offset {offset}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in the file, in bytes.
        offset: u64,
        /// What is wrong there.
        problem: String,
    },
    /// The data directory was created with another `--groups`.
    #[error(transparent)]
    GroupCount(#[from] crate::groups::GroupCountMismatch),
    /// The data directory is another node's, or another cluster's (its `identity` file says
    /// whose): starting on it would vote and answer with that node's state.
    #[error("{}: this data directory is node {recorded_id}'s of cluster {recorded_cluster:?}, not node {id}'s of cluster {cluster:?}: give the node its own directory (or the right --id / --cluster-id)", path.display())]
    Foreign {
        /// The identity file.
        path: PathBuf,
        /// The node id it records.
        recorded_id: u64,
        /// The cluster id it records.
        recorded_cluster: String,
        /// The node id given.
        id: u64,
        /// The cluster id given.
        cluster: String,
    },
    /// The log (or the data directory's lock): see quorate's `FileStoreError`.
    #[error(transparent)]
    Log(#[from] quorate::file_store::FileStoreError),
}

impl StoreError {
    /// An [`StoreError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// A [`StoreError::Corrupt`] at `offset` of `path`.
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), offset, problem: problem.into() }
    }
}
