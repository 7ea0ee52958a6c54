//! The nemesis: one fault at a time, at random (seeded) intervals, against a random node or
//! the current leader: kill -9 and restart, SIGSTOP and SIGCONT, a partition that cuts a
//! minority off, a node demoted to learner or removed from the cluster, each undone after a
//! random hold; or a leadership transfer. The sleeps here are the schedule's pacing, not
//! synchronization: nothing waits for a fault to take effect (undoing a membership change
//! waits for the change itself, retried until it is made).

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
    /// Make every node but this one a voter, keeping it as a learner (through a random node);
    /// undone by making every node a voter again.
    Demote { node: usize, via: usize },
    /// Remove this node from the cluster (through a random node): it keeps running, answers
    /// 410, and is refused as a candidate; undone by adding it back as a learner that has
    /// caught up, then as a voter.
    Remove { node: usize, via: usize },
}

/// Runs faults on a cluster and its network until a deadline.
pub struct Nemesis<'a> {
    pub cluster: &'a mut LocalCluster,
    pub net: &'a mut Network,
    pub rng: Rng,
    /// Draws the membership faults: an RNG of their own, so that the other faults of a seed
    /// are the ones it drew before membership faults existed.
    pub membership_rng: Rng,
    /// A membership fault not yet undone: set when one is applied, cleared once every node is
    /// a voter again.
    pub membership_broken: bool,
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
            self.undo(&fault).await?;
            self.note(format!("undone {fault:?}"));
        }
        self.heal_all().await
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
        let via = self.membership_rng.below(n as u64) as usize;
        match self.membership_rng.below(8) {
            0 => return Fault::Demote { node: target, via },
            1 => return Fault::Remove { node: target, via },
            _ => {}
        }
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
            Fault::Demote { node, via } | Fault::Remove { node, via } => {
                let retain = matches!(fault, Fault::Demote { .. });
                let voters: Vec<u64> =
                    self.cluster.nodes.iter().enumerate().filter(|(i, _)| i != node).map(|(_, n)| n.id).collect();
                // Whatever the answer, the undo makes every node a voter again.
                self.membership_broken = true;
                let body = serde_json::json!({ "voters": voters, "retain": retain });
                let status = self.admin(*via, "/admin/change-membership", &body).await;
                self.note(format!("change-membership to {voters:?} (retain {retain}) answered {status:?}"));
            }
        }
        Ok(())
    }

    /// POST an admin request through node `via`, waiting at most 35 s (membership changes
    /// wait for their commit, up to the node's 30 s): the status, or why there was none.
    async fn admin(&self, via: usize, path: &str, body: &serde_json::Value) -> Result<u16, String> {
        let sent = self.cluster.admin_post(via, path).json(body);
        match tokio::time::timeout(Duration::from_secs(35), sent.send()).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in 35 s".into()),
        }
    }

    /// Make every node a voter again, through each node in turn until one answers 200: a
    /// removed node is first added back as a learner (blocking until it caught up). Gives up
    /// after a minute, leaving `membership_broken` set for the next try.
    async fn restore_membership(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ids: Vec<u64> = self.cluster.nodes.iter().map(|n| n.id).collect();
        let mut attempt = 0;
        while self.membership_broken && Instant::now() < deadline {
            let via = attempt % self.cluster.nodes.len();
            attempt += 1;
            // Add back every node the latest membership does not name (as the node `via`
            // knows it); a node still named is left alone.
            let known = tokio::time::timeout(Duration::from_secs(1), self.cluster.metrics(via)).await.ok().flatten();
            let Some(m) = known else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let named = |id: u64| m["membership_config"]["membership"]["nodes"].get(id.to_string()).is_some();
            let mut added = true;
            for i in 0..self.cluster.nodes.len() {
                let node = &self.cluster.nodes[i];
                if named(node.id) {
                    continue;
                }
                let body = serde_json::json!({
                    "id": node.id, "raft_addr": node.raft_addr, "http_addr": node.http_addr, "blocking": true,
                });
                let status = self.admin(via, "/admin/add-learner", &body).await;
                self.note(format!("add-learner {} answered {status:?}", node.id));
                added &= status == Ok(200);
            }
            if added {
                let body = serde_json::json!({ "voters": ids, "retain": true });
                let status = self.admin(via, "/admin/change-membership", &body).await;
                self.note(format!("change-membership to {ids:?} answered {status:?}"));
                self.membership_broken = status != Ok(200);
            }
            if self.membership_broken {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if self.membership_broken {
            return Err("the membership could not be restored in 60 s".into());
        }
        Ok(())
    }

    async fn undo(&mut self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Demote { .. } | Fault::Remove { .. } => self.restore_membership().await,
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

    /// Heal the network, resume paused nodes, start stopped ones and make every node a voter.
    ///
    /// # Errors
    /// If `ip` fails, a node cannot be resumed or started, or the membership cannot be
    /// restored.
    pub async fn heal_all(&mut self) -> Result<(), String> {
        self.net.heal()?;
        for i in 0..self.cluster.nodes.len() {
            if self.cluster.nodes[i].pid().is_some() && !self.cluster.nodes[i].is_running() {
                self.cluster.set_paused(i, false).map_err(|e| e.to_string())?;
            }
        }
        self.cluster.start_all().map_err(|e| e.to_string())?;
        // A change answered late (or not at all) may commit after the undo: make sure the
        // leader's committed membership has every node as a voter, with no change pending.
        let ids: std::collections::BTreeSet<u64> = self.cluster.nodes.iter().map(|n| n.id).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.restore_membership().await?;
            if self.all_voters_committed(&ids).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("the membership did not settle with every node a voter in 60 s".into());
            }
            self.membership_broken = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the leader's committed membership makes exactly `ids` the voters, with no
    /// later change appended.
    async fn all_voters_committed(&self, ids: &std::collections::BTreeSet<u64>) -> bool {
        let Some(leader) = self.leader().await else { return false };
        let Some(m) = self.cluster.metrics(leader).await else { return false };
        let voters = |c: &serde_json::Value| -> std::collections::BTreeSet<u64> {
            c["membership"]["configs"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|cfg| cfg.as_array().into_iter().flatten())
                .filter_map(serde_json::Value::as_u64)
                .collect()
        };
        let (latest, committed) = (&m["membership_config"], &m["committed_membership"]);
        latest["log_id"] == committed["log_id"]
            && committed["membership"]["configs"].as_array().is_some_and(|c| c.len() == 1)
            && voters(committed) == *ids
    }
}
