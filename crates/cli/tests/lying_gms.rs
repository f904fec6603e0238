//! SPEC §7 P9, a lying GMS gets no R1 (DESIGN D28): the real GMS is reached
//! over real mutual TLS through a wrapper that rewrites its grants, and the
//! terminals are the real library. Each test plays one lie, shows that the
//! terminals refuse it and that no R1 went to anyone because of it, and
//! shows with a control that the same step told honestly is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_crypto::membership::{self, Action, SignedChange, State};
use duokey_crypto::*;
use duokey_proto::{GrantCause, Member};
use duokey_terminal::{GroupPolicy, Line, Terminal};
use duokey_testkit::{LocalNet, RawUser, join, join_with, texts};

/// (rn1_version, rn2_version) of the group on `t`.
async fn epoch(t: &Terminal, gid: &GroupId) -> (u32, u64) {
    let g = t
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.group_id == *gid)
        .unwrap();
    (g.rn1_version, g.rn2_version)
}

/// Whether `t` told its user that it refused a grant.
async fn refused_a_grant(t: &Terminal, gid: &GroupId) -> bool {
    t.history(gid)
        .await
        .unwrap()
        .iter()
        .any(|l| matches!(l, Line::Notice(n) if n.notice.starts_with("⚠ refused group key")))
}

/// `t` creates group "proj" with `policy`; its id.
async fn new_group(t: &mut Terminal, policy: GroupPolicy) -> GroupId {
    t.create_group("proj", policy).await.unwrap().group_id
}

/// Forces a periodic RN2 rotation of every group now.
async fn rotate_now(net: &LocalNet) {
    let far = i64::try_from(duokey_terminal::now_ms()).unwrap() + 48 * 3600 * 1000;
    net.node.gms.as_ref().unwrap().rotate_due(far).await;
}

/// The group's chain as the GMS stores it, verified.
async fn chain(net: &LocalNet, gid: &GroupId) -> (Vec<SignedChange>, State) {
    let db = net.gms_db().await;
    let rows = db.changes(gid.as_slice(), 0, 1000).await.unwrap();
    db.close().await;
    let changes: Vec<SignedChange> = rows
        .iter()
        .map(|r| SignedChange::parse(&r.change).unwrap())
        .collect();
    let mut state: Option<State> = None;
    for c in &changes {
        state = Some(membership::apply(state.as_ref(), c).unwrap());
    }
    (changes, state.unwrap())
}

/// alice (owner) and bob through the lying GMS; mallory enrolled, never a member.
async fn setup(net: &LocalNet) -> (Terminal, Terminal, duokey_testkit::Lies, GroupId) {
    setup_with(net, GroupPolicy::default()).await
}

