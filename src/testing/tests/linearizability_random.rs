//! Randomized histories: generated from a real sequential execution (so linearizable), then
//! corrupted (so not).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::testing::linearizability::{CheckResult, KvInput, KvOp, KvOutput, KvReturn, check_kv_history};

/// SplitMix64: a small deterministic generator, so every seed replays the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The shape of a generated history.
struct Workload {
    clients: u64,
    keys: u64,
    ops: usize,
    /// Chance, per thousand operations, that a write's outcome is unknown to its client.
    unknown_per_mille: u64,
}

/// An operation being generated: its interval, and when it takes effect (`None`: never).
struct Planned {
    op: KvOp,
    effect_at: Option<u64>,
}

/// A history of `workload`: clients call operations one after another, each taking effect at
/// a random instant inside its interval; the outputs come from applying them to a map in the
/// order they take effect. Writes of unknown outcome take effect later, or never.
fn generate(seed: u64, workload: &Workload) -> Vec<KvOp> {
    let mut rng = Rng(seed);
    let mut free_at = vec![0u64; workload.clients as usize];
    let mut written: Vec<Vec<String>> = vec![Vec::new(); workload.keys as usize];
    let mut planned: Vec<Planned> = Vec::with_capacity(workload.ops);

    for n in 0..workload.ops {
        let client = rng.below(workload.clients);
        let key_index = rng.below(workload.keys) as usize;
        let key = format!("key{key_index}");
        // Calls and returns fall on odd instants, effects on even ones: an operation takes
        // effect strictly inside its interval.
        let call = free_at[client as usize] + 4 * rng.below(3) + 1;
        let duration = 4 * (1 + rng.below(8));
        let ret = call + duration;
        free_at[client as usize] = ret + 1;
        let effect = call + 2 * rng.below(duration / 2) + 1;

        let recent = |rng: &mut Rng, written: &[String]| -> Option<String> {
            let back = rng.below(3) as usize;
            written.len().checked_sub(back + 1).map(|i| written[i].clone())
        };
        let value = format!("v{n}");
        let input = match rng.below(10) {
            0..=3 => KvInput::get(&key),
            4..=6 => {
                written[key_index].push(value.clone());
                KvInput::put(&key, &value)
            }
            7 => KvInput::delete(&key),
            _ => {
                let expected = recent(&mut rng, &written[key_index]);
                let new = (!rng.chance(100)).then(|| value.clone());
                if let Some(v) = &new {
                    written[key_index].push(v.clone());
                }
                KvInput::CompareAndSet { key, expected, new }
            }
        };

        let is_write = !matches!(input, KvInput::Get { .. });
        let (ret, effect_at) = if is_write && rng.chance(workload.unknown_per_mille) {
            // The client times out; the write lands much later, or never.
            (None, rng.chance(500).then(|| call + 2 * rng.below(200) + 1))
        } else {
            (Some(ret), Some(effect))
        };
        // A placeholder output, filled in by `execute`.
        let output = KvOutput::Put;
        let op = KvOp { client, call, input, ret: ret.map(|at| KvReturn { at, output }) };
        planned.push(Planned { op, effect_at });
    }
    execute(planned)
}

/// Apply the planned operations to a map in the order they take effect and record outputs.
fn execute(mut planned: Vec<Planned>) -> Vec<KvOp> {
    let mut order: Vec<(u64, usize)> =
        planned.iter().enumerate().filter_map(|(i, p)| p.effect_at.map(|at| (at, i))).collect();
    order.sort_unstable();
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (_, i) in order {
        let op = &mut planned[i].op;
        let output = match &op.input {
            KvInput::Get { key } => KvOutput::Get(map.get(key).cloned()),
            KvInput::Put { key, value } => {
                map.insert(key.clone(), value.clone());
                KvOutput::Put
            }
            KvInput::Delete { key } => {
                map.remove(key);
                KvOutput::Delete
            }
            KvInput::CompareAndSet { key, expected, new } => {
                let swaps = map.get(key) == expected.as_ref();
                if swaps {
                    match new {
                        Some(v) => map.insert(key.clone(), v.clone()),
                        None => map.remove(key),
                    };
                }
                KvOutput::CompareAndSet(swaps)
            }
        };
        if let Some(ret) = &mut op.ret {
            ret.output = output;
        }
    }
    planned.into_iter().map(|p| p.op).collect()
}

/// The index of a completed read of `history`, chosen by `rng`.
fn some_read(rng: &mut Rng, history: &[KvOp]) -> usize {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].ret.is_some())
        .collect();
    reads[rng.below(reads.len() as u64) as usize]
}

