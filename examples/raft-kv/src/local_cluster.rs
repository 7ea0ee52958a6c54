//! A cluster of `raft-kv node` processes, on loopback unless given other addresses, for the
//! demo and the multi-process tests: start, kill -9, restart, and wait on conditions of the
//! nodes' metrics.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One node of a [`LocalCluster`].
pub struct LocalNode {
    /// The node's Raft id (1-based).
    pub id: u64,
    /// Its Raft RPC address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `http` or `https`.
    pub scheme: &'static str,
    child: Option<Child>,
    paused: bool,
}

impl LocalNode {
    /// The base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.http_addr)
    }

    /// The process id of its process, if it was started and not killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether its process is running and not paused (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// Extra command-line arguments of one node, by its id.
pub type NodeArgsFn = Box<dyn Fn(u64) -> Vec<String> + Send + Sync>;

/// Nodes as child processes of this one; every process still running is killed on drop.
///
/// Every node is started with `--admin-token-file <root>/admin.token`, a token made for the
/// cluster; [`admin_post`](Self::admin_post) sends it.
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    /// The nodes, node `i + 1` at index `i`.
    pub nodes: Vec<LocalNode>,
    client: reqwest::Client,
    extra_args: Vec<String>,
    per_node_args: Option<NodeArgsFn>,
    launcher: Option<NodeArgsFn>,
    admin_token: String,
}

/// A token no one guesses: 128 bits from the OS's seeded hashers (std has no RNG of its own).
fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

