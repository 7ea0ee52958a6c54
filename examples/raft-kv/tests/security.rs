//! Keeping strangers out of a raft-kv cluster, as processes on loopback: mutual TLS on the Raft
//! port, HTTPS for clients, admin routes behind a token or a client certificate. A stranger
//! without a certificate, a node of another cluster, a client without the admin token, and
//! random bytes or an oversized frame on the Raft port are all refused, and the cluster keeps
//! serving with nothing lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate::tcp::wire::PREAMBLE;
use quorate::tcp::{TcpConfig, TcpNetworkFactory, node_name};
use quorate::{LeaderId, LogId, RPCOption, RaftNetwork, RaftNetworkFactory, Vote, VoteRequest};
use raft_kv::local_cluster::LocalCluster;
use raft_kv::{KvNode, TypeConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "guarded";

fn binary() -> PathBuf {
    std::env::var_os("RAFT_KV_BIN").map_or_else(|| env!("CARGO_BIN_EXE_raft-kv").into(), Into::into)
}

/// A throwaway CA that writes PEM files.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Write `<dir>/<name>.pem` (a certificate for `sans`) and `<dir>/<name>.key`.
    fn issue(&self, dir: &Path, name: &str, sans: &[String]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans.to_vec()).unwrap().signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).unwrap();
        path.to_path_buf()
    }
}

/// Certificates of a secured cluster, as files under `dir`.
struct Pki {
    dir: PathBuf,
    raft_ca: Ca,
    http_ca: Ca,
    admin_ca: Ca,
}

impl Pki {
    fn new(dir: &Path, nodes: u64, cluster: &str) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let pki =
            Self { dir, raft_ca: Ca::new("raft CA"), http_ca: Ca::new("https CA"), admin_ca: Ca::new("admin CA") };
        pki.raft_ca.write(&pki.dir.join("raft-ca.pem"));
        pki.http_ca.write(&pki.dir.join("http-ca.pem"));
        pki.admin_ca.write(&pki.dir.join("admin-ca.pem"));
        for id in 1..=nodes {
            pki.raft_ca.issue(&pki.dir, &format!("raft{id}"), &[node_name(cluster, id)]);
            pki.http_ca.issue(&pki.dir, &format!("http{id}"), &["127.0.0.1".to_string()]);
        }
        pki
    }

    /// The command-line arguments of node `id`: mutual TLS on the Raft port, HTTPS with admin
    /// client certificates.
    fn args(&self, id: u64, cluster: &str) -> Vec<String> {
        let f = |name: &str| self.dir.join(name).display().to_string();
        [
            ("--cluster-id", cluster.to_string()),
            ("--tls-ca", f("raft-ca.pem")),
            ("--tls-cert", f(&format!("raft{id}.pem"))),
            ("--tls-key", f(&format!("raft{id}.key"))),
            ("--http-tls-cert", f(&format!("http{id}.pem"))),
            ("--http-tls-key", f(&format!("http{id}.key"))),
            ("--http-tls-ca", f("http-ca.pem")),
            ("--admin-client-ca", f("admin-ca.pem")),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }

    /// An HTTPS client that trusts the nodes' HTTPS CA, with an admin certificate or not.
    fn client(&self, admin: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.dir.join("http-ca.pem")).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10));
        if admin {
            let (cert, key) = self.admin_ca.issue(&self.dir, "operator", &["operator".to_string()]);
            let mut pem = std::fs::read(cert).unwrap();
            pem.extend(std::fs::read(key).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }
}

async fn start(root: &Path, pki: &Arc<Pki>) -> Result<LocalCluster, String> {
    let mut cluster = LocalCluster::new(&binary(), root, 3).map_err(|e| e.to_string())?;
    let args = pki.clone();
    cluster.per_node_args(Box::new(move |id| args.args(id, CLUSTER)));
    cluster.use_https(pki.client(false));
    cluster.start_all().map_err(|e| e.to_string())?;
    for i in 0..3 {
        cluster.wait_metrics(i, WAIT, "the HTTPS API", |_| true).await?;
    }
    cluster.init(0).await?;
    cluster.wait_leader(WAIT).await?;
    Ok(cluster)
}

