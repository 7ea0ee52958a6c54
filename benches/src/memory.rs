//! Watching the heap while a cluster runs: a sampler thread reads the counting allocator and
//! the cluster's probe every interval; the series is reduced to a peak and a flatness ratio.
//!
//! What belongs to whom: the counters see the whole process. The sampler subtracts what was
//! live before the cluster started (runtimes, the bench itself) and an estimate of the
//! in-memory log stores (entries held × bytes per entry, measured once with the same
//! allocator), which is the harness's and grows with the log unless snapshots purge it. What
//! is left — tasks, channels, queues, in-flight requests, client futures — is called the
//! *library's share* here, though the 4096 client tasks and their pending writes are in it too
//! (they are a constant part of it at a fixed client count).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{ClusterProbe, alloc};

/// One sample of the heap and the cluster.
#[derive(Debug, Clone)]
pub struct MemorySample {
    /// Since sampling started.
    pub at: Duration,
    /// Bytes live in the whole process.
    pub live: usize,
    /// The most bytes live at once since the previous sample.
    pub peak: usize,
    /// What the cluster reported.
    pub probe: ClusterProbe,
}

/// A running sampler; [`Sampler::stop`] ends it and hands back the series.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<MemorySample>>,
}

impl Sampler {
    /// Sample every `interval` on a thread of its own (so a starved runtime does not delay it),
    /// for up to `expected` (the buffer is sized for it, so sampling does not grow the heap).
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(
        probe: Box<dyn Fn() -> ClusterProbe + Send>,
        interval: Duration,
        expected: Duration,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let capacity = (expected.as_millis() / interval.as_millis().max(1)) as usize + 64;
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("heap-sampler".to_string()).spawn(move || {
            let mut series = Vec::with_capacity(capacity);
            let started = Instant::now();
            alloc::reset_peak();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let probe = probe();
                let peak = alloc::reset_peak();
                series.push(MemorySample { at: started.elapsed(), live: alloc::live_bytes(), peak, probe });
            }
            series
        })?;
        Ok(Self { stop, thread })
    }

    /// Stop sampling and return the series.
    pub fn stop(self) -> Vec<MemorySample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// How a series is read: the baseline before the cluster started and the log store's cost.
#[derive(Debug, Clone, Copy)]
pub struct Accounting {
    /// Bytes live before the cluster started.
    pub baseline: usize,
    /// Heap bytes one entry costs in the in-memory log store (map node share included).
    pub log_entry_bytes: f64,
}

impl Accounting {
    /// The log stores' estimated bytes in `s`.
    pub fn log_bytes(&self, s: &MemorySample) -> f64 {
        s.probe.log_entries as f64 * self.log_entry_bytes
    }

    /// The interval peak minus the baseline and the log stores: the library's share.
    pub fn library_peak(&self, s: &MemorySample) -> f64 {
        (s.peak as f64 - self.baseline as f64 - self.log_bytes(s)).max(0.0)
    }
}

/// The peak of the library's share over the run, and the flatness ratio: the largest interval
/// peak in the last quarter of the run over the largest in the second quarter (the first
/// quarter is warm-up). ≈ 1.0 is flat; growth shows as a ratio above 1.
pub fn flatness(series: &[MemorySample], acc: Accounting) -> (f64, Option<f64>) {
    let peaks: Vec<f64> = series.iter().map(|s| acc.library_peak(s)).collect();
    let overall = peaks.iter().copied().fold(0.0, f64::max);
    let n = peaks.len();
    if n < 8 {
        return (overall, None);
    }
    let max_of = |range: std::ops::Range<usize>| peaks[range].iter().copied().fold(0.0, f64::max);
    let second = max_of(n / 4..n / 2);
    let last = max_of(n - n / 4..n);
    (overall, (second > 0.0).then(|| last / second))
}

/// The heap bytes per item of what `build(n)` builds, measured with the counting allocator
/// (other threads should be idle meanwhile).
pub fn heap_bytes_per_item<T>(n: usize, build: impl FnOnce(usize) -> T) -> f64 {
    let before = alloc::live_bytes();
    let built = std::hint::black_box(build(n));
    let after = alloc::live_bytes();
    drop(built);
    after.saturating_sub(before) as f64 / n.max(1) as f64
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// The series as a markdown table, one row per `every` samples (each row shows the largest
/// interval peak since the previous row).
pub fn series_markdown(series: &[MemorySample], acc: Accounting, every: usize) -> String {
    let mut out = String::new();
    out.push_str(
        "| t s | heap peak MiB | log entries | log store MiB | library share MiB | leader last | purged | write queue | pending writes | in flight (req / KiB) per target |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for chunk in series.chunks(every.max(1)) {
        let Some(top) = chunk.iter().max_by_key(|s| s.peak) else { continue };
        let Some(last) = chunk.last() else { continue };
        let p = &last.probe;
        let opt = |v: Option<u64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
        let (wq, pw, inflight) = match &p.queues {
            Some(q) => (
                q.write_queue.to_string(),
                q.pending_writes.to_string(),
                q.in_flight
                    .iter()
                    .map(|(id, reqs, bytes)| format!("{id}: {reqs} / {}", bytes / 1024))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            None => ("–".to_string(), "–".to_string(), "–".to_string()),
        };
        let _ = writeln!(
            out,
            "| {:.1} | {:.1} | {} | {:.1} | {:.1} | {} | {} | {wq} | {pw} | {inflight} |",
            last.at.as_secs_f64(),
            mib(top.peak as f64),
            p.log_entries,
            mib(acc.log_bytes(top)),
            mib(acc.library_peak(top)),
            opt(p.leader_last_log),
            opt(p.leader_purged),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Accounting, MemorySample, flatness};
    use crate::ClusterProbe;

    fn series(peaks: &[usize]) -> Vec<MemorySample> {
        peaks
            .iter()
            .enumerate()
            .map(|(i, p)| MemorySample {
                at: Duration::from_millis(100 * i as u64),
                live: *p,
                peak: *p,
                probe: ClusterProbe { log_entries: 10, ..Default::default() },
            })
            .collect()
    }

    #[test]
    fn a_flat_series_is_one_and_growth_shows() {
        let acc = Accounting { baseline: 100, log_entry_bytes: 10.0 };
        // Library share = peak - 100 - 100.
        let flat = series(&[500, 300, 300, 300, 300, 300, 300, 300]);
        assert_eq!(flatness(&flat, acc), (300.0, Some(1.0)));
        let growing = series(&[300, 300, 400, 400, 500, 500, 800, 800]);
        assert_eq!(flatness(&growing, acc), (600.0, Some(3.0)));
        assert_eq!(flatness(&flat[..4], acc).1, None);
    }
}
