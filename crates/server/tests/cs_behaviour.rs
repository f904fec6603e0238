//! SPEC §5 (PROTOCOL §6.4, §6.7): inboxes, subscriptions, limits, retention
//! and durability of the CS, on real servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// a test fails by panicking
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::*;
use duokey_proto::*;
use duokey_testkit::{LocalNet, RawUser};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::Streaming;

fn removal_item(from: &RawUser, to: &str, gid: &[u8]) -> Vec<u8> {
    Item {
        item_id: ItemId::random().unwrap(),
        sender: from.id.clone(),
        recipient: UserId::new(to).unwrap(),
        created_at_ms: duokey_testkit::now_ms(),
        body: ItemBody::Removal {
            group_id: GroupId::from_slice(gid).unwrap(),
        },
    }
    .sign(&from.key)
    .unwrap()
}

/// `SendItem` of the signed `item` as `u`; its inbox cursor.
async fn send_item(u: &mut RawUser, item: Vec<u8>) -> Result<u64, tonic::Status> {
    u.cs.send_item(SendItemRequest { item })
        .await
        .map(|r| r.into_inner().cursor)
}

/// `SendItems` of the signed `items` as `u`, in one batch.
async fn send_items(
    u: &mut RawUser,
    items: Vec<Vec<u8>>,
) -> Result<SendItemsResponse, tonic::Status> {
    u.cs.send_items(SendItemsRequest { items })
        .await
        .map(|r| r.into_inner())
}

/// `Fetch` of one page of `gid` as `u`, after `after_seq`, at most `limit`.
async fn fetch_page(
    u: &mut RawUser,
    gid: &[u8],
    after_seq: u64,
    limit: u32,
) -> Result<FetchResponse, tonic::Status> {
    u.cs.fetch(FetchRequest {
        group_id: gid.to_vec(),
        after_seq,
        limit,
    })
    .await
    .map(|r| r.into_inner())
}

/// `PublishDeliveryKey` of the signed `record` as `u`.
async fn publish(u: &mut RawUser, record: Vec<u8>) -> Result<(), tonic::Status> {
    u.cs.publish_delivery_key(PublishDeliveryKeyRequest { record })
        .await
        .map(drop)
}

/// DESIGN D35: a user holds at most `streams_per_user` live streams;
/// one more is refused, and other users are still served.
#[tokio::test]
async fn live_streams_per_user_are_bounded() {
    let net = LocalNet::start_with(|c| c.limits.streams_per_user = 2).await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(alice.subscribe().await);
    }
    let err = alice.cs.subscribe(SubscribeRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("open live streams"), "{err}");
    assert!(
        bob.cs.subscribe(SubscribeRequest {}).await.is_ok(),
        "another user is served"
    );
    // The GMS's Watch likewise.
    let mut watching = Vec::new();
    for _ in 0..2 {
        watching.push(alice.watch().await);
    }
    let err = alice.gms.watch(WatchRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("open watch streams"), "{err}");
    assert!(
        bob.gms.watch(WatchRequest {}).await.is_ok(),
        "another user is served"
    );
    drop(watching.pop());
    assert!(
        alice.gms.watch(WatchRequest {}).await.is_ok(),
        "a closed stream frees its place"
    );
}

/// alice, bob and carol in one group; bob's and carol's live streams open.
/// Returns alice, the group id, bob's stream and carol's.
async fn proj_with_two_subscribers(
    net: &LocalNet,
) -> (RawUser, Vec<u8>, Streaming<Delivery>, Streaming<Delivery>) {
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let mut carol = net.raw("carol").await;
    let g = alice.add(&g, "carol", 0).await.unwrap();
    net.cs_caught_up().await;
    let bob_stream = bob.subscribe().await;
    let carol_stream = carol.subscribe().await;
    (alice, g.group_id, bob_stream, carol_stream)
}

/// alice posts `n` times `text`; carol's stream must deliver each one, in
/// order, as it is posted.
async fn posts_reach_carol_at_once(
    alice: &mut RawUser,
    gid: &[u8],
    carol: &mut Streaming<Delivery>,
    n: u64,
    text: &str,
) {
    for i in 0..n {
        alice.post(gid, text).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(10), carol.next())
            .await
            .expect("carol is not delayed")
        {
            Some(Ok(Delivery {
                event: Some(delivery::Event::Envelope(e)),
            })) => assert_eq!(e.log_seq, i + 1),
            other => panic!("carol got {other:?}"),
        }
    }
}

