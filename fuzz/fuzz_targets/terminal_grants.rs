//! Any grant, as a dishonest or broken GMS could push it on `Watch`
//! (SPEC §4.5, §7.6, D27), given to a real terminal (the `duokey` library
//! with its profile, connected to real servers in this process).
//!
//! The first input byte chooses whether the grant is aimed at the
//! terminal's group (its id is set to the group's); the rest is the grant.
//! Oracles: no panic (the panic hook aborts); the group's epoch never moves
//! back (no rollback); no R1 leaves the terminal (its user is the group's
//! only signed member, SPEC §7 P9, while mallory has a delivery key a
//! fooled terminal could seal to); the terminal still lists its groups and
//! members.
#![no_main]

#[path = "common.rs"]
mod common;

use duokey_crypto::UserId;
use duokey_proto::Grant;
use duokey_server::{Node, RunningNode, dev};
use duokey_terminal::{ClientConfig, GroupPolicy, Terminal};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::{Mutex, OnceLock};

struct Harness {
    rt: tokio::runtime::Runtime,
    terminal: Mutex<Terminal>,
    group: [u8; 16],
    cs_db: std::path::PathBuf,
    _node: RunningNode,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = common::runtime_aborting_on_panic();
        let dir = tempfile::tempdir().expect("temp dir");
        let srv = dir.path().join("srv");
        let cfg = dev::prepare(&srv, "127.0.0.1:0", "127.0.0.1:0").expect("prepare");
        let (node, terminal, group) = rt.block_on(async {
            let node = Node::start(&cfg).await.expect("servers start");
            let client = dev::write_client_file(
                &srv,
                node.gms_addr.expect("gms"),
                node.cs_addr.expect("cs"),
            )
            .expect("client.toml");
            let client = ClientConfig::load(&client).expect("client config");
            let db = duokey_storage::Db::open_sqlite(&srv.join("as.db")).await.expect("as db");
            let mallory = UserId::new("mallory").expect("id");
            let token = duokey_accounts::issue_token(&db, &mallory).await.expect("token");
            Terminal::init(&dir.path().join("mallory"), &mallory, &token, &client, None)
                .await
                .expect("mallory's terminal");
            let id = UserId::new("alice").expect("id");
            let token = duokey_accounts::issue_token(&db, &id).await.expect("token");
            let mut t = Terminal::init(&dir.path().join("alice"), &id, &token, &client, None)
                .await
                .expect("terminal");
            let g = t.create_group("fuzz", GroupPolicy::default()).await.expect("group");
            let gid = t.resolve_group(&g.group_id).await.expect("gid");
            (node, t, gid)
        });
        Harness {
            rt,
            terminal: Mutex::new(terminal),
            group,
            cs_db: srv.join("cs.db"),
            _node: node,
            _dir: dir,
        }
    })
}

/// `rn1` items the CS holds for mallory (who never acknowledges any).
async fn rn1_items_sent(cs_db: &std::path::Path) -> usize {
    let db = duokey_storage::Db::open_sqlite(cs_db).await.expect("cs db");
    let items = db.inbox_after("mallory", 0, 10_000).await.expect("inbox");
    db.close().await;
    items
        .iter()
        .filter(|i| duokey_crypto::SignedItem::parse(&i.item)
            .is_ok_and(|s| s.item.body.kind() == duokey_crypto::ItemKind::Rn1))
        .count()
}

fuzz_target!(|data: &[u8]| {
    let Some((&aim, body)) = data.split_first() else {
        return;
    };
    let Ok(mut grant) = Grant::decode(body) else {
        return;
    };
    let h = harness();
    if aim % 2 == 1 {
        grant.group_id = h.group.to_vec();
    }
    let mut t = h.terminal.lock().unwrap_or_else(|e| e.into_inner());
    h.rt.block_on(async {
        let epoch = |groups: Vec<duokey_terminal::GroupInfo>| {
            groups
                .into_iter()
                .find(|g| g.group_id == hex::encode(h.group))
                .map(|g| g.rn2_version)
        };
        let before = epoch(t.list_groups().await.expect("groups listed"));
        let _ = t.apply_grant(grant).await;
        let after = epoch(t.list_groups().await.expect("groups still listed"));
        assert!(after >= before, "the epoch moved back: {before:?} -> {after:?}");
        // SPEC §7 P9: alice is the only signed member, so no grant may make
        // her terminal send an R1 to anyone (mallory has a delivery key).
        assert_eq!(rn1_items_sent(&h.cs_db).await, 0, "an R1 left for an unsigned member");
        let _ = t.members(&h.group).await;
    });
});
