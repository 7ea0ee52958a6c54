//! Compares fsync'd log-append throughput of quorate's FileLogStore (feature file-store), the
//! log raft-kv links, with redb.
//!
//! Both stores get the same group commit: a writer thread drains every queued append, makes
//! them durable together (one `fdatasync` for the log file, one `Durability::Immediate`
//! transaction for redb), then completes them in order. Three workloads:
//!
//! - `serial`: one entry per append, wait for each to be durable (fsync latency);
//! - `pipelined`: one entry per append, up to 64 appends in flight (a follower under load);
//! - `batched`: 100 entries per append, waited for (a leader draining many clients' writes).
//!
//! Usage: `cargo run --release -p raft-kv-storage-bench [-- DIR]` (default: the system temp
//! dir). It is a crate of its own, outside the workspace's default members, so that testing
//! raft-kv never compiles redb.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quorate::{Entry, IOFlushed, LeaderId, LogId, RaftLogStorage};
use raft_kv::store::LogStore;
use raft_kv::{Request, TypeConfig};
use tokio::sync::oneshot;

type C = TypeConfig;
type Done = oneshot::Receiver<Result<(), std::io::Error>>;

/// A log store under test: append entries, get a receiver that fires when they are durable.
trait Appender {
    fn append(&mut self, entries: Vec<Entry<C>>) -> impl Future<Output = Done>;
}

struct FileLog(LogStore);

impl Appender for FileLog {
    async fn append(&mut self, entries: Vec<Entry<C>>) -> Done {
        let (cb, rx) = IOFlushed::with_receiver();
        self.0.append(entries, cb).await.expect("append");
        rx
    }
}

fn entry(index: u64) -> Entry<C> {
    let log_id = LogId::new(LeaderId::new(1, 1), index);
    Entry::new_normal(log_id, Request::Set { key: format!("key-{index}"), value: "v".repeat(100) })
}

struct Workload {
    name: &'static str,
    appends: u64,
    per_append: u64,
    in_flight: usize,
}

const WORKLOADS: [Workload; 3] = [
    Workload { name: "serial", appends: 1_000, per_append: 1, in_flight: 1 },
    Workload { name: "pipelined", appends: 20_000, per_append: 1, in_flight: 64 },
    Workload { name: "batched", appends: 500, per_append: 100, in_flight: 1 },
];

async fn run<A: Appender>(store: &mut A, w: &Workload) -> Duration {
    let start = Instant::now();
    let mut pending: VecDeque<Done> = VecDeque::new();
    let mut next = 1;
    for _ in 0..w.appends {
        let entries = (next..next + w.per_append).map(entry).collect();
        next += w.per_append;
        pending.push_back(store.append(entries).await);
        if pending.len() >= w.in_flight {
            pending.pop_front().expect("pending").await.expect("callback").expect("durable");
        }
    }
    for rx in pending {
        rx.await.expect("callback").expect("durable");
    }
    start.elapsed()
}

fn report(engine: &str, w: &Workload, elapsed: Duration) {
    let entries = (w.appends * w.per_append) as f64;
    println!(
        "{engine:<6} {:<10} {:>8} appends x {:>3} entries: {:>9.0} entries/s {:>8.0} appends/s",
        w.name,
        w.appends,
        w.per_append,
        entries / elapsed.as_secs_f64(),
        w.appends as f64 / elapsed.as_secs_f64()
    );
}

mod redb_log {
    use std::path::Path;
    use std::sync::mpsc;

    use quorate::Entry;
    use redb::{Database, TableDefinition};
    use tokio::sync::oneshot;

    use super::{Appender, C, Done};

    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

    type Job = (Vec<Entry<C>>, oneshot::Sender<Result<(), std::io::Error>>);

    /// redb behind the same group-commit writer thread as the file log.
    pub(super) struct RedbLog(mpsc::Sender<Job>);

    impl RedbLog {
        pub(super) fn open(path: &Path) -> Self {
            let db = Database::create(path).expect("redb create");
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let txn = db.begin_write().expect("begin_write");
                    {
                        let mut table = txn.open_table(LOG).expect("open_table");
                        for (entries, _) in &batch {
                            for e in entries {
                                let bytes = postcard::to_allocvec(e).expect("encode");
                                table.insert(e.log_id.index, bytes.as_slice()).expect("insert");
                            }
                        }
                    }
                    txn.commit().expect("commit");
                    for (_, done) in batch {
                        let _ = done.send(Ok(()));
                    }
                }
            });
            Self(tx)
        }
    }

    impl Appender for RedbLog {
        async fn append(&mut self, entries: Vec<Entry<C>>) -> Done {
            let (tx, rx) = oneshot::channel();
            self.0.send((entries, tx)).expect("writer");
            rx
        }
    }
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create dir");
    dir
}

#[tokio::main]
async fn main() {
    let root =
        std::env::args().nth(1).map_or_else(|| std::env::temp_dir().join("raft-kv-storage-bench"), PathBuf::from);
    for w in &WORKLOADS {
        let mut file = FileLog(LogStore::open(&fresh_dir(&root, &format!("file-{}", w.name))).expect("open log"));
        let elapsed = run(&mut file, w).await;
        report("file", w, elapsed);

        {
            let dir = fresh_dir(&root, &format!("redb-{}", w.name));
            let mut redb = redb_log::RedbLog::open(&dir.join("log.redb"));
            let elapsed = run(&mut redb, w).await;
            report("redb", w, elapsed);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