/// [`setup`], with `policy` for the group.
async fn setup_with(
    net: &LocalNet,
    policy: GroupPolicy,
) -> (Terminal, Terminal, duokey_testkit::Lies, GroupId) {
    let (cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll_via("alice", &cfg).await;
    let mut bob = net.enroll_via("bob", &cfg).await;
    let _mallory = net.enroll("mallory").await;
    let gid = new_group(&mut alice, policy).await;
    join(&mut alice, &mut bob, &gid).await;
    (alice, bob, lies, gid)
}

/// alice (owner) and carol in a group with `policy`, and bob, an attacker's
/// program holding bob's key, admitted as a member; carol has synced.
async fn with_raw_bob(
    net: &LocalNet,
    policy: GroupPolicy,
) -> (Terminal, Terminal, RawUser, GroupId) {
    let mut alice = net.enroll("alice").await;
    let mut carol = net.enroll("carol").await;
    let mut bob = net.attacker("bob").await;
    let gid = new_group(&mut alice, policy).await;
    join(&mut alice, &mut carol, &gid).await;
    admit_raw(&mut alice, &mut bob, &gid).await;
    carol.sync().await.unwrap();
    (alice, carol, bob, gid)
}

/// `owner` invites the raw user `raw` into `gid`, `raw` accepts, `owner` syncs.
async fn admit_raw(owner: &mut Terminal, raw: &mut RawUser, gid: &GroupId) {
    owner.invite(gid, &raw.id, Rights::NONE).await.unwrap();
    raw.accept_invitation(gid).await;
    owner.sync().await.unwrap();
}

/// The RN1 versions whose R1 `t` holds, in the order it lists them.
async fn held_versions(t: &Terminal, gid: &GroupId) -> Vec<u32> {
    t.held_r1s(gid)
        .await
        .unwrap()
        .iter()
        .map(|(v, _)| *v)
        .collect()
}

/// Syncs both, then checks the lie was refused by both and reached nobody.
async fn assert_refused_by_all(
    net: &LocalNet,
    terminals: [&mut Terminal; 2],
    gid: &GroupId,
    before: (u32, u64),
) {
    for t in terminals {
        t.sync().await.unwrap();
        assert_eq!(
            epoch(t, gid).await,
            before,
            "{} moved to the lying epoch",
            t.user()
        );
        assert!(
            refused_a_grant(t, gid).await,
            "{} did not tell its user",
            t.user()
        );
    }
    assert_eq!(net.rn1_items_to("mallory").await, 0, "R1 went to mallory");
}

/// The honest control: the same rotation told truthfully is accepted.
async fn assert_honest_rotation_accepted(
    lies: &duokey_testkit::Lies,
    t: &mut Terminal,
    gid: &GroupId,
    before: (u32, u64),
) {
    lies.clear();
    t.sync().await.unwrap();
    let after = epoch(t, gid).await;
    assert!(after.1 > before.1, "the honest grant was not accepted");
}

#[tokio::test]
async fn a_member_the_gms_injects_is_refused_and_gets_no_r1() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let before = epoch(&alice, &gid).await;
    // The GMS names mallory a member of the next version (guards: the member
    // list of a grant must equal the verified one).
    lies.set(|g| {
        g.members.push(Member {
            user_id: "mallory".into(),
            rights: 0,
        });
        g.members_omitted = false;
    });
    rotate_now(&net).await;
    assert_refused_by_all(&net, [&mut alice, &mut bob], &gid, before).await;
    assert_honest_rotation_accepted(&lies, &mut alice, &gid, before).await;
}

#[tokio::test]
async fn a_rotator_the_gms_names_sends_no_r1() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let before = epoch(&alice, &gid).await;
    // A periodic grant that claims a removal rotated RN1, with alice as its
    // rotator (guards: the RN1 version and the rotator come from the
    // verified history, never from the GMS's fields).
    lies.set(|g| {
        g.rn1_version += 1;
        g.rn1_rotator = "alice".into();
        g.cause = GrantCause::MemberRemoved as i32;
    });
    rotate_now(&net).await;
    assert_refused_by_all(&net, [&mut alice, &mut bob], &gid, before).await;
    let r1s = held_versions(&alice, &gid).await;
    assert_eq!(r1s, [1], "alice made an RN1 for a rotation nobody signed");
    assert_honest_rotation_accepted(&lies, &mut alice, &gid, before).await;
}

#[tokio::test]
async fn a_removal_the_gms_turns_into_one_without_rn1_rotation_is_refused() {
    let net = LocalNet::start().await;
    let (cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll_via("alice", &cfg).await;
    let mut bob = net.enroll_via("bob", &cfg).await;
    let mut carol = net.enroll_via("carol", &cfg).await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    join(&mut alice, &mut bob, &gid).await;
    join(&mut alice, &mut carol, &gid).await;
    carol.sync().await.unwrap();
    let before = epoch(&carol, &gid).await;
    // alice's signed removal of bob rotates RN1; the GMS's grants for it say
    // it does not (guards: rn1_version +1 exactly on the flagged change).
    lies.set(|g| {
        if g.cause == GrantCause::MemberRemoved as i32 {
            g.rn1_version -= 1;
            g.rn1_rotator.clear();
        }
    });
    alice.remove(&gid, bob.user()).await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(
        epoch(&carol, &gid).await,
        before,
        "carol took a removal without new RN1"
    );
    assert!(refused_a_grant(&carol, &gid).await);
    assert!(refused_a_grant(&alice, &gid).await);
    // Told honestly, the removal rotates RN1 and carol follows it.
    lies.clear();
    alice.sync().await.unwrap();
    carol.sync().await.unwrap();
    let after = epoch(&carol, &gid).await;
    assert_eq!(after.0, before.0 + 1, "the honest removal rotates RN1");
}

#[tokio::test]
async fn a_change_signed_with_a_key_the_history_never_recorded_is_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let before = epoch(&alice, &gid).await;
    // The CA operator mints a key for alice and, with the GMS, signs "alice
    // adds eve" with it; eve's own certified key is in the change, so only
    // the signature stands in the way (guards: a change verifies with the
    // key the group's history recorded for its actor, not any certified key).
    let eve = net.attacker("eve").await;
    let (_, state) = chain(&net, &gid).await;
    let minted = IdentityKey::generate();
    let forged = state
        .next_change(
            Action::Add,
            &UserId::new("alice").unwrap(),
            &eve.id,
            Rights::NONE,
            eve.key.public().to_bytes().to_vec(),
            duokey_terminal::now_ms(),
        )
        .sign(&minted)
        .unwrap();
    lies.set(move |g| {
        g.membership_seq = forged.change().seq;
        g.membership_head = forged.hash().to_vec();
        g.changes = vec![forged.as_bytes().to_vec()];
        g.members.push(Member {
            user_id: "eve".into(),
            rights: 0,
        });
    });
    rotate_now(&net).await;
    assert_refused_by_all(&net, [&mut alice, &mut bob], &gid, before).await;
    assert_honest_rotation_accepted(&lies, &mut alice, &gid, before).await;
}

