//! The workload: C client tasks, each doing sequential write calls of empty payloads to the
//! leader, one entry per call (`client_write`) or a batch of B entries per call
//! (`client_write_many`), until the entries asked for are written.
//!
//! Every client records the latency of each of its writes in its own preallocated buffer, so
//! clients never contend on a shared recorder and nothing allocates while the clock runs; the
//! samples go into one histogram after the last client is done. (A histogram per client would
//! cost each of 4096 clients over 100 KiB of counters, allocated mid-run as it resizes: that
//! showed up as page faults and 100 ms latency spikes.) Clients start together behind a
//! barrier, so the clock measures writes and not task spawning, and each notes when it finished,
//! so the clock stops at the last write and not when the coordinator got round to it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Proposes writes to a cluster. Implemented by each library's adapter.
pub trait Writer: Send + Sync + 'static {
    /// Propose an empty write (`client_write`) and wait until the leader reports it applied.
    ///
    /// # Errors
    /// The library's error, rendered.
    fn write(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Propose `entries` empty writes in one call (`client_write_many`) and wait until the
    /// leader reports every one applied.
    ///
    /// # Errors
    /// The library's error for the call or for the first entry that failed, rendered.
    fn write_many(&self, entries: usize) -> impl Future<Output = Result<(), String>> + Send;
}

/// How much one measurement writes, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Concurrent client tasks.
    pub clients: usize,
    /// Entries per call: 1 is `client_write`, more is `client_write_many`.
    pub batch: u64,
    /// Calls in total, split across the clients as evenly as they go.
    pub calls: u64,
}

impl Load {
    /// `entries` single writes (`client_write`) from `clients` tasks.
    pub fn single(clients: usize, entries: u64) -> Self {
        Self { clients: clients.max(1), batch: 1, calls: entries }
    }

    /// Batches of `batch` entries from `clients` tasks: `entries` rounded up to whole batches,
    /// and at least `min_calls_per_client` calls per client, so each client's latency counts
    /// more than one or two calls.
    pub fn batches(clients: usize, batch: u64, entries: u64, min_calls_per_client: u64) -> Self {
        let clients = clients.max(1);
        let batch = batch.max(1);
        let calls = entries.div_ceil(batch).max(clients as u64 * min_calls_per_client);
        Self { clients, batch, calls }
    }

    /// Entries written when every call succeeds.
    pub fn entries(&self) -> u64 {
        self.calls * self.batch
    }
}

/// What one run of the workload measured.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Entries written successfully (calls × entries per call).
    pub completed: u64,
    /// From the moment the clients were released until the last one finished (or the
    /// workload timed out).
    pub elapsed: Duration,
    /// Latency of every completed call, in nanoseconds: a whole batch is one call.
    pub latency: Histogram<u64>,
    /// The first failure, if any write failed or the workload ran out of time.
    pub failure: Option<String>,
}

impl Measurement {
    /// Completed entries per second.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.completed as f64 / secs } else { 0.0 }
    }

    /// The latency of a call at `quantile` (0.0..=1.0), in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }
}

/// What one client task hands back.
struct ClientOutcome {
    /// Nanoseconds per completed call.
    latency_ns: Vec<u64>,
    finished: Instant,
    error: Option<String>,
}

/// Run `load` through `writer` from concurrent tasks spawned on the current runtime, giving up
/// after `limit`.
///
/// A client stops at its first failed call; the failure is reported in
/// [`Measurement::failure`] and the other clients carry on. On timeout every client is
/// aborted and the measurement covers the entries written so far.
pub async fn run<W: Writer>(writer: W, load: Load, limit: Duration) -> Measurement {
    let Load { clients, batch, calls } = load;
    let clients = clients.max(1);
    let writer = Arc::new(writer);
    let gate = Arc::new(Barrier::new(clients + 1));
    let completed = Arc::new(AtomicU64::new(0));

    let mut tasks = JoinSet::new();
    for i in 0..clients as u64 {
        // Spread the remainder over the first clients so the total is exactly `calls`.
        let share = calls / clients as u64 + u64::from(i < calls % clients as u64);
        tasks.spawn(client(writer.clone(), gate.clone(), completed.clone(), share, batch));
    }

    gate.wait().await;
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + limit);

    let mut outcomes = Vec::with_capacity(clients);
    let mut failure = None;
    let mut timed_out_at = None;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(outcome))) => outcomes.push(outcome),
            Ok(Some(Err(join_error))) => {
                failure.get_or_insert_with(|| format!("client task failed: {join_error}"));
            }
            Ok(None) => break,
            Err(_) => {
                timed_out_at = Some(Instant::now());
                let left = tasks.len();
                tasks.abort_all();
                let done = completed.load(Ordering::Relaxed);
                failure = Some(format!(
                    "workload timed out after {limit:?}: {done} of {} entries written, {left} clients still waiting",
                    load.entries()
                ));
                break;
            }
        }
    }
    // Let aborted tasks unwind before the cluster under them is shut down.
    while tasks.join_next().await.is_some() {}

    let last_finish = outcomes.iter().map(|o| o.finished).max();
    let elapsed = timed_out_at.or(last_finish).map_or(Duration::ZERO, |end| end.duration_since(started));
    let mut latency = new_histogram();
    for outcome in outcomes {
        for ns in outcome.latency_ns {
            // The histogram auto-resizes, so recording cannot fail on range.
            let _ = latency.record(ns);
        }
        if failure.is_none() {
            failure = outcome.error;
        }
    }

    Measurement { completed: completed.load(Ordering::Relaxed), elapsed, latency, failure }
}