/// A completed read and a value it cannot legally return: a value of its key all of whose
/// writers returned before some completed `Put` or `Delete` of another value was called, which
/// itself returned before the read was called.
fn stale_read(history: &[KvOp]) -> Option<(usize, Option<String>)> {
    let writes_of = |key: &str, value: &Option<String>| -> Vec<&KvOp> {
        history
            .iter()
            .filter(|op| op.input.key() == key)
            .filter(|op| match &op.input {
                KvInput::Put { value: v, .. } => value.as_ref() == Some(v),
                KvInput::Delete { .. } => value.is_none(),
                KvInput::CompareAndSet { new, .. } => new == value,
                KvInput::Get { .. } => false,
            })
            .collect()
    };
    let returned = |op: &KvOp| op.ret.as_ref().map_or(u64::MAX, |r| r.at);
    // Late reads and late overwrites first: they have the most stale values to pick from.
    for (i, read) in history.iter().enumerate().rev() {
        let Some(KvOutput::Get(seen)) = read.ret.as_ref().map(|r| &r.output) else { continue };
        let key = read.input.key();
        for overwrite in history.iter().rev().filter(|op| op.input.key() == key && returned(op) < read.call) {
            let overwritten_by: Option<String> = match &overwrite.input {
                KvInput::Put { value, .. } => Some(value.clone()),
                KvInput::Delete { .. } => None,
                _ => continue,
            };
            for stale in history.iter().filter(|op| op.input.key() == key).filter_map(|op| match &op.input {
                KvInput::Put { value, .. } => Some(Some(value.clone())),
                _ => None,
            }) {
                if stale == overwritten_by || &stale == seen {
                    continue;
                }
                if writes_of(key, &stale).iter().all(|w| returned(w) < overwrite.call) {
                    return Some((i, stale));
                }
            }
        }
    }
    None
}

fn set_read(history: &mut [KvOp], index: usize, value: Option<String>) {
    if let Some(ret) = &mut history[index].ret {
        ret.output = KvOutput::Get(value);
    }
}

#[test]
fn generated_histories_are_linearizable_and_corrupted_reads_are_caught() {
    let workload = Workload { clients: 10, keys: 3, ops: 300, unknown_per_mille: 20 };
    let mut stale_found = 0;
    for seed in 0..30 {
        let history = generate(seed, &workload);
        assert_eq!(check_kv_history(&history).unwrap(), CheckResult::Linearizable, "seed {seed}");

        let mut rng = Rng(seed ^ 0xbad);
        let mut never_written = history.clone();
        let read = some_read(&mut rng, &never_written);
        set_read(&mut never_written, read, Some("never written".into()));
        match check_kv_history(&never_written).unwrap() {
            CheckResult::NotLinearizable { key, ops } => {
                assert_eq!(key, history[read].input.key(), "seed {seed}");
                assert!(ops.contains(&never_written[read]), "seed {seed}: the witness holds the corrupted read");
                let alone = check_kv_history(&ops).unwrap();
                assert!(matches!(alone, CheckResult::NotLinearizable { .. }), "seed {seed}: the witness alone");
            }
            other => panic!("seed {seed}: a read of a value never written went unnoticed: {other:?}"),
        }

        if let Some((read, value)) = stale_read(&history) {
            stale_found += 1;
            let mut stale = history.clone();
            set_read(&mut stale, read, value);
            assert!(
                matches!(check_kv_history(&stale).unwrap(), CheckResult::NotLinearizable { .. }),
                "seed {seed}: a stale read of op #{read} went unnoticed"
            );
        }
    }
    assert!(stale_found >= 10, "too few histories had a read to make stale: {stale_found}");
}

/// About 5000 operations on 5 keys by 10 clients. Asserts the verdicts only; prints the time.
#[test]
fn checks_five_thousand_operations() {
    let workload = Workload { clients: 10, keys: 5, ops: 5000, unknown_per_mille: 5 };
    let history = generate(42, &workload);

    let started = Instant::now();
    let verdict = check_kv_history(&history).unwrap();
    let linearizable_took = started.elapsed();
    assert_eq!(verdict, CheckResult::Linearizable);

    let mut corrupted = history.clone();
    let read = some_read(&mut Rng(7), &corrupted);
    set_read(&mut corrupted, read, Some("never written".into()));
    let started = Instant::now();
    let verdict = check_kv_history(&corrupted).unwrap();
    let corrupted_took = started.elapsed();
    assert!(matches!(verdict, CheckResult::NotLinearizable { .. }));

    println!(
        "checked {} operations: linearizable in {linearizable_took:?}, corrupted in {corrupted_took:?}",
        history.len()
    );
}