#[tokio::test]
async fn a_replayed_change_is_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let before = epoch(&alice, &gid).await;
    // The GMS replays alice's signed add of bob as the next change (guards:
    // seq and prev must extend the verified head).
    let (changes, state) = chain(&net, &gid).await;
    let replayed = changes[1].clone();
    let seq = state.seq + 1;
    lies.set(move |g| {
        g.membership_seq = seq;
        g.membership_head = replayed.hash().to_vec();
        g.changes = vec![replayed.as_bytes().to_vec()];
    });
    rotate_now(&net).await;
    assert_refused_by_all(&net, [&mut alice, &mut bob], &gid, before).await;
    assert_honest_rotation_accepted(&lies, &mut alice, &gid, before).await;
}

#[tokio::test]
async fn a_new_version_that_rolls_membership_back_to_an_older_head_is_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let mut carol = net.enroll("carol").await;
    join(&mut alice, &mut carol, &gid).await;
    alice.remove(&gid, carol.user()).await.unwrap();
    bob.sync().await.unwrap();
    let before = epoch(&bob, &gid).await;
    // The GMS issues the next RN2 version at the head where carol was still
    // a member, with that head's RN1 version (which carol holds) and member
    // list: every change in it is genuinely signed (guards: a new version
    // never names an older head than the one verified).
    let (changes, _) = chain(&net, &gid).await;
    let add_carol = changes[2].clone();
    let old = membership::apply(
        Some(
            &changes[..2]
                .iter()
                .fold(None, |s: Option<State>, c| {
                    Some(membership::apply(s.as_ref(), c).unwrap())
                })
                .unwrap(),
        ),
        &add_carol,
    )
    .unwrap();
    lies.set(move |g| {
        g.membership_seq = old.seq;
        g.membership_head = old.head.to_vec();
        g.rn1_version = old.rn1_version;
        g.changes.clear();
        g.members = duokey_proto::members_of(&old);
        g.members_omitted = false;
    });
    rotate_now(&net).await;
    assert_refused_by_all(&net, [&mut alice, &mut bob], &gid, before).await;
    assert_honest_rotation_accepted(&lies, &mut bob, &gid, before).await;
}

#[tokio::test]
async fn an_rn1_item_from_anyone_but_the_verified_rotator_is_dropped_and_never_replaces_an_r1() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    join(&mut alice, &mut bob, &gid).await;
    let (v1, v2) = epoch(&bob, &gid).await;
    let before = r1_bytes(&bob, &gid).await;
    let mut mallory = net.attacker("mallory").await;
    // A new RN1 version from a non-member, and the current one "replaced"
    // (guards: the rotator of the verified history only; never replace).
    mallory.send_rotation("bob", &gid, v1 + 1, v2).await;
    mallory.send_rotation("bob", &gid, v1, v2).await;
    bob.sync().await.unwrap();
    assert_eq!(
        r1_bytes(&bob, &gid).await,
        before,
        "mallory's RN1 reached bob's keys"
    );
}

