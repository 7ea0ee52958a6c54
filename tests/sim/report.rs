//! The soak report: operations and faults by kind, violations, time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::clients::{OpKind, ReadPath};
use crate::harness::{SimOptions, SimReport};

/// What many runs did, summed.
#[derive(Default)]
pub struct Totals {
    pub seeds: u64,
    pub reads: BTreeMap<ReadPath, u64>,
    pub writes: u64,
    pub cas: u64,
    /// Writes and compare-and-sets whose outcome the client never learned.
    pub unknown: u64,
    pub faults: BTreeMap<&'static str, u64>,
    /// Seeds with violations.
    pub failed: Vec<u64>,
    pub violations: u64,
    /// The most probes and stream opens a healed cluster needed to converge.
    pub max_converge_probes: u64,
}

impl Totals {
    pub fn add(&mut self, r: &SimReport) {
        self.seeds += 1;
        for op in &r.history {
            match &op.kind {
                OpKind::Get(path) => *self.reads.entry(*path).or_default() += 1,
                OpKind::Put(_) => self.writes += 1,
                OpKind::Cas { .. } => self.cas += 1,
            }
            if op.output.is_none() {
                self.unknown += 1;
            }
        }
        self.max_converge_probes = self.max_converge_probes.max(r.converge_probes);
        for (_, f) in &r.faults {
            *self.faults.entry(f.kind()).or_default() += 1;
        }
        if !r.violations.is_empty() {
            self.failed.push(r.seed);
            self.violations += r.violations.len() as u64;
        }
    }

    fn ops(&self) -> u64 {
        self.reads.values().sum::<u64>() + self.writes + self.cas
    }

    /// The report printed at the end of a soak.
    pub fn summary(&self, first: u64, n: u64, options: &SimOptions, elapsed: Duration) -> String {
        let mut s = String::new();
        let per_min = self.seeds as f64 / elapsed.as_secs_f64().max(1e-9) * 60.0;
        let _ = writeln!(
            s,
            "soak: seeds {first}..{} ({n}), clocks {:?}, faults left out {:?}, {:.1} s wall time, {per_min:.1} seeds/min",
            first + n,
            options.clock_skew,
            options.exclude_faults,
            elapsed.as_secs_f64()
        );
        let ops = self.ops();
        let _ = writeln!(s, "  operations: {ops} ({:.0}/seed)", ops as f64 / self.seeds.max(1) as f64);
        for (path, count) in &self.reads {
            let _ = writeln!(s, "    read {path:?}: {count}");
        }
        let _ = writeln!(
            s,
            "    write: {}\n    compare-and-set: {}\n    outcome unknown: {}",
            self.writes, self.cas, self.unknown
        );
        let faults: u64 = self.faults.values().sum();
        let _ = writeln!(s, "  faults: {faults} ({:.1}/seed)", faults as f64 / self.seeds.max(1) as f64);
        for (kind, count) in &self.faults {
            let _ = writeln!(s, "    {kind}: {count}");
        }
        let _ = writeln!(s, "  most probes while converging: {}", self.max_converge_probes);
        let _ = write!(s, "  violations: {} in {} seeds {:?}", self.violations, self.failed.len(), self.failed);
        s
    }
}
