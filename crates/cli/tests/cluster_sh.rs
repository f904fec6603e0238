//! A cluster (DESIGN D49) with real processes: `scripts/cluster.sh` starts
//! two AS+GMS and two CS nodes of the release-shaped binaries on PostgreSQL
//! and NATS, the README's flow runs on it through `duokey`, and a CS node
//! killed with SIGKILL while messages flow loses nothing and shows nothing
//! twice: the terminals fail over to the other node. Needs
//! `DUOKEY_TEST_POSTGRES_URL`, `DUOKEY_TEST_NATS_URL` (`.ci/run` sets both)
//! and `psql`; says so when it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use support::{User, bin, group_with};

/// A cluster started by `scripts/cluster.sh up` in a directory, database,
/// port range and subject prefix of its own; stopped (and its database
/// dropped) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    port: u16,
    client: PathBuf,
}

impl Cluster {
    fn up() -> Option<Cluster> {
        if std::env::var("DUOKEY_TEST_POSTGRES_URL").is_err()
            || std::env::var("DUOKEY_TEST_NATS_URL").is_err()
        {
            println!(
                "SKIPPED: DUOKEY_TEST_POSTGRES_URL and DUOKEY_TEST_NATS_URL are needed (bash .ci/run sets them)"
            );
            return None;
        }
        // scripts/cluster.sh creates the database with psql.
        let present = Command::new("psql").arg("--version").output().is_ok();
        let install = "install it (apt-get install postgresql-client)";
        if !duokey_testkit::tool_or_skip(present, "psql", "DUOKEY_TEST_POSTGRES_URL", install) {
            return None;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            db: format!("duokey_t{}_{nanos}", std::process::id()),
            port: free_port_range(),
            client: PathBuf::new(),
        };
        let out = c.script(&["up"]);
        assert!(out.status.success(), "cluster.sh up: {}", text(&out));
        let stdout = String::from_utf8(out.stdout).unwrap();
        c.client = PathBuf::from(stdout.lines().last().unwrap());
        assert!(c.client.is_file(), "{stdout}");
        Some(c)
    }

    fn script(&self, args: &[&str]) -> Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh");
        let postgres = std::env::var("DUOKEY_TEST_POSTGRES_URL").unwrap();
        // The server's URL without its database (cluster.sh adds its own).
        let server = postgres
            .rsplit_once('/')
            .map_or(postgres.as_str(), |(s, _)| s);
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("DUOKEY_CLUSTER_DIR", self.dir.path().join("cluster"))
            .env("DUOKEY_CLUSTER_DB", &self.db)
            .env("DUOKEY_CLUSTER_PORT", self.port.to_string())
            .env("DUOKEY_CLUSTER_SUBJECT", format!("duokey.test.{}", self.db))
            .env("DUOKEY_POSTGRES", server)
            .env(
                "DUOKEY_NATS_URL",
                std::env::var("DUOKEY_TEST_NATS_URL").unwrap(),
            )
            .env("DUOKEY_SERVER", bin("duokey-server"))
            .output()
            .unwrap()
    }

    /// Enrols `name` with the token `cluster.sh enroll` prints last.
    fn user(&self, name: &str) -> User {
        let out = self.script(&["enroll", name]);
        assert!(out.status.success(), "enroll: {}", text(&out));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let token = stdout.split_whitespace().last().unwrap().to_owned();
        let u = User {
            home: self.dir.path().join(name),
            passphrase: format!("{name}'s long passphrase"),
        };
        u.ok(&[
            "init",
            "--user",
            name,
            "--token",
            &token,
            "--config",
            self.client.to_str().unwrap(),
        ]);
        u
    }

    fn pid(&self, node: &str) -> String {
        let f = self.dir.path().join("cluster").join(node).join("pid");
        std::fs::read_to_string(f).unwrap().trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids: Vec<String> = ["gms1", "gms2", "cs1", "cs2"]
            .iter()
            .filter(|n| self.dir.path().join("cluster").join(n).join("pid").exists())
            .map(|n| self.pid(n))
            .collect();
        let down = self.script(&["down"]);
        if !std::thread::panicking() {
            assert!(down.status.success(), "cluster.sh down: {}", text(&down));
            for pid in pids {
                assert!(!running(&pid), "node {pid} still runs after down");
            }
        }
        let url = std::env::var("DUOKEY_TEST_POSTGRES_URL").unwrap();
        let _ = Command::new("psql")
            .arg(url)
            .args(["-qc", &format!("DROP DATABASE IF EXISTS {}", self.db)])
            .output();
    }
}