#[tokio::test]
async fn an_rn1_from_a_member_who_is_not_the_rotator_is_refused_while_the_rotators_is_taken() {
    // bob (an attacker's program with his key) becomes the verified rotator
    // of RN1 version 2 and waits; mallory, also a member run by an attacker,
    // sends carol an RN1 for version 2 first, at the right grant, while
    // carol holds no R1 of that version (guards: only the rotator the
    // verified history names; "never replace" cannot help here). bob's own
    // RN1 is then taken (the control).
    let net = LocalNet::start().await;
    let (mut alice, mut carol, mut bob, gid) = with_raw_bob(&net, GroupPolicy::default()).await;
    let mut mallory = net.attacker("mallory").await;
    admit_raw(&mut alice, &mut mallory, &gid).await;
    carol.sync().await.unwrap();
    let grant = bob.rotate_rn1(&gid).await;
    carol.sync().await.unwrap();
    assert_eq!(epoch(&carol, &gid).await, (2, grant.rn2_version));

    mallory
        .send_rotation("carol", &gid, 2, grant.rn2_version)
        .await;
    carol.sync().await.unwrap();
    assert!(
        !r1_bytes(&carol, &gid).await.iter().any(|(v, _)| *v == 2),
        "carol took an RN1 from a member who is not the verified rotator"
    );
    let valid = bob.send_rotation("carol", &gid, 2, grant.rn2_version).await;
    carol.sync().await.unwrap();
    assert!(r1_bytes(&carol, &gid).await.contains(&(2, valid)));
}

/// Every R1 `t` holds: (version, bytes).
async fn r1_bytes(t: &Terminal, gid: &GroupId) -> Vec<(u32, [u8; 32])> {
    let mut out: Vec<(u32, [u8; 32])> = t
        .held_r1s(gid)
        .await
        .unwrap()
        .iter()
        .map(|(v, r1)| (*v, *r1.expose_secret()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_policy_the_gms_rewrites_does_not_turn_rn1_rotation_off() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, lies, gid) = setup(&net).await;
    let mut carol = net.enroll("carol").await;
    join(&mut alice, &mut carol, &gid).await;
    // The GMS tells everyone the group opted out of RN1 rotation and keeps
    // keys for ten years (guards: removal flags and grace/retention come
    // from the policy the owner signed).
    lies.set(|g| {
        if let Some(p) = g.policy.as_mut() {
            p.no_rotate_rn1_on_remove = true;
            p.retention_secs = 10 * 365 * 86_400;
        }
    });
    bob.sync().await.unwrap();
    let before = epoch(&bob, &gid).await;
    alice.remove(&gid, carol.user()).await.unwrap();
    bob.sync().await.unwrap();
    let after = epoch(&bob, &gid).await;
    assert_eq!(after.0, before.0 + 1, "the removal still rotated RN1");
    assert!(!refused_a_grant(&bob, &gid).await);
    assert_eq!(
        net.rn1_items_to("carol").await,
        0,
        "the new RN1 went to carol"
    );
}

#[tokio::test]
async fn two_admins_changing_membership_at_once_converge() {
    // SPEC §4.7: both sign on the head they verified; the GMS applies one and
    // answers ABORTED to the other, whose terminal fetches the new change,
    // re-checks its intent and signs again on top of it.
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let mut carol = net.enroll("carol").await;
    let mut dave = net.enroll("dave").await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    join_with(&mut alice, &mut bob, &gid, Rights::INVITE).await;
    // Both invite; both invitees accept; then the inviters apply, each on
    // its own head (bob has not seen alice's add when he signs his).
    alice
        .invite(&gid, carol.user(), Rights::NONE)
        .await
        .unwrap();
    bob.invite(&gid, dave.user(), Rights::NONE).await.unwrap();
    for t in [&mut carol, &mut dave] {
        t.sync().await.unwrap();
        t.accept(&hex::encode(gid)).await.unwrap();
    }
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    for t in [&mut alice, &mut bob, &mut carol, &mut dave] {
        t.sync().await.unwrap();
    }
    let codes: Vec<String> = {
        let mut out = Vec::new();
        for t in [&mut alice, &mut bob, &mut carol, &mut dave] {
            out.push(t.membership_code(&gid).await.unwrap().code);
        }
        out
    };
    assert!(codes.windows(2).all(|w| w[0] == w[1]), "{codes:?}");
    let names: Vec<String> = alice
        .members(&gid)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
    dave.send(&gid, "hello from dave").await.unwrap();
    carol.sync_messages(&gid).await.unwrap();
    let texts = texts(&carol, &gid).await;
    assert_eq!(texts, ["hello from dave"]);
}

#[tokio::test]
async fn after_a_refused_grant_sends_queue_once_the_grace_window_ends() {
    let net = LocalNet::start().await;
    // A generous window, and the machine's own latency checked apart from
    // it: a slow machine fails with a message that says so, not at random.
    let policy = GroupPolicy {
        grace_secs: 3,
        ..GroupPolicy::default()
    };
    let (mut alice, mut bob, lies, gid) = setup_with(&net, policy).await;
    lies.set(|g| {
        g.members.push(Member {
            user_id: "mallory".into(),
            rights: 0,
        });
    });
    let window_opened = std::time::Instant::now();
    rotate_now(&net).await;
    alice.sync().await.unwrap();
    assert!(refused_a_grant(&alice, &gid).await);
    let took = window_opened.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "this machine took {took:?} to refuse one grant: too slow for the 3 s window this test needs"
    );
    // Within the grace window alice still sends in the last verified epoch…
    let sent = alice.send(&gid, "within grace").await.unwrap();
    assert!(
        matches!(sent, duokey_terminal::SendOutcome::Posted(_)),
        "{sent:?}"
    );
    // …after it, nothing newer is sent until a valid grant comes (the
    // window passes on the clock).
    net.advance(std::time::Duration::from_millis(3100));
    let held = alice.send(&gid, "after grace").await.unwrap();
    assert_eq!(
        held,
        duokey_terminal::SendOutcome::Queued(duokey_terminal::Waiting::Key)
    );
    lies.clear();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    let texts = texts(&bob, &gid).await;
    assert_eq!(texts, ["within grace", "after grace"], "nothing lost");
}

