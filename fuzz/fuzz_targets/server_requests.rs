//! Any request to any RPC of the AS, GMS and CS (SPEC §5, §7.7), sent over
//! real mutual TLS 1.3 to real servers with SQLite in this process.
//!
//! The first input byte picks the RPC, the rest is its protobuf request,
//! sent by alice (or anonymously for the AS). Every answer must be a reply or
//! a proper gRPC status: a panic anywhere in the servers aborts (panic hook),
//! and INTERNAL, UNKNOWN, UNAVAILABLE or no answer within 10 s fail. After
//! every input bob, another user, must still be served.
//!
//! The harness's group `42…42` (alice the creator, bob a member) is fixed so
//! that seeds in `fuzz/corpus/server_requests` can name it.
#![no_main]

#[path = "common.rs"]
mod common;

use duokey_crypto::GroupId;
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::*;
use duokey_testkit::{LocalNet, RawUser};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The fixed group of the harness.
const GROUP: [u8; 16] = [0x42; 16];

struct Harness {
    rt: tokio::runtime::Runtime,
    accounts: AccountsClient<Channel>,
    alice: RawUser,
    bob: RawUser,
    _net: LocalNet,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = common::runtime_aborting_on_panic();
        let (net, alice, bob, accounts) = rt.block_on(async {
            let net = LocalNet::start_with(|c| {
                c.limits.rate_per_sec = 1_000_000;
                c.limits.rate_burst = 1_000_000;
            })
            .await;
            // SPEC §4.7: the group and bob's add are signed by alice.
            let mut alice = net.raw("alice").await;
            let bob = net.raw("bob").await;
            let g = alice.create_group_of(GroupId(GROUP), "fuzz").await;
            alice.add(&g, "bob", 0).await.expect("bob joins");
            let accounts = AccountsClient::new(net.anonymous(&net.gms_url()));
            (net, alice, bob, accounts)
        });
        Harness {
            rt,
            accounts,
            alice,
            bob,
            _net: net,
        }
    })
}

/// Decodes `body` as `$ty` (inputs that do not decode are skipped: prost
/// would refuse them identically on the server) and makes the call.
macro_rules! call {
    ($client:expr, $method:ident, $ty:ty, $body:expr) => {
        match <$ty>::decode($body) {
            Ok(req) => $client.$method(req).await.map(|_| ()),
            Err(_) => Ok(()),
        }
    };
}

/// Opens a server stream and reads at most its first message.
macro_rules! stream {
    ($client:expr, $method:ident, $ty:ty, $body:expr) => {
        match <$ty>::decode($body) {
            Ok(req) => match $client.$method(req).await {
                Ok(resp) => {
                    let mut s = resp.into_inner();
                    match tokio::time::timeout(Duration::from_millis(20), s.message()).await {
                        Ok(Err(status)) => Err(status),
                        _ => Ok(()),
                    }
                }
                Err(status) => Err(status),
            },
            Err(_) => Ok(()),
        }
    };
}

async fn request(h: &Harness, which: u8, body: &[u8]) -> Result<(), Status> {
    let (mut gms, mut cs, mut sync) = (h.alice.gms.clone(), h.alice.cs.clone(), h.alice.sync.clone());
    match which % 21 {
        0 => call!(h.accounts.clone(), enroll, EnrollRequest, body),
        1 => call!(gms, create_group, CreateGroupRequest, body),
        2 => call!(gms, report_member, ReportMemberRequest, body),
        3 => call!(gms, leave, LeaveRequest, body),
        4 => call!(gms, rotate, RotateRequest, body),
        5 => call!(gms, delete, DeleteRequest, body),
        6 => call!(gms, get_grants, GetGrantsRequest, body),
        7 => call!(gms, get_grant, GetGrantRequest, body),
        8 => call!(gms, list_groups, ListGroupsRequest, body),
        9 => stream!(gms, watch, WatchRequest, body),
        10 => call!(cs, publish_delivery_key, PublishDeliveryKeyRequest, body),
        11 => call!(cs, get_user, GetUserRequest, body),
        12 => call!(cs, send_item, SendItemRequest, body),
        13 => call!(cs, items, ItemsRequest, body),
        14 => call!(cs, ack_items, AckItemsRequest, body),
        15 => call!(cs, post, PostRequest, body),
        16 => call!(cs, fetch, FetchRequest, body),
        17 => stream!(cs, subscribe, SubscribeRequest, body),
        18 => call!(gms, get_changes, GetChangesRequest, body),
        19 => call!(cs, send_items, SendItemsRequest, body),
        _ => call!(sync, set_members, SetMembersRequest, body),
    }
}

/// A reply, or a status that tells the client what it did wrong.
fn check(rpc: &str, answer: Result<(), Status>) {
    if let Err(status) = answer {
        assert!(
            !matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::Unavailable
            ),
            "improper answer to {rpc}: {status:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    h.rt.block_on(async {
        let answer = tokio::time::timeout(Duration::from_secs(10), request(h, which, body))
            .await
            .expect("the server answers within 10 s");
        check(&format!("RPC {}", which % 21), answer);
        let mut bob = h.bob.gms.clone();
        bob.list_groups(ListGroupsRequest {})
            .await
            .expect("the GMS still serves another user");
        let mut bob_cs = h.bob.cs.clone();
        let fetched = bob_cs
            .fetch(FetchRequest {
                group_id: GROUP.to_vec(),
                after_seq: 0,
                limit: 1,
            })
            .await
            .map(|_| ());
        check("bob's fetch", fetched);
    });
});
