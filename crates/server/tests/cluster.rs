//! Several GMS and CS nodes on one PostgreSQL database and one NATS
//! (issue 17), in this process with real TLS: what one node commits
//! reaches the terminals connected to another, a removal made through one
//! is enforced by the others at once, two GMS nodes share the periodic
//! rotations without doing one twice, and terminals fail over when a node
//! goes. Needs `DUOKEY_TEST_POSTGRES_URL` and `DUOKEY_TEST_NATS_URL`
//! (`.ci/run` sets both) and says so when it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_proto::*;
use duokey_testkit::{LocalCluster, next_within};
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn what_one_node_commits_reaches_terminals_on_the_other() {
    let Some(c) = LocalCluster::start(2, 2).await else {
        return;
    };
    let mut alice = c.via(0, 0).raw("alice").await;
    let mut bob = c.via(1, 1).raw("bob").await;
    let mut watch = bob.gms.watch(WatchRequest {}).await.unwrap().into_inner();
    let g = alice.create_group("proj").await;
    let g = alice.add(&g, "bob", 0).await.unwrap();
    // Made on GMS node 0, pushed to bob watching on node 1.
    let pushed = next_within(&mut watch, "bob's join grant from the other GMS node")
        .await
        .unwrap();
    assert!(matches!(pushed.event, Some(watch_event::Event::Grant(ref x)) if x.rn2_version == 2));
    c.cs_caught_up().await;

    // Posted through CS node 0, delivered live by CS node 1.
    let mut live = bob
        .cs
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    let seq = alice.post(&g.group_id, "hello from node 0").await.unwrap();
    let d = next_within(&mut live, "the post, relayed by the other CS node")
        .await
        .unwrap();
    match d.event {
        Some(delivery::Event::Envelope(e)) => {
            assert_eq!((e.group_id, e.log_seq), (g.group_id.clone(), seq))
        }
        other => panic!("expected the envelope, got {other:?}"),
    }
    // Positions come from the database: node 1 continues node 0's log.
    assert_eq!(
        bob.post(&g.group_id, "hi from node 1").await.unwrap(),
        seq + 1
    );

    // An inbox item sent through node 1 reaches alice subscribed on node 0.
    let mut alice_live = alice
        .cs
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    let removal = duokey_crypto::Item {
        item_id: duokey_crypto::ItemId::random().unwrap(),
        sender: bob.id.clone(),
        recipient: alice.id.clone(),
        created_at_ms: duokey_testkit::now_ms(),
        body: duokey_crypto::ItemBody::Removal {
            group_id: duokey_crypto::GroupId::from_slice(&g.group_id).unwrap(),
        },
    };
    bob.send(removal).await;
    // (Bob's post may still come first: relayed to node 0 after alice
    // subscribed there, as live deliveries are.)
    loop {
        let d = next_within(&mut alice_live, "the item, relayed by the other CS node")
            .await
            .unwrap();
        match d.event {
            Some(delivery::Event::Item(_)) => break,
            Some(delivery::Event::Envelope(e)) => assert_eq!(e.log_seq, seq + 1),
            None => panic!("an empty delivery"),
        }
    }
}

#[tokio::test]
async fn a_removal_through_one_gms_node_is_enforced_by_every_cs_node_at_once() {
    let Some(mut c) = LocalCluster::start(2, 1).await else {
        return;
    };
    // Bob uses a CS node that hears no frame from the others: it can only
    // be right from the database.
    c.start_deaf_cs().await;
    let mut alice = c.via(0, 0).raw("alice").await;
    let mut bob = c.via(1, 1).raw("bob").await;
    let g = alice.create_group("proj").await;
    let g = alice.add(&g, "bob", 0).await.unwrap();
    c.cs_caught_up().await;
    let gid = g.group_id.clone();
    assert_eq!(bob.post(&gid, "while a member").await.unwrap(), 1);

    alice.remove(&g, "bob").await.unwrap();
    c.cs_caught_up().await;
    // No frame reaches CS node 1: it refuses and limits bob all the same.
    let refused = bob.post(&gid, "after removal").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(alice.post(&gid, "after bob left").await.unwrap(), 2);
    let seen: Vec<u64> = bob
        .fetch(&gid, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_seq)
        .collect();
    assert_eq!(
        seen,
        [1],
        "bob reads only what was said while he was a member"
    );
}

#[tokio::test]
async fn two_gms_nodes_rotate_every_due_group_once() {
    let Some(c) = LocalCluster::start(2, 1).await else {
        return;
    };
    let mut alice = c.via(0, 0).raw("alice").await;
    let mut groups = Vec::new();
    for i in 0..12 {
        groups.push(alice.create_group(&format!("g{i}")).await.group_id);
    }
    let db = duokey_storage::GmsStore::open(&c.database_url)
        .await
        .unwrap();
    let versions = || async {
        let mut v = Vec::new();
        for gid in &groups {
            v.push(db.group(gid).await.unwrap().unwrap().rn2_version);
        }
        v
    };
    for period in 1..=3u64 {
        // Past the default period (one hour): both schedulers wake.
        c.advance(Duration::from_secs(3601));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while versions().await.iter().any(|v| *v < 1 + period) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a group was never rotated"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing is due any more, on either node...
        let now = c.clock.now_ms_i64();
        let again: usize = [0, 1]
            .map(|n| c.gms[n].gms.clone().unwrap())
            .into_iter()
            .map(|gms| async move { gms.rotate_due(now).await })
            .collect::<tokio::task::JoinSet<_>>()
            .join_all()
            .await
            .into_iter()
            .sum();
        assert_eq!(again, 0);
        // ...and no group was rotated twice in the period.
        assert_eq!(versions().await, vec![1 + period; groups.len()]);
    }
}

#[tokio::test]
async fn terminals_fail_over_when_a_cs_node_goes_and_show_everything_once() {
    let Some(mut c) = LocalCluster::start(1, 2).await else {
        return;
    };
    let mut alice = c.enroll("alice").await;
    let mut bob = c.enroll("bob").await;
    let gid = duokey_testkit::group_of_two(&mut alice, &mut bob, "proj").await;
    c.cs_caught_up().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        alice.send(&gid, &text).await.unwrap();
        sent.push(text);
    }
    // Each of the two first nodes is stopped once (whichever the terminals
    // use is stopped in one of the rounds): they carry on through the other.
    for round in 0..2 {
        let addr = c.stop_cs(0).await;
        for i in 0..5 {
            let text = format!("round {round}, message {i}");
            let sent_now = alice.send(&gid, &text).await.unwrap();
            // Posted, not queued: the terminal went to the other node.
            assert!(
                matches!(sent_now, duokey_terminal::SendOutcome::Posted(_)),
                "{text}: {sent_now:?}"
            );
            sent.push(text);
        }
        c.restart_cs(addr).await;
    }
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    bob.sync_messages(&gid).await.unwrap();
    assert_eq!(duokey_testkit::texts(&bob, &gid).await, sent);
}
