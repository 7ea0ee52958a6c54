//! What a comparison runs on, checked before it starts and told in its report: the
//! filesystem of the work directory (refused if it keeps data in memory), the etcd version,
//! raft-kv's git commit, the kernel and the CPU ([`Host`]).
//!
//! Both systems fsync their log before they acknowledge a write; on tmpfs or ramfs an fsync
//! costs nothing, and a comparison there measures neither system as it runs on a disk.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::CompareOptions;

/// Filesystem types that keep their data in memory only.
const MEMORY_FILESYSTEMS: [&str; 2] = ["tmpfs", "ramfs"];

/// A mounted filesystem, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// `ext4`, `xfs`, `tmpfs`, ...
    pub fs_type: String,
    /// The mount source: a device (`/dev/nvme0n1p2`) or a name (`tmpfs`, `overlay`).
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl Filesystem {
    /// Whether it keeps its data in memory only (tmpfs, ramfs).
    pub fn is_in_memory(&self) -> bool {
        MEMORY_FILESYSTEMS.contains(&self.fs_type.as_str())
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, mounted at {})", self.fs_type, self.device, self.mount_point.display())
    }
}

/// Why a comparison cannot start on this machine.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The work directory cannot be created or resolved.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The work directory is on tmpfs or ramfs.
    #[error(
        "work directory {path} is on {fs}: fsyncs there reach no disk, so the comparison would \
         measure neither system as it runs; give --work-dir a directory on a disk (or --allow-tmpfs \
         to measure anyway)"
    )]
    InMemory {
        /// The directory.
        path: PathBuf,
        /// Its filesystem.
        fs: Filesystem,
    },
    /// No mount in `/proc/self/mountinfo` holds the work directory.
    #[error(
        "cannot tell the filesystem of work directory {path} (no mount of /proc/self/mountinfo \
         holds it); --allow-tmpfs measures anyway"
    )]
    UnknownFilesystem {
        /// The directory.
        path: PathBuf,
    },
    /// The etcd binary cannot be run.
    #[error("cannot run {binary}: {source} (Debian: apt-get install -y etcd-server)")]
    Etcd {
        /// The binary.
        binary: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// `--wrk` was given and `wrk` cannot be run.
    #[error("--wrk: cannot run wrk (Debian: apt-get install -y wrk)")]
    NoWrk,
}

/// The machine and the software a comparison runs on.
#[derive(Debug, Clone)]
pub struct Host {
    /// `3.4.23`, from `etcd --version`.
    pub etcd_version: Option<String>,
    /// `git rev-parse --short HEAD` in the current directory, `+dirty` if tracked files
    /// changed: the checkout the raft-kv binary was presumably built from.
    pub raft_kv_commit: Option<String>,
    /// `uname -r`.
    pub kernel: Option<String>,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// The cores this process may use.
    pub cores: usize,
    /// The work directory's filesystem (`None` only with `--allow-tmpfs`, when it cannot be
    /// told).
    pub work_fs: Option<Filesystem>,
}

impl Host {
    /// Create the work directory of `opts`, check that its filesystem is on a disk (unless
    /// `opts.allow_tmpfs`), that etcd runs, and wrk if asked for; read the rest.
    ///
    /// # Errors
    /// [`HostError`]: a refused or unusable work directory (then removed again if this
    /// created it empty), or a tool that cannot run.
    pub fn detect(opts: &CompareOptions) -> Result<Self, HostError> {
        let host = Self::check_and_read(opts);
        if host.is_err() {
            // Only if empty: nothing but this call has used it.
            let _ = std::fs::remove_dir(&opts.work_dir);
        }
        host
    }

    fn check_and_read(opts: &CompareOptions) -> Result<Self, HostError> {
        let work_fs = work_dir_filesystem(&opts.work_dir, opts.allow_tmpfs)?;
        let version = Command::new(&opts.etcd_binary)
            .arg("--version")
            .output()
            .map_err(|source| HostError::Etcd { binary: opts.etcd_binary.clone(), source })?;
        if opts.wrk && !super::wrk::available() {
            return Err(HostError::NoWrk);
        }
        Ok(Self {
            etcd_version: etcd_version(&String::from_utf8_lossy(&version.stdout)),
            raft_kv_commit: git_commit(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            cpu_model: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| cpu_model(&c)),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            work_fs,
        })
    }

    /// `etcd 3.4.23`, or `etcd` if its version is unknown.
    pub fn etcd_name(&self) -> String {
        self.etcd_version.as_ref().map_or_else(|| "etcd".to_string(), |v| format!("etcd {v}"))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".to_string());
        write!(
            f,
            "raft-kv commit {}; Linux {}, {} ({} cores); data on {}",
            known(&self.raft_kv_commit),
            known(&self.kernel),
            known(&self.cpu_model),
            self.cores,
            self.work_fs.as_ref().map_or_else(|| "an unknown filesystem".to_string(), Filesystem::to_string),
        )
    }
}

/// Create `dir` and tell its filesystem; refuse one in memory (or unknown) unless `allow`.
fn work_dir_filesystem(dir: &Path, allow: bool) -> Result<Option<Filesystem>, HostError> {
    let io = |source| HostError::WorkDir { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let resolved = dir.canonicalize().map_err(io)?;
    let fs = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| filesystem_of(&m, &resolved));
    admit(resolved, fs, allow)
}

