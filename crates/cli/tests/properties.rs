//! SPEC §7 properties (SECURITY.md) attacked for real: P2 (operators
//! cannot read) and P3's honest limit without RN1 rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use duokey_crypto::*;
use duokey_terminal::{GroupPolicy, Line, Terminal};
use duokey_testkit::{LocalNet, join, texts};
use prost::Message as _;
use std::path::Path;
use support::{Server, group_with};

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// How many files under `dir` hold any of `secrets` byte for byte.
fn files_holding(dir: &Path, secrets: &[Vec<u8>]) -> usize {
    files_under(dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .filter(|bytes| secrets.iter().any(|s| contains(bytes, s)))
        .count()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// P2: after a scenario with marker texts, no server file (databases, their
/// WAL files, logs) holds a marker or any R1, RN1-derived or group key value
/// that the terminals logged with DUOKEY_KEYLOG.
#[test]
fn no_server_file_holds_a_marker_or_a_terminal_secret() {
    let srv = Server::start();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| srv.user(u));
    let log = srv.dir.path().join("keys.log");
    let keylog = |u: &support::User, args: &[&str]| {
        let out = u.command(args).env("DUOKEY_KEYLOG", &log).output().unwrap();
        support::assert_success(&out);
    };
    group_with(&alice, "proj", &[&bob, &carol]);
    let markers = ["MARKER-alpha-7731", "MARKER-beta-0042", "MARKER-gamma-9913"];
    keylog(&alice, &["send", "proj", markers[0]]);
    keylog(&bob, &["send", "proj", markers[1]]);
    keylog(&alice, &["group", "remove", "proj", "carol"]);
    keylog(&bob, &["sync"]);
    keylog(&alice, &["send", "proj", markers[2]]);
    for u in [&alice, &bob] {
        keylog(u, &["read", "proj"]);
    }
    let secrets: Vec<Vec<u8>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("DUOKEY_R1 ") || l.starts_with("DUOKEY_GK "))
        .map(|l| hex::decode(l.split(' ').next_back().unwrap()).unwrap())
        .collect();
    assert!(secrets.len() >= 4, "the key log recorded R1 and GK values");
    let files = files_under(&srv.dir.path().join("srv"));
    assert!(
        files.iter().any(|f| f.ends_with("cs.db")),
        "the scan covers the CS database"
    );
    // The servers' log is scanned too, and it holds what they logged of
    // these very changes (the control that the scan sees the log).
    let log = std::fs::read_to_string(srv.log()).unwrap();
    assert!(log.contains("new RN2 version"), "{log}");
    assert!(
        files.contains(&srv.log()),
        "the scan covers the servers' log"
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for m in markers {
            assert!(
                !contains(&bytes, m.as_bytes()),
                "{} contains {m}",
                f.display()
            );
        }
        for s in &secrets {
            assert!(
                !contains(&bytes, s),
                "{} contains a terminal secret",
                f.display()
            );
        }
    }
}

/// P5 at the GMS (DESIGN D32): deleting a group erases its RN2s from
/// every server file — the GMS's database and its WAL — not only from the
/// table (`secure_delete` and a WAL checkpoint). Control: before the
/// deletion the same scan finds them.
#[tokio::test]
async fn a_deleted_groups_rn2s_are_in_no_server_file() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    alice.rotate(&gid, false).await.unwrap();
    bob.sync().await.unwrap();
    let rn2s: Vec<Vec<u8>> = issued_grants(&net)
        .await
        .into_iter()
        .filter(|g| g.group_id == gid.as_slice())
        .map(|g| g.rn2)
        .collect();
    assert!(rn2s.len() >= 3, "the group had several RN2 versions");
    let srv = net.dir.path().join("srv");
    let found = |rn2: &[u8]| {
        files_under(&srv)
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), rn2))
    };
    assert!(rn2s.iter().all(|r| found(r)), "control: the scan sees them");
    alice.delete(&gid).await.unwrap();
    for rn2 in &rn2s {
        assert!(
            !found(rn2),
            "an RN2 of the deleted group is still in a server file"
        );
    }
}

