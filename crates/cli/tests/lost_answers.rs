//! DESIGN D49, "nothing shown twice": a post the CS stored but whose answer
//! never reached the terminal (a node that died after committing, a
//! connection that broke on the way back) is kept, sent again as the same
//! envelope, recognised by the CS, and shown once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_terminal::{SendOutcome, Waiting};
use duokey_testkit::{LocalNet, texts};

#[tokio::test]
async fn a_post_whose_answer_was_lost_is_sent_again_and_shown_once() {
    let net = LocalNet::start().await;
    let (lossy, lost) = net.lossy_cs().await;
    let mut alice = net.enroll_via("alice", &lossy).await;
    let mut bob = net.enroll("bob").await;
    let gid = duokey_testkit::group_of_two(&mut alice, &mut bob, "proj").await;
    net.cs_caught_up().await;

    lost.lose(1);
    let outcome = alice.send(&gid, "said once").await.unwrap();
    assert!(
        matches!(outcome, SendOutcome::Queued(Waiting::Server)),
        "{outcome:?}"
    );
    assert_eq!(lost.left(), 0);
    assert_eq!(alice.queued().await.unwrap(), 1);
    // The CS had stored it: bob already has it.
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, ["said once"]);

    // Alice's next command sends it again; the CS knows it.
    alice.flush_outbox().await.unwrap();
    assert_eq!(alice.queued().await.unwrap(), 0);
    alice.send(&gid, "and then this").await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    alice.sync_messages(&gid).await.unwrap();
    assert_eq!(texts(&bob, &gid).await, ["said once", "and then this"]);
    assert_eq!(texts(&alice, &gid).await, ["said once", "and then this"]);
}
