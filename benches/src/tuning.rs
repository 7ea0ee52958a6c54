//! How each library is configured for a measurement: the **same settings** on both sides, or
//! **each tuned** (openraft as its own benchmark configures it, quorate with the settings that
//! measured best here).
//!
//! The tables print each library's settings from the `Config` the cluster really starts with
//! (see `describe` in each cluster module), so the text cannot drift from the code.

use std::fmt;
use std::str::FromStr;

/// The commit of openraft's repository whose `benchmarks/minimal` the **each tuned** openraft
/// settings were read from (`src/bin/bench.rs`, `create_cluster`, and `src/network.rs`). It is
/// the newest commit stored for this bench when it was written (its workspace version is
/// 0.10.0-alpha.34); the commit that openraft 0.10.0-alpha.37 was published from
/// (728e66bba05c4305dd37016535d1c247a35d2059) was not available to read. The benchmark's
/// settings have not changed since 2025-12, and `Config`'s defaults are the same in both.
pub const OPENRAFT_BENCHMARK_COMMIT: &str = "5463678f4718655c364b271b38b574798f366600";

/// Which results table a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Table {
    /// Both libraries with the same values of the knobs both have (their shared defaults).
    Same,
    /// Each library configured as it is meant to run: see [`Tuning`].
    Tuned,
}

impl Table {
    /// The title of the table, as the README uses it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Same => "same settings",
            Self::Tuned => "each tuned",
        }
    }

    /// A file-name-friendly form of the title.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Same => "same-settings",
            Self::Tuned => "each-tuned",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// How both libraries are configured for one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    /// Both libraries' defaults, which agree where both have the knob (50 ms heartbeat,
    /// 150–300 ms election timeout, 300 entries per AppendEntries, up to 4096 writes per log
    /// append), pipelined replication on both. Snapshots are off unless `snapshots`, then
    /// both libraries' default policy (every 5000 applied entries, 1000 kept behind).
    Same {
        /// Build snapshots and purge the log behind them. The long memory run needs it:
        /// otherwise the in-memory log store grows with every write and hides whatever the
        /// library does.
        snapshots: bool,
    },
    /// Each library as it runs best.
    Tuned(Tuning),
}

impl Settings {
    /// The worker threads `library` runs on under these settings, if tuned; `None` for the
    /// same settings (the `--server-workers` of the run).
    pub fn server_workers(&self, library: crate::report::Library) -> Option<usize> {
        match (self, library) {
            (Self::Same { .. }, _) => None,
            (Self::Tuned(t), crate::report::Library::Quorate) => Some(t.quorate.server_workers),
            (Self::Tuned(t), crate::report::Library::Openraft) => Some(t.openraft.server_workers),
        }
    }

    /// The settings of `table`: snapshots off for [`Table::Same`], `tuning` for
    /// [`Table::Tuned`].
    pub fn of(table: Table, tuning: Tuning) -> Self {
        match table {
            Table::Same => Self::Same { snapshots: false },
            Table::Tuned => Self::Tuned(tuning),
        }
    }
}

/// The **each tuned** settings of both libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuning {
    /// quorate's.
    pub quorate: QuorateTuning,
    /// openraft's.
    pub openraft: OpenraftTuning,
}

/// The snapshot policy of a tuned cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshots {
    /// Never build a snapshot; the log is never purged.
    Never,
    /// Build one every this many applied entries and purge the log behind it, keeping 1000
    /// entries.
    Every(u64),
}

impl fmt::Display for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("never"),
            Self::Every(n) => write!(f, "{n}"),
        }
    }
}

/// quorate's **each tuned** settings: the knobs that change its throughput on this harness.
/// Every other field of `quorate::Config` keeps its default.
///
/// The default is what measured best here (see benches/README.md, "How quorate's settings were
/// chosen"); `--quorate-tuned` overrides any of them, written as this type's `Display`:
/// `max_payload_entries=1024,max_append_batch=4096,...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorateTuning {
    /// Entries per AppendEntries request.
    pub max_payload_entries: u64,
    /// Client writes taken into one log append.
    pub max_append_batch: u64,
    /// AppendEntries requests in flight per follower.
    pub max_in_flight_requests: u64,
    /// Requests queued per kind for the Raft task (the write queue's capacity).
    pub max_pending_requests: u64,
    /// When to snapshot and purge the log.
    pub snapshots: Snapshots,
    /// Worker threads of the tokio runtime the nodes run on (an application's choice, not a
    /// `Config` field, but it moves throughput as much as any knob).
    pub server_workers: usize,
}

impl Default for QuorateTuning {
    fn default() -> Self {
        Self {
            max_payload_entries: 1024,
            max_append_batch: 4096,
            max_in_flight_requests: 64,
            max_pending_requests: 4096,
            snapshots: Snapshots::Every(5000),
            server_workers: 4,
        }
    }
}

impl fmt::Display for QuorateTuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_payload_entries={},max_append_batch={},max_in_flight_requests={},max_pending_requests={},snapshots={},server_workers={}",
            self.max_payload_entries,
            self.max_append_batch,
            self.max_in_flight_requests,
            self.max_pending_requests,
            self.snapshots,
            self.server_workers
        )
    }
}

