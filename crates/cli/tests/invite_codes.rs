//! Invite codes (PROTOCOL §4.10, DESIGN D50) and SPEC §7 P10 with a real
//! attack: a rogue CA operator colluding with the CS mints a certificate
//! for the invitee's user id and answers the invitation. Without a code
//! (and before anyone compared safety numbers) it gets RN1 — the honest
//! limit of the certificate variant; with a code it gets none, its wrong
//! answers are counted and the third kills the code. The real servers run
//! on 127.0.0.1 with mutual TLS; the terminals are the real library.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_crypto::invite_code::InviteCode;
use duokey_crypto::*;
use duokey_terminal::{CodeInvitation, Terminal};
use duokey_testkit::{LocalNet, Rogue, new_group, notices, texts};

const DAY_MS: u64 = 24 * 3600 * 1000;

async fn members(t: &Terminal, gid: &GroupId) -> Vec<String> {
    t.members(gid)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.user)
        .collect()
}

/// `t` invites `who` into `gid` with a code valid for a day; the code invitation.
async fn invite_with_code(t: &mut Terminal, gid: &GroupId, who: &UserId) -> CodeInvitation {
    t.invite_with_code(gid, who, Rights::NONE, DAY_MS)
        .await
        .unwrap()
}

/// Asserts that `t` told its user, in the group, something containing `what`.
async fn assert_told(t: &Terminal, gid: &GroupId, what: &str) {
    let told = notices(t, gid).await;
    assert!(told.iter().any(|n| n.contains(what)), "{told:?}");
}

/// The first item of `kind` in the rogue's inbox.
async fn inbox_item(rogue: &mut Rogue, kind: ItemKind) -> Item {
    rogue
        .inbox()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.body.kind() == kind)
        .unwrap()
}

/// `from` sends `text` to `gid`; `to` reads it, alone, as the group's history.
async fn assert_delivered(from: &mut Terminal, to: &mut Terminal, gid: &GroupId, text: &str) {
    from.send(gid, text).await.unwrap();
    to.sync_messages(gid).await.unwrap();
    assert_eq!(texts(to, gid).await, [text]);
}

#[tokio::test]
async fn p10_a_rogue_ca_with_the_cs_gets_rn1_without_a_code_and_none_with_one() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    // First contact: bob never enrolled; the CA operator mints "bob".
    let mut rogue = net.rogue("bob").await;
    let bob = rogue.id.clone();

    // The honest limit: a plain invitation answered by the rogue hands it
    // RN1 (nobody compared safety numbers yet).
    let plain = new_group(&mut alice, "plain").await;
    alice.invite(&plain, &bob, Rights::NONE).await.unwrap();
    let invite = inbox_item(&mut rogue, ItemKind::Invite).await;
    let stolen = DeliverySecret::generate();
    rogue
        .send(
            alice.user(),
            ItemBody::Ack {
                invite_id: invite.item_id,
                group_id: plain,
                invite_pub: stolen.public(),
            },
        )
        .await
        .unwrap();
    alice.sync().await.unwrap();
    assert_eq!(
        net.rn1_opened_by("bob", &stolen).await,
        1,
        "the honest limit"
    );

    // With a code: three guesses, each refused and counted, then the code
    // is dead — even the right code is refused after that.
    let coded = new_group(&mut alice, "coded").await;
    let sent = invite_with_code(&mut alice, &coded, &bob).await;
    let alice_key = alice.identity_public();
    let guess = DeliverySecret::generate();
    // A plain `ack` to the code invitation (skipping the code) is refused.
    let invite = inbox_item(&mut rogue, ItemKind::CodeInvite).await;
    let skip = ItemBody::Ack {
        invite_id: invite.item_id,
        group_id: coded,
        invite_pub: guess.public(),
    };
    rogue.send(alice.user(), skip).await.unwrap();
    alice.sync().await.unwrap();
    assert_told(&alice, &coded, "without the code").await;
    for (n, wrong) in ["00000000", "12345678", "99999999"].iter().enumerate() {
        let wrong = if *wrong == sent.code.digits() {
            "00000001"
        } else {
            wrong
        };
        let wrong = InviteCode::parse(wrong).unwrap();
        rogue
            .answer_code_invitation(alice.user(), &alice_key, &coded, &wrong, &guess)
            .await
            .unwrap();
        alice.sync().await.unwrap();
        assert_told(&alice, &coded, &format!("({} wrong of 3)", n + 1)).await;
    }
    assert_told(&alice, &coded, "the code is dead").await;
    rogue
        .answer_code_invitation(alice.user(), &alice_key, &coded, &sent.code, &guess)
        .await
        .unwrap();
    alice.sync().await.unwrap();
    assert_eq!(
        net.rn1_opened_by("bob", &guess).await,
        0,
        "RN1 reached the rogue"
    );
    assert_eq!(members(&alice, &coded).await, ["alice"]);
    assert!(!alice.confirmed_by_code(&bob).await.unwrap());
    net.node.shutdown().await;
}

