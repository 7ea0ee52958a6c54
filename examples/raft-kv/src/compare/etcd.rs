//! A 3-member etcd cluster on loopback, as child processes: [`EtcdCluster`].
//!
//! Each member is started with nothing but what a cluster needs (name, data directory,
//! loopback client and peer URLs, the initial cluster): every tunable (snapshot count,
//! heartbeat, election timeout, fsync of the WAL, logging) is etcd's default, and no `ETCD_*`
//! variable of the environment overrides one.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One member of an [`EtcdCluster`].
pub struct EtcdMember {
    /// `e1`, `e2`, ...
    pub name: String,
    /// `http://127.0.0.1:<port>`: the v3 API, its JSON gateway and `/metrics`.
    pub client_url: String,
    /// `http://127.0.0.1:<port>`: Raft between members.
    pub peer_url: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl EtcdMember {
    /// The process id, if the member is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// etcd members as child processes; every one still running is killed (`SIGKILL`) on drop.
pub struct EtcdCluster {
    binary: PathBuf,
    root: PathBuf,
    /// The members, `e1` at index 0.
    pub members: Vec<EtcdMember>,
    client: reqwest::Client,
}

/// The names among `names` of the environment variables etcd would take as flags (`ETCD_*`,
/// e.g. `ETCD_SNAPSHOT_COUNT`), to be removed from its environment so that it runs with its
/// defaults. `ETCD_UNSUPPORTED_ARCH` stays: it sets no flag, and etcd 3.4 needs it to run
/// at all on arm64.
fn etcd_flag_variables(names: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    names
        .into_iter()
        .filter(|name| name.as_encoded_bytes().starts_with(b"ETCD_") && name != "ETCD_UNSUPPORTED_ARCH")
        .collect()
}

impl EtcdCluster {
    /// A cluster of one member per pair of `ports` (its client port, then its peer port), run
    /// from `binary`, data directories under `root`. Starts nothing.
    ///
    /// # Errors
    /// If `root` cannot be created.
    pub fn new(binary: &Path, root: &Path, ports: &[[u16; 2]]) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, [client, peer])| EtcdMember {
                name: format!("e{}", i + 1),
                client_url: format!("http://127.0.0.1:{client}"),
                peer_url: format!("http://127.0.0.1:{peer}"),
                data_dir: root.join(format!("e{}", i + 1)),
                child: None,
            })
            .collect();
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(std::io::Error::other)?;
        Ok(Self { binary: binary.to_path_buf(), root: root.to_path_buf(), members, client })
    }

    /// The command line of member index `i`, program first.
    pub fn command_line(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let initial_cluster =
            self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        [
            self.binary.display().to_string(),
            "--name".into(),
            m.name.clone(),
            "--data-dir".into(),
            m.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            m.client_url.clone(),
            "--advertise-client-urls".into(),
            m.client_url.clone(),
            "--listen-peer-urls".into(),
            m.peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            m.peer_url.clone(),
            "--initial-cluster".into(),
            initial_cluster,
            "--initial-cluster-token".into(),
            "raft-kv-compare".into(),
            "--initial-cluster-state".into(),
            "new".into(),
        ]
        .into()
    }

    /// Start every member, its output in `<root>/<name>.log`, without the `ETCD_*` variables
    /// of this process's environment (etcd would take them as flags).
    ///
    /// # Errors
    /// If a process cannot be spawned.
    pub fn start_all(&mut self) -> std::io::Result<()> {
        let flag_variables = etcd_flag_variables(std::env::vars_os().map(|(name, _)| name));
        for i in 0..self.members.len() {
            let line = self.command_line(i);
            let log = File::create(self.log_path(i))?;
            let mut command = Command::new(&line[0]);
            for name in &flag_variables {
                command.env_remove(name);
            }
            let child = command
                .args(&line[1..])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot start {}: {e}", line[0])))?;
            self.members[i].child = Some(child);
        }
        Ok(())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.root.join(format!("{}.log", self.members[i].name))
    }

    /// What member index `i` logged so far.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// A POST of the JSON gateway's `path` (e.g. `/v3/maintenance/status`) with body `{}` to
    /// member index `i`.
    async fn post(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.members[i].client_url);
        let resp = self.client.post(url).body("{}").send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Wait until every member answers and all name the same leader; the leader's index.
    ///
    /// # Errors
    /// When that does not happen within `timeout`, with the end of each member's log.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..self.members.len())
                    .map(|i| {
                        let log = self.log(i);
                        let tail: Vec<&str> = log.lines().rev().take(5).collect();
                        format!("{}: {}", self.members[i].name, tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
                    })
                    .collect();
                return Err(format!("etcd: no agreed leader within {timeout:?}; logs: {}", logs.join("; ")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member every member names as leader, if they all answer and agree.
    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader_id = None;
        for i in 0..self.members.len() {
            let status = self.post(i, "/v3/maintenance/status").await?;
            let leader = status["leader"].as_str()?.to_string();
            if leader == "0" || leader_id.get_or_insert_with(|| leader.clone()) != &leader {
                return None;
            }
        }
        let leader_id = leader_id?;
        let list = self.post(0, "/v3/cluster/member/list").await?;
        let url =
            list["members"].as_array()?.iter().find(|m| m["ID"].as_str() == Some(leader_id.as_str()))?["clientURLs"][0]
                .as_str()?
                .to_string();
        self.members.iter().position(|m| m.client_url == url)
    }

    /// The settings member `i` reports having started with (heartbeat, election timeout,
    /// snapshot count): the lines of its log that name them.
    pub fn reported_settings(&self, i: usize) -> Vec<String> {
        const KEYS: [&str; 4] = ["heartbeat = ", "election = ", "snapshot count = ", "etcd Version: "];
        self.log(i)
            .lines()
            .filter_map(|l| {
                let (_, said) = l.split_once(" | ")?;
                KEYS.iter().any(|k| said.contains(k)).then(|| said.trim().to_string())
            })
            .collect()
    }

    /// `SIGKILL` every member and reap it.
    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::etcd_flag_variables;

    #[test]
    fn etcd_flag_variables_are_removed_but_not_the_arch_override() {
        let names =
            ["ETCD_SNAPSHOT_COUNT", "PATH", "ETCD_UNSUPPORTED_ARCH", "ETCDCTL_API", "ETCD_DATA_DIR", "MY_ETCD_X"];
        let removed = etcd_flag_variables(names.map(OsString::from));
        assert_eq!(removed, ["ETCD_SNAPSHOT_COUNT", "ETCD_DATA_DIR"].map(OsString::from));
    }
}
