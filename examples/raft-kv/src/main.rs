//! The `raft-kv` binary: run a node, a local demo cluster, or a load generator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use quorate::SnapshotPolicy;
use raft_kv::KvNode;
use raft_kv::bench::{self, Api, BenchOptions, Load};
use raft_kv::compare::{self, CompareOptions};
use raft_kv::http::{AdminAuth, HttpLimits, HttpTls};
use raft_kv::node::{self, BoxError, NodeOptions, TlsFiles};
use tracing_subscriber::EnvFilter;

/// See Cargo.toml: malloc and free were a tenth of a loaded leader's CPU with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "raft-kv", version, about = "A replicated key-value store on quorate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Node(Box<NodeArgs>),
    /// Start a 3-node cluster on loopback as child processes, use it, and stop it.
    Demo,
    /// Generate write load against a cluster and report writes/s and latency.
    Bench(BenchArgs),
    /// Start a 3-node raft-kv and a 3-member etcd on loopback, measure both with the same
    /// HTTP/JSON put load, alternated, and write a report (tables, samples, SVG chart).
    CompareEtcd(CompareArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// This node's id (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Address (host:port) to listen on for Raft RPCs, and to advertise to the other nodes.
    #[arg(long, value_parser = parse_advertised)]
    raft_addr: String,
    /// Address (host:port) to serve the HTTP API on, and to advertise for forwarding.
    #[arg(long, value_parser = parse_advertised)]
    http_addr: String,
    /// IP:PORT to bind the Raft listener to, if not --raft-addr (e.g. 0.0.0.0:7001).
    #[arg(long, value_parser = parse_addr)]
    raft_listen: Option<String>,
    /// IP:PORT to bind the HTTP listener to, if not --http-addr.
    #[arg(long, value_parser = parse_addr)]
    http_listen: Option<String>,
    /// Directory of the node's log and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// Another member of the initial cluster, as `id=raft_addr@http_addr`; repeatable.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(u64, KvNode)>,
    /// Initialize a cluster of this node and the `--peer`s, unless this node has state.
    #[arg(long)]
    bootstrap: bool,
    /// Partition the keys over this many Raft groups (by a hash of the key), run by one group
    /// host over one shared log. Every node of a cluster must be given the same number, and a
    /// data directory keeps the one it was created with.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(raft_kv::groups::MAX_GROUPS)))]
    groups: u32,
    /// With --groups N > 1: also publish quorate's metrics (`quorate_*`) of every group on
    /// GET /metrics, labelled by `group`: about 26 series per group, so meant for up to a few
    /// hundred groups. Without it such a node publishes counts over its groups only.
    #[arg(long)]
    metrics_per_group: bool,
    /// Threads of the node's async runtime, which runs its HTTP API, its Raft and its
    /// replication: 0 for one per core (tokio's default); 1 for one thread that runs them all
    /// (tasks then hand work to each other without waking another thread). The log's writer
    /// has a thread of its own either way, and encoding or decoding a snapshot or a dump of the
    /// map runs on blocking threads. On a machine shared with other nodes or with the load
    /// generator, 1 spends less CPU per request (about a fifth less at 64 connections, 3 nodes
    /// and wrk on 2 cores: examples/raft-kv/README.md).
    #[arg(long, default_value_t = 0)]
    runtime_threads: usize,
    /// Leader heartbeat interval.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Election timeout lower bound (the upper bound is twice it). A node whose log store
    /// stalls for longer than 2 s, or twice the upper bound if that is longer, stops leading
    /// and campaigning until it recovers.
    #[arg(long, default_value_t = 500)]
    election_timeout_ms: u64,
    /// Build a snapshot after this many applied entries. Each snapshot copies and writes the
    /// whole map, so its cost grows with the data: the default is etcd's (`--snapshot-count`,
    /// 100,000 since etcd 3.2).
    #[arg(long, default_value_t = 100_000)]
    snapshot_every: u64,
    /// Entries to keep in the log behind a snapshot, for followers slightly behind.
    #[arg(long, default_value_t = 1000)]
    keep_logs: u64,
    /// How long an HTTP request waits for Raft before answering 504.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// How long an HTTP connection may take to send a request head (after it opens, or after
    /// its last answer: also the idle keep-alive timeout).
    #[arg(long, default_value_t = 10_000)]
    http_header_timeout_ms: u64,
    /// How long an HTTP request body may take to arrive whole, counted from the request's
    /// head, before a 408 (a body trickled in byte by byte gets no longer).
    #[arg(long, default_value_t = 10_000)]
    http_body_timeout_ms: u64,
    /// How long an HTTP connection may take none of an answer's bytes (its client reads
    /// nothing, or far too slowly for the socket to take more) before it is closed.
    #[arg(long, default_value_t = 30_000)]
    http_write_timeout_ms: u64,
    /// The most HTTP connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 1024)]
    http_max_connections: usize,
    /// The most HTTP connections served at once for one client IP address: a connection past
    /// it is answered 503 and closed. Clients behind one NAT or proxy share an address, and so
    /// do a follower's relays to the leader (and, on loopback, everything).
    #[arg(long, default_value_t = 512)]
    http_max_connections_per_ip: usize,
    /// The most requests a node relays to the leader at once; more are answered 503
    /// `relay_busy` (not relayed). Keep it, times the nodes that share an address, below the
    /// leaders' --http-max-connections-per-ip, so that relays (one connection each, from the
    /// relaying node's address) are never refused by that cap.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    http_max_relays: u32,
    /// On SIGTERM, how long HTTP requests in progress may take before they are dropped.
    #[arg(long, default_value_t = 5000)]
    shutdown_timeout_ms: u64,
    /// The cluster's id: nodes refuse peers that give another one (and, with TLS, it is part
    /// of every node certificate's name, node-<id>.<cluster-id>).
    #[arg(long, default_value = "raft-kv", value_parser = parse_cluster_id)]
    cluster_id: String,
    /// The cluster's CA certificate (PEM): with --tls-cert and --tls-key, the Raft port speaks
    /// mutual TLS and accepts only nodes with a certificate of this CA.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming node-<id>.<cluster-id>.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// Serve the HTTP API over HTTPS with this certificate (PEM); needs --http-tls-key and
    /// --http-tls-ca.
    #[arg(long, requires_all = ["http_tls_key", "http_tls_ca"])]
    http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, requires = "http_tls_cert")]
    http_tls_key: Option<PathBuf>,
    /// The CA (PEM) of the nodes' HTTPS certificates, trusted when a follower relays a request
    /// to the leader.
    #[arg(long, requires = "http_tls_cert")]
    http_tls_ca: Option<PathBuf>,
    /// Over HTTPS, a client certificate of this CA (PEM) may call the admin routes.
    #[arg(long, requires = "http_tls_cert")]
    admin_client_ca: Option<PathBuf>,
    /// A file holding the bearer token (16 characters or more) that the admin routes require.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Open the admin routes to anyone who can reach the HTTP port: trusted networks only.
    #[arg(long, conflicts_with_all = ["admin_token_file", "admin_client_ca"])]
    insecure_open_admin: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Base URL of a node; repeatable (clients are spread over the targets).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Total writes.
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
    /// Instead of --ops: send writes for this many seconds (after --warmup-secs) and count
    /// those that complete in that window.
    #[arg(long, conflicts_with = "ops")]
    secs: Option<f64>,
    /// With --secs: send writes for this long first, unmeasured.
    #[arg(long, default_value_t = 1.0, requires = "secs")]
    warmup_secs: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Send etcd v3 JSON-gateway puts instead (to compare with etcd using the same client).
    #[arg(long)]
    etcd: bool,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Rounds: a fresh pair of clusters each; the report gives medians over rounds. An even
    /// number puts each system first equally often at every connection count.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    connections: Vec<usize>,
    /// Unmeasured load before each measurement, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Each measurement's window, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Also measure with wrk (Debian: apt-get install -y wrk).
    #[arg(long)]
    wrk: bool,
    /// The etcd binary (Debian: apt-get install -y etcd-server).
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Where to write etcd-compare.{md,json,svg} (and etcd-compare.jsonl, each sample as it is
    /// measured).
    #[arg(long, default_value = "target/etcd-compare")]
    out: PathBuf,
    /// Where the clusters' data go, in a directory of this run's own, removed at the end; on a
    /// disk: tmpfs and ramfs are refused.
    #[arg(long, default_value = "target/etcd-compare/work")]
    work_dir: PathBuf,
    /// Measure even if --work-dir is on tmpfs or ramfs, where fsyncs reach no disk (or its
    /// filesystem cannot be told).
    #[arg(long)]
    allow_tmpfs: bool,
}