#[tokio::test]
async fn a_code_invitation_confirms_both_keys_and_the_group_works() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let gid = new_group(&mut alice, "proj").await;
    let sent = invite_with_code(&mut alice, &gid, bob.user()).await;
    bob.sync().await.unwrap();
    // A plain accept says the code is needed.
    let err = bob.accept("proj").await.unwrap_err().to_string();
    assert!(err.contains("--code"), "{err}");
    // Typed as people do: with a space.
    let typed = format!("{} {}", &sent.code.digits()[..4], &sent.code.digits()[4..]);
    bob.accept_with_code("proj", &InviteCode::parse(&typed).unwrap())
        .await
        .unwrap();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(members(&alice, &gid).await, ["alice", "bob"]);
    assert!(alice.confirmed_by_code(bob.user()).await.unwrap());
    assert!(bob.confirmed_by_code(alice.user()).await.unwrap());
    let seen = alice.verify(bob.user(), false).await.unwrap();
    assert_eq!(seen.confirmed_by, "code");
    assert_delivered(&mut alice, &mut bob, &gid, "hello bob").await;
    net.node.shutdown().await;
}

#[tokio::test]
async fn a_wrong_or_expired_code_adds_nobody_and_says_so() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let mut carol = net.enroll("carol").await;
    let gid = new_group(&mut alice, "proj").await;

    // A typo: alice is told, bob is not added.
    let sent = invite_with_code(&mut alice, &gid, bob.user()).await;
    let mut wrong = sent.code.digits().to_owned().into_bytes();
    wrong[0] = if wrong[0] == b'9' { b'0' } else { wrong[0] + 1 };
    bob.sync().await.unwrap();
    bob.accept_with_code(
        "proj",
        &InviteCode::parse(std::str::from_utf8(&wrong).unwrap()).unwrap(),
    )
    .await
    .unwrap();
    alice.sync().await.unwrap();
    assert_told(&alice, &gid, "did not match the code (1 wrong of 3)").await;
    assert_eq!(members(&alice, &gid).await, ["alice"]);
    let seen = alice.verify(bob.user(), false).await.unwrap();
    assert_eq!(seen.confirmed_by, "certificate only");
    // Bob retypes it right: the same invitation takes his second answer.
    bob.accept_with_code("proj", &sent.code).await.unwrap();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(members(&alice, &gid).await, ["alice", "bob"]);
    assert_delivered(&mut alice, &mut bob, &gid, "welcome, after a typo").await;

    // Expired: the invitee's terminal refuses to answer at all.
    alice
        .invite_with_code(&gid, carol.user(), Rights::NONE, 60_000)
        .await
        .unwrap();
    carol.sync().await.unwrap();
    net.advance(std::time::Duration::from_secs(61));
    let code = InviteCode::parse("00000000").unwrap();
    let err = carol.accept_with_code("proj", &code).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    net.node.shutdown().await;
}

#[tokio::test]
async fn a_forged_inviter_cannot_lure_the_invitee_nor_confirm_in_the_inviters_name() {
    let net = LocalNet::start().await;
    let mut bob = net.enroll("bob").await;
    // First contact: the CA operator mints "alice" and sends bob a plain
    // invitation; bob expects alice's code, and his terminal refuses.
    let mut fake = net.rogue("alice").await;
    fake.send(
        bob.user(),
        ItemBody::Invite {
            group_id: GroupId([9; 16]),
            group_name: GroupName::new("proj").unwrap(),
            rights: Rights::NONE,
        },
    )
    .await
    .unwrap();
    bob.sync().await.unwrap();
    let err = bob
        .accept_with_code("proj", &InviteCode::parse("12345678").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("without a code") && err.contains("decline"),
        "{err}"
    );
    net.node.shutdown().await;

    // A code invitation from the real alice: a `code_confirm` from someone
    // else is refused, and does not spoil the real one.
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let mut mallory = net.rogue("mallory").await;
    let gid = new_group(&mut alice, "proj").await;
    let sent = invite_with_code(&mut alice, &gid, bob.user()).await;
    bob.sync().await.unwrap();
    bob.accept_with_code("proj", &sent.code).await.unwrap();
    let forged = ItemBody::CodeConfirm {
        invite_id: sent.invite_id,
        group_id: gid,
        tag: [7; 32],
    };
    mallory.send(bob.user(), forged).await.unwrap();
    bob.sync().await.unwrap();
    assert!(!bob.confirmed_by_code(alice.user()).await.unwrap());
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert!(bob.confirmed_by_code(alice.user()).await.unwrap());
    assert!(!bob.confirmed_by_code(&mallory.id).await.unwrap());
    assert_delivered(&mut alice, &mut bob, &gid, "the real one").await;
    net.node.shutdown().await;
}