/// DESIGN D14, terminals: once the organisation revokes carol's
/// certificate, alice's terminal (which learns the list from the CS at its
/// sync) seals no new RN1 to carol and drops the items carol had sent
/// before. Controls: bob gets the new RN1, and bob, who synced before the
/// revocation, holds carol's invitation.
#[tokio::test]
async fn a_revoked_member_gets_no_new_rn1_and_its_items_are_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    let mut carol = net.enroll("carol").await;
    join(&mut alice, &mut carol, &gid).await;
    alice.sync().await.unwrap();
    let carols = new_group(&mut carol, "carols", GroupPolicy::default()).await;
    for u in [alice.user().clone(), bob.user().clone()] {
        carol.invite(&carols, &u, Rights::NONE).await.unwrap();
    }
    bob.sync().await.unwrap();
    assert_eq!(bob.invitations().await.unwrap().len(), 1, "control");

    let db = net.cs_db().await;
    let chain = db.user("carol").await.unwrap().unwrap().0;
    db.close().await;
    let serial = duokey_pki::peer_identity(&chain[0]).unwrap().serial;
    net.node.revocations.insert(&serial);
    let (to_carol, to_bob) = (
        net.rn1_items_to("carol").await,
        net.rn1_items_to("bob").await,
    );
    alice.keep_warnings();
    alice.sync().await.unwrap();
    alice.rotate(&gid, true).await.unwrap();
    assert_eq!(
        net.rn1_items_to("carol").await,
        to_carol,
        "RN1 sealed to a revoked member"
    );
    assert_eq!(
        net.rn1_items_to("bob").await,
        to_bob + 1,
        "control: bob gets it"
    );
    assert!(
        alice.invitations().await.unwrap().is_empty(),
        "an item from a revoked sender was taken"
    );
    let warnings = alice.take_warnings().join("\n");
    assert!(
        warnings.contains("carol's certificate was revoked"),
        "{warnings}"
    );
}

/// DESIGN D34: a terminal whose certificate is two thirds through its
/// lifetime renews it at its next sync, for the same key; one that is not
/// (the control, just enrolled) keeps it.
#[tokio::test]
async fn a_certificate_two_thirds_through_its_life_is_renewed_at_the_next_sync() {
    let net = LocalNet::start().await;
    let mut dave = net.enroll("dave").await;
    let (serial, _, _) = dave.certificate().await.unwrap();
    dave.sync().await.unwrap();
    assert_eq!(
        dave.certificate().await.unwrap().0,
        serial,
        "renewed too early"
    );
    // Age dave's certificate: the same key, valid from 300 days ago.
    let ca = duokey_pki::Ca::load(&net.dir.path().join("srv/ca")).unwrap();
    let chain = dave.store().meta("cert_chain").await.unwrap().unwrap();
    let leaf = &chain[4..];
    let key = duokey_pki::peer_identity(leaf)
        .unwrap()
        .ed25519_public
        .unwrap();
    let now = i64::try_from(duokey_terminal::now_ms() / 1000).unwrap();
    // dave's identity key, from his profile (no passphrase here).
    let store = dave.store();
    let plain: [u8; 32] = store
        .meta("plain_key")
        .await
        .unwrap()
        .unwrap()
        .try_into()
        .unwrap();
    let vault = duokey_terminal::vault::Vault::from_plain_key(plain);
    let sealed = store.meta("identity").await.unwrap().unwrap();
    let csr_key = IdentityKey::from_seed(*vault.open32("identity", &sealed).unwrap());
    assert_eq!(csr_key.public().to_bytes(), key);
    let aged = ca
        .sign_csr_with_validity(
            &duokey_pki::make_csr(&csr_key, dave.user()).unwrap(),
            dave.user(),
            duokey_pki::Validity::from_unix(now - 300 * 86_400, now + 65 * 86_400).unwrap(),
        )
        .unwrap();
    let mut framed = u32::try_from(aged.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&aged);
    dave.store().set_meta("cert_chain", &framed).await.unwrap();
    assert!(dave.certificate().await.unwrap().2 < now + 66 * 86_400);
    dave.sync().await.unwrap();
    let (renewed, from, until) = dave.certificate().await.unwrap();
    assert_ne!(renewed, serial);
    assert!(
        until > now + 300 * 86_400 && from <= now + 60,
        "a full new lifetime"
    );
}

/// DESIGN D36: decrypted messages last as long as their group's
/// retention on a terminal (the default), also for a group it has left;
/// a terminal set to keep history keeps them (the control, same time).
#[tokio::test]
async fn decrypted_history_is_erased_after_the_retention_unless_kept() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    alice.send(&gid, "a month-old secret").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    alice.set_keep_history(true).await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, ["a month-old secret"]);
    // bob leaves: the history stays (D32), then ages out like the keys.
    bob.leave(&gid).await.unwrap();
    let now = duokey_terminal::now_ms();
    bob.erase_expired_at(now + 29 * 86_400 * 1000)
        .await
        .unwrap();
    assert_eq!(texts(&bob, &gid).await.len(), 1, "erased too early");
    let month = now + 31 * 86_400 * 1000;
    bob.erase_expired_at(month).await.unwrap();
    alice.erase_expired_at(month).await.unwrap();
    assert!(
        texts(&bob, &gid).await.is_empty(),
        "kept past the retention"
    );
    assert_eq!(texts(&alice, &gid).await, ["a month-old secret"], "control");
}

