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
    assert!(members[0].rights.contains("owner"), "{members:?}");
    carol.delete(&gid).await.unwrap();
    net.node.shutdown().await;
}
