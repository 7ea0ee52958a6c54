//! The order of a run's measurements: which library, settings, scenario, batch size and
//! client count comes when, and which measurement is each library's first (*cold*).
//!
//! Every round measures every cell once. Within a round, at each client count, the tables and
//! the libraries follow each other back to back, so drift on the machine hits all of them; the
//! order of both flips every other round, so neither library nor table is always first.

use crate::report::{Library, Scenario, Series};
use crate::tuning::Table;
use crate::workload::Load;

/// The fewest calls each client makes in a batch measurement, so the latency of a call is
/// measured more than once or twice per client even at high client counts.
pub const MIN_BATCH_CALLS_PER_CLIENT: u64 = 8;

/// What a run measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// How many times each cell is measured.
    pub rounds: usize,
    /// Client counts of the single-write tables.
    pub clients: Vec<usize>,
    /// Entries per single-write measurement.
    pub ops: u64,
    /// Which tables (settings) the single writes run under.
    pub tables: Vec<Table>,
    /// Which libraries.
    pub libraries: Vec<Library>,
    /// Scenarios of the single writes; a hung follower runs with the same settings only.
    pub scenarios: Vec<Scenario>,
    /// Entries per call of the batch measurements; empty for none.
    pub batches: Vec<u64>,
    /// Client counts of the batch measurements.
    pub batch_clients: Vec<usize>,
    /// Which tables (settings) the batches run under.
    pub batch_tables: Vec<Table>,
}

/// One measurement to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which round, from 1.
    pub round: usize,
    /// Which library.
    pub library: Library,
    /// Table, scenario and batch size.
    pub series: Series,
    /// How much to write, from how many clients.
    pub load: Load,
    /// The first measurement of `library` in the run.
    pub cold: bool,
}

/// `items` in order in odd rounds, reversed in even ones.
fn flipped<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if round.is_multiple_of(2) {
        v.reverse();
    }
    v
}

/// Every measurement of the run, in the order to make them.
pub fn plan(config: &PlanConfig) -> Vec<Step> {
    let mut steps = Vec::new();
    for round in 1..=config.rounds.max(1) {
        let libraries = flipped(&config.libraries, round);
        for &clients in &config.clients {
            for table in flipped(&config.tables, round) {
                for &library in &libraries {
                    for &scenario in &config.scenarios {
                        if scenario == Scenario::HungFollower && table != Table::Same {
                            continue;
                        }
                        let series = Series { table, scenario, batch: 1 };
                        let load = Load::single(clients, config.ops);
                        steps.push(Step { round, library, series, load, cold: false });
                    }
                }
            }
        }
        for &clients in &config.batch_clients {
            for &batch in &config.batches {
                for table in flipped(&config.batch_tables, round) {
                    for &library in &libraries {
                        let series = Series::batches(table, batch);
                        let load = Load::batches(clients, batch, config.ops, MIN_BATCH_CALLS_PER_CLIENT);
                        steps.push(Step { round, library, series, load, cold: false });
                    }
                }
            }
        }
    }
    for library in [Library::Quorate, Library::Openraft] {
        if let Some(first) = steps.iter_mut().find(|s| s.library == library) {
            first.cold = true;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::{PlanConfig, plan};
    use crate::report::{Library, Scenario};
    use crate::tuning::Table;

    fn config() -> PlanConfig {
        PlanConfig {
            rounds: 2,
            clients: vec![1, 64],
            ops: 1000,
            tables: vec![Table::Same, Table::Tuned],
            libraries: vec![Library::Quorate, Library::Openraft],
            scenarios: vec![Scenario::Healthy, Scenario::HungFollower],
            batches: vec![4, 64],
            batch_clients: vec![1],
            batch_tables: vec![Table::Tuned],
        }
    }

    #[test]
    fn tables_and_libraries_alternate_and_flip_every_other_round() {
        let steps = plan(&config());
        let first: Vec<(Table, Library, Scenario)> =
            steps.iter().take(6).map(|s| (s.series.table, s.library, s.series.scenario)).collect();
        assert_eq!(
            first,
            [
                (Table::Same, Library::Quorate, Scenario::Healthy),
                (Table::Same, Library::Quorate, Scenario::HungFollower),
                (Table::Same, Library::Openraft, Scenario::Healthy),
                (Table::Same, Library::Openraft, Scenario::HungFollower),
                (Table::Tuned, Library::Quorate, Scenario::Healthy),
                (Table::Tuned, Library::Openraft, Scenario::Healthy),
            ]
        );
        let round2 = steps.iter().find(|s| s.round == 2).expect("two rounds");
        assert_eq!((round2.series.table, round2.library), (Table::Tuned, Library::Openraft));
    }

    #[test]
    fn every_cell_is_measured_once_per_round() {
        let steps = plan(&config());
        // Per round: 2 client counts × (same: 2 libraries × 2 scenarios + tuned: 2 libraries),
        // then 1 client count × 2 batch sizes × 2 libraries.
        assert_eq!(steps.len(), 2 * (2 * (4 + 2) + 4));
        let batch = steps.iter().find(|s| s.series.batch == 64).expect("batches planned");
        assert_eq!((batch.load.clients, batch.load.batch), (1, 64));
        assert_eq!(batch.series.table, Table::Tuned);
    }

    #[test]
    fn only_each_librarys_first_measurement_is_cold() {
        let steps = plan(&config());
        let cold: Vec<(usize, Library)> =
            steps.iter().enumerate().filter(|(_, s)| s.cold).map(|(i, s)| (i, s.library)).collect();
        assert_eq!(cold, [(0, Library::Quorate), (2, Library::Openraft)]);
    }
}