/// The items of `kind` in `user`'s inbox at the CS, as stored (signed).
async fn stored(net: &LocalNet, user: &str, kind: ItemKind) -> Vec<Vec<u8>> {
    let cs = net.cs_db().await;
    let items = cs.inbox_after(user, 0, 100).await.unwrap();
    cs.close().await;
    items
        .into_iter()
        .map(|i| i.item)
        .filter(|b| SignedItem::parse(b).is_ok_and(|s| s.item.body.kind() == kind))
        .collect()
}

/// A CS replays each message of a finished code exchange (the invitation,
/// the PAKE answer, the confirmation): nothing happens a second time — no
/// second confirmation or key is sent, no try is taken, no invitation comes
/// back. And a used code does not open another invitation, even to the
/// same person from the same inviter. Two guards stand in the way of a
/// replay (items are applied once by id, and each step checks its own
/// state: the code's invitation is no longer `sent`); with both removed
/// this test sees a second confirmation go out.
#[tokio::test]
async fn replayed_code_messages_and_a_reused_code_do_nothing() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let first = new_group(&mut alice, "first").await;
    let sent = invite_with_code(&mut alice, &first, bob.user()).await;
    let [invite] = &stored(&net, "bob", ItemKind::CodeInvite).await[..] else {
        panic!("one code invitation")
    };
    bob.sync().await.unwrap();
    bob.accept_with_code("first", &sent.code).await.unwrap();
    let [answer] = &stored(&net, "alice", ItemKind::CodeAck).await[..] else {
        panic!("one code answer")
    };
    let before = stored(&net, "bob", ItemKind::CodeConfirm).await.len();
    alice.sync().await.unwrap();
    let [confirm] = &stored(&net, "bob", ItemKind::CodeConfirm).await[..] else {
        panic!("one confirmation")
    };
    assert_eq!(before, 0);
    bob.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(members(&alice, &first).await, ["alice", "bob"]);
    assert_eq!(members(&bob, &first).await, ["alice", "bob"]);

    // The replays, each straight into the terminal as a CS would deliver it.
    let (told_alice, told_bob) = (notices(&alice, &first).await, notices(&bob, &first).await);
    let sent_to_bob = net.rn1_items_to("bob").await;
    let confirms = stored(&net, "bob", ItemKind::CodeConfirm).await.len();
    alice.process_item(answer).await.unwrap();
    bob.process_item(invite).await.unwrap();
    bob.process_item(confirm).await.unwrap();
    assert_eq!(
        stored(&net, "bob", ItemKind::CodeConfirm).await.len(),
        confirms
    );
    assert_eq!(net.rn1_items_to("bob").await, sent_to_bob);
    assert_eq!(notices(&alice, &first).await, told_alice);
    assert_eq!(notices(&bob, &first).await, told_bob);
    assert!(bob.invitations().await.unwrap().is_empty());
    assert_eq!(members(&alice, &first).await, ["alice", "bob"]);
    assert_eq!(
        alice.verify(bob.user(), false).await.unwrap().confirmed_by,
        "code"
    );

    // The used code, for a new invitation to another group: a wrong try.
    let second = new_group(&mut alice, "second").await;
    let fresh = invite_with_code(&mut alice, &second, bob.user()).await;
    assert_ne!(fresh.code.digits(), sent.code.digits());
    bob.sync().await.unwrap();
    bob.accept_with_code("second", &sent.code).await.unwrap();
    alice.sync().await.unwrap();
    assert_told(&alice, &second, "(1 wrong of 3)").await;
    assert_eq!(members(&alice, &second).await, ["alice"]);
    bob.accept_with_code("second", &fresh.code).await.unwrap();
    alice.sync().await.unwrap();
    assert_eq!(members(&alice, &second).await, ["alice", "bob"]);
    net.node.shutdown().await;
}
