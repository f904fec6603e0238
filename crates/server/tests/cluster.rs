//! Several GMS and CS nodes on one PostgreSQL database and one NATS
//! (DESIGN D49), in this process with real TLS: what one node commits
//! reaches the terminals connected to another, a removal made through one
//! is enforced by the others at once, two GMS nodes share the periodic
//! rotations without doing one twice, and terminals fail over when a node
//! goes. Needs `DUOKEY_TEST_POSTGRES_URL` and `DUOKEY_TEST_NATS_URL`
//! (`.ci/run` sets both) and says so when it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_proto::*;
use duokey_testkit::{LocalCluster, next_within};
use prost::Message as _;
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
    let seen = bob.log_positions(&gid).await;
    assert_eq!(
        seen,
        [1],
        "bob reads only what was said while he was a member"
    );
}

/// A cluster of `gms` GMS nodes and one CS node where alice created `n`
/// groups: the cluster, the groups' ids and the shared GMS database.
async fn alices_groups(
    gms: usize,
    n: usize,
) -> Option<(LocalCluster, Vec<Vec<u8>>, duokey_storage::GmsStore)> {
    let c = LocalCluster::start(gms, 1).await?;
    let mut alice = c.via(0, 0).raw("alice").await;
    let mut groups = Vec::new();
    for i in 0..n {
        groups.push(alice.create_group(&format!("g{i}")).await.group_id);
    }
    let db = duokey_storage::GmsStore::open(&c.database_url)
        .await
        .unwrap();
    Some((c, groups, db))
}

/// Each group's RN2 version in the shared database.
async fn versions(db: &duokey_storage::GmsStore, groups: &[Vec<u8>]) -> Vec<u64> {
    let mut v = Vec::new();
    for gid in groups {
        v.push(db.group(gid).await.unwrap().unwrap().rn2_version);
    }
    v
}

