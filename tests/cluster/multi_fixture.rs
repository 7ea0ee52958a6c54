//! The fixture of the many-groups tests (`t98_multi`, `t99_multi_quiesce`): hosts on one
//! `HostRouter`, every group's storage kept to inspect and to restart from.

use std::collections::BTreeMap;
use std::sync::Arc;

use quorate::multi::{GroupHost, GroupId, HostConfig};
use quorate::testing::invariants::{NodeView, check_logs_and_state_machines};
use quorate::testing::{HostRouter, MemLogStore, MemStateMachine, Request, RouterHost, TypeConfig};
use quorate::{Config, Raft, ServerState};

use crate::fixture::{TIMEOUT, node_addr, test_config};

pub const NODES: [u64; 3] = [1, 2, 3];

/// Each node's hosts and every group's storage, to inspect and to restart from.
pub struct MultiCluster {
    pub config: Arc<Config>,
    pub router: HostRouter,
    pub hosts: BTreeMap<u64, RouterHost>,
    pub stores: BTreeMap<(u64, GroupId), (MemLogStore, MemStateMachine)>,
    pub groups: Vec<GroupId>,
}

impl MultiCluster {
    /// Nodes 1, 2, 3, each hosting `groups` groups; group `g` is initialized through node
    /// `g % 3 + 1`, so leadership is spread over the nodes.
    pub async fn start(groups: u64) -> Self {
        Self::start_through(groups, |g| g % 3 + 1).await
    }

    /// As [`start`](Self::start), with group `g` initialized through node `through(g)`.
    pub async fn start_through(groups: u64, through: fn(GroupId) -> u64) -> Self {
        Self::start_with(groups, through, test_config()).await
    }

    /// As [`start_through`](Self::start_through), every group with `config`.
    pub async fn start_with(groups: u64, through: fn(GroupId) -> u64, config: Config) -> Self {
        let mut cluster = Self {
            config: Arc::new(config),
            router: HostRouter::new(),
            hosts: BTreeMap::new(),
            stores: BTreeMap::new(),
            groups: (0..groups).collect(),
        };
        for id in NODES {
            cluster.start_host(id, |_| (MemLogStore::new(), MemStateMachine::new())).await;
        }
        let members: BTreeMap<u64, _> = NODES.iter().map(|id| (*id, node_addr(*id))).collect();
        for g in cluster.groups.clone() {
            cluster.raft(through(g), g).initialize(members.clone()).await.expect("initialize");
        }
        for g in cluster.groups.clone() {
            cluster.wait_for_leader(g, &NODES).await;
        }
        cluster
    }

    pub async fn start_host(&mut self, id: u64, stores: impl Fn(GroupId) -> (MemLogStore, MemStateMachine)) {
        let host = GroupHost::new(id, HostConfig::default(), self.router.network(id)).expect("host config");
        self.router.add_host(host.clone());
        for g in self.groups.clone() {
            let (log, sm) = stores(g);
            host.create_group(g, self.config.clone(), log.clone(), sm.clone()).await.expect("create group");
            self.stores.insert((id, g), (log, sm));
        }
        self.hosts.insert(id, host);
    }

    /// Kill node `id`: unreachable at once, its groups stopped.
    pub async fn kill(&mut self, id: u64) {
        self.router.remove_host(id);
        let host = self.hosts.remove(&id).expect("host runs");
        host.shutdown().await.expect("groups stop cleanly");
    }

    /// Start node `id` again from what its groups' storage holds.
    pub async fn restart(&mut self, id: u64) {
        let stores = self.stores.clone();
        self.start_host(id, |g| {
            let (log, sm) = &stores[&(id, g)];
            (log.reopen(), sm.reopen())
        })
        .await;
    }

    /// Start a new node `id` hosting every group with empty storage: a member to add.
    pub async fn add_host(&mut self, id: u64) {
        self.start_host(id, |_| (MemLogStore::new(), MemStateMachine::new())).await;
    }

    pub fn raft(&self, node: u64, group: GroupId) -> Raft<TypeConfig> {
        self.hosts[&node].group(group).expect("the node hosts the group")
    }

    pub fn leader_of(&self, node: u64, group: GroupId) -> Option<u64> {
        self.raft(node, group).metrics().borrow().current_leader
    }

    pub async fn wait_for_leader(&self, group: GroupId, among: &[u64]) -> u64 {
        let m = self
            .raft(among[0], group)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_leader.is_some_and(|l| among.contains(&l)), format!("group {group} has a leader"))
            .await
            .expect("a leader is elected");
        let leader = m.current_leader.expect("checked above");
        self.raft(leader, group).wait(Some(TIMEOUT)).state(ServerState::Leader, "leads").await.expect("leads");
        for id in among {
            self.raft(*id, group).wait(Some(TIMEOUT)).current_leader(leader, "all agree").await.expect("agree");
        }
        leader
    }

    pub async fn write(&self, group: GroupId, key: &str) -> u64 {
        let leader = self.wait_for_leader(group, &self.live()).await;
        let resp = self
            .raft(leader, group)
            .client_write(Request::set(key, format!("{group}")))
            .await
            .unwrap_or_else(|e| panic!("write to group {group}: {e}"));
        resp.log_id.index
    }

    pub fn live(&self) -> Vec<u64> {
        self.hosts.keys().copied().collect()
    }

    pub async fn wait_applied(&self, group: GroupId, index: u64) {
        for id in self.live() {
            self.raft(id, group)
                .wait(Some(TIMEOUT))
                .applied_index_at_least(Some(index), format!("node {id} group {group} applies {index}"))
                .await
                .expect("applied");
        }
    }

    /// Write once to every group, then wait until every group quiesces on every live node.
    pub async fn write_all_and_quiesce(&self) {
        for g in self.groups.clone() {
            self.write(g, "k").await;
        }
        self.wait_all_quiesced().await;
    }

    pub async fn wait_all_quiesced(&self) {
        for id in self.live() {
            for g in &self.groups {
                self.raft(id, *g)
                    .wait(Some(TIMEOUT))
                    .metrics(|m| m.quiesced, format!("node {id} group {g} quiesces"))
                    .await
                    .expect("quiesced");
            }
        }
    }

    /// Wait until `group` is quiesced on every node of `nodes`.
    pub async fn wait_quiesced(&self, group: GroupId, nodes: &[u64]) {
        for id in nodes {
            self.raft(*id, group)
                .wait(Some(TIMEOUT))
                .metrics(|m| m.quiesced, format!("node {id} group {group} quiesces"))
                .await
                .expect("quiesced");
        }
    }

    /// Elections `group` started on `nodes` so far (real ones: pre-vote rounds do not count).
    pub fn elections_of(&self, group: GroupId, nodes: &[u64]) -> u64 {
        nodes.iter().map(|id| self.raft(*id, group).metrics().borrow().elections_started).sum()
    }

    pub fn elections(&self) -> u64 {
        let mut n = 0;
        for id in self.live() {
            for g in &self.groups {
                n += self.raft(id, *g).metrics().borrow().elections_started;
            }
        }
        n
    }

    /// Raft's safety properties, group by group, across the live nodes' storage.
    pub fn check_safety(&self) {
        for g in &self.groups {
            let views: Vec<NodeView<'_>> = self
                .live()
                .into_iter()
                .map(|id| {
                    let (log, sm) = &self.stores[&(id, *g)];
                    NodeView { id, log, sm, metrics: self.raft(id, *g).metrics().borrow().clone() }
                })
                .collect();
            if let Err(v) = check_logs_and_state_machines(&views) {
                panic!("group {g}: safety violated: {v}");
            }
        }
    }
}
