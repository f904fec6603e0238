//! Transfer of ownership (PROTOCOL §4.8, §5.5a; DESIGN D52) with the real
//! servers on 127.0.0.1 and the real terminal library, and what a newcomer
//! sees of the versions between its join and its first sync (SPEC §4.5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_crypto::Rights;
use duokey_testkit::{LocalNet, new_group, notices};

/// A newcomer who does not sync between being added and the owner handing
/// the group to it (and leaving) still reads each change, once, in order:
/// the versions since its join are fetched once the inviter's anchor names
/// the join (guard: `Terminal::fetch_since_joining`); it can then act as the
/// owner.
#[tokio::test]
async fn a_newcomer_who_was_away_learns_it_owns_the_group() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut carol = net.enroll("carol").await;
    let gid = new_group(&mut alice, "proj").await;
    alice
        .invite(&gid, carol.user(), Rights::NONE)
        .await
        .unwrap();
    carol.sync().await.unwrap();
    carol.accept("proj").await.unwrap();
    // alice's terminal adds carol and hands her the key; carol is away.
    alice.sync().await.unwrap();
    alice.transfer(&gid, carol.user()).await.unwrap();
    alice.leave(&gid).await.unwrap();

    carol.sync().await.unwrap();
    carol.sync().await.unwrap();
    let notices = notices(&carol, &gid).await;
    let wanted = [
        "carol joined",
        "carol is now the group's owner",
        "alice left",
    ];
    let seen: Vec<&str> = notices
        .iter()
        .map(String::as_str)
        .filter(|n| wanted.contains(n))
        .collect();
    assert_eq!(seen, wanted, "{notices:?}");
    let members = carol.members(&gid).await.unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].rights.contains(Rights::OWNER), "{members:?}");
    carol.delete(&gid).await.unwrap();
    net.node.shutdown().await;
}

/// A lying GMS labels an ordinary rotation "mallory is now the group's
/// owner": the notice is written only when the verified change at the
/// grant's membership seq is a transfer to that member (guard:
/// `Terminal::cause_verified`); the honest transfer afterwards is told.
#[tokio::test]
async fn a_gms_cannot_announce_a_new_owner_that_no_owner_signed() {
    let net = LocalNet::start().await;
    let (cfg, lies) = net.lying_gms().await;
    let mut alice = net.enroll_via("alice", &cfg).await;
    let mut bob = net.enroll_via("bob", &cfg).await;
    let gid = new_group(&mut alice, "proj").await;
    duokey_testkit::join(&mut alice, &mut bob, &gid).await;
    lies.set(|g| {
        g.cause = duokey_proto::GrantCause::OwnerChanged as i32;
        g.subject = "mallory".into();
    });
    alice.rotate(&gid, false).await.unwrap();
    bob.sync().await.unwrap();
    lies.clear();
    alice.transfer(&gid, bob.user()).await.unwrap();
    bob.sync().await.unwrap();
    let told: Vec<String> = notices(&bob, &gid)
        .await
        .into_iter()
        .filter(|n| n.contains("owner"))
        .collect();
    assert_eq!(told, ["bob is now the group's owner"]);
    net.node.shutdown().await;
}

/// An anchor naming a false head, signed by someone enrolled who is not a
/// member, would stop the group's sending as a "different histories"
/// alarm: only members' anchors count (guard: the membership check in
/// `Terminal::check_anchor`). A member's false anchor still raises it.
#[tokio::test]
async fn only_members_anchors_can_raise_the_different_histories_alarm() {
    use duokey_crypto::{Item, ItemBody, ItemId};
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let gid = new_group(&mut alice, "proj").await;
    duokey_testkit::join(&mut alice, &mut bob, &gid).await;
    let to_bob = bob.user().clone();
    let anchor = |from: &duokey_testkit::RawUser| Item {
        item_id: ItemId::random().unwrap(),
        sender: from.id.clone(),
        recipient: to_bob.clone(),
        created_at_ms: duokey_testkit::now_ms(),
        body: ItemBody::Anchor {
            group_id: gid,
            membership_seq: 1,
            head: [7; 32],
            at_rn2_version: 1,
        },
    };
    let alarm = |told: Vec<String>| {
        told.iter()
            .any(|n| n.contains("different membership histories"))
    };
    let mut mallory = net.attacker("mallory").await;
    mallory.send(anchor(&mallory)).await;
    bob.sync().await.unwrap();
    assert!(!alarm(notices(&bob, &gid).await));
    bob.send(&gid, "still sending").await.unwrap();
    // Control: once mallory is a member, the same false anchor is an alarm.
    alice
        .invite(&gid, &mallory.id, duokey_crypto::Rights::NONE)
        .await
        .unwrap();
    mallory.accept_invitation(&gid).await;
    alice.sync().await.unwrap();
    mallory.send(anchor(&mallory)).await;
    bob.sync().await.unwrap();
    assert!(alarm(notices(&bob, &gid).await));
    net.node.shutdown().await;
}
