//! The soak report: operations and faults by kind, violations, time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::clients::{Op, OpKind, ReadPath};
use crate::groups::GroupsReport;
use crate::groups_nemesis::HostFault;
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
    pub faults: BTreeMap<String, u64>,
    /// Seeds with violations.
    pub failed: Vec<u64>,
    pub violations: u64,
    /// The most probes and stream opens a healed cluster needed to converge.
    pub max_converge_probes: u64,
    /// Multi-group runs: times a replica quiesced and woke, terms with a leader, and replicas
    /// still awake after the healed groups settled.
    pub quiesces: u64,
    pub wakes: u64,
    pub elections: u64,
    pub awake_at_end: u64,
    /// Multi-group runs: groups created and removed at run time, by how (see `lifecycle`).
    pub lifecycle: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn add(&mut self, r: &SimReport) {
        self.add_run(r.seed, &r.history, r.faults.iter().map(|(_, f)| f.kind()), &r.violations);
        self.max_converge_probes = self.max_converge_probes.max(r.converge_probes);
    }

    /// Add a multi-group run: every group's operations, the faults and the quiescence counts.
    pub fn add_groups(&mut self, r: &GroupsReport) {
        self.add_run(r.seed, &r.histories.concat(), r.faults.iter().map(|(_, f)| f.kind()), &r.violations);
        self.quiesces += r.quiesces;
        self.wakes += r.wakes;
        self.elections += r.elections;
        self.awake_at_end += r.awake_at_end.len() as u64;
        if r.stragglers_at_end > 0 {
            *self.lifecycle.entry("straggler replicas running at the end").or_default() += r.stragglers_at_end;
        }
        for (_, f) in &r.faults {
            for what in lifecycle(f) {
                *self.lifecycle.entry(what).or_default() += 1;
            }
            if let HostFault::CreateGroup { group, .. } = f {
                let ops = r.histories.get(*group as usize).map_or(0, Vec::len) as u64;
                *self.lifecycle.entry("operations on created groups").or_default() += ops;
            }
        }
    }

    fn add_run<'k>(
        &mut self,
        seed: u64,
        history: &[Op],
        fault_kinds: impl Iterator<Item = &'k str>,
        violations: &[String],
    ) {
        self.seeds += 1;
        for op in history {
            match &op.kind {
                OpKind::Get(path) => *self.reads.entry(*path).or_default() += 1,
                OpKind::Put(_) => self.writes += 1,
                OpKind::Cas { .. } => self.cas += 1,
            }
            if op.output.is_none() {
                self.unknown += 1;
            }
        }
        for kind in fault_kinds {
            *self.faults.entry(kind.to_string()).or_default() += 1;
        }
        if !violations.is_empty() {
            self.failed.push(seed);
            self.violations += violations.len() as u64;
        }
    }

    fn ops(&self) -> u64 {
        self.reads.values().sum::<u64>() + self.writes + self.cas
    }

    /// The report printed at the end of a soak.
    pub fn summary(&self, first: u64, n: u64, options: &SimOptions, elapsed: Duration) -> String {
        let setup = format!("clocks {:?}, faults left out {:?}", options.clock_skew, options.exclude_faults);
        self.summary_of(first, n, &setup, elapsed)
    }

    /// The report of a soak whose runs are described by `setup`.
    pub fn summary_of(&self, first: u64, n: u64, setup: &str, elapsed: Duration) -> String {
        let mut s = String::new();
        let per_min = self.seeds as f64 / elapsed.as_secs_f64().max(1e-9) * 60.0;
        let _ = writeln!(
            s,
            "soak: seeds {first}..{} ({n}), {setup}, {:.1} s wall time, {per_min:.1} seeds/min",
            first + n,
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
        if self.quiesces + self.wakes > 0 {
            let per_seed = |x: u64| x as f64 / self.seeds.max(1) as f64;
            let _ = writeln!(
                s,
                "  quiesced: {} ({:.0}/seed), woke: {} ({:.0}/seed), elections: {} ({:.0}/seed), awake after settling: {}",
                self.quiesces,
                per_seed(self.quiesces),
                self.wakes,
                per_seed(self.wakes),
                self.elections,
                per_seed(self.elections),
                self.awake_at_end
            );
        } else {
            let _ = writeln!(s, "  most probes while converging: {}", self.max_converge_probes);
        }
        if !self.lifecycle.is_empty() {
            let _ = writeln!(s, "  groups created and removed:");
            for (what, count) in &self.lifecycle {
                let _ = writeln!(s, "    {what}: {count}");
            }
        }
        let _ = write!(s, "  violations: {} in {} seeds {:?}", self.violations, self.failed.len(), self.failed);
        s
    }
}

/// What a lifecycle event counts as in the report (nothing for other faults).
fn lifecycle(f: &HostFault) -> Vec<&'static str> {
    match f {
        HostFault::CreateGroup { down, .. } if down.is_empty() => vec!["created"],
        HostFault::CreateGroup { .. } => vec!["created", "created with a node down"],
        HostFault::RemoveGroup { down, .. } if down.is_empty() => vec!["removed"],
        HostFault::RemoveGroup { stragglers: true, .. } => {
            vec!["removed", "removed with a node down, which restarted it (straggler)"]
        }
        HostFault::RemoveGroup { .. } => vec!["removed", "removed with a node down, which left it (tombstone)"],
        _ => Vec::new(),
    }
}