/// A `--quorate-tuned` value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuningParseError {
    /// An item is not `key=value`.
    #[error("`{0}` is not key=value")]
    NotKeyValue(String),
    /// The key is not one of the tuned knobs.
    #[error(
        "unknown setting `{0}` (known: max_payload_entries, max_append_batch, max_in_flight_requests, max_pending_requests, snapshots, server_workers)"
    )]
    UnknownKey(String),
    /// The value is not a positive number (or `never`, for snapshots).
    #[error("`{key}={value}`: the value must be a positive integer{}", if *.key == "snapshots" { " or `never`" } else { "" })]
    BadValue {
        /// The setting.
        key: String,
        /// What was given.
        value: String,
    },
}

impl FromStr for QuorateTuning {
    type Err = TuningParseError;

    /// Start from the default and override each `key=value` of a comma-separated list.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tuning = Self::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| TuningParseError::NotKeyValue(item.to_string()))?;
            let (key, value) = (key.trim(), value.trim());
            let bad = || TuningParseError::BadValue { key: key.to_string(), value: value.to_string() };
            let positive = || value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad);
            match key {
                "max_payload_entries" => tuning.max_payload_entries = positive()?,
                "max_append_batch" => tuning.max_append_batch = positive()?,
                "max_in_flight_requests" => tuning.max_in_flight_requests = positive()?,
                "max_pending_requests" => tuning.max_pending_requests = positive()?,
                "snapshots" if value == "never" => tuning.snapshots = Snapshots::Never,
                "snapshots" => tuning.snapshots = Snapshots::Every(positive()?),
                "server_workers" => {
                    tuning.server_workers = usize::try_from(positive()?).map_err(|_| bad())?;
                }
                _ => return Err(TuningParseError::UnknownKey(key.to_string())),
            }
        }
        Ok(tuning)
    }
}

/// How the openraft adapter replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Replication {
    /// `stream_append` hands the leader's request stream to the target's
    /// `Raft::stream_append`: many AppendEntries in flight per follower. The same-settings
    /// table always runs this way, on both libraries.
    Pipelined,
    /// openraft's default `RaftNetworkV2::stream_append` (`stream_append_sequential`): one
    /// AppendEntries at a time, the next sent when the previous is answered. This is what
    /// openraft's own benchmark runs: its network implements the V1 `RaftNetwork` (unary
    /// `append_entries`) behind openraft-legacy's adapter, which keeps that default.
    Sequential,
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pipelined => "pipelined",
            Self::Sequential => "sequential",
        })
    }
}

/// openraft's **each tuned** settings: those of its own `benchmarks/minimal` (at
/// [`OPENRAFT_BENCHMARK_COMMIT`]), which starts from `Config::default()` and sets
/// `election_timeout_min: 200`, `election_timeout_max: 2000`, `purge_batch_size: 1024` and
/// `max_payload_entries: 1024`, so snapshots are on with the default policy, and runs the
/// nodes on a runtime of 16 workers (the clients on one of 1, as here). What can still be
/// chosen here is how the adapter replicates and the workers; the defaults are the benchmark's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenraftTuning {
    /// How the network adapter replicates.
    pub replication: Replication,
    /// Worker threads of the tokio runtime the nodes run on.
    pub server_workers: usize,
}

impl Default for OpenraftTuning {
    /// As openraft's benchmark runs: sequential replication, 16 server workers.
    fn default() -> Self {
        Self { replication: Replication::Sequential, server_workers: openraft_benchmark::SERVER_WORKERS }
    }
}

/// The values `benchmarks/minimal` sets on openraft's `Config` (everything else default).
pub mod openraft_benchmark {
    /// `election_timeout_min`, ms.
    pub const ELECTION_TIMEOUT_MIN_MS: u64 = 200;
    /// `election_timeout_max`, ms.
    pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2000;
    /// `purge_batch_size`.
    pub const PURGE_BATCH_SIZE: u64 = 1024;
    /// `max_payload_entries`.
    pub const MAX_PAYLOAD_ENTRIES: u64 = 1024;
    /// `--server-workers`' default: worker threads of the runtime the nodes run on.
    pub const SERVER_WORKERS: usize = 16;
}

#[cfg(test)]
mod tests {
    use super::{QuorateTuning, Snapshots, TuningParseError};

    #[test]
    fn quorate_tuning_reads_back_what_it_prints() {
        let tuning = QuorateTuning { max_payload_entries: 7, snapshots: Snapshots::Never, ..Default::default() };
        assert_eq!(tuning.to_string().parse::<QuorateTuning>(), Ok(tuning));
        assert_eq!("".parse::<QuorateTuning>(), Ok(QuorateTuning::default()));
    }

    #[test]
    fn quorate_tuning_overrides_only_what_it_names() {
        let tuning: QuorateTuning = "max_append_batch=16384, snapshots=2000".parse().expect("valid");
        assert_eq!(tuning.max_append_batch, 16384);
        assert_eq!(tuning.snapshots, Snapshots::Every(2000));
        assert_eq!(tuning.max_payload_entries, QuorateTuning::default().max_payload_entries);
    }

    #[test]
    fn quorate_tuning_refuses_unknown_keys_and_bad_values() {
        assert!(matches!("foo=1".parse::<QuorateTuning>(), Err(TuningParseError::UnknownKey(_))));
        assert!(matches!("max_append_batch".parse::<QuorateTuning>(), Err(TuningParseError::NotKeyValue(_))));
        assert!(matches!("max_append_batch=0".parse::<QuorateTuning>(), Err(TuningParseError::BadValue { .. })));
        assert!(matches!("snapshots=soon".parse::<QuorateTuning>(), Err(TuningParseError::BadValue { .. })));
    }
}