async fn put(cluster: &LocalCluster, key: &str, value: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    loop {
        let url = cluster.nodes[i % 3].url();
        i += 1;
        match cluster.client().put(format!("{url}/kv/{key}")).body(value.to_string()).send().await {
            Ok(r) if r.status() == 200 => return Ok(()),
            _ if Instant::now() >= deadline => return Err(format!("the write of {key} was never acknowledged")),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every acknowledged pair is on every node, and a new write goes through.
async fn still_serving(cluster: &LocalCluster, acked: &mut BTreeMap<String, String>, tag: &str) -> Result<(), String> {
    for k in 0..20 {
        let (key, value) = (format!("{tag}-{k}"), format!("v{k}"));
        put(cluster, &key, &value).await?;
        acked.insert(key, value);
    }
    let leader = cluster.wait_leader(WAIT).await?;
    let target =
        cluster.metrics(leader).await.and_then(|m| m["committed"]["index"].as_u64()).ok_or("no commit index")?;
    for i in 0..3 {
        cluster.wait_metrics(i, WAIT, "catch-up", |m| m["last_applied"]["index"].as_u64() >= Some(target)).await?;
        let dump: Value = cluster
            .client()
            .get(format!("{}/admin/dump", cluster.nodes[i].url()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        for (k, v) in acked.iter() {
            if dump["data"][k] != json!(v) {
                return Err(format!("node {}: acknowledged {k}={v} is missing ({})", i + 1, dump["data"][k]));
            }
        }
    }
    Ok(())
}

/// Read until the peer closes the connection (it must, within WAIT).
async fn closed_by_peer<S: AsyncReadExt + Unpin>(conn: &mut S) -> Result<(), String> {
    let mut sink = Vec::new();
    match tokio::time::timeout(WAIT, conn.read_to_end(&mut sink)).await {
        Ok(_) => Ok(()),
        Err(_) => Err("the node kept a stranger's connection open".into()),
    }
}

/// A vote request sent to node 1 by a client of quorate's transport configured with `tcp`;
/// the error it must get.
async fn vote_as(from: u64, tcp: TcpConfig, node: &KvNode) -> String {
    let mut factory = TcpNetworkFactory::<TypeConfig>::new(from, tcp);
    let mut client = factory.new_client(1, node).await;
    let req = VoteRequest::new(Vote::new(100, from), Some(LogId::new(LeaderId::new(99, from), 1 << 40)));
    match client.vote(req, RPCOption::new(Duration::from_secs(5))).await {
        Ok(resp) => panic!("a stranger got an answer: {resp:?}"),
        Err(e) => e.to_string(),
    }
}

async fn attacks(root: &Path, cluster: &LocalCluster, pki: &Pki) -> Result<(), String> {
    let node1 = KvNode { raft_addr: cluster.nodes[0].raft_addr.clone(), http_addr: cluster.nodes[0].http_addr.clone() };

    // A stranger without a certificate: plain TCP on a TLS port.
    let e = vote_as(7, TcpConfig::new(CLUSTER), &node1).await;
    if e.contains("timeout") {
        return Err(format!("a plain client was not refused at once: {e}"));
    }
    // A node with a certificate of another CA.
    let other = Ca::new("other CA");
    let (cert, key) = other.issue(&pki.dir, "other7", &[node_name(CLUSTER, 7)]);
    let ca = other.write(&pki.dir.join("other-ca.pem"));
    let tls = quorate::tcp::TlsConfig::from_pem_files(&ca, &cert, &key).map_err(|e| e.to_string())?;
    let e = vote_as(7, TcpConfig::new(CLUSTER).with_tls(tls), &node1).await;
    if !e.contains("TLS handshake failed") {
        return Err(format!("another CA's node: {e}"));
    }

    // Random bytes, then (over a valid TLS connection of a member) a frame over the bound.
    let mut conn = TcpStream::connect(&node1.raft_addr).await.map_err(|e| e.to_string())?;
    conn.write_all(b"\x16\x03\x01\x02\x00garbage that is not TLS\r\n\r\n").await.map_err(|e| e.to_string())?;
    closed_by_peer(&mut conn).await?;
    let member = rustls_client(pki)?;
    let tcp = TcpStream::connect(&node1.raft_addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(node_name(CLUSTER, 1)).map_err(|e| e.to_string())?;
    let mut tls = member.connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(&PREAMBLE).await.map_err(|e| e.to_string())?;
    tls.write_all(&u32::MAX.to_le_bytes()).await.map_err(|e| e.to_string())?;
    tls.flush().await.map_err(|e| e.to_string())?;
    closed_by_peer(&mut tls).await?;

    // A client without the admin token; with a wrong one; with an admin certificate.
    let plain = pki.client(false);
    let url = cluster.nodes[1].url();
    let change = json!({ "voters": [1, 2] });
    for (what, req) in [
        ("no token", plain.post(format!("{url}/admin/change-membership")).json(&change)),
        ("wrong token", plain.post(format!("{url}/admin/change-membership")).bearer_auth("x".repeat(32)).json(&change)),
        (
            "no token, init",
            plain
                .post(format!("{url}/admin/init"))
                .json(&json!({"9": {"raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}})),
        ),
    ] {
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status != 401 || body["error"] != "unauthorized" {
            return Err(format!("{what}: {status} {body}"));
        }
    }
    // With an admin certificate the route is reached (and refuses a second init: 400, not 401).
    let admin = pki.client(true);
    let resp = admin.post(format!("{url}/admin/init")).json(&json!({})).send().await.map_err(|e| e.to_string())?;
    if resp.status() != 400 {
        return Err(format!("an admin certificate did not pass: {}", resp.status()));
    }

    // An upload over the limit, over HTTPS: answered 413 on its head while the client still
    // sends, and the client reads that answer. (The lingering close drains the TLS records
    // that follow. Unlike the cluster test's plain HTTP, this passed 3 of 3 runs with the
    // lingering close planted out too: it checks the answer over HTTPS, not the drain.) A
    // client of its own each time, so that no pooled connection is the one closed.
    for _ in 0..5 {
        let once = pki.client(false);
        let resp = once.put(format!("{url}/kv/big")).body(vec![b'x'; 2 << 20]).send().await;
        let resp = resp.map_err(|e| format!("an oversized upload over HTTPS: {e:?}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        if status != 413 || body["error"] != "body_too_large" {
            return Err(format!("an oversized upload over HTTPS: {status} {body}"));
        }
    }

    // A node of another cluster (its own CA and cluster id) given this cluster's nodes as peers.
    let mut intruder = LocalCluster::new(&binary(), &root.join("intruder"), 1).map_err(|e| e.to_string())?;
    let ipki = Arc::new(Pki::new(&root.join("intruder"), 1, "intruders"));
    let peers: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|n| ["--peer".to_string(), format!("{}={}@{}", n.id + 10, n.raft_addr, n.http_addr)])
        .collect();
    let args = ipki.clone();
    intruder.per_node_args(Box::new(move |id| {
        let mut a = args.args(id, "intruders");
        a.extend(peers.clone());
        a.push("--bootstrap".into());
        a
    }));
    intruder.use_https(ipki.client(false));
    intruder.start(0).map_err(|e| e.to_string())?;
    intruder.wait_metrics(0, WAIT, "campaigning", |m| m["state"] == "Candidate").await?;
    intruder.kill_all();
    Ok(())
}

fn rustls_client(pki: &Pki) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    let (cert, key) = pki.raft_ca.issue(&pki.dir, "raft2-copy", &[node_name(CLUSTER, 2)]);
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&key).map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.raft_ca.issuer.der().clone()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_cluster_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let pki = Arc::new(Pki::new(&root, 3, CLUSTER));
    let result = async {
        let cluster = start(&root, &pki).await?;
        let mut acked = BTreeMap::new();
        still_serving(&cluster, &mut acked, "before").await?;
        let terms: Vec<u64> = {
            let mut t = Vec::new();
            for i in 0..3 {
                t.push(cluster.metrics(i).await.and_then(|m| m["current_term"].as_u64()).unwrap_or(0));
            }
            t
        };
        attacks(&root, &cluster, &pki).await?;
        still_serving(&cluster, &mut acked, "after").await?;
        for (i, before) in terms.iter().enumerate() {
            let term = cluster.metrics(i).await.and_then(|m| m["current_term"].as_u64()).unwrap_or(0);
            if term >= 100 {
                return Err(format!("a stranger's vote moved node {}'s term from {before} to {term}", i + 1));
            }
        }
        let log = cluster.log(0);
        if !log.contains("refused a connection") {
            return Err("node 1 logged no refusal".to_string());
        }
        Ok::<_, String>(())
    }
    .await;
    if let Err(e) = result {
        for i in 1..=3 {
            let log = std::fs::read_to_string(root.join(format!("node{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- node{i}.log ----\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        panic!("{e}");
    }
}
