//! The nemesis: one fault at a time, at random (seeded) intervals, against a random node or
//! the current leader: kill -9 and restart, SIGSTOP and SIGCONT, a partition that cuts a
//! minority off, each undone after a random hold; or a leadership transfer. The sleeps here are the schedule's pacing,
//! not synchronization: nothing waits for a fault to take effect.

use std::time::{Duration, Instant};

use raft_kv::local_cluster::LocalCluster;

use crate::net::Network;
use crate::rng::Rng;

/// A fault and the nodes it hits.
#[derive(Debug, Clone)]
enum Fault {
    /// `kill -9`, then start again after the hold.
    Kill(usize),
    /// `SIGSTOP`, then `SIGCONT` after the hold.
    Pause(usize),
    /// Cut these nodes off from the rest, then heal after the hold.
    Partition(Vec<usize>),
    /// Cut the first node off and kill the second: of three nodes no side has a majority
    /// until the hold ends, and then a node restarts while another rejoins.
    PartitionAndKill(usize, usize),
    /// `POST /admin/transfer-leader` to this node (through a random node; nothing to undo).
    TransferLeader { to: usize, via: usize },
}

/// Runs faults on a cluster and its network until a deadline.
pub struct Nemesis<'a> {
    pub cluster: &'a mut LocalCluster,
    pub net: &'a mut Network,
    pub rng: Rng,
    pub start: Instant,
    /// One line per fault, with its time since the start.
    pub log: Vec<String>,
}

impl Nemesis<'_> {
    /// Inject faults until `deadline`, each undone before the next; afterwards every node
    /// runs and the network is whole.
    ///
    /// # Errors
    /// If a node cannot be signalled or started, or `ip` fails.
    pub async fn run(&mut self, deadline: Instant) -> Result<(), String> {
        while Instant::now() < deadline {
            tokio::time::sleep(self.rng.millis(300, 2000)).await;
            let fault = self.pick().await;
            let hold = self.rng.millis(500, 4000);
            self.note(format!("{fault:?} for {hold:?}"));
            self.apply(&fault).await?;
            tokio::time::sleep(hold).await;
            self.undo(&fault)?;
            self.note(format!("undone {fault:?}"));
        }
        self.heal_all()
    }

    fn note(&mut self, what: String) {
        let line = format!("{:8.3}s nemesis: {what}", self.start.elapsed().as_secs_f64());
        println!("{line}");
        self.log.push(line);
    }

    /// A fault at random; half of those aimed at one node aim at the leader, if one is known.
    async fn pick(&mut self) -> Fault {
        let n = self.cluster.nodes.len();
        let leader = if self.rng.below(2) == 0 { self.leader().await } else { None };
        let target = leader.unwrap_or_else(|| self.rng.below(n as u64) as usize);
        match self.rng.below(9) / 2 {
            0 => Fault::Kill(target),
            1 => Fault::Pause(target),
            2 => {
                let minority = 1 + self.rng.below(((n - 1) / 2) as u64) as usize;
                let mut side = vec![target];
                while side.len() < minority {
                    let other = self.rng.below(n as u64) as usize;
                    if !side.contains(&other) {
                        side.push(other);
                    }
                }
                Fault::Partition(side)
            }
            3 => Fault::PartitionAndKill(target, (target + 1 + self.rng.below(n as u64 - 1) as usize) % n),
            _ => Fault::TransferLeader { to: target, via: self.rng.below(n as u64) as usize },
        }
    }

    /// The node that says it leads, asked with a short timeout (a node may be starting).
    async fn leader(&self) -> Option<usize> {
        for i in 0..self.cluster.nodes.len() {
            let m = tokio::time::timeout(Duration::from_secs(1), self.cluster.metrics(i)).await.ok().flatten();
            if m.is_some_and(|m| m["state"] == "Leader") {
                return Some(i);
            }
        }
        None
    }

    async fn apply(&mut self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Kill(i) => self.cluster.kill(*i),
            Fault::Pause(i) => self.cluster.set_paused(*i, true).map_err(|e| e.to_string())?,
            Fault::Partition(side) => self.net.partition(side)?,
            Fault::PartitionAndKill(cut, killed) => {
                self.net.partition(&[*cut])?;
                self.cluster.kill(*killed);
            }
            Fault::TransferLeader { to, via } => {
                // Any answer will do: the target may be the leader already, or the transfer
                // may not finish in time; what matters is what the clients see meanwhile.
                let body = serde_json::json!({ "to": self.cluster.nodes[*to].id });
                let sent = self.cluster.admin_post(*via, "/admin/transfer-leader").json(&body);
                let answer = tokio::time::timeout(Duration::from_secs(5), sent.send()).await;
                let status = answer.map(|r| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
                self.note(format!("transfer-leader answered {status:?}"));
            }
        }
        Ok(())
    }

    fn undo(&mut self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Kill(i) => self.cluster.start(*i).map_err(|e| e.to_string()),
            Fault::Pause(i) => self.cluster.set_paused(*i, false).map_err(|e| e.to_string()),
            Fault::Partition(_) => self.net.heal(),
            Fault::PartitionAndKill(_, killed) => {
                self.net.heal()?;
                self.cluster.start(*killed).map_err(|e| e.to_string())
            }
            Fault::TransferLeader { .. } => Ok(()),
        }
    }

    /// Heal the network, resume paused nodes and start stopped ones.
    ///
    /// # Errors
    /// If `ip` fails or a node cannot be resumed or started.
    pub fn heal_all(&mut self) -> Result<(), String> {
        self.net.heal()?;
        for i in 0..self.cluster.nodes.len() {
            if self.cluster.nodes[i].pid().is_some() && !self.cluster.nodes[i].is_running() {
                self.cluster.set_paused(i, false).map_err(|e| e.to_string())?;
            }
        }
        self.cluster.start_all().map_err(|e| e.to_string())
    }
}
