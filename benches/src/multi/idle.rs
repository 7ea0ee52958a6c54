//! The idle cost of a cluster whose groups have nothing to do: CPU, messages, elections.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cluster::MultiCluster;
use super::process;

/// What one idle window cost the whole process (three hosts and every group).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleWindow {
    /// Wall-clock length of the window.
    pub secs: f64,
    /// CPU time (user + system, every thread) the process used during it.
    pub cpu_secs: f64,
    /// Group RPCs sent between nodes 1 and 2, both directions.
    pub rpcs: u64,
    /// Node beats sent between nodes 1 and 2, both directions.
    pub beats: u64,
    /// Elections started by any group on any node.
    pub elections: u64,
}

impl IdleWindow {
    /// CPU used, in % of one core.
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_secs / self.secs.max(f64::EPSILON)
    }

    /// Group RPCs per second between nodes 1 and 2.
    pub fn rpcs_per_sec(&self) -> f64 {
        self.rpcs as f64 / self.secs.max(f64::EPSILON)
    }

    /// Beats per second between nodes 1 and 2.
    pub fn beats_per_sec(&self) -> f64 {
        self.beats as f64 / self.secs.max(f64::EPSILON)
    }
}

/// Let the cluster sit for `window` and measure what that cost. The caller's task only
/// sleeps meanwhile.
pub async fn measure(cluster: &MultiCluster, window: Duration) -> IdleWindow {
    let router = cluster.router();
    let pair = |r: &quorate::testing::HostRouter| (r.rpcs(1, 2) + r.rpcs(2, 1), r.beats(1, 2) + r.beats(2, 1));
    let elections0 = cluster.elections();
    let (rpcs0, beats0) = pair(router);
    let cpu0 = process::cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu = process::cpu_time() - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let (rpcs, beats) = pair(router);
    IdleWindow {
        secs,
        cpu_secs: cpu.as_secs_f64(),
        rpcs: rpcs - rpcs0,
        beats: beats - beats0,
        elections: cluster.elections() - elections0,
    }
}