/// Every group key formed from R1 values and every grant the GMS issued.
fn keys_from(gid: &GroupId, r1s: &[(u32, R1)], grants: &[duokey_proto::Grant]) -> Vec<GroupKey> {
    let name = GroupName::new("proj").unwrap();
    let mut keys = Vec::new();
    for g in grants.iter().filter(|g| g.group_id == gid.as_slice()) {
        let rn2 = Rn2::from_slice(&g.rn2).unwrap();
        for (_, r1) in r1s {
            if let Ok(at) = r1.ratchet_to(g.rn2_version) {
                let epoch = Epoch::new(g.rn1_version, g.rn2_version);
                keys.push(GroupKey::derive(&at, &rn2, gid, &name, epoch).unwrap());
            }
        }
    }
    keys
}

/// `t` creates group `name` with `policy`; its id.
async fn new_group(t: &mut Terminal, name: &str, policy: GroupPolicy) -> GroupId {
    t.create_group(name, policy).await.unwrap().group_id
}

/// Every grant the GMS ever issued, of every group.
async fn issued_grants(net: &LocalNet) -> Vec<duokey_proto::Grant> {
    let gms = net.gms_db().await;
    let grants = gms
        .all_grants()
        .await
        .unwrap()
        .iter()
        .map(|b| duokey_proto::Grant::decode(b.as_slice()).unwrap())
        .collect();
    gms.close().await;
    grants
}