/// Waits (bounded: the schedulers run in the background, and only the
/// database shows what they did) until the groups' versions are `done`.
async fn until_versions(
    db: &duokey_storage::GmsStore,
    groups: &[Vec<u8>],
    done: impl Fn(&[u64]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = versions(db, groups).await;
        if done(&v) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups never rotated: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_gms_nodes_rotate_every_due_group_once() {
    let Some((c, groups, db)) = alices_groups(2, 12).await else {
        return;
    };
    for period in 1..=3u64 {
        // Past the default period (one hour): both schedulers wake.
        c.advance(Duration::from_secs(3601));
        until_versions(&db, &groups, |v| v.iter().all(|v| *v > period)).await;
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
        assert_eq!(versions(&db, &groups).await, vec![1 + period; groups.len()]);
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

/// The position of an envelope delivery, or `None` for anything else.
fn envelope_seq(d: Delivery) -> Option<u64> {
    match d.event {
        Some(delivery::Event::Envelope(e)) => Some(e.log_seq),
        _ => None,
    }
}

#[tokio::test]
async fn a_nats_restart_loses_nothing_and_live_delivery_comes_back() {
    if duokey_testkit::nats_url().is_none() {
        return;
    }
    let Some(mut nats) = duokey_testkit::PrivateNats::start().await else {
        return;
    };
    let Some(c) = LocalCluster::start_on(1, 2, &nats.url()).await else {
        return;
    };
    let mut alice = c.via(0, 0).raw("alice").await;
    let mut bob = c.via(0, 1).raw("bob").await;
    let g = alice.create_group("proj").await;
    let g = alice.add(&g, "bob", 0).await.unwrap();
    let gid = g.group_id.clone();
    c.cs_caught_up().await;
    let subscribe = |bob: &mut duokey_testkit::RawUser| {
        let mut cs = bob.cs.clone();
        async move {
            cs.subscribe(SubscribeRequest {})
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut live = subscribe(&mut bob).await;
    let mut acked = vec![alice.post(&gid, "before").await.unwrap()];
    let first = next_within(&mut live, "the first post, relayed").await;
    assert_eq!(envelope_seq(first.unwrap()), Some(acked[0]));

    // NATS goes: bob's node ends his stream (it can no longer promise to
    // relay everything), and posts are still committed and acknowledged.
    nats.kill();
    let ended = loop {
        match next_within(&mut live, "the end of the stream").await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    for i in 0..3 {
        acked.push(alice.post(&gid, &format!("during {i}")).await.unwrap());
    }
    // NATS is back: live delivery resumes once both nodes have reconnected
    // (posted again until one is relayed; each post is acknowledged).
    let _nats = duokey_testkit::PrivateNats::start_on(nats.port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut live = subscribe(&mut bob).await;
    let restarted_at = acked.len();
    'relayed: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live delivery never resumed"
        );
        let seq = alice.post(&gid, "after").await.unwrap();
        acked.push(seq);
        let wait = tokio::time::timeout(Duration::from_millis(500), async {
            use tokio_stream::StreamExt;
            live.next().await
        });
        match wait.await {
            // Any post made since NATS came back, relayed live (under load
            // it may come after the next post is made).
            Ok(Some(Ok(d)))
                if envelope_seq(d.clone()).is_some_and(|s| acked[restarted_at..].contains(&s)) =>
            {
                break 'relayed;
            }
            Ok(Some(Ok(_))) | Err(_) => continue,
            // The node ended the stream again (it saw the reconnection as a
            // gap): subscribe anew.
            Ok(Some(Err(_)) | None) => live = subscribe(&mut bob).await,
        }
    }
    // Every acknowledged post is there, by cursor, once, in order.
    let logged = bob.log_positions(&gid).await;
    assert_eq!(logged, acked);
    assert_eq!(
        logged,
        (1..=u64::try_from(acked.len()).unwrap()).collect::<Vec<_>>()
    );
}

/// `owner` adds `user` to the group of `grant`, again on a fresh chain while
/// another node's change wins the race (as a terminal retries).
async fn add_retrying(owner: &mut duokey_testkit::RawUser, grant: &Grant, user: &str) {
    for _ in 0..50 {
        match owner.add(grant, user, 0).await {
            Ok(_) => return,
            Err(s) if matches!(s.code(), Code::Aborted | Code::FailedPrecondition) => continue,
            Err(s) => panic!("adding {user}: {s:?}"),
        }
    }
    panic!("adding {user} lost the race 50 times");
}

async fn add_all(owner: &mut duokey_testkit::RawUser, groups: &[Grant], user: String) {
    for g in groups {
        add_retrying(owner, g, &user).await;
    }
}

#[tokio::test]
async fn two_gms_nodes_under_concurrent_changes_keep_every_group_whole() {
    let Some(c) = LocalCluster::start(2, 1).await else {
        return;
    };
    // The same owner (same key) through each GMS node.
    let alice = c.via(0, 0).raw("alice").await;
    let again = c.via(1, 0).user_with_chain(
        alice.id.clone(),
        duokey_testkit::test_key("alice"),
        alice.chain.clone(),
    );
    let mut owners = [alice, again];
    for i in 0..6 {
        c.via(i % 2, 0).raw(&format!("m{i}")).await;
    }
    let mut grants = Vec::new();
    for i in 0..6 {
        grants.push(owners[0].create_group(&format!("g{i}")).await);
    }
    let (busy, quiet) = grants.split_at(4);
    let db = duokey_storage::GmsStore::open(&c.database_url)
        .await
        .unwrap();
    for period in 0..3usize {
        // Every group is due on both nodes, while the owner changes four of
        // them through both nodes at once.
        c.advance(Duration::from_secs(3601));
        let [a, b] = &mut owners;
        tokio::join!(
            add_all(a, busy, format!("m{}", 2 * period)),
            add_all(b, busy, format!("m{}", 2 * period + 1)),
        );
        // The quiet groups are rotated in the period (once: checked below).
        let quiet_ids: Vec<Vec<u8>> = quiet.iter().map(|g| g.group_id.clone()).collect();
        let rotated = 2 + u64::try_from(period).unwrap();
        until_versions(&db, &quiet_ids, |v| v.iter().all(|v| *v >= rotated)).await;
    }
    for (i, g) in grants.iter().enumerate() {
        let v = versions(&db, std::slice::from_ref(&g.group_id)).await[0];
        // Every version from 1 has its grant: no gap, none twice.
        let mut all = Vec::new();
        for n in 1..=v {
            let pb = db.grant(&g.group_id, n).await.unwrap();
            let grant = Grant::decode(pb.expect("a grant per version").as_slice()).unwrap();
            assert_eq!(grant.rn2_version, n);
            all.push(grant);
        }
        let of = |cause: GrantCause| all.iter().filter(|g| g.cause() == cause).count();
        let periodic: Vec<u64> = all
            .iter()
            .filter(|g| g.cause() == GrantCause::Periodic)
            .map(|g| g.issued_at_ms)
            .collect();
        // Never two periodic rotations of a group within one period.
        assert!(
            periodic.windows(2).all(|w| w[1] - w[0] >= 3_600_000),
            "g{i} rotated twice in a period: {periodic:?}"
        );
        let changes = db.changes(&g.group_id, 0, 1000).await.unwrap();
        let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
        if i < 4 {
            // Each concurrent add landed once, none lost.
            assert_eq!(of(GrantCause::MemberAdded), 6, "g{i}");
            assert!(periodic.len() <= 3, "g{i}: {periodic:?}");
            assert_eq!(seqs, (1..=7).collect::<Vec<u64>>(), "g{i}");
        } else {
            // Untouched: rotated exactly once per period, none missed.
            assert_eq!(periodic.len(), 3, "g{i}");
            assert_eq!(seqs, vec![1], "g{i}");
        }
        assert_eq!(
            usize::try_from(v).unwrap(),
            1 + of(GrantCause::MemberAdded) + periodic.len()
        );
    }
}

#[tokio::test]
async fn rotations_claimed_by_a_node_that_died_are_done_by_another_after_the_lease() {
    let Some((c, groups, db)) = alices_groups(1, 5).await else {
        return;
    };
    // A node that is killed right after claiming every due group (its
    // lease is one minute, as the GMS takes it), before rotating any: it
    // claims them as of an hour later, before the live node's clock gets
    // there (so that the live node's scheduler cannot claim them first).
    let now = c.clock.now_ms_i64() + 3_601_000;
    let claimed = db
        .claim_due_rotations(now, now + 60_000, 1000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), groups.len());
    c.advance(Duration::from_secs(3601));
    // The live node leaves them alone while the lease runs...
    let gms = c.gms[0].gms.clone().unwrap();
    assert_eq!(gms.rotate_due(now + 59_000).await, 0);
    assert_eq!(versions(&db, &groups).await, vec![1; groups.len()]);
    // ...and rotates each, once, when it has expired.
    c.advance(Duration::from_secs(61));
    until_versions(&db, &groups, |v| v.iter().all(|v| *v == 2)).await;
    assert_eq!(gms.rotate_due(c.clock.now_ms_i64()).await, 0);
    assert_eq!(versions(&db, &groups).await, vec![2; groups.len()]);
}