/// A `host:port` address whose port is 1 to 65535.
fn parse_addr(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not host:port"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?}: the port must be a number from 1 to 65535")),
        Ok(_) => Ok(s.to_string()),
    }
}

/// An address other nodes and clients are told to use: `host:port` whose host is not a
/// wildcard (`0.0.0.0`, `::`), which names no host to reach (found in review: a node told
/// another's address was 0.0.0.0 dialled itself). Bind to a wildcard with `--*-listen`.
fn parse_advertised(s: &str) -> Result<String, String> {
    let addr = parse_addr(s)?;
    let host = s.rsplit_once(':').map_or("", |(h, _)| h);
    let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(format!(
            "{s:?} is a wildcard address, which names no host to reach: advertise this host's address, and bind the \
             wildcard with --raft-listen/--http-listen"
        ));
    }
    Ok(addr)
}

/// A cluster id: letters, digits, `-`, `_` and `.`, 1 to 63 bytes. It is part of the node
/// certificates' names (`node-<id>.<cluster-id>`) and of the data directory's identity file,
/// which must read back what was written (found in review: an id with a line break never
/// matched itself).
fn parse_cluster_id(s: &str) -> Result<String, String> {
    let fits = !s.is_empty() && s.len() <= 63;
    if fits && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: a cluster id is 1 to 63 letters, digits, '-', '_' or '.'"))
    }
}

