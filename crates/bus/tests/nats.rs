#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The bus over a real NATS server (`DUOKEY_TEST_NATS_URL`; `.ci/run` starts
//! one): frames reach the other nodes, lost frames and connection trouble
//! are reported as gaps.

use duokey_bus::{Bus, Incoming, Topic};
use duokey_proto::bus_frame::Body;
use duokey_proto::{BusFrame, BusMembers};
use duokey_testkit::{PrivateNats, nats_url};
use prost::Message;
use std::time::Duration;

/// Longest wait for anything in these tests.
const WITHIN: Duration = Duration::from_secs(30);

/// A subject prefix no other test or run uses.
fn prefix() -> String {
    format!("duokey.test.{:016x}", rand::random::<u64>())
}

fn members(version: u64) -> Body {
    Body::Members(BusMembers {
        group_id: vec![7; 16],
        rn2_version: version,
    })
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(WITHIN, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("the subscription ended")
}

#[tokio::test]
async fn frames_reach_the_other_nodes_and_not_their_publisher() {
    let Some(url) = nats_url() else { return };
    let prefix = prefix();
    let a = Bus::connect(&url, &prefix).await.unwrap();
    let b = Bus::connect(&url, &prefix).await.unwrap();
    let mut at_a = a.subscribe(Topic::Cs).await.unwrap();
    let mut at_b = b.subscribe(Topic::Cs).await.unwrap();
    let mut gms_at_b = b.subscribe(Topic::Gms).await.unwrap();
    a.publish(Topic::Cs, members(1));
    a.publish(Topic::Gms, members(2));
    assert_eq!(next(&mut at_b).await, Incoming::Frame(Box::new(members(1))));
    assert_eq!(
        next(&mut gms_at_b).await,
        Incoming::Frame(Box::new(members(2)))
    );
    // A's first frame is B's, sent after A's own: A never got its own.
    b.publish(Topic::Cs, members(3));
    assert_eq!(next(&mut at_a).await, Incoming::Frame(Box::new(members(3))));
    assert!(a.max_payload() >= 1 << 20, "{}", a.max_payload());
}

#[tokio::test]
async fn a_lost_frame_is_reported_as_a_gap() {
    let Some(url) = nats_url() else { return };
    let prefix = prefix();
    let bus = Bus::connect(&url, &prefix).await.unwrap();
    let mut rx = bus.subscribe(Topic::Cs).await.unwrap();
    // Another node, played by a plain NATS client, whose frame 2 is lost.
    let other = async_nats::connect(&url).await.unwrap();
    for seq in [1, 3, 4] {
        let frame = BusFrame {
            node: vec![42; 16],
            seq,
            body: Some(members(seq)),
        };
        let subject = format!("{prefix}.cs");
        other
            .publish(subject, frame.encode_to_vec().into())
            .await
            .unwrap();
    }
    other.flush().await.unwrap();
    assert_eq!(next(&mut rx).await, Incoming::Frame(Box::new(members(1))));
    assert!(matches!(next(&mut rx).await, Incoming::Gap(why) if why.contains("lost")));
    assert_eq!(next(&mut rx).await, Incoming::Frame(Box::new(members(4))));
}

#[tokio::test]
async fn a_nats_restart_is_a_gap_and_frames_flow_again() {
    if nats_url().is_none() {
        return;
    }
    let Some(mut server) = PrivateNats::start().await else {
        return;
    };
    let url = server.url();
    let prefix = prefix();
    let a = Bus::connect(&url, &prefix).await.unwrap();
    let b = Bus::connect(&url, &prefix).await.unwrap();
    let mut rx = b.subscribe(Topic::Cs).await.unwrap();
    a.publish(Topic::Cs, members(1));
    assert_eq!(next(&mut rx).await, Incoming::Frame(Box::new(members(1))));

    server.kill();
    assert!(matches!(next(&mut rx).await, Incoming::Gap(why) if why.contains("lost")));
    let _server = PrivateNats::start_on(server.port).await;
    // Reconnected: reported as a gap too (frames sent meanwhile are gone).
    loop {
        match next(&mut rx).await {
            Incoming::Gap(why) if why.contains("reconnected") => break,
            Incoming::Gap(_) => continue,
            other => panic!("expected the reconnection first, got {other:?}"),
        }
    }
    // A may reconnect after B, and a frame it sends before B's subscription
    // is in force again is lost (a gap, by design): A sends until one
    // arrives. Frames flow again, in order, with gaps reported.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut sent = Vec::new();
    for version in 2.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no frame after the restart"
        );
        a.publish(Topic::Cs, members(version));
        sent.push(members(version));
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(Incoming::Frame(body))) => {
                assert!(sent.contains(&body), "{body:?} was never sent");
                break;
            }
            Ok(Some(Incoming::Gap(_))) | Err(_) => continue,
            Ok(None) => panic!("the subscription ended"),
        }
    }
}
