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

use duokey_crypto::GroupId;
use duokey_proto::Grant;
use duokey_terminal::{GroupPolicy, Terminal};
use duokey_testkit::LocalNet;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::{Mutex, OnceLock};

struct Harness {
    rt: tokio::runtime::Runtime,
    terminal: Mutex<Terminal>,
    group: GroupId,
    net: LocalNet,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = common::runtime_aborting_on_panic();
        let (net, terminal, group) = rt.block_on(async {
            let net = LocalNet::start().await;
            net.enroll("mallory").await;
            let mut t = net.enroll("alice").await;
            let g = t.create_group("fuzz", GroupPolicy::default()).await.expect("group");
            let gid = t.resolve_group(&g.group_id).await.expect("gid");
            (net, t, gid)
        });
        Harness {
            rt,
            terminal: Mutex::new(terminal),
            group,
            net,
        }
    })
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
        assert_eq!(h.net.rn1_items_to("mallory").await, 0, "an R1 left for an unsigned member");
        let _ = t.members(&h.group).await;
    });
});