#[tokio::test]
async fn an_invitation_r1_that_arrives_while_the_gms_is_down_is_not_lost() {
    // Nothing lost (SECURITY P7, SPEC §4.7): accepting an invitation's R1
    // needs the group's history from the GMS. While the GMS cannot answer,
    // the item stays in the inbox (not acknowledged, not marked seen); the
    // next sync after the outage completes the join.
    let net = LocalNet::start().await;
    let (cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll_via("alice", &cfg).await;
    let mut bob = net.enroll_via("bob", &cfg).await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    alice.invite(&gid, bob.user(), Rights::NONE).await.unwrap();
    bob.sync().await.unwrap();
    bob.accept(&hex::encode(gid)).await.unwrap();
    alice.sync().await.unwrap();
    lies.changes_unavailable(true);
    let err = bob.sync().await.unwrap_err();
    assert_eq!(err.kind(), duokey_terminal::ErrorKind::Network, "{err}");
    assert!(bob.held_r1s(&gid).await.unwrap().is_empty());
    lies.changes_unavailable(false);
    bob.sync().await.unwrap();
    assert_eq!(
        bob.held_r1s(&gid).await.unwrap().len(),
        1,
        "the R1 was lost"
    );
    alice.send(&gid, "welcome").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, ["welcome"]);
}

