//! SVG charts of the measured medians: throughput and p99 latency against the client count,
//! quorate and openraft on one chart, one chart per table.
//!
//! Drawn with `plotters`' SVG backend and no font support: the SVG carries its labels as
//! `<text>` elements and the viewer picks the font, so nothing is rasterized and no system
//! font is needed to run the bench.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::report::{Library, Sample, Series, summarize};
use crate::tuning::Table;

/// One measured point: the medians of one library at one client count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Concurrent clients.
    pub clients: usize,
    /// Entries per second.
    pub ops_per_sec: f64,
    /// 99th-percentile latency of a call, microseconds.
    pub p99_us: f64,
}

/// One line on both panels of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Which library (picks the colour).
    pub library: Library,
    /// The legend.
    pub label: String,
    /// Drawn dashed (to tell a second series of the same library apart).
    pub dashed: bool,
    /// The points, by client count.
    pub points: Vec<Point>,
}

/// A chart: a throughput panel and a p99 panel side by side, sharing the lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Shown on top.
    pub title: String,
    /// What the throughput axis counts ("ops/s", "entries/s").
    pub throughput_unit: String,
    /// What the latency axis measures ("p99 µs", "p99 µs per call").
    pub latency_unit: String,
    /// The lines; a line with no point is left out.
    pub lines: Vec<Line>,
}

/// Writing a chart failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {detail}")]
pub struct ChartError {
    /// The file.
    pub path: PathBuf,
    /// What plotters or the file system said.
    pub detail: String,
}

const QUORATE_COLOUR: RGBColor = RGBColor(31, 119, 180);
const OPENRAFT_COLOUR: RGBColor = RGBColor(255, 127, 14);

fn colour(library: Library) -> RGBColor {
    match library {
        Library::Quorate => QUORATE_COLOUR,
        Library::Openraft => OPENRAFT_COLOUR,
    }
}

/// The points of `library` in `series` at each of `client_counts` that has a median.
fn points(samples: &[Sample], library: Library, series: Series, client_counts: &[usize]) -> Vec<Point> {
    client_counts
        .iter()
        .filter_map(|&clients| {
            summarize(samples, library, series, clients).map(|s| Point {
                clients,
                ops_per_sec: s.ops_per_sec,
                p99_us: s.p99_us,
            })
        })
        .collect()
}

/// The chart of a main table: single healthy writes under `table`'s settings.
pub fn table_chart(samples: &[Sample], client_counts: &[usize], libraries: &[Library], table: Table) -> Chart {
    let series = Series::healthy(table);
    Chart {
        title: format!("{}: single writes, medians", table.title()),
        throughput_unit: "ops/s".to_string(),
        latency_unit: "p99 µs".to_string(),
        lines: libraries
            .iter()
            .map(|&library| Line {
                library,
                label: library.to_string(),
                dashed: false,
                points: points(samples, library, series, client_counts),
            })
            .collect(),
    }
}

/// The chart of the batch measurements under `table`'s settings: one line per library and
/// batch size, the larger batches dashed.
pub fn batch_chart(
    samples: &[Sample],
    client_counts: &[usize],
    libraries: &[Library],
    batches: &[u64],
    table: Table,
) -> Chart {
    let mut lines = Vec::new();
    for &library in libraries {
        for (i, &batch) in batches.iter().enumerate() {
            lines.push(Line {
                library,
                label: format!("{library}, batch {batch}"),
                dashed: i % 2 == 1,
                points: points(samples, library, Series::batches(table, batch), client_counts),
            });
        }
    }
    Chart {
        title: format!("{}: batch writes (client_write_many), medians", table.title()),
        throughput_unit: "entries/s".to_string(),
        latency_unit: "p99 µs per call".to_string(),
        lines,
    }
}

/// A logarithmic axis range that holds `values` with some room, and is never empty.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { 1.0..10.0 } else { lo / 1.6..hi * 1.6 }
}