fn parse_peer(s: &str) -> Result<(u64, KvNode), String> {
    let (id, addrs) = s.split_once('=').ok_or("expected id=raft_addr@http_addr")?;
    let (raft_addr, http_addr) = addrs.split_once('@').ok_or("expected id=raft_addr@http_addr")?;
    let id: u64 = id.parse().map_err(|e| format!("bad peer id {id:?}: {e}"))?;
    if id == 0 {
        return Err("peer id 0: ids start at 1".into());
    }
    Ok((id, KvNode { raft_addr: parse_advertised(raft_addr)?, http_addr: parse_advertised(http_addr)? }))
}

/// The peers as a map, or why they are not a valid set for node `id`.
fn peer_map(id: u64, peers: Vec<(u64, KvNode)>) -> Result<BTreeMap<u64, KvNode>, String> {
    let mut map = BTreeMap::new();
    for (peer, node) in peers {
        if peer == id {
            return Err(format!("--peer {peer}: that is this node's own --id"));
        }
        if map.insert(peer, node).is_some() {
            return Err(format!("--peer {peer} is given twice"));
        }
    }
    Ok(map)
}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Turn a node's command line into its options: the one derivation of a node's settings, for
/// `raft-kv node` and for what `compare-etcd` says its nodes run with.
fn node_options(args: NodeArgs, peers: BTreeMap<u64, KvNode>) -> Result<NodeOptions, BoxError> {
    let mut config = node::default_config();
    config.heartbeat_interval = Duration::from_millis(args.heartbeat_ms);
    config.election_timeout_min = Duration::from_millis(args.election_timeout_ms);
    config.election_timeout_max = Duration::from_millis(2 * args.election_timeout_ms);
    // A stall limit at or below the election timeout is refused; keep it above it (found
    // when a test gave --election-timeout-ms 3000 and the node refused to start).
    config.max_log_io_stall = config.max_log_io_stall.max(2 * config.election_timeout_max);
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(args.snapshot_every);
    config.max_in_snapshot_log_to_keep = args.keep_logs;
    let raft_tls = match (args.tls_ca, args.tls_cert, args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        _ => None,
    };
    let http_tls = match (args.http_tls_cert, args.http_tls_key, args.http_tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(HttpTls { cert, key, ca, admin_client_ca: args.admin_client_ca }),
        _ => None,
    };
    let admin = match (&args.admin_token_file, args.insecure_open_admin) {
        (_, true) => AdminAuth::open(),
        (Some(path), false) => AdminAuth::closed().with_token_file(path)?,
        (None, false) => AdminAuth::closed(),
    };
    Ok(NodeOptions {
        id: args.id,
        raft_addr: args.raft_addr,
        http_addr: args.http_addr,
        raft_listen: args.raft_listen,
        http_listen: args.http_listen,
        data_dir: args.data_dir,
        peers,
        bootstrap: args.bootstrap,
        groups: args.groups,
        metrics_per_group: args.metrics_per_group,
        config,
        cluster_id: args.cluster_id,
        raft_tls,
        http_tls,
        admin,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        http_limits: HttpLimits {
            header_timeout: Duration::from_millis(args.http_header_timeout_ms),
            body_timeout: Duration::from_millis(args.http_body_timeout_ms),
            write_timeout: Duration::from_millis(args.http_write_timeout_ms),
            max_connections: args.http_max_connections,
            max_connections_per_ip: args.http_max_connections_per_ip,
            max_relays: args.http_max_relays as usize,
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        },
    })
}