#[tokio::test]
async fn messages_whose_key_the_gms_cannot_serve_yet_are_kept_not_skipped() {
    // Nothing lost (SECURITY P7, PROTOCOL §5.11): bob was away while the
    // group re-keyed twice. When he catches up the GMS cannot serve those
    // grants for a while (restarting, rate-limited): his sync fails as the
    // network's, no message is written off as "sent before you joined", and
    // once the GMS answers he reads them all.
    let net = LocalNet::start().await;
    let (cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll_via("bob", &cfg).await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    join(&mut alice, &mut bob, &gid).await;
    alice.send(&gid, "before").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    for text in ["in epoch one", "in epoch two"] {
        rotate_now(&net).await;
        alice.sync().await.unwrap();
        alice.send(&gid, text).await.unwrap();
    }
    lies.grants_unavailable(true);
    let err = bob.sync_messages(&gid).await.unwrap_err();
    assert_eq!(err.kind(), duokey_terminal::ErrorKind::Network, "{err}");
    let err = bob.sync().await.unwrap_err();
    assert_eq!(err.kind(), duokey_terminal::ErrorKind::Network, "{err}");
    assert_eq!(texts(&bob, &gid).await, ["before"]);
    let written_off = bob
        .history(&gid)
        .await
        .unwrap()
        .iter()
        .any(|l| matches!(l, Line::Notice(n) if n.notice.contains("before you joined")));
    assert!(!written_off, "messages were written off during an outage");
    lies.grants_unavailable(false);
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(
        texts(&bob, &gid).await,
        ["before", "in epoch one", "in epoch two"]
    );
}

#[tokio::test]
async fn a_new_rn1_that_arrives_before_its_change_waits_for_it() {
    // The GMS keeps carol from the removal's grant for a while (her grants
    // are refused meanwhile); alice, the verified rotator, has already sent
    // the new RN1. carol keeps the item instead of dropping it (guards:
    // "not yet" is not "never"), and once an honest grant comes she holds
    // the new RN1 and reads what alice sends after the removal.
    let net = LocalNet::start().await;
    let (mut alice, mut carol, lies, gid) =
        removal_kept_from_carol(&net, GroupPolicy::default()).await;
    alice.send(&gid, "after dave left").await.unwrap();
    carol.sync().await.unwrap();
    assert!(refused_a_grant(&carol, &gid).await);
    let held = held_versions(&carol, &gid).await;
    assert_eq!(
        held,
        [1],
        "carol took an RN1 for a change she has not verified"
    );
    // Reading meanwhile must not skip alice's message for good: its key is
    // "not yet", not "never" (guards: `fetch_grant` and `sync_messages`
    // hold the cursor before an envelope whose key has not arrived).
    carol.sync_messages(&gid).await.unwrap();
    assert!(texts(&carol, &gid).await.is_empty());
    lies.clear();
    carol.sync().await.unwrap();
    let held = held_versions(&carol, &gid).await;
    assert_eq!(held, [1, 2], "the new RN1 was lost");
    carol.sync_messages(&gid).await.unwrap();
    assert!(
        texts(&carol, &gid)
            .await
            .contains(&"after dave left".to_owned())
    );
}

#[tokio::test]
async fn the_verified_rotator_cannot_name_another_version_nor_replace_an_r1() {
    // bob is a member whose terminal is replaced by an attacker's program
    // holding his key. He legitimately becomes the rotator of RN1 version 2
    // (a signed rotate_rn1), then sends carol an RN1 at an older RN2 version
    // (guards: at the grant that applied the change) and, after a valid one,
    // a second RN1 of the same version (guards: an R1 is never replaced).
    let net = LocalNet::start().await;
    let (_alice, mut carol, mut bob, gid) = with_raw_bob(&net, GroupPolicy::default()).await;
    let grant = bob.rotate_rn1(&gid).await;
    assert_eq!(grant.rn1_version, 2);
    carol.sync().await.unwrap();
    assert_eq!(epoch(&carol, &gid).await, (2, grant.rn2_version));

    bob.send_rotation("carol", &gid, 2, grant.rn2_version - 1)
        .await;
    carol.sync().await.unwrap();
    assert!(
        !r1_bytes(&carol, &gid).await.iter().any(|(v, _)| *v == 2),
        "carol took an RN1 at an RN2 version other than its change's"
    );
    let first = bob.send_rotation("carol", &gid, 2, grant.rn2_version).await;
    carol.sync().await.unwrap();
    let held = r1_bytes(&carol, &gid).await;
    assert!(held.contains(&(2, first)), "the valid RN1 was not taken");
    bob.send_rotation("carol", &gid, 2, grant.rn2_version).await;
    carol.sync().await.unwrap();
    assert_eq!(r1_bytes(&carol, &gid).await, held, "an R1 was replaced");
}

#[tokio::test]
async fn an_rn1_replayed_after_its_r1_was_erased_is_refused() {
    // bob, an attacker's program with his key, is the verified rotator of
    // RN1 version 2 and carol takes his RN1; then his second rotation makes
    // version 3. Once version 2's grace window is over and carol has read
    // the group past it, she erases R1 version 2 (SPEC §4.7), and a second
    // RN1 for version 2 — valid in every other way — is refused (guards: the
    // erased mark; without it carol holds no R1 of version 2 and takes it).
    let net = LocalNet::start().await;
    let policy = GroupPolicy {
        grace_secs: 3,
        ..GroupPolicy::default()
    };
    let (_alice, mut carol, mut bob, gid) = with_raw_bob(&net, policy).await;
    let v2 = bob.rotate_rn1(&gid).await;
    carol.sync().await.unwrap();
    bob.send_rotation("carol", &gid, 2, v2.rn2_version).await;
    let window_opened = std::time::Instant::now();
    let v3 = bob.rotate_rn1(&gid).await;
    assert_eq!(v3.rn1_version, 3);
    carol.sync().await.unwrap();
    let third = bob.send_rotation("carol", &gid, 3, v3.rn2_version).await;
    carol.sync().await.unwrap();
    let versions = |held: &[(u32, [u8; 32])]| held.iter().map(|(v, _)| *v).collect::<Vec<_>>();
    assert_eq!(versions(&r1_bytes(&carol, &gid).await), [1, 2, 3]);

    // Within the window R1 version 2 is kept, even after a full read (the
    // machine's latency checked apart from the 3 s window).
    carol.send(&gid, "within the window").await.unwrap();
    carol.sync_messages(&gid).await.unwrap();
    carol.sync().await.unwrap();
    let took = window_opened.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "this machine took {took:?} for the steps inside the 3 s window"
    );
    assert!(versions(&r1_bytes(&carol, &gid).await).contains(&2));
    // The window passes on the clock; a post the CS stores after it, once
    // read, lets carol erase version 2.
    net.advance(std::time::Duration::from_millis(3100));
    carol.send(&gid, "after the window").await.unwrap();
    carol.sync_messages(&gid).await.unwrap();
    carol.sync().await.unwrap();
    assert_eq!(
        r1_bytes(&carol, &gid).await,
        [(3, third)],
        "R1 version 2 was not erased"
    );

    // Only the inbox, so that a wrongly taken R1 is not erased again by the
    // erasure at the end of a full sync before the test can see it.
    carol.keep_warnings();
    bob.send_rotation("carol", &gid, 2, v2.rn2_version).await;
    carol.sync_items().await.unwrap();
    assert_eq!(
        r1_bytes(&carol, &gid).await,
        [(3, third)],
        "carol took an RN1 for a version whose R1 she erased"
    );
    let warnings = carol.take_warnings();
    assert!(
        warnings.iter().any(|w| w.contains("erased")),
        "{warnings:?}"
    );
    assert_eq!(
        texts(&carol, &gid).await,
        ["within the window", "after the window"],
        "nothing lost"
    );
}

