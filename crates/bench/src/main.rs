//! `duokey-bench`: starts real Duokey servers on 127.0.0.1 and
//! measures what docs/PERFORMANCE.md reports, beside the anchors measured in
//! the same run: the bare primitives, OpenMLS and NATS.
//!
//! ```text
//! duokey-bench [--quick] [--json] [--plot DIR] [SCENARIO...]
//! duokey-bench --from ROWS.json --plot DIR
//! ```
//! Scenarios: crypto, rekey, relay, cluster, rotation, memory, catchup, cli (default: all).
//! `--quick` runs every scenario at small sizes (a smoke test, well under a
//! minute); `--json` prints one JSON array of rows
//! `{"scenario","params","metric","value","unit"}`; `--plot DIR` draws the
//! rows as SVG charts (`plot`), from this run or from `--from` a saved one.
#![forbid(unsafe_code)]

mod capacity;
mod catchup;
mod cli;
mod crypto;
mod mls;
mod nats;
mod net;
mod plot;
mod profile;
mod rekey;
mod relay;

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;

/// Measures Duokey on this machine beside OpenMLS and NATS.
#[derive(Parser, Debug)]
#[command(name = "duokey-bench", version, about)]
struct Args {
    /// Small sizes: every scenario in well under a minute (CI smoke test).
    #[arg(long)]
    quick: bool,
    /// Print one JSON array of rows instead of a table.
    #[arg(long)]
    json: bool,
    /// Group sizes of the rekey scenario (default 10,100,1000,10000; quick 10,100).
    #[arg(long, value_delimiter = ',')]
    rekey_sizes: Vec<usize>,
    /// Runs of each rekey measurement; the tables show the median and the range.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Rekey members keep their state in memory instead of each writing a
    /// terminal profile (SQLite) as a real terminal does: shows what
    /// persistence costs. Groups above 2,000 members always do.
    #[arg(long)]
    members_in_memory: bool,
    /// Draw the rows as SVG charts in DIR (rekey.svg, relay.svg, cli.svg).
    #[arg(long, value_name = "DIR")]
    plot: Option<std::path::PathBuf>,
    /// Draw the rows of an earlier `--json` run instead of measuring (with --plot).
    #[arg(long, value_name = "ROWS.json", requires = "plot")]
    from: Option<std::path::PathBuf>,
    /// Scenarios to run: crypto, rekey, relay, cluster, rotation, memory, catchup, cli (default: all).
    scenarios: Vec<String>,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// crypto, rekey, relay…
    pub scenario: String,
    /// Sizes and settings, e.g. `N=1000`.
    pub params: String,
    /// What was measured.
    pub metric: String,
    /// The figure.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

impl Row {
    /// A row.
    pub fn new(
        scenario: &str,
        params: impl Into<String>,
        metric: &str,
        value: f64,
        unit: &str,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            params: params.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// Errors of a scenario, as text for the operator.
pub type BenchResult<T> = Result<T, String>;

const ALL: [&str; 8] = [
    "crypto", "rekey", "relay", "cluster", "rotation", "memory", "catchup", "cli",
];

async fn run(name: &str, args: &Args) -> BenchResult<Vec<Row>> {
    let quick = args.quick;
    match name {
        "crypto" => Ok(crypto::run(quick)),
        "rekey" => {
            rekey::run(
                quick,
                &args.rekey_sizes,
                args.repeat,
                args.members_in_memory,
            )
            .await
        }
        "relay" => relay::run(quick).await,
        "cluster" => relay::cluster(quick).await,
        "rotation" => capacity::rotation(quick).await,
        "memory" => capacity::memory(quick).await,
        "catchup" => catchup::run(quick).await,
        "cli" => cli::run(quick).await,
        other => Err(format!(
            "unknown scenario {other:?} (use {})",
            ALL.join(", ")
        )),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<10} {:<50} {:<34} {:>14} unit",
        "scenario", "params", "metric", "value"
    );
    for r in rows {
        println!(
            "{:<10} {:<50} {:<34} {:>14} {}",
            r.scenario,
            r.params,
            r.metric,
            format_value(r.value),
            r.unit
        );
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Blocking-pool threads (OpenMLS runs there) stay alive for the whole run,
    // so per-thread CPU sums of this process never lose a thread's time.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Some(from), Some(dir)) = (&args.from, &args.plot) {
        return draw(&saved_rows(from), dir);
    }
    let names: Vec<String> = if args.scenarios.is_empty() {
        ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for name in &names {
        eprintln!("== {name}{}", if args.quick { " (quick)" } else { "" });
        match runtime.block_on(run(name, &args)) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("error in {name}: {e}");
                failed = true;
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print_table(&rows);
    }
    if let Some(dir) = &args.plot {
        failed |= draw(&Ok(rows), dir) != ExitCode::SUCCESS;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The rows a `--json` run wrote.
fn saved_rows(path: &std::path::Path) -> BenchResult<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `--plot DIR`: the charts, named on standard error.
fn draw(rows: &BenchResult<Vec<Row>>, dir: &std::path::Path) -> ExitCode {
    match rows.as_ref().map(|r| plot::all(r, dir)) {
        Ok(Ok(files)) => {
            for f in files {
                eprintln!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