/// Whether process `pid` runs (a zombie waiting for init to reap it does
/// not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A base port whose four successors are free (the nodes' ports).
fn free_port_range() -> u16 {
    for _ in 0..100 {
        let base = 20_000
            + u16::try_from(std::process::id() % 20_000).unwrap()
            + u16::try_from(rand_below(20_000)).unwrap();
        let free = (1..=4).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no four free ports in a row");
}

fn rand_below(n: u32) -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % n
}

#[test]
fn the_quick_start_runs_on_a_cluster_and_killed_nodes_lose_nothing() {
    let Some(cluster) = Cluster::up() else {
        return;
    };
    // `up` again: already running, says so, prints the same path.
    let again = cluster.script(&["up"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains(cluster.client.to_str().unwrap()));

    let alice = cluster.user("alice");
    let bob = cluster.user("bob");
    let gid = group_with(&alice, "proj", &[&bob]);
    let follow = bob.follow(&gid);
    let mut sent = Vec::new();
    for i in 0..8 {
        let text = format!("message {i}");
        alice.ok(&["send", &gid, &text]);
        sent.push(text);
    }
    follow.wait_for(|l| l.contains("message 7"));

    // One CS node dies as a crash would; the other carries everything.
    let killed = Command::new("kill")
        .args(["-9", &cluster.pid("cs1")])
        .status()
        .unwrap();
    assert!(killed.success());
    for i in 8..20 {
        let text = format!("message {i}");
        // Posted at once, not queued: the terminal went to the other node.
        let out = alice.ok(&["--json", "send", &gid, &text]);
        assert!(
            out.contains("\"posted\""),
            "{text} was not sent at once: {out}"
        );
        sent.push(text);
    }
    follow.wait_for(|l| l.contains("message 19"));
    let status = cluster.script(&["status"]);
    assert!(!status.status.success(), "status must say a node is down");

    // Everything once, in order: live, and read again from scratch.
    let live: Vec<String> = follow
        .seen
        .borrow()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .collect();
    assert_eq!(live, sent, "bob's live view");
    assert_eq!(bob.texts(&gid), sent, "bob's history");
    assert_eq!(alice.texts(&gid), sent, "alice's history");

    // A GMS node dies too: membership changes, grants and the RN2 of the
    // new epoch come from the other; carol joins and reads what follows.
    let killed = Command::new("kill")
        .args(["-9", &cluster.pid("gms1")])
        .status()
        .unwrap();
    assert!(killed.success());
    let carol = cluster.user("carol");
    alice.ok(&["group", "invite", &gid, "carol"]);
    carol.ok(&["accept", &gid]);
    alice.ok(&["sync"]);
    let out = alice.ok(&["--json", "send", &gid, "welcome carol"]);
    assert!(out.contains("\"posted\""), "not sent at once: {out}");
    sent.push("welcome carol".to_owned());
    follow.wait_for(|l| l.contains("welcome carol"));
    assert_eq!(carol.texts(&gid), ["welcome carol"], "carol's history");
    assert_eq!(bob.texts(&gid), sent, "bob's history");

    // `up` again starts the two killed nodes only; all four then run.
    let restarted = cluster.script(&["up"]);
    assert!(restarted.status.success(), "{}", text(&restarted));
    assert!(
        text(&restarted).contains("starting gms1 cs1"),
        "{}",
        text(&restarted)
    );
    let status = cluster.script(&["status"]);
    assert!(status.status.success(), "{}", text(&status));
    alice.ok(&["send", &gid, "all four again"]);
    follow.wait_for(|l| l.contains("all four again"));
}

#[test]
fn the_demo_runs_on_a_cluster_and_leaves_nothing_behind() {
    let (Ok(postgres), Ok(nats)) = (
        std::env::var("DUOKEY_TEST_POSTGRES_URL"),
        std::env::var("DUOKEY_TEST_NATS_URL"),
    ) else {
        println!(
            "SKIPPED: DUOKEY_TEST_POSTGRES_URL and DUOKEY_TEST_NATS_URL are needed (bash .ci/run sets them)"
        );
        return;
    };
    // The single-node walkthrough, plus a CS node and a GMS node stopping.
    let lines = support::demo(&["--cluster", "--postgres", &postgres, "--nats", &nats], 16);
    let start = lines[0]["step"].as_str().unwrap();
    assert!(start.contains("2 AS+GMS and 2 CS nodes"), "{start}");
    let schema = start
        .split("schema ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap();
    if Command::new("psql").arg("--version").output().is_ok() {
        let out = Command::new("psql")
            .arg(&postgres)
            .args(["-tAc", &format!("SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'")])
            .output()
            .unwrap();
        assert_eq!(
            text(&out).trim(),
            "0",
            "the demo's schema {schema} is left behind"
        );
    }
}