/// Whether `t` told its user that members are shown different histories.
async fn told_fork(t: &Terminal, gid: &GroupId) -> bool {
    t.history(gid).await.unwrap().iter().any(
        |l| matches!(l, Line::Notice(n) if n.notice.contains("different membership histories")),
    )
}

#[tokio::test]
async fn two_members_shown_different_histories_are_each_warned_and_stop_sending() {
    // The GMS operator forks the group's history: from a copy of its
    // database it serves bob (an admin) alone, while alice, carol and dave
    // stay on the real one. alice removes dave on the real history, bob
    // removes carol on the fork: two validly signed changes at the same seq.
    // Each rotation sends anchors naming the remover's head to the members
    // of the remover's history; alice gets bob's and bob gets alice's, each
    // differing from its own change at that seq: each keeps the evidence,
    // is told, and stops sending (guards: the anchor check, also when the
    // anchor arrives before the terminal's chain reaches it).
    let net = LocalNet::start().await;
    let (fork_cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll_via("bob", &fork_cfg).await;
    let mut carol = net.enroll("carol").await;
    let mut dave = net.enroll("dave").await;
    let gid = new_group(&mut alice, GroupPolicy::default()).await;
    alice
        .invite(&gid, bob.user(), Rights::INVITE.union(Rights::REMOVE))
        .await
        .unwrap();
    bob.sync().await.unwrap();
    bob.accept(&hex::encode(gid)).await.unwrap();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    join(&mut alice, &mut carol, &gid).await;
    join(&mut alice, &mut dave, &gid).await;
    for t in [&mut alice, &mut bob, &mut carol, &mut dave] {
        t.sync().await.unwrap();
    }
    let honest_code = alice.membership_code(&gid).await.unwrap();
    assert_eq!(
        bob.membership_code(&gid).await.unwrap().head,
        honest_code.head
    );

    lies.fork_to(net.forked_gms().await);
    // bob's anchor reaches alice before her chain has a change at its seq:
    // nothing to compare yet; it is checked when her own change comes.
    bob.remove(&gid, carol.user()).await.unwrap();
    alice.sync().await.unwrap();
    assert!(!told_fork(&alice, &gid).await);
    alice.remove(&gid, dave.user()).await.unwrap();
    for t in [&mut alice, &mut bob, &mut carol] {
        t.sync().await.unwrap();
        t.sync().await.unwrap();
    }
    let (a, b) = (
        alice.membership_code(&gid).await.unwrap(),
        bob.membership_code(&gid).await.unwrap(),
    );
    assert_eq!(a.seq, b.seq);
    assert_ne!(a.code, b.code, "the codes people compare differ");
    assert!(a.histories_differ && b.histories_differ);
    assert!(!honest_code.histories_differ);
    // (carol, removed in bob's history, gets nothing from him to compare.)
    for t in [&alice, &bob] {
        assert!(told_fork(t, &gid).await, "{} was not warned", t.user());
    }
    for t in [&mut alice, &mut bob] {
        let refused = t.send(&gid, "in a forked group").await.unwrap_err();
        assert_eq!(
            refused.kind(),
            duokey_terminal::ErrorKind::Refused,
            "{refused}"
        );
        assert!(refused.to_string().contains("stopped"), "{refused}");
    }
    assert_eq!(net.rn1_items_to("mallory").await, 0);
}

#[tokio::test]
async fn a_change_withheld_beyond_rn1_wait_is_reported_to_the_user() {
    // The GMS never lets carol verify the removal; the rotator's new RN1
    // waits for it, and after the group's rn1_wait carol is told that the
    // group server withholds a change (guards: the rn1_wait end of
    // `retry_pending_items`). The wait passes on the clock.
    let net = LocalNet::start().await;
    let policy = GroupPolicy {
        rn1_wait_secs: 1,
        ..GroupPolicy::default()
    };
    let (_alice, mut carol, _lies, gid) = removal_kept_from_carol(&net, policy).await;
    carol.sync().await.unwrap();
    assert!(!told_withheld(&carol, &gid).await, "told before rn1_wait");
    net.advance(std::time::Duration::from_millis(1100));
    carol.sync().await.unwrap();
    assert!(told_withheld(&carol, &gid).await, "carol was not told");
}

/// alice, carol (through a lying GMS) and dave in a group; alice removes
/// dave, and the GMS makes carol refuse every grant of the removal (she
/// cannot verify it) until `lies` are cleared.
async fn removal_kept_from_carol(
    net: &LocalNet,
    policy: GroupPolicy,
) -> (Terminal, Terminal, duokey_testkit::Lies, GroupId) {
    let (carol_cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll("alice").await;
    let mut carol = net.enroll_via("carol", &carol_cfg).await;
    let mut dave = net.enroll("dave").await;
    let gid = new_group(&mut alice, policy).await;
    join(&mut alice, &mut carol, &gid).await;
    join(&mut alice, &mut dave, &gid).await;
    carol.sync().await.unwrap();
    lies.set(|g| {
        if g.cause == GrantCause::MemberRemoved as i32 {
            g.members_omitted = false;
            g.members.clear();
        }
    });
    alice.remove(&gid, dave.user()).await.unwrap();
    (alice, carol, lies, gid)
}

/// Whether `t` told its user that a change its new RN1 needs is withheld.
async fn told_withheld(t: &Terminal, gid: &GroupId) -> bool {
    t.history(gid).await.unwrap().iter().any(|l| {
        matches!(l, Line::Notice(n) if n.notice.contains("which the group server has not shown"))
    })
}
