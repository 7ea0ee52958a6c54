//! [`DataDirLock`]: one process per directory.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use super::error::FileStoreError;

/// An exclusive lock on a directory, held for as long as this value lives (the OS releases it
/// when the process exits, however it exits).
///
/// Two processes on one node's data would both recover the log, append to it and campaign as
/// the same node id: a node that votes twice in a term. The lock is an advisory `flock` on
/// the directory itself, so it needs no lock file (and leaves none behind after a crash).
///
/// [`FileLogStore::open`](super::FileLogStore::open) takes one on its directory by itself. An
/// application that keeps more state beside the log (e.g. its snapshot files) takes one on its
/// own data directory too.
#[derive(Debug)]
pub struct DataDirLock {
    _dir: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Create `dir` if needed and lock it.
    ///
    /// # Errors
    /// [`FileStoreError::Locked`] if another process (or another `DataDirLock` of this
    /// process) holds the lock; [`FileStoreError::Io`] if the directory cannot be created,
    /// opened or locked.
    pub fn acquire(dir: &Path) -> Result<Self, FileStoreError> {
        fs::create_dir_all(dir).map_err(|e| FileStoreError::io(dir, e))?;
        let file = File::open(dir).map_err(|e| FileStoreError::io(dir, e))?;
        // File::try_lock is Rust 1.89: the file-store feature needs 1.89 (the rest of the crate
        // builds with 1.85); see Cargo.toml.
        #[allow(clippy::incompatible_msrv)]
        let locked = file.try_lock();
        match locked {
            Ok(()) => Ok(Self { _dir: file, path: dir.to_path_buf() }),
            Err(TryLockError::WouldBlock) => Err(FileStoreError::Locked { path: dir.to_path_buf() }),
            Err(TryLockError::Error(e)) => Err(FileStoreError::io(dir, e)),
        }
    }

    /// The locked directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
