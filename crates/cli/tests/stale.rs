//! SPEC §4.5: a sender with a stale RN2 version is told with a `stale` item
//! and recovers; its late message in the closed epoch is not accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_testkit::LocalNet;

use duokey_crypto::Rights;
use duokey_terminal::{GroupPolicy, Line};
use std::time::Duration;

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            if let Line::Message(m) = l {
                Some(m.text.clone())
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test]
async fn stale_sender_is_told_and_recovers() {
    let net = LocalNet::start().await;
    let mut alice = net.enroll("alice").await;
    let mut bob = net.enroll("bob").await;
    let policy = GroupPolicy {
        grace_secs: 1,
        ..GroupPolicy::default()
    };
    let gid = alice.create_group("proj", policy).await.unwrap().group_id;
    alice.invite(&gid, bob.user(), Rights::NONE).await.unwrap();
    bob.sync().await.unwrap();
    bob.accept("proj").await.unwrap();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();

    // alice rotates; bob does not sync and posts with the old key after the
    // grace window closed.
    alice.rotate(&gid, false).await.unwrap();
    net.advance(Duration::from_millis(1100)); // the grace window passes on the clock
    bob.send(&gid, "sent with a stale key").await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert!(
        texts(&alice.history(&gid).await.unwrap()).is_empty(),
        "the late message in the closed epoch is dropped"
    );

    // bob is told, catches up, and his next message is read.
    bob.sync().await.unwrap();
    let notices: Vec<String> = bob
        .history(&gid)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|l| {
            if let Line::Notice(n) = l {
                Some(n.notice)
            } else {
                None
            }
        })
        .collect();
    assert!(
        notices.iter().any(|n| n.contains("outdated")),
        "{notices:?}"
    );
    bob.send(&gid, "sent again with the current key")
        .await
        .unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(
        texts(&alice.history(&gid).await.unwrap()),
        ["sent again with the current key"]
    );
    net.node.shutdown().await;
}
