//! Scenario `catchup`: a real terminal (the `duokey`
//! library with its profile) stays offline while the group goes through 10
//! epochs and 10,000 messages; measured: its sync until every message is
//! verified, decrypted and stored in its profile.

use crate::net::ServerProc;
use crate::{BenchResult, Row};
use duokey_crypto::{Rights, UserId};
use duokey_terminal::{ClientConfig, GroupPolicy, Terminal};
use std::time::Instant;

/// A terminal enrolled for `user` in `home/user`, its secrets sealed under
/// `passphrase` (or a stored key when `None`).
pub(crate) async fn terminal(
    srv: &ServerProc,
    home: &std::path::Path,
    user: &str,
    passphrase: Option<&[u8]>,
) -> BenchResult<Terminal> {
    let id = UserId::new(user).map_err(|e| e.to_string())?;
    let db = duokey_storage::AsStore::open_sqlite(&srv.dir.path().join("as.db"))
        .await
        .map_err(|e| e.to_string())?;
    let token = duokey_accounts::issue_token(&db, &id)
        .await
        .map_err(|e| e.to_string())?;
    db.close().await;
    let cfg = ClientConfig {
        as_url: duokey_terminal::config::Urls::one(srv.gms_url.clone()),
        gms_url: duokey_terminal::config::Urls::one(srv.gms_url.clone()),
        cs_url: duokey_terminal::config::Urls::one(srv.cs_url.clone()),
        ca_cert: std::fs::read_to_string(srv.dir.path().join("ca/ca.pem"))
            .map_err(|e| e.to_string())?,
    };
    Terminal::init(&home.join(user), &id, &token, &cfg, passphrase)
        .await
        .map_err(|e| e.to_string())
}

/// Runs the scenario.
pub async fn run(quick: bool) -> BenchResult<Vec<Row>> {
    let (epochs, per_epoch) = if quick { (2, 100) } else { (10, 1_000) };
    let srv = ServerProc::start(|_| {})?;
    let homes = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut alice = terminal(&srv, homes.path(), "alice", None).await?;
    let mut bob = terminal(&srv, homes.path(), "bob", None).await?;
    let err = |e: duokey_terminal::Error| e.to_string();
    let g = alice
        .create_group("catchup", GroupPolicy::default())
        .await
        .map_err(err)?;
    let gid = g.group_id;
    alice
        .invite(&gid, bob.user(), Rights::NONE)
        .await
        .map_err(err)?;
    bob.sync().await.map_err(err)?;
    bob.accept(&gid.to_hex()).await.map_err(err)?;
    alice.sync().await.map_err(err)?;
    bob.sync().await.map_err(err)?;
    bob.sync_messages(&gid).await.map_err(err)?;
    for e in 0..epochs {
        alice.rotate(&gid, false).await.map_err(err)?;
        for i in 0..per_epoch {
            alice
                .send(&gid, &format!("epoch {e} message {i}"))
                .await
                .map_err(err)?;
        }
    }
    let total = epochs * per_epoch;
    let start = Instant::now();
    bob.sync().await.map_err(err)?;
    let got = bob.sync_messages(&gid).await.map_err(err)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if got.len() != total {
        return Err(format!("bob caught up {} of {total} messages", got.len()));
    }
    let p = format!("epochs={epochs} messages={total}");
    Ok(vec![
        Row::new("catchup", &p, "catchup_ms", ms, "ms"),
        Row::new(
            "catchup",
            &p,
            "catchup_messages_per_s",
            total as f64 / (ms / 1e3),
            "1/s",
        ),
    ])
}
