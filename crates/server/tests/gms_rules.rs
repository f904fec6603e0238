//! What the servers enforce (SPEC §2, §5; SECURITY.md): rights, membership
//! at the CS, serialised versions, grants only for versions one was a
//! member at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// a test fails by panicking
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::membership::Action;
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::*;
use duokey_testkit::LocalNet;
use tonic::Code;

#[tokio::test]
async fn member_without_invite_right_cannot_add_and_nobody_grants_rights_they_lack() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let g = alice.create_group("proj").await;
    assert_eq!(g.rn2_version, 1);
    let g = alice.add(&g, "bob", 0x01).await.unwrap(); // bob may invite, not remove
    assert_eq!(g.rn2_version, 2);
    let err = bob.add(&g, "carol", 0x02).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "bob cannot grant the remove right he lacks"
    );
    let g = bob.add(&g, "carol", 0x01).await.unwrap();
    assert_eq!(g.rn2_version, 3);
    let mut carol = net.raw("carol").await;
    let g = alice.add(&g, "dave", 0).await.unwrap();
    let mut dave = net.raw("dave").await;
    let err = dave.add(&g, "erin", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("invite"), "{}", err.message());
    let err = carol.remove(&g, "dave").await.unwrap_err();
    assert!(err.message().contains("remove right"), "{}", err.message());
}

/// A post naming a newer key (RN2 version) than the membership the CS has
/// learned is "not yet", not "never": UNAVAILABLE, which the terminal
/// treats as a transient fault (the message is kept and sent again); the
/// same sender naming a key the CS knows is refused for good.
#[tokio::test]
async fn a_post_ahead_of_the_cs_is_retried_and_a_non_member_refused() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let mut mallory = net.raw("mallory").await;
    let g = alice.create_group("proj").await;
    net.cs_caught_up().await;
    let ahead = mallory.envelope_at(&g.group_id, "x", duokey_crypto::Epoch::new(1, 9));
    let err = mallory.post_envelope(&g.group_id, ahead).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let known = mallory.envelope(&g.group_id, "x");
    let err = mallory.post_envelope(&g.group_id, known).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A group the CS has never heard of: not yet learned either.
    let unknown = mallory.envelope(&[7; 16], "x");
    let err = mallory.post_envelope(&[7; 16], unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test]
