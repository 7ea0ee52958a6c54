//! [`DataDirLock`]: one process per data directory.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// An exclusive lock on a data directory, held for as long as this value lives (the OS
/// releases it when the process exits, however it exits).
///
/// Two processes on one data directory would both recover the log, append to it and campaign
/// as the same node id: a node that votes twice in a term. The lock is an advisory `flock` on
/// the directory itself, so it needs no lock file (and leaves none behind after a crash).
#[derive(Debug)]
pub struct DataDirLock {
    _dir: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Create `dir` if needed and lock it.
    ///
    /// # Errors
    /// [`StoreError::Locked`] if another process holds the lock; [`StoreError::Io`] if the
    /// directory cannot be created, opened or locked.
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let file = File::open(dir).map_err(|e| StoreError::io(dir, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _dir: file, path: dir.to_path_buf() }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path: dir.to_path_buf() }),
            Err(TryLockError::Error(e)) => Err(StoreError::io(dir, e)),
        }
    }

    /// The locked directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
