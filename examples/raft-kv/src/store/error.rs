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