/// `n` pairs of loopback ports the OS says are free now, one pair per process. All are held
/// until every one is picked, so they differ: pick the ports of clusters that run side by side
/// in one call.
///
/// # Errors
/// If no free port is found.
pub fn free_port_pairs(n: usize) -> std::io::Result<Vec<[u16; 2]>> {
    let listeners = (0..2 * n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let ports = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?;
    Ok(ports.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

impl LocalCluster {
    /// A cluster of `n` nodes run from `binary`, with data directories under `root`. Starts
    /// nothing.
    ///
    /// # Errors
    /// If `root` cannot be created or no free ports are found.
    pub fn new(binary: &Path, root: &Path, n: usize) -> std::io::Result<Self> {
        Self::with_ports(binary, root, &free_port_pairs(n)?)
    }

    /// A cluster of one node per pair of `ports` (its Raft port, then its HTTP port), run from
    /// `binary`, with data directories under `root`. Starts nothing.
    ///
    /// # Errors
    /// If `root` cannot be created.
    pub fn with_ports(binary: &Path, root: &Path, ports: &[[u16; 2]]) -> std::io::Result<Self> {
        let addrs: Vec<[String; 2]> =
            ports.iter().map(|[raft, http]| [format!("127.0.0.1:{raft}"), format!("127.0.0.1:{http}")]).collect();
        Self::with_addrs(binary, root, &addrs)
    }

    /// A cluster of one node per pair of `addrs` (its Raft address, then its HTTP address,
    /// each `IP:PORT`), run from `binary`, with data directories under `root`. Starts nothing.
    /// The addresses must be reachable from this process (e.g. each in a network namespace of
    /// its own, with [`launch_through`](Self::launch_through)).
    ///
    /// # Errors
    /// If `root` cannot be created.
    pub fn with_addrs(binary: &Path, root: &Path, addrs: &[[String; 2]]) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, [raft, http])| LocalNode {
                id: i as u64 + 1,
                raft_addr: raft.clone(),
                http_addr: http.clone(),
                data_dir: root.join(format!("node{}", i + 1)),
                scheme: "http",
                child: None,
                paused: false,
            })
            .collect();
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(std::io::Error::other)?;
        let admin_token = new_token();
        fs::write(root.join("admin.token"), &admin_token)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
            nodes,
            client,
            extra_args: Vec::new(),
            per_node_args: None,
            launcher: None,
            admin_token,
        })
    }

    /// Pass `args` to every node started from now on (e.g. `--snapshot-every 500`).
    pub fn node_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Pass each node started from now on the arguments `args(id)` too (e.g. its own
    /// certificate files).
    pub fn per_node_args(&mut self, args: NodeArgsFn) {
        self.per_node_args = Some(args);
    }

    /// Run each node started from now on through the command `launcher(id)` (a program and
    /// its arguments, e.g. `ip netns exec <namespace>`), which must `exec` the binary given
    /// after them: the process started is then the node's own, which [`kill`](Self::kill) and
    /// [`set_paused`](Self::set_paused) signal.
    pub fn launch_through(&mut self, launcher: NodeArgsFn) {
        self.launcher = Some(launcher);
    }

    /// Start each node from now on with `--bootstrap` and every other node as a `--peer`, so
    /// that the nodes initialize the cluster themselves (no [`init`](Self::init)).
    pub fn bootstrap_on_start(&mut self) {
        let peers: Vec<(u64, String)> =
            self.nodes.iter().map(|n| (n.id, format!("{}={}@{}", n.id, n.raft_addr, n.http_addr))).collect();
        self.per_node_args(Box::new(move |id| {
            let mut args = vec!["--bootstrap".to_string()];
            for (_, arg) in peers.iter().filter(|(peer, _)| *peer != id) {
                args.extend(["--peer".to_string(), arg.clone()]);
            }
            args
        }));
    }

    /// Talk to the nodes over HTTPS with `client` (which trusts their CA).
    pub fn use_https(&mut self, client: reqwest::Client) {
        self.client = client;
        for node in &mut self.nodes {
            node.scheme = "https";
        }
    }

    /// The admin token the nodes are started with.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A POST of admin route `path` (e.g. `/admin/add-learner`) to node index `i`, with the
    /// admin token.
    pub fn admin_post(&self, i: usize, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.nodes[i].url())).bearer_auth(&self.admin_token)
    }

    /// The HTTP client the cluster uses; handy for tests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Start node index `i` (`raft-kv node ...`), its output appended to `<root>/node<id>.log`.
    ///
    /// # Errors
    /// If the process cannot be spawned.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let log = File::options().create(true).append(true).open(self.root.join(format!("node{}.log", i + 1)))?;
        let node = &mut self.nodes[i];
        let launcher = self.launcher.as_ref().map(|f| f(node.id)).unwrap_or_default();
        let mut command = match launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .arg("node")
            .args(["--id", &node.id.to_string()])
            .args(["--raft-addr", &node.raft_addr])
            .args(["--http-addr", &node.http_addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--admin-token-file")
            .arg(self.root.join("admin.token"))
            .args(&self.extra_args)
            .args(self.per_node_args.as_ref().map(|f| f(node.id)).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Start every node that is not running.
    ///
    /// # Errors
    /// If a process cannot be spawned.
    pub fn start_all(&mut self) -> std::io::Result<()> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_running() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Pause (`SIGSTOP`) or resume (`SIGCONT`) node index `i`: to its peers, a paused node is
    /// a node cut off from the network, with its connections open.
    ///
    /// # Errors
    /// If the node is not running or `kill` fails.
    pub fn set_paused(&mut self, i: usize, paused: bool) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        let pid = node.child.as_ref().ok_or_else(|| std::io::Error::other("the node is not running"))?.id();
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid.to_string()]).status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("kill {signal} {pid} failed")));
        }
        node.paused = paused;
        Ok(())
    }

    /// Send SIGTERM to node index `i` (a clean shutdown) and wait up to `timeout` for it to
    /// exit; returns its exit status, or `None` if it is still running (it is then killed).
    ///
    /// # Errors
    /// If the node is not running or `kill` fails.
    pub async fn terminate(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        let pid = self.nodes[i].child.as_ref().ok_or_else(|| std::io::Error::other("the node is not running"))?.id();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("kill -TERM {pid} failed")));
        }
        let exited = self.wait_exit(i, timeout).await?;
        if exited.is_none() {
            self.kill(i);
        }
        Ok(exited)
    }

    /// Wait up to `timeout` for node index `i`'s process to exit by itself; its exit status,
    /// or `None` if it is still running.
    ///
    /// # Errors
    /// If the node was not started or waiting fails.
    pub async fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> std::io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[i].child.as_mut().ok_or_else(|| std::io::Error::other("the node is not running"))?;
            if let Some(status) = child.try_wait()? {
                self.nodes[i].child = None;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What node index `i` wrote to its log file (stdout and stderr) so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.root.join(format!("node{}.log", i + 1))).unwrap_or_default()
    }

    /// `kill -9` node index `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].paused = false;
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// `POST /admin/init` on node index `i` with every node as a voter.
    ///
    /// # Errors
    /// If the request fails or is refused.
    pub async fn init(&self, i: usize) -> Result<(), String> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.init_with(i, &all).await
    }

    /// `POST /admin/init` on node index `i` with the nodes at `voters` as the voters.
    ///
    /// # Errors
    /// If the request fails or is refused.
    pub async fn init_with(&self, i: usize, voters: &[usize]) -> Result<(), String> {
        let members: serde_json::Map<String, Value> = voters
            .iter()
            .map(|v| &self.nodes[*v])
            .map(|n| (n.id.to_string(), json!({ "raft_addr": n.raft_addr, "http_addr": n.http_addr })))
            .collect();
        let resp = self.admin_post(i, "/admin/init").json(&members).send().await.map_err(|e| e.to_string())?;
        if resp.status().is_success() { Ok(()) } else { Err(resp.text().await.unwrap_or_default()) }
    }

    /// Node index `i`'s metrics, or `None` if it does not answer.
    pub async fn metrics(&self, i: usize) -> Option<Value> {
        let resp = self.client.get(format!("{}/admin/metrics", self.nodes[i].url())).send().await.ok()?;
        resp.json().await.ok()
    }

    /// Poll node index `i`'s metrics until `cond` holds, for at most `timeout`.
    ///
    /// # Errors
    /// The last metrics seen (or that there were none) when the time is up.
    pub async fn wait_metrics(
        &self,
        i: usize,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics(i).await;
            if let Some(m) = &m
                && cond(m)
            {
                return Ok(m.clone());
            }
            if Instant::now() >= deadline {
                return Err(format!("node {}: timeout waiting for {what}; last metrics: {m:?}", i + 1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until a running node is leader and every running node knows it; returns its index.
    ///
    /// # Errors
    /// When no such leader appears within `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut all_agree = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if !node.is_running() {
                    continue;
                }
                let m = self.metrics(i).await;
                let leader = m.as_ref().and_then(|m| m["current_leader"].as_u64());
                if m.as_ref().is_some_and(|m| m["state"] == "Leader") {
                    leaders.push(i);
                }
                if leaders.first().is_some_and(|l| Some(self.nodes[*l].id) != leader) || leader.is_none() {
                    all_agree = false;
                }
            }
            if let ([l], true) = (leaders.as_slice(), all_agree) {
                return Ok(*l);
            }
            if Instant::now() >= deadline {
                return Err(format!("no agreed leader within {timeout:?} (leaders seen: {leaders:?})"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On nodes of many groups (`--groups N`): wait until every group has a leader that every
    /// running node names, and that is running and says it leads; returns each group's leader
    /// id, in shard order. At most 1000 groups.
    ///
    /// # Errors
    /// When the groups do not all agree within `timeout`.
    pub async fn wait_group_leaders(&self, groups: usize, timeout: Duration) -> Result<Vec<u64>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let agreed = self.group_leaders(groups).await;
            if let Ok(leaders) = agreed {
                return Ok(leaders);
            }
            if Instant::now() >= deadline {
                return Err(format!("the groups did not all agree on a leader within {timeout:?}: {agreed:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each group's leader as every running node sees it, or what is not agreed yet.
    async fn group_leaders(&self, groups: usize) -> Result<Vec<u64>, String> {
        let mut leaders: Vec<Option<u64>> = vec![None; groups];
        let mut leads: Vec<Vec<u64>> = vec![Vec::new(); groups];
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.is_running()) {
            let page = self.group_page(i).await.ok_or(format!("node {} does not answer", node.id))?;
            let lines = page["groups"].as_array().filter(|l| l.len() == groups);
            let lines = lines.ok_or(format!("node {}: not {groups} groups: {page}", node.id))?;
            for (shard, line) in lines.iter().enumerate() {
                let leader = line["leader"].as_u64().ok_or(format!("node {}: group {shard} has no leader", node.id))?;
                if leaders[shard].is_some_and(|l| l != leader) {
                    return Err(format!("group {shard}: nodes name different leaders"));
                }
                leaders[shard] = Some(leader);
                if line["state"] == "Leader" {
                    leads[shard].push(node.id);
                }
            }
        }
        leaders
            .into_iter()
            .zip(leads)
            .enumerate()
            .map(|(shard, (leader, leads))| match (leader, leads.as_slice()) {
                (Some(l), [only]) if l == *only => Ok(l),
                _ => Err(format!("group {shard}: named {leader:?}, leading {leads:?}")),
            })
            .collect()
    }

    /// Node index `i`'s summary of its groups (`GET /admin/metrics` on a node of many groups,
    /// up to 1000 of them), or `None` if it does not answer.
    pub async fn group_page(&self, i: usize) -> Option<Value> {
        let url = format!("{}/admin/metrics?limit=1000", self.nodes[i].url());
        self.client.get(url).send().await.ok()?.json().await.ok()
    }

    /// Where the data and logs live.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