/// The last envelope the CS logged for `gid`, as the CS serves it.
async fn last_logged(net: &LocalNet, gid: &GroupId) -> duokey_proto::LoggedEnvelope {
    let cs = net.cs_db().await;
    let last = cs
        .fetch_log(gid.as_slice(), 0, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    cs.close().await;
    duokey_proto::LoggedEnvelope {
        group_id: gid.to_vec(),
        log_seq: last.log_seq,
        envelope: last.envelope,
        stored_at_ms: last.stored_at_ms,
    }
}

/// bob's profile opened a second time (another process on it).
async fn reopen_bob(net: &LocalNet) -> Terminal {
    Terminal::open(&net.dir.path().join("bob"), || {
        unreachable!("no passphrase")
    })
    .await
    .unwrap()
}

/// alice and bob, both members of group "proj" (default policy) that
/// alice created; the group's id.
async fn alice_and_bob_in_proj(net: &LocalNet) -> (Terminal, Terminal, GroupId) {
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let gid = duokey_testkit::group_of_two(&mut alice, &mut bob, "proj").await;
    (alice, bob, gid)
}

/// P3 with `rotate_rn1_on_remove` on: a removed member with every R1 it can
/// get hold of after its removal (what its terminal kept, and every `rn1`
/// item for it at the CS opened with its delivery key) and every RN2 of the
/// GMS cannot open a later message; bob, who stayed, can with the same
/// harness (the control). With rotation off, the same collusion DOES open
/// it — the honest limit of the plain two-route scheme (docs/SECURITY.md).
#[tokio::test]
async fn removed_member_colluding_with_the_gms_reads_only_without_rn1_rotation() {
    for rotate in [true, false] {
        let net = LocalNet::start().await;
        let mut alice = net.enroll("alice").await;
        let mut bob = net.enroll("bob").await;
        let mut dave = net.enroll("dave").await;
        let policy = GroupPolicy {
            rotate_rn1_on_remove: rotate,
            ..GroupPolicy::default()
        };
        let gid = new_group(&mut alice, "proj", policy).await;
        join(&mut alice, &mut bob, &gid).await;
        join(&mut alice, &mut dave, &gid).await;
        alice.remove(&gid, dave.user()).await.unwrap();
        alice.send(&gid, "after dave").await.unwrap();
        let daves_keys = net.r1s_reaching(&dave, &gid).await;
        let bobs_keys = net.r1s_reaching(&bob, &gid).await;

        let cs = net.cs_db().await;
        let envelopes = cs.fetch_log(gid.as_slice(), 0, 1000).await.unwrap();
        let last = &envelopes.last().unwrap().envelope;
        let grants = issued_grants(&net).await;
        let env = EnvelopeRef::parse(last, &Limits::default()).unwrap();
        let opens = |r1s| {
            keys_from(&gid, r1s, &grants)
                .iter()
                .any(|k| env.decrypt(k).is_ok())
        };
        assert!(
            opens(&bobs_keys),
            "control: a remaining member's keys open it"
        );
        let opened = opens(&daves_keys);
        if rotate {
            assert!(
                !opened,
                "with RN1 rotation the removed member and the GMS cannot read"
            );
        } else {
            assert!(
                opened,
                "without RN1 rotation the collusion succeeds: the documented limit"
            );
        }
        net.node.shutdown().await;
    }
}

/// P5: after retention, a terminal's stolen state (every R1 and RN2 it still
/// holds) plus every RN2 the GMS ever issued does not open the erased epochs.
#[tokio::test]
async fn stolen_terminal_state_does_not_open_epochs_erased_after_retention() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let policy = GroupPolicy {
        retention_secs: 60,
        rotate_every_secs: 60,
        ..GroupPolicy::default()
    };
    let gid = new_group(&mut alice, "proj", policy).await;
    join(&mut alice, &mut bob, &gid).await;
    alice.send(&gid, "old epoch").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    // Two rotations later, and more than the retention afterwards, bob's
    // terminal erases the old epochs.
    alice.rotate(&gid, false).await.unwrap();
    alice.rotate(&gid, false).await.unwrap();
    alice.send(&gid, "current epoch").await.unwrap();
    bob.sync().await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    // What a thief reads off the disk: every file of bob's profile. Before
    // the erasure it holds the sealed R1 and RN2 of the old epochs (the
    // control that the scan sees them).
    let mut old_secrets = vec![bob.store().r1(&gid, 1).await.unwrap().unwrap().1];
    // bob joined at version 2; versions 2 and 3 are the ones erased.
    for v in 2..=3 {
        old_secrets.push(
            bob.store()
                .grant(&gid, v)
                .await
                .unwrap()
                .unwrap()
                .rn2_sealed,
        );
    }
    let on_disk = |secrets: &[Vec<u8>]| files_holding(&net.dir.path().join("bob"), secrets);
    assert!(
        on_disk(&old_secrets) > 0,
        "control: the scan sees stored keys"
    );
    let later = duokey_terminal::now_ms() + 120_000;
    bob.erase_expired_at(later).await.unwrap();
    assert_eq!(
        on_disk(&old_secrets),
        0,
        "an erased R1 or RN2 is still in the profile's files (free pages or WAL)"
    );

    let stolen = bob.held_r1s(&gid).await.unwrap();
    assert!(
        stolen.iter().all(|(_, r1)| r1.rn2_version() >= 4),
        "R1 moved past the erased epochs"
    );
    let cs = net.cs_db().await;
    let envelopes = cs.fetch_log(gid.as_slice(), 0, 1000).await.unwrap();
    let grants = issued_grants(&net).await;
    let keys = keys_from(&gid, &stolen, &grants);
    let opens = |e: &[u8]| {
        let env = EnvelopeRef::parse(e, &Limits::default()).unwrap();
        keys.iter().any(|k| env.decrypt(k).is_ok())
    };
    let first = &envelopes.first().unwrap().envelope;
    let last = &envelopes.last().unwrap().envelope;
    assert!(
        !opens(first),
        "the erased epoch stays closed even with every RN2 the GMS issued"
    );
    assert!(
        opens(last),
        "sanity: the current epoch opens with the same material"
    );
    net.node.shutdown().await;
}