/// DESIGN D35: a subscriber that never reads holds at most its byte
/// bound — far below the delivery count bound here — and is cut with a
/// status; another member keeps receiving every post in order.
#[tokio::test]
async fn a_subscriber_that_never_reads_is_cut_at_its_byte_bound() {
    let net = LocalNet::start_with(|c| {
        c.limits.subscriber_queue = 100_000;
        c.limits.subscriber_queue_bytes = 256 * 1024;
    })
    .await;
    let (mut alice, gid, mut hostile, mut fast) = proj_with_two_subscribers(&net).await;
    // 80 posts of 64 KiB: 5 MiB, beyond what HTTP/2 windows and the 256 KiB
    // queue hold, yet 0.08 % of the count bound.
    posts_reach_carol_at_once(&mut alice, &gid, &mut fast, 80, &"z".repeat(64 * 1024)).await;
    let mut got = 0;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = hostile.next().await {
            match msg {
                Ok(_) => got += 1,
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("bob's stream was cut, not left to grow");
    let end = end.expect("bob's stream ends with a status");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(got < 80, "bob was cut before getting everything ({got})");
}

/// The first page of `u`'s inbox.
async fn inbox(u: &mut RawUser) -> Vec<InboxItem> {
    items(u, 0, 0).await.unwrap()
}

/// `Items`: a page of `u`'s inbox after `after_cursor`, at most `limit`.
async fn items(
    u: &mut RawUser,
    after_cursor: u64,
    limit: u32,
) -> Result<Vec<InboxItem>, tonic::Status> {
    u.cs.items(ItemsRequest {
        after_cursor,
        limit,
    })
    .await
    .map(|r| r.into_inner().items)
}

/// DESIGN D35 (quotas): items only to users in the directory; an inbox holds
/// at most its limit (the sender retries once the recipient synced); unread
/// items expire. Control: a second recipient is served while bob's is full.
#[tokio::test]
async fn inboxes_are_bounded_and_only_for_enrolled_users() {
    let net = LocalNet::start_with(|c| c.limits.inbox_max_items = 3).await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let mut carol = net.raw("carol").await;
    let send = |a: &mut RawUser, to: &str| {
        let item = removal_item(a, to, &[1; 16]);
        let mut cs = a.cs.clone();
        async move { cs.send_item(SendItemRequest { item }).await }
    };
    let err = send(&mut alice, "nobody").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let mut last = 0;
    for _ in 0..3 {
        last = send(&mut alice, "bob").await.unwrap().into_inner().cursor;
    }
    let err = send(&mut alice, "bob").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("inbox is full"), "{err}");
    send(&mut alice, "carol").await.unwrap();
    bob.cs
        .ack_items(AckItemsRequest { up_to_cursor: last })
        .await
        .unwrap();
    send(&mut alice, "bob").await.unwrap();
    // Unread items expire after the inbox retention (30 days).
    let month = i64::try_from(duokey_testkit::now_ms()).unwrap() + 31 * 86_400 * 1000;
    net.node
        .cs
        .as_ref()
        .unwrap()
        .purge_expired(month)
        .await
        .unwrap();
    assert!(
        inbox(&mut carol).await.is_empty(),
        "an unread item outlived the inbox retention"
    );
}

#[tokio::test]
async fn inbox_items_are_stored_once_delivered_live_and_acknowledged() {
    let net = LocalNet::start().await;
    let alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let mut live = bob.subscribe().await;
    let item = removal_item(&alice, "bob", &[1; 16]);
    let mut a = alice;
    let c1 = send_item(&mut a, item.clone()).await.unwrap();
    let c2 = send_item(&mut a, item.clone()).await.unwrap();
    assert_eq!(c1, c2, "the same item id is stored once");
    match duokey_testkit::next_within(&mut live, "the live item")
        .await
        .unwrap()
        .event
    {
        Some(delivery::Event::Item(i)) => assert_eq!(i.item, item),
        other => panic!("expected the item, got {other:?}"),
    }
    assert_eq!(inbox(&mut bob).await.len(), 1);
    bob.cs
        .ack_items(AckItemsRequest { up_to_cursor: c1 })
        .await
        .unwrap();
    assert!(items(&mut bob, 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn items_signed_or_sent_in_another_name_are_refused() {
    let net = LocalNet::start().await;
    let alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let forged = removal_item(&alice, "carol", &[1; 16]);
    let err = send_item(&mut bob, forged).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "bob cannot send alice's item"
    );
    let mut mine = removal_item(&bob, "carol", &[1; 16]);
    let last = mine.len() - 1;
    mine[last] ^= 1;
    let err = send_item(&mut bob, mine).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "bad signature refused");
    let err = send_item(&mut bob, b"DKI1 junk".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_batch_of_items_is_stored_whole_or_not_at_all() {
    // SendItems (an RN1 rotation's anchors and rn1 items in one durable
    // write): each item is checked as SendItem checks it; one bad item
    // refuses the whole batch, so nothing is half-sent.
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let mut carol = net.raw("carol").await;
    let good = vec![
        removal_item(&alice, "bob", &[1; 16]),
        removal_item(&alice, "carol", &[1; 16]),
    ];
    let mut with_forgery = good.clone();
    with_forgery.push(removal_item(&bob, "carol", &[2; 16]));
    let err = send_items(&mut alice, with_forgery).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert_eq!(
        inbox(&mut bob).await.len(),
        0,
        "nothing of the refused batch was stored"
    );
    let sent = send_items(&mut alice, good).await.unwrap();
    assert_eq!(sent.cursors.len(), 2);
    assert_eq!(
        (inbox(&mut bob).await.len(), inbox(&mut carol).await.len()),
        (1, 1)
    );
    let too_many = vec![removal_item(&alice, "bob", &[1; 16]); 1001];
    let err = send_items(&mut alice, too_many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn delivery_key_must_be_signed_by_its_user() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let secret = DeliverySecret::generate();
    let record = DeliveryKeyRecord {
        user: alice.id.clone(),
        key: secret.public(),
        created_at_ms: 1,
    };
    let signed = record.sign(&alice.key).unwrap();
    let err = publish(&mut bob, signed.clone()).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "alice's record does not verify with bob's key"
    );
    publish(&mut alice, signed.clone()).await.unwrap();
    let got = bob
        .cs
        .get_user(GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.delivery_key_record, signed);
}

#[tokio::test]
async fn huge_limits_and_bad_ids_get_invalid_argument() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    net.cs_caught_up().await;
    let err = fetch_page(&mut alice, &g.group_id, 0, 1_000_000)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = items(&mut alice, 0, u32::MAX).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = fetch_page(&mut alice, &[1; 3], 0, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = alice
        .cs
        .get_user(GetUserRequest {
            user_id: "Not A User".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = fetch_page(&mut alice, &g.group_id, u64::MAX, 1)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a position beyond i64 is refused: {err:?}"
    );
    // The server keeps serving.
    assert!(alice.fetch(&g.group_id, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn oversized_envelope_is_refused_and_the_server_keeps_serving() {
    let net = LocalNet::start_with(|c| c.limits.max_body_bytes = 1024).await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    net.cs_caught_up().await;
    let big = "x".repeat(4096);
    let err = alice.post(&g.group_id, &big).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{err:?}"
    );
    assert_eq!(alice.post(&g.group_id, "small").await.unwrap(), 1);
}

#[tokio::test]
async fn rate_limit_triggers_and_recovers() {
    // One token a second: the burst is refused however slow this machine.
    let net = LocalNet::start_rate_limited(5).await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let ask = GetUserRequest {
        user_id: "alice".into(),
    };
    let mut limited = false;
    for _ in 0..20 {
        if let Err(e) = alice.cs.get_user(ask.clone()).await {
            assert_eq!(e.code(), Code::ResourceExhausted);
            limited = true;
            break;
        }
    }
    assert!(limited, "a burst beyond the quota is refused");
    assert!(
        bob.cs.get_user(ask.clone()).await.is_ok(),
        "another certificate is not affected"
    );
    // The bucket refills at 1/s on the CS's clock (D41).
    net.advance(Duration::from_secs(2));
    assert!(
        alice.cs.get_user(ask.clone()).await.is_ok(),
        "the limit recovers once time passes"
    );
}

#[tokio::test]
async fn a_slow_subscriber_is_disconnected_and_does_not_delay_others() {
    let net = LocalNet::start_with(|c| c.limits.subscriber_queue = 4).await;
    let (mut alice, gid, mut slow, mut fast) = proj_with_two_subscribers(&net).await;
    // 16 KiB posts fill bob's HTTP/2 window quickly.
    posts_reach_carol_at_once(&mut alice, &gid, &mut fast, 300, &"y".repeat(16 * 1024)).await;
    let mut end = None;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(msg) = slow.next().await {
            if let Err(e) = msg {
                end = Some(e);
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "bob's slow stream neither ended nor failed within 60 s"
    );
    let end = end.expect("bob's stream ends with a status");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
}

#[tokio::test]
async fn retention_purges_old_envelopes() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    net.cs_caught_up().await;
    for i in 0..3 {
        alice.post(&g.group_id, &format!("m{i}")).await.unwrap();
    }
    let cs = net.node.cs.as_ref().unwrap();
    assert_eq!(
        cs.purge_expired(duokey_testkit::now_ms() as i64)
            .await
            .unwrap(),
        0,
        "inside retention"
    );
    let later = duokey_testkit::now_ms() as i64 + 31 * 24 * 3600 * 1000;
    assert_eq!(cs.purge_expired(later).await.unwrap(), 3);
    assert!(alice.fetch(&g.group_id, 0).await.unwrap().is_empty());
    let gms = net.node.gms.as_ref().unwrap();
    gms.rotate_due(duokey_testkit::now_ms() as i64 + 2 * 3600 * 1000)
        .await;
    assert_eq!(
        gms.purge_expired(later).await.unwrap(),
        1,
        "RN2 history older than retention is erased"
    );
    let err = alice.grant(&g.group_id, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_post_flood_from_one_certificate_does_not_stop_another_user() {
    // Ten at once, then one a second: 60 posts are limited however slow
    // this machine is.
    let net = LocalNet::start_rate_limited(10).await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    net.cs_caught_up().await;
    let mut flood = Vec::new();
    for i in 0..60 {
        let env = alice.envelope(&g.group_id, &format!("flood {i}"));
        let mut cs = alice.cs.clone();
        let gid = g.group_id.clone();
        flood.push(tokio::spawn(async move {
            cs.post(PostRequest {
                group_id: gid,
                envelope: env,
            })
            .await
            .map(|_| ())
        }));
    }
    let bob_post = bob.post(&g.group_id, "I still get through").await;
    let mut limited = 0;
    for f in flood {
        if let Err(e) = f.await.unwrap() {
            assert_eq!(e.code(), Code::ResourceExhausted);
            limited += 1;
        }
    }
    assert!(limited >= 40, "the flood is limited ({limited} refused)");
    assert!(
        bob_post.is_ok(),
        "another user's post succeeds during the flood: {bob_post:?}"
    );
}

#[tokio::test]
async fn a_run_of_large_posts_is_fetched_in_pages_that_fit_an_answer() {
    // DESIGN D31 (pages bounded by bytes): twenty-five 200 KiB posts (5 MB)
    // in a row; one page of 1,000 would exceed the 4 MiB an answer may carry
    // and stop every sync of the group for good. The CS answers in pages
    // under 3 MiB instead.
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    net.cs_caught_up().await;
    let big = "x".repeat(200 * 1024);
    for _ in 0..25 {
        alice.post(&g.group_id, &big).await.unwrap();
    }
    let (mut after, mut pages, mut seen) = (0, 0, 0);
    loop {
        let page = fetch_page(&mut bob, &g.group_id, after, 1000)
            .await
            .expect("a page that fits an answer");
        pages += 1;
        seen += page.envelopes.len();
        after = page.envelopes.last().map_or(after, |e| e.log_seq);
        if !page.more {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, 25, "nothing lost across pages");
    assert!(pages >= 2, "the run was split into pages");
}
