//! The comparison as an SVG: writes/s and p99 latency against the connection count, raft-kv
//! and etcd, one line per system and client (wrk's dashed).
//!
//! The same approach as the cluster benchmark's charts (`benches/src/chart.rs`): plotters'
//! SVG backend without font support, so the labels are `<text>` and no system font is needed.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::report::{Sample, summarize};
use super::{Client, System};

/// One line: a system's medians under one client.
struct Line {
    label: String,
    colour: RGBColor,
    dashed: bool,
    /// (connections, writes/s, p99 ms if any write succeeded)
    points: Vec<(f64, f64, Option<f64>)>,
}

fn lines(samples: &[Sample], connection_counts: &[usize]) -> Vec<Line> {
    let mut lines = Vec::new();
    for client in [Client::Bench, Client::Wrk] {
        for system in [System::RaftKv, System::Etcd] {
            let points: Vec<(f64, f64, Option<f64>)> = connection_counts
                .iter()
                .filter_map(|&c| {
                    summarize(samples, system, client, c)
                        .map(|s| (c as f64, s.ops_per_sec, s.p99_us.map(|us| us / 1000.0)))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let colour = match system {
                System::RaftKv => RGBColor(31, 119, 180),
                System::Etcd => RGBColor(255, 127, 14),
            };
            let label = format!("{system} ({client})");
            lines.push(Line { label, colour, dashed: client == Client::Wrk, points });
        }
    }
    lines
}

/// A log axis range holding `values`, never empty.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { 1.0..10.0 } else { lo / 1.6..hi * 1.6 }
}

/// Draw the medians of `samples` into the SVG `path`, 1200 × 480, titled `title`.
///
/// # Errors
/// If the file cannot be written.
pub fn write_svg(path: &Path, title: &str, samples: &[Sample], connection_counts: &[usize]) -> Result<(), String> {
    let lines = lines(samples, connection_counts);
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let x = log_range(all().map(|p| p.0));
    let ops = 0.0..(all().map(|p| p.1).fold(0.0, f64::max) * 1.15).max(1.0);
    let p99 = log_range(all().filter_map(|p| p.2));
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    panel(&left, x.clone().log_scale(), ops, "writes/s", &lines, |p| Some(p.1))?;
    panel(&right, x.log_scale(), p99.log_scale(), "p99 ms", &lines, |p| p.2)?;
    root.present().map_err(|e| format!("{}: {e}", path.display()))
}

fn panel<DB, X, Y>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: X,
    y: Y,
    y_desc: &str,
    lines: &[Line],
    value: impl Fn(&(f64, f64, Option<f64>)) -> Option<f64>,
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
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") })
        .draw()
        .map_err(|e| e.to_string())?;
    for line in lines {
        let style = ShapeStyle::from(&line.colour).stroke_width(2);
        let coords: Vec<(f64, f64)> = line.points.iter().filter_map(|p| Some((p.0, value(p)?))).collect();
        if line.dashed {
            chart
                .draw_series(DashedLineSeries::new(coords.clone(), 8, 5, style))
                .map_err(|e| e.to_string())?
                .label(line.label.as_str())
                .legend(move |(x, y)| DashedPathElement::new([(x, y), (x + 24, y)], 8, 5, style));
        } else {
            chart
                .draw_series(LineSeries::new(coords.clone(), style))
                .map_err(|e| e.to_string())?
                .label(line.label.as_str())
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

#[cfg(test)]
mod tests {
    use super::write_svg;
    use crate::compare::probe::Leaders;
    use crate::compare::report::Sample;
    use crate::compare::{Client, System};

    fn sample(system: System, client: Client, connections: usize, ops: f64) -> Sample {
        Sample {
            round: 1,
            system,
            client,
            connections,
            ops_per_sec: ops,
            errors: 0,
            p50_us: Some(900.0),
            p99_us: Some(2500.0 * connections as f64),
            server_cpu_cores: None,
            client_cpu_cores: None,
            idle_system_cpu_cores: None,
            machine_busy: None,
            leader_fsyncs_per_sec: None,
            leader_fsync_mean_us: None,
            leaders_before: Leaders::default(),
            leaders_after: Leaders::default(),
            leader_changed: false,
        }
    }

    #[test]
    fn the_chart_names_both_systems_and_both_clients() {
        let mut samples = Vec::new();
        for (c, ops) in [(1, 1000.0), (16, 6000.0), (256, 13000.0)] {
            samples.push(sample(System::RaftKv, Client::Bench, c, ops));
            samples.push(sample(System::Etcd, Client::Bench, c, ops / 3.0));
            samples.push(sample(System::Etcd, Client::Wrk, c, ops / 2.0));
        }
        let dir = std::env::temp_dir().join(format!("raft-kv-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("chart.svg");
        write_svg(&path, "raft-kv vs etcd", &samples, &[1, 16, 64, 256]).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(svg.starts_with("<svg"));
        for text in ["raft-kv vs etcd", "raft-kv (raft-kv bench)", "etcd (raft-kv bench)", "etcd (wrk)", "p99 ms"] {
            assert!(svg.contains(text), "the chart shows {text}");
        }
        assert!(!svg.contains("raft-kv (wrk)"), "a line without samples is left out");
    }
}
