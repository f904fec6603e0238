//! DESIGN D49: a cluster survives its PostgreSQL restarting under it —
//! nothing acknowledged is lost, nothing written meanwhile is lost or shown
//! twice. Restarts this machine's PostgreSQL (`pg_ctlcluster … restart`),
//! so it is the only test of its binary; needs `DUOKEY_TEST_POSTGRES_URL`,
//! `DUOKEY_TEST_NATS_URL` and `pg_ctlcluster` (says so when it skips).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_terminal::SendOutcome;
use duokey_testkit::{LocalCluster, texts};
use std::process::Command;
use std::time::Duration;

/// Restarts this machine's PostgreSQL; `false` if it cannot be done here.
fn restart_postgres() -> bool {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let Some(version) = versions.flatten().next() else {
        return false;
    };
    let version = version.file_name().to_string_lossy().into_owned();
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_postgresql_restart_loses_nothing_and_shows_nothing_twice() {
    let present = Command::new("pg_ctlcluster").arg("--help").output().is_ok();
    let install =
        "install PostgreSQL (apt-get install postgresql) and start it as `bash .ci/run` does";
    if !duokey_testkit::tool_or_skip(
        present,
        "pg_ctlcluster",
        "DUOKEY_TEST_POSTGRES_URL",
        install,
    ) {
        return;
    }
    let Some(c) = LocalCluster::start(1, 2).await else {
        return;
    };
    let mut alice = c.enroll("alice").await;
    let mut bob = c.enroll("bob").await;
    let gid = duokey_testkit::group_of_two(&mut alice, &mut bob, "proj").await;
    c.cs_caught_up().await;
    alice.send(&gid, "before the restart").await.unwrap();

    assert!(restart_postgres(), "pg_ctlcluster restart failed");
    // Whatever the servers answer while their connections are renewed,
    // nothing is lost: a message is posted or kept for the next command.
    let mut sent = vec!["before the restart".to_owned()];
    for i in 0..3 {
        let text = format!("after the restart {i}");
        match alice.send(&gid, &text).await {
            Ok(SendOutcome::Posted(_) | SendOutcome::Queued(_)) => sent.push(text),
            Err(e) => panic!("{text}: {e}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while alice.queued().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = alice.flush_outbox().await;
    }
    bob.sync().await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, sent);
}