/// P6: a replayed envelope and a replayed inbox item are refused by the
/// terminal, also after a restart (the replay state is in the profile, D20).
#[tokio::test]
async fn replayed_envelope_and_inbox_item_are_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    alice.send(&gid, "only once").await.unwrap();
    assert_eq!(bob.sync_messages(&gid).await.unwrap().len(), 1);

    let mut replay = last_logged(&net, &gid).await;
    replay.log_seq += 1000; // even under another log position
    drop(bob);
    let mut bob = reopen_bob(&net).await;
    let err = bob
        .receive(&gid, &replay, &mut Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("replayed"), "{err}");

    // An inbox item replayed: a genuine invitation, declined, then replayed.
    let other_id = new_group(&mut alice, "other", GroupPolicy::default()).await;
    alice
        .invite(&other_id, bob.user(), Rights::NONE)
        .await
        .unwrap();
    let cs = net.cs_db().await;
    let item = cs
        .inbox_after("bob", 0, 10)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .item;
    bob.sync().await.unwrap();
    assert_eq!(bob.invitations().await.unwrap().len(), 1);
    bob.decline("other").await.unwrap();
    assert!(bob.invitations().await.unwrap().is_empty());
    bob.process_item(&item).await.unwrap();
    assert!(
        bob.invitations().await.unwrap().is_empty(),
        "the replayed invitation is ignored"
    );
    // An item whose effect is not idempotent: bob's decline, processed by
    // alice once, then replayed; each processing would add a notice (guards:
    // the `seen`/`first_sight` check in `process_item`).
    let decline = cs
        .inbox_after("alice", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.item)
        .find(|bytes| {
            matches!(
                duokey_crypto::SignedItem::parse(bytes).map(|s| s.item.body.kind()),
                Ok(duokey_crypto::ItemKind::Decline)
            )
        })
        .expect("bob's decline in alice's inbox");
    async fn declined(t: &Terminal, gid: &GroupId) -> usize {
        t.history(gid)
            .await
            .unwrap()
            .iter()
            .filter(|l| matches!(l, Line::Notice(n) if n.notice.contains("declined")))
            .count()
    }
    alice.sync().await.unwrap();
    assert_eq!(declined(&alice, &other_id).await, 1);
    alice.process_item(&decline).await.unwrap();
    assert_eq!(
        declined(&alice, &other_id).await,
        1,
        "the replayed decline was applied again"
    );
    net.node.shutdown().await;
}

/// DESIGN D31: two processes on one profile (`duokey chat` beside
/// `read --follow`) see each message once and never raise a false replay
/// alarm, while a replay at another log position is still refused (above).
#[tokio::test]
async fn two_processes_on_one_profile_see_each_message_once_without_false_alarms() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    let mut second = reopen_bob(&net).await;
    alice.send(&gid, "hello").await.unwrap();
    // Both processes get the same envelope, one by fetching, one live.
    assert_eq!(bob.sync_messages(&gid).await.unwrap().len(), 1);
    let logged = last_logged(&net, &gid).await;
    let live = second
        .receive(&gid, &logged, &mut Default::default())
        .await
        .unwrap();
    assert!(live.is_none(), "already shown by the other process");
    second.sync_messages(&gid).await.unwrap();
    let history = bob.history(&gid).await.unwrap();
    let texts: Vec<&str> = history
        .iter()
        .filter_map(|l| match l {
            Line::Message(m) => Some(m.text.as_str()),
            Line::Notice(_) => None,
        })
        .collect();
    assert_eq!(texts, ["hello"]);
    assert!(
        !history
            .iter()
            .any(|l| matches!(l, Line::Notice(n) if n.notice.contains("unreadable"))),
        "a false alarm: {history:?}"
    );
    net.node.shutdown().await;
}

/// V8 (SPEC §3.3): a second message under a (sender, epoch, seq) already
/// received — here from alice's profile restored from a backup, whose
/// counter went back — is refused before decryption and marked unreadable;
/// the first stays.
#[tokio::test]
async fn a_reused_sequence_number_is_refused_before_decryption() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    // A backup of alice's profile, taken before she sends.
    let backup = net.dir.path().join("alice-backup");
    std::fs::create_dir(&backup).unwrap();
    let db = format!(
        "sqlite://{}",
        net.dir.path().join("alice/profile.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("VACUUM INTO ?")
        .bind(backup.join("profile.db").display().to_string())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    alice.send(&gid, "first").await.unwrap();
    assert_eq!(bob.sync_messages(&gid).await.unwrap().len(), 1);
    let mut restored = Terminal::open(&backup, || unreachable!("no passphrase"))
        .await
        .unwrap();
    restored.send(&gid, "again").await.unwrap();
    assert!(bob.sync_messages(&gid).await.unwrap().is_empty());
    let history = bob.history(&gid).await.unwrap();
    assert!(
        history.iter().any(|l| matches!(l, Line::Notice(n)
            if n.notice.contains("unreadable") && n.notice.contains("sequence number 0"))),
        "{history:?}"
    );
    assert_eq!(texts(&bob, &gid).await, ["first"]);
    net.node.shutdown().await;
}

/// P6: an older grant replayed (RN2 rollback by a dishonest GMS) does not move
/// the group back; the next message still uses the newest epoch.
#[tokio::test]
async fn an_older_grant_replayed_does_not_roll_the_epoch_back() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let gid = new_group(&mut alice, "proj", GroupPolicy::default()).await;
    alice.rotate(&gid, false).await.unwrap();
    let gms = net.gms_db().await;
    let first = gms.grant(gid.as_slice(), 1).await.unwrap().unwrap();
    alice
        .apply_grant(duokey_proto::Grant::decode(first.as_slice()).unwrap())
        .await
        .unwrap();
    let status = alice.list_groups().await.unwrap();
    assert_eq!(
        status[0].rn2_version, 2,
        "the group stays at the newest version"
    );
    alice.send(&gid, "still current").await.unwrap();
    let last = last_logged(&net, &gid).await;
    let header = EnvelopeRef::parse(&last.envelope, &Limits::default())
        .unwrap()
        .header;
    assert_eq!(header.epoch.rn2_version, 2);
    net.node.shutdown().await;
}

