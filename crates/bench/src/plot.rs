//! `--plot DIR`: the run's rows as SVG charts for docs/PERFORMANCE.md
//! ("In pictures"), drawn with plotters' SVG backend.
//!
//! * `rekey.svg`: work to re-key every member against the group size, Duokey
//!   beside OpenMLS, both axes logarithmic.
//! * `relay.svg`: post-to-delivery latency percentiles against the load,
//!   Duokey beside NATS core.
//! * `cli.svg`: command-line latency with and without an unlocked session.
//!
//! A chart whose rows are not in the run is skipped. `--from FILE` draws
//! the rows of an earlier `--json` run instead of measuring.

use crate::{BenchResult, Row};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The size of every chart, in pixels.
const SIZE: (u32, u32) = (860, 520);

/// One line of a chart: its legend, colour and points.
struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// Draws every chart the rows allow into `dir`; the files written.
pub fn all(rows: &[Row], dir: &Path) -> BenchResult<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let charts = [
        (
            "rekey.svg",
            Axes {
                title: "Re-keying every member after a removal",
                x: "members in the group (N)",
                y: "milliseconds (CPU, or wall time where named)",
            },
            rekey_series(rows),
        ),
        (
            "relay.svg",
            Axes {
                title: "Post-to-delivery latency under a fixed load",
                x: "deliveries per second",
                y: "milliseconds",
            },
            relay_series(rows),
        ),
    ];
    for (file, axes, series) in charts {
        if series.iter().any(|s| !s.points.is_empty()) {
            let path = dir.join(file);
            lines(&path, &axes, &series)?;
            written.push(path);
        }
    }
    let cli = cli_bars(rows);
    if !cli.is_empty() {
        let path = dir.join("cli.svg");
        bars(&path, &cli)?;
        written.push(path);
    }
    Ok(written)
}

/// The number after `key=` in a row's params (`N=1000`, `load=10000/s`).
fn param(params: &str, key: &str) -> Option<f64> {
    let value = params
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    let digits: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

/// Points (x from `key`, y the value) of the rows of `metric` that `keep`.
fn points(rows: &[Row], metric: &str, key: &str, keep: impl Fn(&str) -> bool) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.metric == metric && keep(&r.params) && r.value > 0.0)
        .filter_map(|r| Some((param(&r.params, key)?, r.value)))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn rekey_series(rows: &[Row]) -> Vec<Series> {
    // Members persisting their state as real terminals do; not the
    // key-fetch variant or the crypto floor.
    let persisted = |p: &str| !p.contains("memory") && !p.contains("keys=") && !p.contains("floor");
    let both = move |p: &str| persisted(p) && p.contains("rn1=on");
    let rn2 = move |p: &str| persisted(p) && !p.contains("rn1=on");
    // Above 2,000 members (or with --members-in-memory) members keep their
    // state in memory, as OpenMLS's provider does: drawn as their own line.
    let in_memory = |p: &str| p.contains("members=memory") && p.contains("rn1=on");
    let rekey: Vec<Row> = rows
        .iter()
        .filter(|r| r.scenario == "rekey")
        .cloned()
        .collect();
    vec![
        Series {
            label: "OpenMLS: commit processed by every member",
            color: RGBColor(200, 60, 40),
            points: points(&rekey, "openmls_rekey_all_members_ms", "N", |_| true),
        },
        Series {
            label: "Duokey CPU: new server and member key",
            color: RGBColor(20, 90, 180),
            points: points(&rekey, "total_cpu_ms", "N", both),
        },
        Series {
            label: "Duokey CPU: new server key only",
            color: RGBColor(90, 160, 230),
            points: points(&rekey, "total_cpu_ms", "N", rn2),
        },
        Series {
            label: "Duokey CPU: new server and member key, members in memory",
            color: RGBColor(120, 60, 170),
            points: points(&rekey, "total_cpu_ms", "N", in_memory),
        },
        Series {
            label: "Duokey wall time: new server and member key",
            color: RGBColor(40, 140, 80),
            points: points(&rekey, "rekey_all_members_ms", "N", both),
        },
    ]
}

fn relay_series(rows: &[Row]) -> Vec<Series> {
    let relay: Vec<Row> = rows
        .iter()
        .filter(|r| r.scenario == "relay")
        .cloned()
        .collect();
    let of = |metric: &str| points(&relay, metric, "load", |_| true);
    vec![
        Series {
            label: "Duokey p99 (TLS, signatures, SQLite)",
            color: RGBColor(20, 90, 180),
            points: of("duokey_latency_p99_ms"),
        },
        Series {
            label: "Duokey p50",
            color: RGBColor(90, 160, 230),
            points: of("duokey_latency_p50_ms"),
        },
        Series {
            label: "NATS core p99 (no TLS, no persistence)",
            color: RGBColor(200, 60, 40),
            points: of("nats_latency_p99_ms"),
        },
        Series {
            label: "NATS core p50",
            color: RGBColor(240, 140, 110),
            points: of("nats_latency_p50_ms"),
        },
    ]
}

/// (what was run, p50, p99) of the `cli` rows, in the order measured.
fn cli_bars(rows: &[Row]) -> Vec<(String, f64, f64)> {
    let mut bars: Vec<(String, f64, f64)> = Vec::new();
    for r in rows.iter().filter(|r| r.scenario == "cli") {
        let what = r
            .params
            .split(", n=")
            .next()
            .unwrap_or(&r.params)
            .to_owned();
        let at = match bars.iter().position(|b| b.0 == what) {
            Some(i) => i,
            None => {
                bars.push((what, 0.0, 0.0));
                bars.len() - 1
            }
        };
        match r.metric.as_str() {
            "latency p50" => bars[at].1 = r.value,
            "latency p99" => bars[at].2 = r.value,
            _ => {}
        }
    }
    bars
}