/// One client: `calls` sequential calls of `batch` entries each.
async fn client<W: Writer>(
    writer: Arc<W>,
    gate: Arc<Barrier>,
    completed: Arc<AtomicU64>,
    calls: u64,
    batch: u64,
) -> ClientOutcome {
    let mut latency_ns = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    let entries = usize::try_from(batch).unwrap_or(usize::MAX);
    gate.wait().await;
    for _ in 0..calls {
        let t0 = Instant::now();
        let written = if batch == 1 { writer.write().await } else { writer.write_many(entries).await };
        if let Err(e) = written {
            return ClientOutcome { latency_ns, finished: Instant::now(), error: Some(e) };
        }
        latency_ns.push(t0.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
        completed.fetch_add(batch, Ordering::Relaxed);
    }
    ClientOutcome { latency_ns, finished: Instant::now(), error: None }
}

/// What a run of fixed duration measured: only throughput, since it keeps no latencies.
#[derive(Debug, Clone)]
pub struct TimedRun {
    /// Writes that completed successfully.
    pub completed: u64,
    /// From the moment the clients were released until the last one stopped.
    pub elapsed: Duration,
    /// The first failed write, if any.
    pub failure: Option<String>,
}

/// Run writes through `writer` from `clients` concurrent tasks for `duration`, then stop,
/// waiting at most `grace` for the writes in progress to finish.
///
/// Unlike [`run`] it records no latencies: a buffer per client would grow with the run, and
/// this workload exists to watch the heap stay flat. A client stops at its first failed write.
pub async fn run_for<W: Writer>(writer: W, clients: usize, duration: Duration, grace: Duration) -> TimedRun {
    let clients = clients.max(1);
    let writer = Arc::new(writer);
    let gate = Arc::new(Barrier::new(clients + 1));
    let completed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (writer, gate, completed, stop) = (writer.clone(), gate.clone(), completed.clone(), stop.clone());
        tasks.spawn(async move {
            gate.wait().await;
            while !stop.load(Ordering::Relaxed) {
                writer.write().await?;
                completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        });
    }
    gate.wait().await;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut failure = None;
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(joined)) => {
                if let Err(e) = joined.map_err(|e| format!("client task failed: {e}")).and_then(|r| r) {
                    failure.get_or_insert(e);
                }
            }
            Err(_) => {
                failure = Some(format!("{} clients still waiting {grace:?} after the run ended", tasks.len()));
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    TimedRun { completed: completed.load(Ordering::Relaxed), elapsed, failure }
}

fn new_histogram() -> Histogram<u64> {
    // Three significant digits, auto-resizing: latencies range from microseconds to seconds.
    let mut h = Histogram::new(3).expect("3 significant figures is a valid histogram precision");
    h.auto(true);
    h
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::{Load, Writer, run, run_for};

    /// Counts calls and entries; fails every call from `fail_from` on, or never answers if
    /// `hang`.
    #[derive(Default)]
    struct FakeWriter {
        calls: AtomicU64,
        batched_entries: std::sync::Arc<AtomicU64>,
        fail_from: Option<u64>,
        hang: bool,
    }

    impl Writer for FakeWriter {
        async fn write(&self) -> Result<(), String> {
            self.call().await
        }

        async fn write_many(&self, entries: usize) -> Result<(), String> {
            self.batched_entries.fetch_add(entries as u64, Ordering::Relaxed);
            self.call().await
        }
    }

    impl FakeWriter {
        async fn call(&self) -> Result<(), String> {
            let n = self.calls.fetch_add(1, Ordering::Relaxed);
            // A real write always waits for the cluster; without a yield, clients of a timed
            // run would never let the coordinator's timer fire on a one-thread runtime.
            tokio::task::yield_now().await;
            if self.hang {
                std::future::pending::<()>().await;
            }
            match self.fail_from {
                Some(k) if n >= k => Err(format!("write {n} refused")),
                _ => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn every_operation_is_done_once_across_uneven_shares() {
        let m = run(FakeWriter::default(), Load::single(3, 10), Duration::from_secs(5)).await;
        assert_eq!(m.failure, None);
        assert_eq!(m.completed, 10);
        assert_eq!(m.latency.len(), 10);
    }

    #[tokio::test]
    async fn batches_count_entries_and_time_calls() {
        let writer = FakeWriter::default();
        let batched_entries = writer.batched_entries.clone();
        let load = Load::batches(3, 4, 10, 2);
        // 10 entries are 3 calls of 4, but each of 3 clients makes at least 2.
        assert_eq!(load, Load { clients: 3, batch: 4, calls: 6 });
        let m = run(writer, load, Duration::from_secs(5)).await;
        assert_eq!(m.failure, None);
        assert_eq!(m.completed, 24);
        assert_eq!(m.latency.len(), 6);
        assert_eq!(batched_entries.load(Ordering::Relaxed), 24);
    }

    #[tokio::test]
    async fn a_failed_write_stops_its_client_and_is_reported() {
        let writer = FakeWriter { fail_from: Some(4), ..Default::default() };
        let m = run(writer, Load::single(1, 10), Duration::from_secs(5)).await;
        assert_eq!(m.completed, 4);
        assert_eq!(m.failure.as_deref(), Some("write 4 refused"));
    }

    #[tokio::test]
    async fn a_timed_run_stops_every_client_after_its_duration() {
        let m = run_for(FakeWriter::default(), 3, Duration::from_millis(20), Duration::from_secs(5)).await;
        assert_eq!(m.failure, None);
        assert!(m.completed > 0);
        assert!(m.elapsed >= Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_hung_cluster_is_reported_as_a_timeout() {
        let writer = FakeWriter { hang: true, ..Default::default() };
        let m = run(writer, Load::single(2, 10), Duration::from_millis(50)).await;
        assert_eq!(m.completed, 0);
        let failure = m.failure.unwrap_or_default();
        assert!(failure.contains("timed out"), "{failure}");
    }
}