/// `v` in few characters: 1.2M, 350k, 80.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Draw `chart` into the SVG file `path`, 1200 × 480 pixels.
///
/// # Errors
/// If the file cannot be written.
pub fn write_svg(path: &Path, chart: &Chart) -> Result<(), ChartError> {
    let err = |detail: String| ChartError { path: path.to_path_buf(), detail };
    let lines: Vec<&Line> = chart.lines.iter().filter(|l| !l.points.is_empty()).collect();
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let x = log_range(all().map(|p| p.clients as f64));
    let max_ops = all().map(|p| p.ops_per_sec).fold(0.0, f64::max);
    let ops = 0.0..(max_ops * 1.1).max(1.0);
    let p99 = log_range(all().map(|p| p.p99_us));

    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = root.titled(&chart.title, ("sans-serif", 22)).map_err(|e| err(e.to_string()))?;
    let (left, right) = root.split_horizontally(600);
    let throughput = Panel { y_desc: chart.throughput_unit.as_str(), value: |p: &Point| p.ops_per_sec };
    throughput.draw(&left, x.clone().log_scale(), ops, &lines).map_err(err)?;
    let latency = Panel { y_desc: chart.latency_unit.as_str(), value: |p: &Point| p.p99_us };
    latency.draw(&right, x.log_scale(), p99.log_scale(), &lines).map_err(err)?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One panel: every line's `value` against the client count.
struct Panel<'a, F> {
    y_desc: &'a str,
    value: F,
}

impl<F: Fn(&Point) -> f64> Panel<'_, F> {
    fn draw<DB, X, Y>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        x: X,
        y: Y,
        lines: &[&Line],
    ) -> Result<(), String>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x, y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("clients")
            .y_desc(self.y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| short_number(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in lines {
            let style = ShapeStyle::from(&colour(line.library)).stroke_width(2);
            let coords: Vec<(f64, f64)> = line.points.iter().map(|p| (p.clients as f64, (self.value)(p))).collect();
            let label = line.label.as_str();
            if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(coords.clone(), 8, 5, style))
                    .map_err(|e| e.to_string())?
                    .label(label)
                    .legend(move |(x, y)| DashedPathElement::new([(x, y), (x + 24, y)], 8, 5, style));
            } else {
                chart
                    .draw_series(LineSeries::new(coords.clone(), style))
                    .map_err(|e| e.to_string())?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
            }
            chart.draw_series(coords.iter().map(|&c| Circle::new(c, 3, style.filled()))).map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{Chart, Line, Point, log_range, short_number, write_svg};
    use crate::report::Library;

    fn line(library: Library, dashed: bool) -> Line {
        Line {
            library,
            label: library.to_string(),
            dashed,
            points: vec![
                Point { clients: 1, ops_per_sec: 15_000.0, p99_us: 130.0 },
                Point { clients: 64, ops_per_sec: 400_000.0, p99_us: 300.0 },
                Point { clients: 4096, ops_per_sec: 1_100_000.0, p99_us: 7000.0 },
            ],
        }
    }

    #[test]
    fn a_chart_is_an_svg_with_both_libraries_in_its_legend() {
        let dir = std::env::temp_dir().join(format!("quorate-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.svg");
        let chart = Chart {
            title: "each tuned".to_string(),
            throughput_unit: "ops/s".to_string(),
            latency_unit: "p99 µs".to_string(),
            lines: vec![
                line(Library::Quorate, false),
                line(Library::Openraft, true),
                Line { points: vec![], ..line(Library::Openraft, false) },
            ],
        };
        write_svg(&path, &chart).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for text in ["each tuned", "quorate", "openraft", "clients", "p99 µs"] {
            assert!(svg.contains(text), "the chart shows {text}");
        }
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(short_number(1_340_000.0), "1.3M");
        assert_eq!(short_number(350_000.0), "350k");
        assert_eq!(short_number(2_000.0), "2000");
        assert_eq!(short_number(80.0), "80");
    }

    #[test]
    fn log_ranges_hold_their_values_and_are_never_empty() {
        let r = log_range([1.0, 4096.0].into_iter());
        assert!(r.start < 1.0 && r.end > 4096.0);
        let single = log_range([64.0].into_iter());
        assert!(single.start < 64.0 && single.end > 64.0);
        assert_eq!(log_range(std::iter::empty()), 1.0..10.0);
        assert_eq!(log_range([0.0, f64::NAN].into_iter()), 1.0..10.0);
    }
}
