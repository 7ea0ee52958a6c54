//! [`Disk`]: the file operations the log makes, behind a trait, so that a test can put a fault
//! layer under the log (e.g. one that loses every write not yet synced, as a power loss does)
//! and open it with [`FileLogStore::open_on`](super::FileLogStore::open_on).
//!
//! [`FsDisk`] is the real one: a directory of the file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A directory of files, as the log uses it: whole-file reads, appends, syncs.
///
/// Names are plain file names (no separators). Implementations are called from the thread
/// that opens the store and from its writer thread, one call at a time.
///
/// Durability is what a file system gives: after a crash of the process everything written is
/// still there; after a power loss only what [`sync_file`](Self::sync_file) (or
/// [`DiskFile::sync`]) made durable, in files whose names [`sync_dir`](Self::sync_dir) made
/// durable.
pub trait Disk: Send + Sync + 'static {
    /// Where file `name` is, for messages.
    fn path(&self, name: &str) -> PathBuf;
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole content of file `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Create file `name`, empty, and open it for appending. The name is durable only after
    /// [`sync_dir`](Self::sync_dir).
    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>>;
    /// Cut file `name` to `len` bytes.
    fn set_len(&self, name: &str, len: u64) -> io::Result<()>;
    /// Delete file `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Make the content of file `name` durable.
    fn sync_file(&self, name: &str) -> io::Result<()>;
    /// Make the directory's entries (created and removed names) durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// A file open for appending.
pub trait DiskFile: Send {
    /// Append `buf`.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Make everything appended so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

/// A directory of the file system.
#[derive(Debug, Clone)]
pub struct FsDisk {
    dir: PathBuf,
}

impl FsDisk {
    /// The directory `dir`, created (with its parent's entry synced) if missing.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(Self { dir: dir.to_path_buf() })
    }
}

impl Disk for FsDisk {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in fs::read_dir(&self.dir)? {
            if let Some(name) = item?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        let file = OpenOptions::new().create_new(true).append(true).open(self.path(name))?;
        Ok(Box::new(FsFile(file)))
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(self.path(name))?.set_len(len)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        File::open(self.path(name))?.sync_all()
    }

    fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }
}

struct FsFile(File);

impl DiskFile for FsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// Make the directory entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
