//! Invite codes (PROTOCOL §4.10) against vectors/invite_code.json, made by a
//! second implementation (scripts/vectors/invite_code.py: python-spake2 and
//! Python's hashlib/hmac): the inviter's message from its seed, the key
//! agreed with the Python invitee, and both confirmation tags, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_crypto::invite_code::{self, CodeContext, CodeKeys, InviteCode};
use duokey_crypto::*;
use serde_json::Value;

fn vectors() -> Value {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/invite_code.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {} must exist: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn hx<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().expect("hex string"))
        .expect("valid hex")
        .try_into()
        .expect("length")
}

#[test]
fn the_inviter_side_reproduces_the_independent_vectors() {
    let v = vectors();
    let invite_id = ItemId(hx(&v["invite_id"]));
    let group_id = GroupId(hx(&v["group_id"]));
    let inviter = UserId::new(v["inviter"].as_str().unwrap()).unwrap();
    let invitee = UserId::new(v["invitee"].as_str().unwrap()).unwrap();
    let ctx = CodeContext {
        invite_id: &invite_id,
        group_id: &group_id,
        inviter: &inviter,
        invitee: &invitee,
    };
    let code = InviteCode::parse(v["code"].as_str().unwrap()).unwrap();
    let seed: [u8; 32] = hx(&v["inviter_seed"]);
    let msg_a = invite_code::inviter_message(&code, &seed, &ctx).unwrap();
    assert_eq!(hex::encode(msg_a), v["msg_a"].as_str().unwrap());

    let a = IdentityKey::from_seed(hx(&v["inviter_identity_seed"])).public();
    let b = IdentityKey::from_seed(hx(&v["invitee_identity_seed"])).public();
    let invite_pub = DeliverySecret::from_bytes(&hx(&v["invite_secret"]))
        .unwrap()
        .public();
    let keys = CodeKeys {
        inviter: &a,
        invitee: &b,
        invite_pub: &invite_pub,
    };
    let c = invite_code::inviter_finish(&code, &seed, &ctx, &hx(&v["msg_b"]), &keys).unwrap();
    // The Python invitee's tag checks, and this side's tag is the one it
    // expects: same key, same transcript, same derivation.
    c.check_invitee(&hx(&v["tag_b"])).unwrap();
    assert_eq!(
        hex::encode(c.inviter_tag().unwrap()),
        v["tag_a"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(c.invitee_tag().unwrap()),
        v["tag_b"].as_str().unwrap()
    );
}
