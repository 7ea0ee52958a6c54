//! Criterion micro-benchmarks of the Engine's hot paths (issue #3), through quorate's unstable
//! `bench-internals` facade: no RaftCore, no storage, no network, one thread.
//!
//! ```text
//! cargo bench -p quorate-bench --bench engine
//! cargo bench -p quorate-bench --bench engine -- leader_append   # one group
//! ```
//!
//! Each benchmark times one Engine input plus draining its commands, for a batch of 1, 64 or
//! 1024 entries; criterion reports time per call and, from the `Elements` throughput, entries
//! per second. Whatever a call needs that is not part of the path (payload vectors, requests,
//! entries to commit) is built outside the timed section.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quorate::bench_internals::{FollowerBench, LeaderBench};

const BATCHES: [u64; 3] = [1, 64, 1024];

/// How many calls to prepare for at once in the commit and follower benches, so that setup
/// runs in bulk and the clock is read once per chunk rather than once per call.
fn chunk(batch: u64) -> u64 {
    (65_536 / batch).clamp(1, 1024)
}

/// Leader append: `Engine::leader_append_entries` of a batch of client payloads.
fn leader_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("leader_append");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut leader = LeaderBench::new();
            b.iter_batched(
                || vec![7u64; batch as usize],
                |payloads| black_box(leader.append(payloads)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// Quorum commit: a follower's ack of `batch` more entries reaches the leader, which updates
/// its progress, recomputes the quorum-acked index and commits (queueing an Apply).
fn quorum_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("quorum_commit");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut leader = LeaderBench::new();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let calls = left.min(chunk(batch));
                    left -= calls;
                    // Setup, not timed: entries for `calls` acks, durable on the leader.
                    let from = leader.last_index();
                    leader.append(vec![7u64; (calls * batch) as usize]);
                    leader.flush();
                    let t0 = Instant::now();
                    for i in 1..=calls {
                        black_box(leader.ack(2, from + i * batch));
                    }
                    timed += t0.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

/// Follower append: `Engine::handle_append_entries` of `batch` new entries (vote check, log
/// matching, conflict check, append, follow the leader's commit); and of a resent request
/// whose first half the follower already holds.
fn follower_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("follower_append");
    for (name, overlap_half) in [("new", false), ("half_resent", true)] {
        for batch in BATCHES {
            if overlap_half && batch < 2 {
                continue;
            }
            let overlap = if overlap_half { batch / 2 } else { 0 };
            let fresh = batch - overlap;
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, _| {
                let mut follower = FollowerBench::new();
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let calls = left.min(chunk(batch));
                        left -= calls;
                        // Requests are built in order before the clock starts, then appended
                        // in order.
                        let requests: Vec<_> = (0..calls).map(|_| follower.request(fresh, overlap)).collect();
                        let t0 = Instant::now();
                        for req in requests {
                            black_box(follower.append(req));
                        }
                        timed += t0.elapsed();
                    }
                    timed
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = engine;
    // Short runs: three groups × up to six inputs should finish in about a minute on a busy
    // two-core machine.
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = leader_append, quorum_commit, follower_append
}
criterion_main!(engine);