/// Titles of a line chart.
struct Axes {
    title: &'static str,
    x: &'static str,
    y: &'static str,
}

/// The smallest and largest value, widened for a logarithmic axis.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    match lo <= hi {
        true => lo / 1.5..hi * 1.5,
        false => 1.0..10.0,
    }
}

fn svg(path: &Path) -> DrawingArea<SVGBackend<'_>, Shift> {
    SVGBackend::new(path, SIZE).into_drawing_area()
}

fn failed(path: &Path) -> impl Fn(String) -> String + '_ {
    move |e| format!("drawing {}: {e}", path.display())
}

/// A chart of `series` on logarithmic axes.
fn lines(path: &Path, axes: &Axes, series: &[Series]) -> BenchResult<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let x = log_range(all().map(|p| p.0));
    let y = log_range(all().map(|p| p.1));
    let root = svg(path);
    let err = failed(path);
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.log_scale(), y.log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| err(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// Horizontal bars: p50 solid over a light p99, one row per command,
/// each named with its figures at its right.
fn bars(path: &Path, bars: &[(String, f64, f64)]) -> BenchResult<()> {
    let rows = bars.len() as f64;
    let longest = bars.iter().map(|b| b.2.max(b.1)).fold(1.0, f64::max);
    let root = svg(path);
    let err = failed(path);
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Command-line latency, with a real server",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(8)
        .build_cartesian_2d(0.0..longest * 2.2, 0.0..rows)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("milliseconds (dark: median; light: 99th percentile)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let (p50, p99) = (RGBColor(20, 90, 180), RGBColor(170, 200, 235));
    let bar = |at: f64, v: f64, shade: RGBColor| {
        Rectangle::new([(0.0, at + 0.2), (v, at + 0.8)], shade.filled())
    };
    for (i, (name, median, tail)) in bars.iter().enumerate() {
        // The first measured at the top.
        let at = rows - 1.0 - i as f64;
        let said = format!("{name}: {median:.0} ms, p99 {tail:.0} ms");
        let label = Text::new(
            said,
            (tail.max(*median) + longest * 0.03, at + 0.5),
            ("sans-serif", 15),
        );
        chart
            .draw_series([bar(at, *tail, p99), bar(at, *median, p50)])
            .map_err(|e| err(e.to_string()))?;
        chart.draw_series([label]).map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// Axis numbers people read: 10, 100, 1k, 10k, 0.5.
fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v if v >= 1.0 => format!("{v:.0}"),
        v => format!("{v:.2}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(scenario: &str, params: &str, metric: &str, value: f64) -> Row {
        Row::new(scenario, params, metric, value, "ms")
    }

    #[test]
    fn each_chart_is_drawn_from_its_rows_and_missing_ones_are_skipped() {
        let mut rows = Vec::new();
        for n in [10.0, 100.0, 1000.0] {
            let p = format!("N={n} rn1=on members=sqlite runs=1");
            rows.push(row("rekey", &p, "total_cpu_ms", n * 0.5));
            rows.push(row("rekey", &p, "rekey_all_members_ms", n * 0.3));
            rows.push(row(
                "rekey",
                &format!("N={n} members=sqlite runs=1"),
                "total_cpu_ms",
                n * 0.2,
            ));
            rows.push(row(
                "rekey",
                &format!("N={n} members=memory runs=1"),
                "total_cpu_ms",
                1e9,
            ));
            let mls = format!("N={n} tree=steady receivers=8");
            rows.push(row("rekey", &mls, "openmls_rekey_all_members_ms", n * n));
        }
        rows.push(row(
            "cli",
            "duokey send, passphrase, n=3",
            "latency p50",
            213.0,
        ));
        rows.push(row(
            "cli",
            "duokey send, passphrase, n=3",
            "latency p99",
            224.0,
        ));
        rows.push(row(
            "cli",
            "duokey send, unlocked session, n=10",
            "latency p50",
            24.0,
        ));
        let dir = tempfile::tempdir().unwrap();
        let written = all(&rows, dir.path()).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(
            names,
            ["rekey.svg", "cli.svg"],
            "no relay rows: no relay chart"
        );
        let rekey = std::fs::read_to_string(dir.path().join("rekey.svg")).unwrap();
        assert!(
            rekey.starts_with("<svg") && rekey.contains("OpenMLS"),
            "{rekey}"
        );
        assert!(rekey.contains("new server key only"));
        let cli = std::fs::read_to_string(dir.path().join("cli.svg")).unwrap();
        assert!(cli.contains("duokey send, unlocked session"), "{cli}");
    }

    #[test]
    fn series_take_their_x_from_the_params_and_skip_other_variants() {
        let rows = [
            row(
                "rekey",
                "N=1000 rn1=on members=sqlite runs=1",
                "total_cpu_ms",
                5.0,
            ),
            row(
                "rekey",
                "N=10 rn1=on members=sqlite runs=1",
                "total_cpu_ms",
                1.0,
            ),
            row(
                "rekey",
                "N=10 rn1=on keys=fetched members=sqlite runs=1",
                "total_cpu_ms",
                9.0,
            ),
            row(
                "rekey",
                "N=10 rn1=on members=memory runs=1",
                "total_cpu_ms",
                9.0,
            ),
        ];
        let s = rekey_series(&rows);
        assert_eq!(s[1].points, [(10.0, 1.0), (1000.0, 5.0)]);
        assert!(s[2].points.is_empty());
        assert_eq!(
            s[3].points,
            [(10.0, 9.0)],
            "members in memory: a line of their own"
        );
        assert_eq!(param("G=5 load=10000/s", "load"), Some(10000.0));
        assert_eq!(short(10_000.0), "10k");
    }
}