/// P8: a certificate for a known user id with another key — as a rogue CA
/// operator would mint — gets no RN1: not while alice's terminal refuses the
/// changed key, and not after alice confirms it by mistake either, because
/// the group's history records bob's real key (guards: the pin check in
/// `contacts::delivery_key`, and the recorded-key check in `sync::rn1_duty`).
#[tokio::test]
async fn a_forged_identity_gets_no_rn1_even_once_confirmed() {
    let net = LocalNet::start().await;
    let (mut alice, bob, gid) = alice_and_bob_in_proj(&net).await;

    // Control: a rotation reaches the real bob, and this harness opens it
    // with his delivery key (bob does not sync, so the item stays).
    alice.rotate(&gid, true).await.unwrap();
    let sealed = bob.store().meta_req("delivery").await.unwrap();
    let bob_secret =
        DeliverySecret::from_bytes(&bob.vault().open32("delivery", &sealed).unwrap()).unwrap();
    assert_eq!(net.rn1_opened_by("bob", &bob_secret).await, 1);

    // The rogue CA operator mints "bob" with its own key, connects as him
    // (the CS directory now shows the forged certificate) and publishes a
    // delivery key of its own, signed with the forged key.
    let rogue = net.rogue("bob").await;
    let (id, forged_secret) = (rogue.id.clone(), &rogue.delivery);
    alice.rotate(&gid, true).await.unwrap();
    let v = alice.verify(&id, false).await.unwrap();
    assert!(v.key_changed, "the change is shown loudly");
    assert_eq!(net.rn1_opened_by("bob", forged_secret).await, 0);

    // alice confirms the forged key by mistake; the group's history still
    // records bob's real key, so the next RN1 does not go to the forger.
    alice.verify(&id, true).await.unwrap();
    alice.keep_warnings();
    alice.rotate(&gid, true).await.unwrap();
    assert_eq!(
        net.rn1_opened_by("bob", forged_secret).await,
        0,
        "RN1 reached the forged key"
    );
    let warnings = alice.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("history records")),
        "{warnings:?}"
    );
    net.node.shutdown().await;
}

/// D27: `Watch` pushes grants without the member list; a terminal following
/// live rebuilds it exactly, through a join (with rights) and a removal.
#[tokio::test]
async fn live_grants_without_member_lists_are_rebuilt_exactly() {
    use duokey_proto::watch_event;
    use duokey_terminal::LiveEvent;
    let net = LocalNet::start().await;
    let [mut alice, mut bob, mut carol] = [
        net.enroll("alice").await,
        net.enroll("bob").await,
        net.enroll("carol").await,
    ];
    let gid = duokey_testkit::group_of_two(&mut alice, &mut bob, "proj").await;
    let mut live = bob.live().await.unwrap();
    // Follows bob's streams until his member list satisfies `done`; every
    // grant pushed meanwhile must have come without its member list.
    async fn follow_until(
        bob: &mut Terminal,
        live: &mut duokey_terminal::Live,
        gid: &GroupId,
        done: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        loop {
            let event = tokio::time::timeout(std::time::Duration::from_secs(20), live.next())
                .await
                .expect("a live event in time")
                .unwrap();
            if let LiveEvent::Watch(w) = &event
                && let Some(watch_event::Event::Grant(g)) = &w.event
            {
                assert!(g.members_omitted && g.members.is_empty(), "{g:?}");
            }
            bob.on_live(event).await.unwrap();
            let now: Vec<(String, String)> = bob
                .members(gid)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.user, m.rights.to_string()))
                .collect();
            if done(&now) {
                return now;
            }
        }
    }
    let whole = |t: Vec<duokey_terminal::MemberInfo>| -> Vec<(String, String)> {
        t.into_iter()
            .map(|m| (m.user, m.rights.to_string()))
            .collect()
    };

    alice
        .invite(&gid, carol.user(), Rights::INVITE)
        .await
        .unwrap();
    carol.sync().await.unwrap();
    carol.accept(&hex::encode(gid)).await.unwrap();
    alice.sync().await.unwrap();
    let seen = follow_until(&mut bob, &mut live, &gid, |m| {
        m.iter().any(|(u, _)| u == "carol")
    })
    .await;
    assert_eq!(seen, whole(alice.members(&gid).await.unwrap()));
    assert!(
        seen.contains(&("carol".into(), "invite".into())),
        "{seen:?}"
    );

    alice.remove(&gid, carol.user()).await.unwrap();
    let seen = follow_until(&mut bob, &mut live, &gid, |m| {
        !m.iter().any(|(u, _)| u == "carol")
    })
    .await;
    assert_eq!(seen, whole(alice.members(&gid).await.unwrap()));
}

