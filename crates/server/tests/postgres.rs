//! The servers on PostgreSQL (SPEC §6), not only the storage layer: AS, GMS
//! and CS started on a PostgreSQL database, reached over mutual TLS, through
//! a membership change, posts, a live push, a removal and a restart. Needs
//! `DUOKEY_TEST_POSTGRES_URL` (`.ci/run` sets it) and says so when it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_proto::*;
use duokey_testkit::LocalNet;
use tonic::Code;

/// Servers whose three roles keep their state in PostgreSQL, or `None` (and
/// a clear line) when no PostgreSQL was given.
async fn on_postgres() -> Option<(LocalNet, String)> {
    let db = duokey_testkit::postgres_schema().await?;
    let net = LocalNet::start_with(|c| {
        c.database.as_url = Some(db.clone());
        c.database.gms = Some(db.clone());
        c.database.cs = Some(db.clone());
    })
    .await;
    Some((net, db))
}

#[tokio::test]
async fn the_servers_run_on_postgresql_through_changes_posts_removal_and_restart() {
    let Some((net, db)) = on_postgres().await else {
        return;
    };
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let g = alice.create_group("proj").await;
    let mut watch = bob.gms.watch(WatchRequest {}).await.unwrap().into_inner();
    let g = alice.add(&g, "bob", 0).await.unwrap();
    let pushed = duokey_testkit::next_within(&mut watch, "bob's join grant")
        .await
        .unwrap();
    assert!(matches!(pushed.event, Some(watch_event::Event::Grant(ref x)) if x.rn2_version == 2));
    net.cs_caught_up().await;
    let gid = g.group_id.clone();
    assert_eq!(alice.post(&gid, "hello").await.unwrap(), 1);
    assert_eq!(bob.post(&gid, "hi").await.unwrap(), 2);
    assert_eq!(bob.fetch(&gid, 0).await.unwrap().len(), 2);

    // The state is in PostgreSQL, not in the process: the servers stop and
    // start again on the same database, and everything is still there.
    let net = net.restart().await;
    let mut alice = net.reconnect_user(alice);
    let mut bob = net.reconnect_user(bob);
    assert_eq!(bob.fetch(&gid, 0).await.unwrap().len(), 2);
    let g = alice.remove(&g, "bob").await.unwrap();
    assert_eq!(g.rn2_version, 3);
    net.cs_caught_up().await;
    assert_eq!(alice.post(&gid, "after bob").await.unwrap(), 3);
    assert_eq!(
        bob.fetch(&gid, 0).await.unwrap().len(),
        2,
        "a removed member reads only up to its removal on PostgreSQL too (D32)"
    );
    assert_eq!(
        bob.post(&gid, "still here?").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Evidence that PostgreSQL held it all: the grants are in its schema,
    // and no SQLite database was created beside the certificates.
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (grants,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM gms_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(grants, 3, "every grant is in PostgreSQL");
    for role in ["as", "gms", "cs"] {
        assert!(
            !net.server_dir().join(format!("{role}.db")).exists(),
            "{role}.db"
        );
    }
}
