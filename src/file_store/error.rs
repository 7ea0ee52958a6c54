//! [`FileStoreError`]: why a log directory cannot be opened, naming the file (and the offset),
//! or why a group of a shared log cannot be taken or removed.

use std::io;
use std::path::PathBuf;

/// Why a [`FileLogStore`](super::FileLogStore) or [`SharedLog`](super::SharedLog) cannot be
/// opened, or a [`DataDirLock`](super::DataDirLock) taken: every such variant names the file.
/// Or why a group of a shared log cannot be taken or removed ([`GroupInUse`](Self::GroupInUse)).
///
/// A node that gets one must refuse to start rather than guess: dropping what cannot be parsed
/// could lose acknowledged writes, and sharing a directory between two processes lets one node
/// vote twice in a term.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// An I/O operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// `path` does not hold what this store wrote: an unknown format or version, a bad checksum
    /// before the end of the log, a gap, a record that passes its checksum but does not decode.
    #[error("{} at offset {offset}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in the file, in bytes.
        offset: u64,
        /// What is wrong there.
        problem: String,
    },
    /// Another process holds the directory's lock: it runs a node on it.
    #[error("{} is in use by another process (its lock is held); one node per directory", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A [`GroupLogStore`](super::GroupLogStore) of group `group` is alive: a second one
    /// cannot be taken, nor the group removed, until it is dropped.
    #[error("group {group} of the shared log is in use: its log store is still open")]
    GroupInUse {
        /// The group.
        group: u64,
    },
}

impl FileStoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, problem: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), offset, problem: problem.into() }
    }
}