/// alice's group "proj" with `rn1_wait` = 1 s, and `names` joined in turn.
async fn proj_waiting_one_second(names: &[&str]) -> (LocalNet, Terminal, GroupId, Vec<Terminal>) {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let policy = GroupPolicy {
        rn1_wait_secs: 1,
        ..GroupPolicy::default()
    };
    let gid = new_group(&mut alice, "proj", policy).await;
    let mut others = Vec::new();
    for name in names {
        let mut t = net.enroll(name).await;
        join(&mut alice, &mut t, &gid).await;
        others.push(t);
    }
    (net, alice, gid, others)
}

/// DESIGN D37 (SPEC §4.3 step 4, `rn1_wait`): carol leaves, so alice
/// (the owner) must send the group's new RN1 — and alice's terminal is gone.
/// bob's and dave's messages wait, saying for whom; after `rn1_wait` exactly
/// one of them (the first in the history's order) makes a new RN1, the other
/// follows it, and every queued message is read — by alice too when she is
/// back, never by carol.
#[tokio::test]
async fn a_missing_rotator_is_replaced_after_rn1_wait_by_one_member() {
    let (net, mut alice, gid, others) = proj_waiting_one_second(&["bob", "carol", "dave"]).await;
    let [mut bob, mut carol, mut dave] = <[Terminal; 3]>::try_from(others).ok().unwrap();
    bob.sync().await.unwrap();
    carol.leave(&gid).await.unwrap();
    // alice is offline from here on: her RN1 for version 2 never comes.
    for (t, text) in [(&mut bob, "from bob"), (&mut dave, "from dave")] {
        t.sync().await.unwrap();
        let sent = t.send(&gid, text).await.unwrap();
        assert_eq!(
            sent,
            duokey_terminal::SendOutcome::Queued(duokey_terminal::Waiting::Key)
        );
        let why = t.key_wait(&gid).await.unwrap().unwrap();
        assert!(why.contains("from alice"), "{why}");
    }
    // rn1_wait passes on the clock.
    net.advance(std::time::Duration::from_millis(1100));
    for _ in 0..2 {
        bob.sync().await.unwrap();
        dave.sync().await.unwrap();
    }
    let chain = net
        .gms_db()
        .await
        .changes(gid.as_slice(), 0, 100)
        .await
        .unwrap();
    let rotations = chain
        .iter()
        .filter_map(|c| membership::SignedChange::parse(&c.change).ok())
        .filter(|c| c.change().action == membership::Action::RotateRn1)
        .count();
    assert_eq!(rotations, 1, "one member replaced the key, not both");
    // Who acts first depends on the group id (random here), and the one who
    // makes the key posts first: compare without order.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    for t in [&mut bob, &mut dave] {
        t.sync_messages(&gid).await.unwrap();
        assert_eq!(sorted(texts(t, &gid).await), ["from bob", "from dave"]);
        assert_eq!(t.key_wait(&gid).await.unwrap(), None);
    }
    alice.sync().await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(sorted(texts(&alice, &gid).await), ["from bob", "from dave"]);
    carol.sync().await.unwrap();
    let _ = carol.sync_messages(&gid).await;
    assert!(texts(&carol, &gid).await.is_empty(), "carol left before");
}

/// Every item the CS holds for `user` now (an archiving CS keeps them all).
async fn inbox_of(net: &LocalNet, user: &str) -> Vec<Vec<u8>> {
    let cs = net.cs_db().await;
    let items = cs.inbox_after(user, 0, 10_000).await.unwrap();
    cs.close().await;
    items.into_iter().map(|e| e.item).collect()
}

/// The delivery key `user` has in the CS directory.
async fn published_key(net: &LocalNet, user: &str) -> Vec<u8> {
    let cs = net.cs_db().await;
    let (_, record) = cs.user(user).await.unwrap().unwrap();
    cs.close().await;
    record.unwrap()
}