async fn non_members_are_refused_and_a_removed_member_reads_only_up_to_its_removal() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let mut mallory = net.raw("mallory").await;
    net.cs_caught_up().await;
    let gid = g.group_id.clone();
    assert_eq!(alice.post(&gid, "hello").await.unwrap(), 1);
    assert_eq!(bob.post(&gid, "hi").await.unwrap(), 2);
    assert_eq!(bob.fetch(&gid, 0).await.unwrap().len(), 2);
    assert_eq!(
        mallory.post(&gid, "x").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        mallory.fetch(&gid, 0).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let g = alice.remove(&g, "bob").await.unwrap();
    assert_eq!(g.rn1_version, 2, "rotate_rn1_on_remove is on by default");
    assert_eq!(g.rn1_rotator, "alice");
    net.cs_caught_up().await;
    assert_eq!(
        bob.post(&gid, "still here?").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Departed: bob still reads what was posted while he was a member
    // (DESIGN D32, history kept), and nothing posted after.
    assert_eq!(bob.fetch(&gid, 0).await.unwrap().len(), 2);
    assert_eq!(alice.post(&gid, "after bob left").await.unwrap(), 3);
    assert_eq!(bob.fetch(&gid, 0).await.unwrap().len(), 2);
    assert!(bob.fetch(&gid, 2).await.unwrap().is_empty());
    assert_eq!(alice.fetch(&gid, 0).await.unwrap().len(), 3);
    assert_eq!(
        mallory.fetch(&gid, 0).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

/// DESIGN D35 (quotas): nobody is a member of more groups than the server
/// allows (by creating them, or by being added), and no group keeps its
/// history longer than the server allows.
#[tokio::test]
async fn groups_per_user_and_retention_are_bounded_by_the_server() {
    let net = LocalNet::start_with(|c| c.limits.max_groups_per_user = 2).await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    bob.create_group("b1").await;
    bob.create_group("b2").await;
    let err = bob.try_create_group("b3").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    // Nor can anyone add bob to a third.
    let g = alice.create_group("a1").await;
    let err = alice.add(&g, "bob", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("bob is a member of 2 groups"),
        "{err}"
    );
    let net = LocalNet::start_with(|c| c.limits.max_retention_secs = 3600).await;
    let mut carol = net.raw("carol").await;
    let err = carol.try_create_group("long").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("retention"), "{err}");
}

#[tokio::test]
async fn a_post_naming_another_sender_is_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    net.cs_caught_up().await;
    let forged = alice.envelope(&g.group_id, "I am alice");
    let err = bob.post_envelope(&g.group_id, forged).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn twenty_concurrent_rotations_give_versions_2_to_21_without_gap_or_duplicate() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("big").await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut gms = alice.gms.clone();
        let gid = g.group_id.clone();
        calls.push(tokio::spawn(async move {
            gms.rotate(RotateRequest {
                group_id: gid,
                report_id: duokey_crypto::ItemId::random().unwrap().0.to_vec(),
                change: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .rn2_version
        }));
    }
    let mut versions = Vec::new();
    for c in calls {
        versions.push(c.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<u64>>());
}

#[tokio::test]
async fn two_changes_signed_on_one_head_apply_once_and_the_other_is_aborted() {
    // Two admins at once (SPEC §4.7): both sign on the same head; the GMS
    // applies the first and answers ABORTED to the second, whose signer then
    // fetches the new change and signs again on top of it.
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    let gid = g.group_id.clone();
    let key = |u: &str| duokey_testkit::test_key(u).public().to_bytes().to_vec();
    let add_bob = alice.sign(&gid, Action::Add, "bob", 0, key("bob")).await;
    let add_carol = alice
        .sign(&gid, Action::Add, "carol", 0, key("carol"))
        .await;
    alice.report(&gid, add_bob).await.unwrap();
    let err = alice.report(&gid, add_carol).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err}");
    let g = alice.add(&g, "carol", 0).await.unwrap();
    let members: Vec<&str> = g.members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(members, ["alice", "bob", "carol"]);
    assert_eq!(g.membership_seq, 3);
}

#[tokio::test]
async fn report_member_is_idempotent_by_report_id() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    let key = duokey_testkit::test_key("bob").public().to_bytes().to_vec();
    let change = alice.sign(&g.group_id, Action::Add, "bob", 0, key).await;
    let req = ReportMemberRequest {
        group_id: g.group_id.clone(),
        report_id: vec![9; 16],
        change,
    };
    let first = alice
        .gms
        .report_member(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = alice.gms.report_member(req).await.unwrap().into_inner();
    assert_eq!(first, again, "a retried report answers the same grant");
    assert_eq!(again.rn2_version, 2);
}

#[tokio::test]
async fn get_grant_for_a_version_before_joining_is_refused() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let mine = bob.grant(&g.group_id, 2).await.unwrap();
    assert_eq!(
        mine.rn2, g.rn2,
        "bob gets the grant of the version that added him"
    );
    let err = bob.grant(&g.group_id, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(alice.grant(&g.group_id, 1).await.is_ok());
    let grants = bob.grants(vec![]).await;
    assert_eq!(grants.grants.len(), 1);
}

#[tokio::test]
async fn watch_pushes_grants_and_the_removal_to_the_removed_member() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let g = alice.create_group("proj").await;
    let mut bob_watch = bob.watch().await;
    let mut alice_watch = alice.watch().await;
    let g2 = alice.add(&g, "bob", 0).await.unwrap();
    let first = duokey_testkit::next_within(&mut bob_watch, "bob's join grant")
        .await
        .unwrap();
    assert!(matches!(first.event, Some(watch_event::Event::Grant(ref x)) if x.rn2_version == 2));
    alice.remove(&g2, "bob").await.unwrap();
    let removal = duokey_testkit::next_within(&mut bob_watch, "bob's removal")
        .await
        .unwrap();
    match removal.event {
        Some(watch_event::Event::Removal(r)) => {
            assert_eq!(
                (r.rn2_version, r.cause, r.by.as_str()),
                (3, RemovalCause::Removed as i32, "alice")
            )
        }
        other => panic!("expected a removal, got {other:?}"),
    }
    let a1 = duokey_testkit::next_within(&mut alice_watch, "alice's first grant")
        .await
        .unwrap();
    let a2 = duokey_testkit::next_within(&mut alice_watch, "alice's second grant")
        .await
        .unwrap();
    let versions: Vec<u64> = [a1, a2]
        .into_iter()
        .filter_map(|e| match e.event {
            Some(watch_event::Event::Grant(g)) => Some(g.rn2_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, [2, 3]);
}

/// The running scheduler (not a direct `rotate_due` call) rotates a group
/// once its period passes on the GMS's clock: advancing the clock wakes it
/// as the real wait would end (D41).
#[tokio::test]
async fn the_scheduler_rotates_when_the_clock_passes_the_period() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    let mut watch = alice.watch().await;
    net.advance(std::time::Duration::from_secs(2 * 3600));
    let rotated = duokey_testkit::next_within(&mut watch, "the periodic rotation")
        .await
        .unwrap();
    match rotated.event {
        Some(watch_event::Event::Grant(x)) => {
            assert_eq!((x.rn2_version, x.cause), (2, GrantCause::Periodic as i32));
            assert_eq!(x.group_id, g.group_id);
        }
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[tokio::test]
async fn periodic_rotation_issues_a_new_version_when_due() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    let gms = net.node.gms.as_ref().unwrap();
    let in_two_hours = duokey_testkit::now_ms() as i64 + 2 * 3600 * 1000;
    assert!(gms.rotate_due(in_two_hours).await >= 1);
    let now = alice.grants(vec![g.group_id.clone()]).await;
    assert_eq!(now.grants[0].rn2_version, 2);
    assert_eq!(now.grants[0].cause, GrantCause::Periodic as i32);
    assert_ne!(now.grants[0].rn2, g.rn2);
    assert_eq!(
        gms.rotate_due(duokey_testkit::now_ms() as i64).await,
        0,
        "not due again right away"
    );
}

#[tokio::test]
async fn leave_and_delete() {
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let left = bob.leave(&g.group_id).await.unwrap();
    assert_eq!(left.rn2_version, 3);
    let after = alice.grants(vec![]).await;
    assert_eq!(
        after.grants[0].rn1_rotator, "alice",
        "the owner rotates RN1 after a leave"
    );
    let gone = bob.grants(vec![g.group_id.clone()]).await;
    assert_eq!(gone.removals[0].cause, RemovalCause::Left as i32);
    // bob left: the GMS no longer serves him the chain to sign on.
    assert!(bob.chain(&g.group_id).await.is_none());
    alice.delete(&g.group_id).await.unwrap();
    net.cs_caught_up().await;
    assert_eq!(
        alice.post(&g.group_id, "x").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn gms_calls_are_rate_limited_per_certificate() {
    let net = LocalNet::start_rate_limited(5).await;
    let mut alice = net.raw("alice").await;
    let mut bob = net.raw("bob").await;
    let mut limited = false;
    for _ in 0..30 {
        if let Err(e) = alice.gms.list_groups(ListGroupsRequest {}).await {
            assert_eq!(e.code(), Code::ResourceExhausted);
            limited = true;
            break;
        }
    }
    assert!(limited, "a burst beyond the quota is refused");
    assert!(
        bob.gms.list_groups(ListGroupsRequest {}).await.is_ok(),
        "another certificate is not affected"
    );
}

#[tokio::test]
async fn enrolment_flood_from_one_address_leaves_other_addresses_served() {
    let net = LocalNet::start().await;
    let flooder: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    // Issued before the flood, so that the enrolment right after it comes
    // within the limiter's refill however slow this machine is.
    let token = net.token("carol").await;
    let mut accounts = AccountsClient::new(net.anonymous_from(&net.gms_url(), Some(flooder)));
    let mut limited = false;
    for i in 0..200 {
        let refused = accounts
            .enroll(EnrollRequest {
                token: format!("dk1-guess-{i}"),
                csr_der: vec![],
            })
            .await
            .unwrap_err();
        match refused.code() {
            Code::PermissionDenied => continue,
            Code::ResourceExhausted => {
                limited = true;
                break;
            }
            other => panic!("unexpected refusal {other:?}: {refused:?}"),
        }
    }
    assert!(limited, "a token-guessing flood is rate limited");

    let err = net
        .raw_with("carol", &token, Some(flooder))
        .await
        .err()
        .expect("the flooding address is held back, even with a valid token");
    assert_eq!(err.code(), Code::ResourceExhausted);

    let other: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let mut carol = net
        .raw_with("carol", &token, Some(other))
        .await
        .expect("another address enrols, and the refused attempt did not use up the token");
    assert!(carol.gms.list_groups(ListGroupsRequest {}).await.is_ok());
}

/// Found by `fuzz/fuzz_targets/server_requests.rs`: a version above 2^63 − 1
/// was answered UNAVAILABLE ("storage unavailable, retry"), which tells a
/// client to retry a request that can never succeed.
#[tokio::test]
async fn a_grant_version_beyond_storage_range_is_out_of_range() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    let err = alice.grant(&g.group_id, u64::MAX).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let ok = alice.grant(&g.group_id, 1).await;
    assert!(ok.is_ok(), "the GMS keeps serving");
}

#[tokio::test]
async fn only_the_owner_changes_the_policy_and_the_gms_then_follows_it() {
    // SPEC §4.7: a `policy` change is the owner's; the GMS stores the signed
    // policy and its scheduler uses it (the next periodic rotation is due
    // after the new period, not the old one).
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0x03).await;
    let gid = g.group_id.clone();
    let four_hours = duokey_crypto::membership::Policy {
        rotate_every_secs: 4 * 3600,
        grace_secs: 600,
        ..Default::default()
    };
    let by_bob = bob
        .sign(&gid, Action::Policy, "bob", 0, four_hours.encode())
        .await;
    let err = bob.rotate(&gid, by_bob).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    let by_alice = alice
        .sign(&gid, Action::Policy, "alice", 0, four_hours.encode())
        .await;
    let grant = alice.rotate(&gid, by_alice).await.unwrap();
    assert_eq!(grant.cause, GrantCause::PolicyChanged as i32);
    assert_eq!(grant.rn1_version, g.rn1_version);
    let policy = grant.policy.unwrap();
    assert_eq!(
        (policy.rotate_every_secs, policy.grace_secs),
        (4 * 3600, 600)
    );

    let gms = net.node.gms.as_ref().unwrap();
    let in_two_hours = duokey_testkit::now_ms() as i64 + 2 * 3600 * 1000;
    assert_eq!(gms.rotate_due(in_two_hours).await, 0, "the old 1 h period");
    let in_five_hours = duokey_testkit::now_ms() as i64 + 5 * 3600 * 1000;
    assert_eq!(gms.rotate_due(in_five_hours).await, 1);
}

#[tokio::test]
async fn only_the_owner_hands_ownership_over_and_the_former_owner_may_then_leave() {
    // PROTOCOL §4.8 `transfer`: the GMS applies the shared rules, gives the
    // two members their new rights in the grant (pushed whole: D27's rule
    // does not rebuild a change of two members' rights), and from then on
    // the owner's powers are the new owner's.
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let gid = g.group_id.clone();
    let by_bob = bob.sign(&gid, Action::Transfer, "bob", 0, Vec::new()).await;
    let err = bob.rotate(&gid, by_bob).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = alice.leave(&gid).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "the owner cannot leave: {err}"
    );

    let mut watch = bob.watch().await;
    let to_bob = alice
        .sign(&gid, Action::Transfer, "bob", 0, Vec::new())
        .await;
    let grant = alice.rotate(&gid, to_bob).await.unwrap();
    assert_eq!(grant.cause, GrantCause::OwnerChanged as i32);
    assert_eq!(grant.subject, "bob");
    assert_eq!(grant.rn1_version, g.rn1_version, "RN1 stays");
    let rights: Vec<(&str, u32)> = grant
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.rights))
        .collect();
    assert_eq!(rights, [("alice", 0x03), ("bob", 0x07)]);
    let pushed = loop {
        let event = duokey_testkit::next_within(&mut watch, "the transfer's grant").await;
        if let Some(watch_event::Event::Grant(g)) = event.unwrap().event
            && g.rn2_version == grant.rn2_version
        {
            break g;
        }
    };
    assert!(!pushed.members_omitted);
    assert_eq!(pushed.members, grant.members);

    // The former owner may leave now; the new owner may not.
    let err = bob.leave(&gid).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    alice.leave(&gid).await.unwrap();
}
