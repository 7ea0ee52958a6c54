//! A network of one host per node: each node in a network namespace of its own, with its own
//! IP address, all on one bridge, and this process on that bridge too (as the clients' host).
//! Partitions are blackhole routes inside the namespaces, so they cut the nodes' Raft traffic
//! and their relays to each other while the clients still reach every node (as in Jepsen).
//!
//! ```text
//!   this process (root namespace)          <prefix>-hub                  <prefix>-n<i>
//!   <prefix-veth> 10.A.B.1/24  ---veth---  host ─┐
//!                                               br0 ─ n<i> ---veth---  eth0 10.A.B.(10+i)/24
//! ```
//!
//! Everything is made with `ip` (iproute2) and removed on drop: deleting the namespaces takes
//! their interfaces with them, the veth end in the root namespace included. Names carry this
//! process's id, so that namespaces left by a run that was killed are found and removed.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// What every name of this module starts with.
const PREFIX: &str = "qjep";

/// How many networks this process made: the tests of one process each have their own.
static MADE: AtomicU32 = AtomicU32::new(0);

/// The namespaces, the bridge and the addresses of one test's nodes.
pub struct Network {
    /// `qjep-<pid>-<k>` (this process's `k`th network): the namespaces are `<name>-hub` and
    /// `<name>-n<i>`.
    name: String,
    /// The veth end in the root namespace, `qjep<pid>x<k>`: interface names have at most 15
    /// bytes.
    host_veth: String,
    /// The first three octets of the subnet, e.g. `10.123.45`.
    subnet: String,
    nodes: usize,
    /// The node pairs (by index, smaller first) cut from each other now.
    cut: BTreeSet<(usize, usize)>,
}

/// Why a [`Network`] was not made.
#[derive(Debug)]
pub enum SetupError {
    /// This machine cannot make one (no `ip`, not root, no namespaces): skip the test.
    Unsupported(String),
    /// A namespace was made but the rest failed: a real failure.
    Failed(String),
}

/// Run `ip args`; its stderr as the error if it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Network {
    /// Make `nodes` namespaces on a bridge, reachable from this process.
    ///
    /// # Errors
    /// [`SetupError::Unsupported`] if the first namespace cannot be made,
    /// [`SetupError::Failed`] if anything after it fails.
    pub fn create(nodes: usize) -> Result<Self, SetupError> {
        remove_orphans();
        let (pid, k) = (std::process::id(), MADE.fetch_add(1, Ordering::Relaxed));
        let net = Self {
            name: format!("{PREFIX}-{pid}-{k}"),
            host_veth: format!("{PREFIX}{pid}x{k}"),
            subnet: free_subnet(pid.wrapping_add(k)).map_err(SetupError::Unsupported)?,
            nodes,
            cut: BTreeSet::new(),
        };
        ip(&["netns", "add", &net.hub()]).map_err(SetupError::Unsupported)?;
        net.build().map_err(|e| {
            net.remove();
            SetupError::Failed(e)
        })?;
        Ok(net)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.namespace(i);
            let port = format!("n{i}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let host = &self.host_veth;
        ip(&["link", "add", host, "type", "veth", "peer", "name", "host", "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", "host", "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", "host", "up"])?;
        ip(&["addr", "add", &format!("{}.1/24", self.subnet), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        Ok(())
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// The network namespace of node index `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-n{i}", self.name)
    }

    /// The IP address of node index `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// Cut nodes `a` and `b` from each other, both ways (no-op if cut already).
    ///
    /// # Errors
    /// If `ip route` fails.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), String> {
        let pair = (a.min(b), a.max(b));
        if a == b || self.cut.contains(&pair) {
            return Ok(());
        }
        ip(&["-n", &self.namespace(a), "route", "add", "blackhole", &format!("{}/32", self.ip(b))])?;
        ip(&["-n", &self.namespace(b), "route", "add", "blackhole", &format!("{}/32", self.ip(a))])?;
        self.cut.insert(pair);
        Ok(())
    }

    /// Cut every node of `side` from every node not in it.
    ///
    /// # Errors
    /// If `ip route` fails.
    pub fn partition(&mut self, side: &[usize]) -> Result<(), String> {
        for &a in side {
            for b in (0..self.nodes).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Remove every cut.
    ///
    /// # Errors
    /// If `ip route` fails.
    pub fn heal(&mut self) -> Result<(), String> {
        while let Some((a, b)) = self.cut.pop_first() {
            ip(&["-n", &self.namespace(a), "route", "del", "blackhole", &format!("{}/32", self.ip(b))])?;
            ip(&["-n", &self.namespace(b), "route", "del", "blackhole", &format!("{}/32", self.ip(a))])?;
        }
        Ok(())
    }

    /// Delete the namespaces (and with them every interface made), ignoring failures.
    fn remove(&self) {
        for i in 0..self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        let _ = ip(&["link", "del", &self.host_veth]);
    }
}

impl Drop for Network {
    /// The nodes must be stopped first: a namespace outlives its name while a process is in it.
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `/24` in `10.0.0.0/8` that no interface of the root namespace is on, picked from `pid`
/// so that runs side by side take different ones.
fn free_subnet(pid: u32) -> Result<String, String> {
    let taken = ip(&["-4", "-o", "addr"])? + &ip(&["-4", "route"])?;
    (0..1000u32)
        .map(|k| {
            let n = pid.wrapping_add(k * 7919) % (100 * 256);
            format!("10.{}.{}", 100 + n / 256, n % 256)
        })
        .find(|s| !taken.contains(&format!("{s}.")))
        .ok_or_else(|| "no free 10.x.y.0/24 subnet".to_string())
}

/// Delete the namespaces of earlier runs whose process is gone (killed before its drop ran).
fn remove_orphans() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name.strip_prefix(&format!("{PREFIX}-")).and_then(|rest| rest.split('-').next());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            // Deleting the hub namespace deletes the root namespace's veth end with it.
            let _ = ip(&["netns", "del", name]);
        }
    }
}