/// DESIGN D38 (P5): bob's terminal replaces its delivery key every
/// week; the replaced secret still opens what contacts sealed to it before
/// they saw the new key (alice reuses a checked key for a day), and a week
/// later it is erased — from the profile's files too. Then a thief with
/// bob's whole profile and every `rn1` item the CS ever held for him opens
/// none of the RN1s sealed to the erased key (control: before the erasure
/// the same thief opens both).
#[tokio::test]
async fn delivery_keys_rotate_and_a_replaced_secret_is_erased() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, gid) = alice_and_bob_in_proj(&net).await;
    let mut archive = Vec::new();
    alice.rotate(&gid, true).await.unwrap();
    archive.extend(inbox_of(&net, "bob").await);
    bob.sync().await.unwrap();
    let first = published_key(&net, "bob").await;

    let t0 = duokey_terminal::now_ms();
    let week = 7 * 86_400_000;
    bob.erase_expired_at(t0 + week + 60_000).await.unwrap();
    assert_ne!(
        published_key(&net, "bob").await,
        first,
        "a new key is published"
    );
    // alice still seals to the key she checked today; bob opens it.
    alice.rotate(&gid, true).await.unwrap();
    archive.extend(inbox_of(&net, "bob").await);
    alice
        .send(&gid, "sealed to the replaced key")
        .await
        .unwrap();
    bob.sync().await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, ["sealed to the replaced key"]);

    let retired = bob.store().retired_delivery().await.unwrap();
    assert_eq!(retired.len(), 1);
    let on_disk = |secrets: &[Vec<u8>]| files_holding(&net.dir.path().join("bob"), secrets);
    assert!(
        on_disk(&retired) > 0,
        "control: the scan sees the kept secret"
    );
    let versions = |r1s: Vec<(u32, R1)>| {
        let mut v: Vec<u32> = r1s.into_iter().map(|(v, _)| v).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    assert_eq!(versions(bob.r1s_in(&gid, &archive)), [2, 3], "control");

    bob.erase_expired_at(t0 + 2 * week + 120_000).await.unwrap();
    assert!(bob.store().retired_delivery().await.unwrap().len() <= 1);
    assert_eq!(
        on_disk(&retired),
        0,
        "the replaced secret is still in the profile's files (free pages or WAL)"
    );
    assert!(
        bob.r1s_in(&gid, &archive).is_empty(),
        "a thief with the profile now opens RN1s sealed to an erased key"
    );
}

/// The `rn1_wait` fallback needs no command: a terminal left open (`duokey
/// chat`, `read --follow`) takes its turn from its live streams' timer.
#[tokio::test]
async fn a_live_terminal_replaces_a_missing_rn1_without_a_command() {
    let (_net, _alice, gid, others) = proj_waiting_one_second(&["bob", "carol"]).await;
    let [mut bob, mut carol] = <[Terminal; 2]>::try_from(others).ok().unwrap();
    bob.sync().await.unwrap();
    bob.set_timed_duties(std::time::Duration::from_millis(200));
    let mut live = bob.live().await.unwrap();
    carol.leave(&gid).await.unwrap();
    // alice, the rotator, is gone; bob only processes live events.
    let replaced = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let event = live.next().await.unwrap();
            bob.on_live(event).await.unwrap();
            let groups = bob.list_groups().await.unwrap();
            if bob.key_wait(&gid).await.unwrap().is_none() && groups[0].rn1_version == 3 {
                break;
            }
        }
    })
    .await;
    assert!(
        replaced.is_ok(),
        "bob's open terminal did not replace the missing key"
    );
}

/// DESIGN D24, PROTOCOL §5.11: the notice about messages sent before a member
/// joined reads before the messages it can open, in the history and the chat.
#[tokio::test]
async fn the_notice_of_messages_before_joining_reads_before_the_readable_ones() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let gid = new_group(&mut alice, "proj", GroupPolicy::default()).await;
    net.cs_caught_up().await;
    alice.send(&gid, "before 1").await.unwrap();
    alice.send(&gid, "before 2").await.unwrap();
    join(&mut alice, &mut bob, &gid).await;
    net.cs_caught_up().await;
    net.advance(std::time::Duration::from_secs(60));
    alice.send(&gid, "after").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    let shown: Vec<String> = bob
        .history(&gid)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            Line::Message(m) => Some(m.text),
            Line::Notice(n) if n.notice.contains("before you joined") => Some(n.notice),
            Line::Notice(_) => None,
        })
        .collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[0].starts_with("2 earlier message(s)"), "{shown:?}");
    assert_eq!(shown[1], "after");
}
