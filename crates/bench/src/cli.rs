//! Scenario `cli`: the latency a person or a script sees, running the real
//! `duokey` binary (a new process each time: open the profile, sync, act)
//! against a real server process, with the passphrase (Argon2id at every
//! command) and with an unlocked session (`duokey unlock`, D44). Goal
//! (docs/PERFORMANCE.md §6): unlocked, median ≤ 60 ms and p99 ≤ 150 ms.

use crate::net::ServerProc;
use crate::relay::quantile_ms;
use crate::{BenchResult, Row};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const PASSPHRASE: &str = "bench passphrase";

fn duokey_binary() -> BenchResult<PathBuf> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name("duokey");
    match bin.exists() {
        true => Ok(bin),
        false => Err(format!(
            "{} is missing: build it first (cargo build --release --bin duokey)",
            bin.display()
        )),
    }
}

/// Runs `duokey --home HOME ARGS` to completion; its wall time in µs.
fn timed(bin: &Path, home: &Path, args: &[&str], passphrase: Option<&str>) -> BenchResult<u32> {
    let mut cmd = Command::new(bin);
    cmd.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("DUOKEY_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = passphrase {
        cmd.env("DUOKEY_PASSPHRASE", p);
    }
    let start = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
    match out.status.success() {
        true => Ok(us),
        false => Err(format!(
            "duokey {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// `n` runs of `send` then `n` of `read`; rows of their p50 and p99.
fn measure(
    bin: &Path,
    home: &Path,
    n: usize,
    passphrase: Option<&str>,
    how: &str,
) -> BenchResult<Vec<Row>> {
    let mut rows = Vec::new();
    for (command, args) in [
        ("send", &["send", "bench", "a message of a few words"][..]),
        ("read", &["read", "bench"][..]),
    ] {
        let mut lat = (0..n)
            .map(|_| timed(bin, home, args, passphrase))
            .collect::<BenchResult<Vec<u32>>>()?;
        lat.sort_unstable();
        let params = format!("duokey {command}, {how}, n={n}");
        for (metric, q) in [("latency p50", 0.5), ("latency p99", 0.99)] {
            rows.push(Row::new("cli", &params, metric, quantile_ms(&lat, q), "ms"));
        }
    }
    Ok(rows)
}

/// Runs the scenario.
pub async fn run(quick: bool) -> BenchResult<Vec<Row>> {
    let (n_locked, n_unlocked) = if quick { (3, 10) } else { (50, 500) };
    let bin = duokey_binary()?;
    let srv = ServerProc::start(|_| {})?;
    let homes = tempfile::tempdir().map_err(|e| e.to_string())?;
    let home = homes.path().join("alice");
    let mut alice =
        crate::catchup::terminal(&srv, homes.path(), "alice", Some(PASSPHRASE.as_bytes())).await?;
    alice
        .create_group("bench", duokey_terminal::GroupPolicy::default())
        .await
        .map_err(|e| e.to_string())?;
    drop(alice);
    let mut rows = measure(&bin, &home, n_locked, Some(PASSPHRASE), "passphrase")?;
    timed(&bin, &home, &["unlock", "--for", "1h"], Some(PASSPHRASE))?;
    let unlocked = measure(&bin, &home, n_unlocked, None, "unlocked session");
    timed(&bin, &home, &["lock"], None)?;
    rows.extend(unlocked?);
    Ok(rows)
}