/// The settings compare-etcd's nodes run with. Their command line sets their id, addresses,
/// data directory and admin token file, and [`compare::NODE_ARGS`]; every other tunable is a
/// `raft-kv node` default: derived here from such a command line by the code a node runs.
fn compare_node_settings() -> Result<String, BoxError> {
    let line = ["raft-kv", "node", "--id", "1", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2"];
    let given = line.iter().chain(&["--data-dir", "."]).chain(compare::NODE_ARGS);
    let Command::Node(args) = Cli::try_parse_from(given)?.command else {
        return Err("`raft-kv node ...` did not parse as the node command".into());
    };
    let threads = match args.runtime_threads {
        0 => "one per core".to_string(),
        n => n.to_string(),
    };
    let opts = node_options(*args, BTreeMap::new())?;
    let (c, limits) = (&opts.config, &opts.http_limits);
    Ok(format!(
        "{}: runtime threads {threads}, heartbeat {:?}, election timeout {:?}..{:?}, snapshot {:?} keeping {} entries \
         behind it, max_payload_entries {}, max_payload_bytes {}, request timeout {:?}, at most {} HTTP \
         connections; log fsync (fdatasync) per group commit",
        compare::NODE_ARGS.join(" "),
        c.heartbeat_interval,
        c.election_timeout_min,
        c.election_timeout_max,
        c.snapshot_policy,
        c.max_in_snapshot_log_to_keep,
        c.max_payload_entries,
        c.max_payload_bytes,
        opts.request_timeout,
        limits.max_connections,
    ))
}

/// The comparison, stopped by Ctrl-C or SIGTERM: dropping it kills every process it started
/// and removes its work directory.
async fn compare_etcd(args: CompareArgs) -> Result<(), BoxError> {
    if args.rounds == 0 || args.connections.is_empty() || args.connections.contains(&0) {
        return Err("compare-etcd needs at least one round and connection counts of 1 or more".into());
    }
    let opts = CompareOptions {
        raft_kv_binary: std::env::current_exe()?,
        etcd_binary: args.etcd_bin,
        rounds: args.rounds,
        connections: args.connections,
        warmup: Duration::try_from_secs_f64(args.warmup_secs)?,
        measure: Duration::try_from_secs_f64(args.secs)?,
        value_size: args.value_size,
        wrk: args.wrk,
        work_dir: std::path::absolute(&args.work_dir)?.join(format!("run-{}", std::process::id())),
        allow_tmpfs: args.allow_tmpfs,
        out: args.out,
        raft_kv_settings: compare_node_settings()?,
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let host = compare::Host::detect(&opts)?;
    let header = format!(
        "raft-kv vs {}: {} rounds, {} s per measurement after {} s of warm-up, {}-byte values; {host}; \
         load average at start {}",
        host.etcd_name(),
        opts.rounds,
        opts.measure.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.value_size,
        compare::load_average(),
    );
    println!("{header}");
    let kept = |why: &str| format!("{why}; the samples measured so far are in {}", opts.sample_log().display());
    let samples = tokio::select! {
        samples = compare::run(&opts) => samples.map_err(|e| kept(&e.to_string()))?,
        _ = tokio::signal::ctrl_c() => return Err(kept("interrupted").into()),
        _ = sigterm.recv() => return Err(kept("terminated").into()),
    };
    let header = format!("{header}, at the end {}", compare::load_average());
    compare::write_report(&opts, &host, &header, &samples)
}

/// The async runtime for `command`: as many threads as its `--runtime-threads` asks (a
/// current-thread runtime for 1), tokio's default for 0 and for the other commands.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match command {
        Command::Node(args) => args.runtime_threads,
        _ => 0,
    };
    match threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime(&cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Display, not Debug: every error here says what it was about (address, file).
            tracing::error!(error = %e, "exiting");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), BoxError> {
    match command {
        Command::Node(mut args) => {
            let peers = match peer_map(args.id, std::mem::take(&mut args.peers)) {
                Ok(p) => p,
                Err(msg) => Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit(),
            };
            init_tracing("info");
            Ok(node::run(node_options(*args, peers)?).await?)
        }
        Command::Demo => {
            init_tracing("warn");
            let binary = std::env::current_exe()?;
            let root = std::env::temp_dir().join(format!("raft-kv-demo-{}", std::process::id()));
            let result = raft_kv::demo::run(&binary, &root).await;
            let _ = std::fs::remove_dir_all(&root);
            result
        }
        Command::Bench(args) => {
            init_tracing("warn");
            let api = if args.etcd { Api::Etcd } else { Api::RaftKv };
            let opts = BenchOptions {
                api,
                targets: args.targets,
                clients: args.clients,
                load: match args.secs {
                    Some(secs) => Load::Timed {
                        warmup: Duration::try_from_secs_f64(args.warmup_secs)?,
                        measure: Duration::try_from_secs_f64(secs)?,
                    },
                    None => Load::Ops(args.ops),
                },
                value_size: args.value_size,
            };
            let report = bench::run(&opts).await?;
            println!("{report}");
            Ok(())
        }
        Command::CompareEtcd(args) => {
            init_tracing("warn");
            compare_etcd(args).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare_node_settings;

    #[test]
    fn compare_etcd_reports_the_node_command_defaults() {
        let settings = compare_node_settings().expect("the node command line parses");
        // `raft-kv node`'s defaults (--heartbeat-ms 100, --election-timeout-ms 500,
        // --snapshot-every 100000, --keep-logs 1000, --request-timeout-ms 5000), and what
        // compare-etcd gives its nodes besides (`compare::NODE_ARGS`).
        for said in [
            "--runtime-threads 1: runtime threads 1,",
            "heartbeat 100ms",
            "election timeout 500ms..1s",
            "LogsSinceLast(100000) keeping 1000 entries",
            "request timeout 5s",
        ] {
            assert!(settings.contains(said), "{settings}");
        }
    }
}
