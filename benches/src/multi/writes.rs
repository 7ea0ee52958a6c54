//! Write throughput: W writers spread over every group, or all on one group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::Raft;
use quorate::error::{ClientWriteError, RaftError};
use quorate::testing::{Request, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::Barrier;

/// Which groups the writers write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Writer `i`'s `k`-th write goes to group `(i + k * W) % N`: every group gets the same
    /// share of the writes, and at any moment the writers are on different groups.
    Spread,
    /// Every write goes to group 0.
    OneGroup,
}

/// One timed run of the writers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteRun {
    /// Writes acknowledged (committed and applied on the leader).
    pub ops: u64,
    /// From the writers' start to the last one's end.
    pub secs: f64,
    /// Writes that failed (a leader change, mostly) and were not counted.
    pub errors: u64,
    /// CPU time the whole process used meanwhile (every thread: nodes, writers, runtime).
    #[serde(default)]
    pub cpu_secs: f64,
}

impl WriteRun {
    /// Acknowledged writes per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(f64::EPSILON)
    }

    /// CPU microseconds of the whole process per acknowledged write.
    pub fn cpu_micros_per_write(&self) -> f64 {
        self.cpu_secs * 1e6 / (self.ops.max(1) as f64)
    }
}

/// Where the writers send each group's writes: the group's Raft on every node, indexed
/// `[group][node - 1]`, and the leader each group was last known to have.
pub struct Routes {
    handles: Vec<Vec<Raft<TypeConfig>>>,
    leaders: Vec<AtomicU64>,
}

impl Routes {
    /// Routes over `handles` (see [`MultiCluster::handles`](super::cluster::MultiCluster::handles))
    /// to the leaders `leaders`.
    pub fn new(handles: Vec<Vec<Raft<TypeConfig>>>, leaders: &[u64]) -> Self {
        Self { handles, leaders: leaders.iter().map(|l| AtomicU64::new(*l)).collect() }
    }

    fn groups(&self) -> u64 {
        self.handles.len() as u64
    }
}

/// Run `writers` writer tasks on `clients` for `duration`, each doing sequential
/// `client_write`s of a small `set` to its target groups' leaders.
pub async fn measure(
    clients: &Handle,
    routes: Arc<Routes>,
    writers: u64,
    duration: Duration,
    target: Target,
) -> WriteRun {
    let barrier = Arc::new(Barrier::new(writers as usize + 1));
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let routes = routes.clone();
            let barrier = barrier.clone();
            clients.spawn(async move {
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                let (mut ops, mut errors) = (0u64, 0u64);
                let mut k = 0u64;
                while Instant::now() < deadline {
                    let group = match target {
                        Target::Spread => (i + k * writers) % routes.groups(),
                        Target::OneGroup => 0,
                    };
                    k += 1;
                    if write(&routes, group).await {
                        ops += 1;
                    } else {
                        errors += 1;
                    }
                }
                (ops, errors)
            })
        })
        .collect();
    barrier.wait().await;
    let t0 = Instant::now();
    let cpu0 = super::process::cpu_time();
    let mut run = WriteRun::default();
    for task in tasks {
        if let Ok((ops, errors)) = task.await {
            run.ops += ops;
            run.errors += errors;
        }
    }
    run.secs = t0.elapsed().as_secs_f64();
    run.cpu_secs = super::process::cpu_time().saturating_sub(cpu0).as_secs_f64();
    run
}

/// One write to `group`'s known leader; on "not the leader", remember the leader it names (or
/// back off briefly while an election runs). Returns whether the write was acknowledged.
async fn write(routes: &Routes, group: u64) -> bool {
    let slot = &routes.leaders[group as usize];
    let leader = slot.load(Ordering::Relaxed);
    let raft = &routes.handles[group as usize][leader as usize - 1];
    match raft.client_write(Request::set("k", "v")).await {
        Ok(_) => true,
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            match f.leader_id {
                Some(l) if (1..=routes.handles[group as usize].len() as u64).contains(&l) => {
                    slot.store(l, Ordering::Relaxed)
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            false
        }
        Err(_) => false,
    }
}
