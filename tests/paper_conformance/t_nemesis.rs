//! Where the features meet: writes, reads by every path, crashes (losing unflushed writes,
//! state machines persistent or restored from snapshots), partitions, stalled disks,
//! snapshots, leadership transfers, forced elections and membership changes, all at once on a
//! lossy, delaying, late-delivering network. Every seed is deterministic (paused clock, one
//! thread, seeded choices).
//!
//! Reads are checked against the writes: a read that returns must not see a value older than
//! the last write acknowledged before the read started (except writes whose outcome the
//! client does not know), and never a write reported `Discarded`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quorate::error::ClientWriteError;
use quorate::{BasicNode, ChangeMembers, RaftError, ReadPolicy, ServerState, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::timeout;

use crate::cluster::{Cluster, config};
use crate::types::Req;

const KEYS: u64 = 3;

#[derive(Default)]
struct History {
    next: u64,
    /// Per key: the latest acknowledged write (its number).
    acked: BTreeMap<String, u64>,
    /// Writes with an unknown outcome (timed out, OutcomeUnknown, Fatal).
    unknown: BTreeSet<u64>,
    /// Writes reported Discarded (or refused): never to be seen.
    discarded: BTreeSet<u64>,
    /// Per write number, when (in issue order) it was issued: writes are numbered in issue order.
    reads_checked: u64,
}

impl History {
    /// Check a value read for `key`, given the latest acknowledged write when the read started.
    fn check_read(&mut self, seed: u64, what: &str, key: &str, floor: Option<u64>, v: Option<&String>) {
        self.reads_checked += 1;
        let got = v.map(|s| s.parse::<u64>().unwrap());
        if let Some(g) = got {
            assert!(!self.discarded.contains(&g), "seed {seed}: {what} read {key}={g}, a Discarded write");
        }
        if let Some(f) = floor {
            let ok = match got {
                None => false,
                Some(g) => g >= f || self.unknown.contains(&g),
            };
            assert!(
                ok,
                "seed {seed}: {what}: stale read of {key}: got {got:?}, but write {f} was acknowledged before the read"
            );
        }
    }
}

fn leaders(c: &Cluster) -> Vec<u64> {
    c.nodes.iter().filter(|(_, n)| n.raft.metrics().borrow().state == ServerState::Leader).map(|(id, _)| *id).collect()
}

async fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: u64 = if seed % 3 == 0 { 3 } else { 5 };
    let mut cfg = config();
    cfg.snapshot_policy = SnapshotPolicy::LogsSinceLast(15);
    cfg.max_in_snapshot_log_to_keep = rng.random_range(0..5);
    cfg.max_payload_entries = rng.random_range(1..6);
    cfg.snapshot_max_chunk_size = 256;
    cfg.max_log_io_stall = Duration::from_millis(800);
    let mut c = Cluster::new(n, cfg, seed, seed % 2 == 0).await;
    c.persistent_sm = rng.random_bool(0.5);
    let all: Vec<u64> = (1..=n).collect();
    c.init(&all).await;
    c.leader().await;
    c.net.set_chaos(Duration::from_millis(1), Duration::from_millis(4), 0.02, 0.03);
    let mut h = History::default();
    let mut held: BTreeSet<u64> = BTreeSet::new();
    let mut removed: Option<u64> = None;

    for _step in 0..steps {
        let running = c.running();
        let pick = |rng: &mut StdRng, v: &[u64]| v[rng.random_range(0..v.len())];
        match rng.random_range(0..100) {
            // Write at a node that believes it leads (or any node).
            0..=29 => {
                let ls = leaders(&c);
                let at =
                    if ls.is_empty() || rng.random_bool(0.1) { pick(&mut rng, &running) } else { pick(&mut rng, &ls) };
                let key = format!("k{}", rng.random_range(0..KEYS));
                h.next += 1;
                let num = h.next;
                let r = timeout(Duration::from_secs(2), c.raft(at).client_write(Req::set(&key, num))).await;
                match r {
                    Ok(Ok(resp)) => {
                        c.acked.lock().unwrap().push(resp.log_id);
                        let e = h.acked.entry(key).or_default();
                        *e = (*e).max(num);
                    }
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))
                    | Ok(Err(RaftError::APIError(ClientWriteError::Overloaded)))
                    | Ok(Err(RaftError::APIError(ClientWriteError::Discarded { .. }))) => {
                        h.discarded.insert(num);
                    }
                    _ => {
                        h.unknown.insert(num);
                    }
                }
            }
            // Linearizable read at a node that believes it leads.
            30..=44 => {
                let ls = leaders(&c);
                if ls.is_empty() {
                    continue;
                }
                let at = pick(&mut rng, &ls);
                let key = format!("k{}", rng.random_range(0..KEYS));
                let floor = h.acked.get(&key).copied();
                let policy = if rng.random_bool(0.5) { ReadPolicy::LeaseRead } else { ReadPolicy::ReadIndex };
                if rng.random_bool(0.5) {
                    if let Ok(Ok(_)) = timeout(Duration::from_secs(2), c.raft(at).ensure_linearizable(policy)).await {
                        let v = c.sm(at).get(&key);
                        h.check_read(seed, &format!("{policy:?} at {at}"), &key, floor, v.as_ref());
                    }
                } else {
                    // Follower read: read index at the leader, wait at another node.
                    let reader = pick(&mut rng, &running);
                    if let Ok(Ok(idx)) = timeout(Duration::from_secs(2), c.raft(at).get_read_index(policy)).await
                        && c.nodes.contains_key(&reader)
                        && let Ok(Ok(())) =
                            timeout(Duration::from_secs(2), c.raft(reader).wait_applied(idx.read_log_id)).await
                    {
                        let v = c.sm(reader).get(&key);
                        h.check_read(
                            seed,
                            &format!("follower read at {reader} via {at} ({policy:?})"),
                            &key,
                            floor,
                            v.as_ref(),
                        );
                    }
                }
            }
            // Crash a node (at most one down at a time).
            45..=51 => {
                if c.down.is_empty() && running.len() as u64 == n {
                    let id = pick(&mut rng, &running);
                    held.remove(&id);
                    c.crash(id).await;
                }
            }
            52..=59 => {
                if let Some(id) = c.down.keys().next().copied() {
                    c.restart(id).await;
                }
            }
            // Partitions.
            60..=65 => {
                let id = pick(&mut rng, &all);
                let others: Vec<u64> = all.iter().copied().filter(|x| *x != id).collect();
                c.net.heal();
                c.net.cut(id, &others);
            }
            66..=70 => c.net.heal(),
            // Stalled disks.
            71..=74 => {
                let id = pick(&mut rng, &running);
                if held.is_empty() {
                    c.log(id).hold_flush(true);
                    held.insert(id);
                }
            }
            75..=79 => {
                for id in std::mem::take(&mut held) {
                    if c.nodes.contains_key(&id) {
                        c.log(id).hold_flush(false);
                    }
                }
            }
            // Snapshots.
            80..=84 => {
                let id = pick(&mut rng, &running);
                let _ = c.raft(id).trigger().snapshot().await;
            }
            // Leadership transfer, racing reads at the old leader.
            85..=90 => {
                let ls = leaders(&c);
                if let Some(&l) = ls.first() {
                    let to = pick(&mut rng, &running);
                    let raft = c.raft(l);
                    let t = tokio::spawn(async move { raft.trigger().transfer_leader(to).await });
                    let key = format!("k{}", rng.random_range(0..KEYS));
                    let floor = h.acked.get(&key).copied();
                    let policy = if rng.random_bool(0.5) { ReadPolicy::LeaseRead } else { ReadPolicy::ReadIndex };
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                    if c.nodes.contains_key(&l)
                        && let Ok(Ok(_)) = timeout(Duration::from_secs(2), c.raft(l).ensure_linearizable(policy)).await
                    {
                        let v = c.sm(l).get(&key);
                        h.check_read(seed, &format!("{policy:?} at {l} during transfer"), &key, floor, v.as_ref());
                    }
                    let _ = timeout(Duration::from_secs(3), t).await;
                }
            }
            91..=93 => {
                let id = pick(&mut rng, &running);
                let _ = c.raft(id).trigger().elect().await;
            }
            // Membership: remove one voter (kept as a learner), later add it back.
            _ => {
                let ls = leaders(&c);
                let Some(&l) = ls.first() else { continue };
                let change = match removed {
                    None => {
                        let v = pick(&mut rng, &all);
                        ChangeMembers::RemoveVoters(BTreeSet::from([v]))
                    }
                    Some(v) => ChangeMembers::AddVoterIds(BTreeSet::from([v])),
                };
                if let Ok(Ok(resp)) = timeout(Duration::from_secs(3), c.raft(l).change_membership(change, true)).await {
                    let voters = resp.membership.voter_ids();
                    removed = all.iter().copied().find(|x| !voters.contains(x));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        c.check();
    }

    // Heal everything and converge.
    c.net.heal();
    c.net.set_chaos(Duration::from_millis(1), Duration::ZERO, 0.0, 0.0);
    for id in std::mem::take(&mut held) {
        if c.nodes.contains_key(&id) {
            c.log(id).hold_flush(false);
        }
    }
    while let Some(id) = c.down.keys().next().copied() {
        c.restart(id).await;
    }
    if let Some(v) = removed {
        // Make sure the member list still has it, as a learner.
        let l = c.leader().await;
        let _ = timeout(Duration::from_secs(5), c.raft(l).add_learner(v, BasicNode::new(format!("n{v}")), false)).await;
    }
    let fin = c.write_ok("final", "0").await;
    c.all_applied(fin.log_id.index, Duration::from_secs(30)).await;
    let l = c.leader().await;
    for key in 0..KEYS {
        let key = format!("k{key}");
        let floor = h.acked.get(&key).copied();
        c.raft(l).ensure_linearizable(ReadPolicy::ReadIndex).await.expect("final read");
        let v = c.sm(l).get(&key);
        h.check_read(seed, "final read", &key, floor, v.as_ref());
    }
    let kv = c.sm(l).kv();
    for id in &all {
        assert_eq!(c.sm(*id).kv(), kv, "seed {seed}: node {id}'s state machine differs from the leader's");
    }
    // No Discarded write was ever applied.
    for (idx, (_, req)) in c.rec.lock().unwrap().applied.iter() {
        if let Some(r) = req
            && let Ok(num) = r.value.parse::<u64>()
        {
            assert!(
                !h.discarded.contains(&num) || r.key == "final",
                "seed {seed}: Discarded write {num} applied at {idx}"
            );
        }
    }
    c.check();
    c.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn nemesis_seeds() {
    let first: u64 = std::env::var("CONF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let count: u64 = std::env::var("CONF_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let steps: usize = std::env::var("CONF_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    for seed in first..first + count {
        eprintln!("nemesis seed {seed}");
        run(seed, steps).await;
    }
}
