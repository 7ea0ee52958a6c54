//! Atomic replacement of a file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replace `path` with `parts` written one after the other, atomically: after a crash the file
/// holds either its old content or all of the new one.
pub(crate) fn write_atomic(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("a file path without a directory"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        for part in parts {
            f.write_all(part)?;
        }
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Make the directory entries of `dir` (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