/// `fs`, the filesystem of `path`, if it is on a disk or `allow` says to take any.
fn admit(path: PathBuf, fs: Option<Filesystem>, allow: bool) -> Result<Option<Filesystem>, HostError> {
    match fs {
        Some(fs) if fs.is_in_memory() && !allow => Err(HostError::InMemory { path, fs }),
        None if !allow => Err(HostError::UnknownFilesystem { path }),
        fs => Ok(fs),
    }
}

/// The filesystem that holds `path` (absolute, symlinks resolved) according to `mountinfo`
/// (the text of `/proc/self/mountinfo`): the mount with the longest mount point that contains
/// `path`; of several on the same point, the last, which was mounted over the others.
fn filesystem_of(mountinfo: &str, path: &Path) -> Option<Filesystem> {
    mountinfo
        .lines()
        .filter_map(mount)
        .filter(|fs| path.starts_with(&fs.mount_point))
        .max_by_key(|fs| fs.mount_point.components().count())
}

/// One line of `/proc/self/mountinfo`:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`, the
/// mount point fifth, the type and source after the `-` that ends the optional fields.
fn mount(line: &str) -> Option<Filesystem> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    Some(Filesystem {
        fs_type: after.next()?.to_string(),
        device: unescape(after.next()?),
        mount_point: PathBuf::from(unescape(mount_point)),
    })
}

/// mountinfo's octal escapes (`\040` for a space, `\134` for a backslash) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `3.4.23` from `etcd --version`'s `etcd Version: 3.4.23`.
fn etcd_version(output: &str) -> Option<String> {
    output.lines().find_map(|l| l.trim().strip_prefix("etcd Version:")).map(|v| v.trim().to_string())
}

/// The first `model name` of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The short commit of the current directory's checkout, `+dirty` if tracked files differ.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|c| !c.is_empty())?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}+dirty") } else { commit })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{HostError, admit, cpu_model, etcd_version, filesystem_of};

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 0:27 / /tmp rw,relatime shared:5 - tmpfs tmpfs rw,size=24683652k
31 27 259:2 / /data\\040disk rw,noatime master:1 - xfs /dev/nvme0n1p2 rw
32 30 259:3 / /tmp rw,relatime - ext4 /dev/sdb1 rw
";

    #[test]
    fn the_longest_mount_point_holding_the_path_tells_its_filesystem() {
        let fs = |path: &str| filesystem_of(MOUNTINFO, Path::new(path)).map(|fs| (fs.fs_type, fs.device));
        let of = |t: &str, d: &str| Some((t.to_string(), d.to_string()));
        assert_eq!(fs("/work/target/etcd-compare/work"), of("ext4", "/dev/vda"));
        assert_eq!(fs("/data disk/etcd"), of("xfs", "/dev/nvme0n1p2"), "an escaped space in a mount point");
        assert_eq!(fs("/database"), of("ext4", "/dev/vda"), "a prefix of the name is not a parent directory");
        // The later mount on /tmp hides the tmpfs under it.
        assert_eq!(fs("/tmp/x"), of("ext4", "/dev/sdb1"));
        let without_the_last = MOUNTINFO.lines().take(4).collect::<Vec<_>>().join("\n");
        let tmpfs = filesystem_of(&without_the_last, Path::new("/tmp/x")).expect("mounted");
        assert!(tmpfs.is_in_memory());
        assert_eq!(tmpfs.to_string(), "tmpfs (tmpfs, mounted at /tmp)");
        assert_eq!(filesystem_of("", Path::new("/")), None);
    }

    #[test]
    fn versions_and_cpu_model_are_read() {
        let version = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(etcd_version(version).as_deref(), Some("3.4.23"));
        assert_eq!(etcd_version("garbage"), None);
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\nHardware\t: BCM2835\n"), None);
    }

    #[test]
    fn a_work_dir_in_memory_or_on_an_unknown_filesystem_is_refused_unless_allowed() {
        let fs = |path: &str| filesystem_of(MOUNTINFO, Path::new(path));
        let path = || Path::new("/w").to_path_buf();
        let tmpfs = filesystem_of(MOUNTINFO.lines().take(3).collect::<Vec<_>>().join("\n").as_str(), Path::new("/tmp"));
        assert!(matches!(admit(path(), tmpfs.clone(), false), Err(HostError::InMemory { .. })));
        assert_eq!(admit(path(), tmpfs.clone(), true).expect("allowed"), tmpfs);
        assert!(matches!(admit(path(), None, false), Err(HostError::UnknownFilesystem { .. })));
        assert_eq!(admit(path(), None, true).expect("allowed"), None);
        assert_eq!(admit(path(), fs("/work"), false).expect("on a disk"), fs("/work"));
        let refused = admit(path(), tmpfs, false).expect_err("tmpfs").to_string();
        assert!(
            refused.contains("is on tmpfs (tmpfs, mounted at /tmp)") && refused.contains("--work-dir"),
            "{refused}"
        );
    }
}
