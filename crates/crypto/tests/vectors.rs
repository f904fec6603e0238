//! SPEC §3.4: reproduce every entry of the repository's
//! `vectors/suite1.json` byte for byte. The file is read at test time; a
//! missing file fails the test. `DUOKEY_VECTORS` may point at another copy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, missing_docs)]
// A test fails by panicking: its casts of vector numbers need no checks.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::rn1_delivery::{Rn1Context, open_rn1};
use duokey_crypto::*;
use serde_json::Value;
use std::path::PathBuf;

fn vectors() -> Value {
    let path = std::env::var_os("DUOKEY_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../vectors/suite1.json")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors {} must exist: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("vectors are JSON");
    assert_eq!(v["suite"], 1);
    v
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    let l = v[key].as_array().unwrap_or_else(|| panic!("{key} missing"));
    assert!(!l.is_empty(), "{key} is empty");
    l
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn h32(v: &Value) -> [u8; 32] {
    hx(v).try_into().expect("32 bytes")
}

fn num(v: &Value) -> u64 {
    v.as_u64().expect("number")
}

fn user(v: &Value) -> UserId {
    UserId::new(v.as_str().expect("string")).expect("valid user id")
}

fn gid(v: &Value) -> GroupId {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn rn1_ratchet_vectors() {
    for t in list(&vectors(), "rn1_ratchet") {
        let r1 = R1::from_rn1(
            &Rn1::from_bytes(h32(&t["rn1"])),
            num(&t["base_rn2_version"]),
        );
        let at = r1.ratchet_to(num(&t["rn2_version"])).unwrap();
        assert_eq!(at.expose_secret(), &h32(&t["r1"]), "{t}");
    }
}

#[test]
fn group_key_vectors() {
    for t in list(&vectors(), "group_key") {
        let epoch = Epoch::new(num(&t["rn1_version"]) as u32, num(&t["rn2_version"]));
        let r1 = R1::from_bytes(h32(&t["rn1"]), epoch.rn2_version);
        let name = GroupName::new(t["group_name"].as_str().unwrap()).unwrap();
        let gk = GroupKey::derive(
            &r1,
            &Rn2::from_bytes(h32(&t["rn2"])),
            &gid(&t["group_id"]),
            &name,
            epoch,
        )
        .unwrap();
        assert_eq!(gk.expose_secret(), &h32(&t["gk"]), "{}", t["group_name"]);
    }
}

#[test]
fn message_key_vectors() {
    for t in list(&vectors(), "message_keys") {
        let sk = SenderKey::derive(&GroupKey::from_bytes(h32(&t["gk"])), &user(&t["sender_id"]))
            .unwrap();
        assert_eq!(sk.expose_secret(), &h32(&t["sender_key"]));
        let msg_id = MsgId::from_slice(&hx(&t["msg_id"])).unwrap();
        let mk = MessageKey::derive(&sk, &msg_id).unwrap();
        assert_eq!(&mk.key()[..], &hx(&t["msg_key"])[..]);
        assert_eq!(&mk.nonce()[..], &hx(&t["msg_nonce"])[..]);
    }
}

#[test]
fn envelope_vectors_seal_and_open() {
    for t in list(&vectors(), "envelopes") {
        let key = IdentityKey::from_seed(h32(&t["ed25519_seed"]));
        assert_eq!(key.public().to_bytes(), h32(&t["ed25519_public"]));
        let f = &t["header_fields"];
        let header = Header {
            group_id: gid(&f["group_id"]),
            epoch: Epoch::new(num(&f["rn1_version"]) as u32, num(&f["rn2_version"])),
            sender: user(&f["sender_id"]),
            seq: num(&f["seq"]),
            sent_at_ms: num(&f["sent_at_ms"]),
            msg_id: MsgId::from_slice(&hx(&f["msg_id"])).unwrap(),
        };
        let gk = GroupKey::from_bytes(h32(&t["gk"]));
        let body = t["body_utf8"].as_str().unwrap();
        let content_type = ContentType::try_from(num(&t["content_type"]) as u8).unwrap();
        let sk = SenderKey::derive(&gk, &header.sender).unwrap();
        let sealed = envelope::seal(&key, &sk, &header, content_type, body.as_bytes()).unwrap();
        let expected = hx(&t["envelope"]);
        assert_eq!(
            hex::encode(&sealed),
            hex::encode(&expected),
            "seal of {:?}",
            header.msg_id
        );

        let table = EpochTable::for_header(&header, gk, key.public());
        let opened = envelope::open(
            &expected,
            &Limits::default(),
            &table,
            &mut ReplayGuard::default(),
        )
        .unwrap();
        assert_eq!(
            (opened.header, opened.content_type, opened.body.as_str()),
            (header, content_type, body)
        );
    }
}

#[test]
fn rn1_hpke_vectors_open() {
    for t in list(&vectors(), "rn1_hpke_open") {
        let sk = DeliverySecret::from_bytes(&h32(&t["recipient_private"])).unwrap();
        assert_eq!(sk.public().0, h32(&t["recipient_public"]));
        let (g, from, to) = (
            gid(&t["group_id"]),
            user(&t["inviter"]),
            user(&t["invitee"]),
        );
        let ref_id = ItemId::from_slice(&hx(&t["ref_id"])).unwrap();
        let ctx = Rn1Context {
            group_id: &g,
            sender: &from,
            recipient: &to,
            ref_id: &ref_id,
        };
        let at = num(&t["at_rn2_version"]);
        let r1 = open_rn1(
            &sk,
            &ctx,
            num(&t["rn1_version"]) as u32,
            at,
            &h32(&t["enc"]),
            &hx(&t["ct"]),
        )
        .unwrap();
        assert_eq!((r1.expose_secret(), r1.rn2_version()), (&h32(&t["r1"]), at));
    }
}

#[test]
fn item_vectors_decode_verify_and_re_sign() {
    let v = vectors();
    let items = list(&v, "items");
    let kinds: Vec<u64> = items.iter().map(|t| num(&t["kind_code"])).collect();
    assert_eq!(kinds, [1, 2, 3, 4, 5, 6], "one vector of every kind");
    for t in items {
        let key = IdentityKey::from_seed(h32(&t["ed25519_seed"]));
        assert_eq!(key.public().to_bytes(), h32(&t["ed25519_public"]));
        let bytes = hx(&t["item"]);
        let signed = SignedItem::parse(&bytes).unwrap();
        let item = signed.open(&user(&t["recipient"]), &key.public()).unwrap();
        assert_eq!(
            item.body.kind() as u64,
            num(&t["kind_code"]),
            "{}",
            t["kind"]
        );
        assert_eq!(
            item.item_id,
            ItemId::from_slice(&hx(&t["item_id"])).unwrap()
        );
        assert_eq!(
            (item.sender.clone(), item.created_at_ms),
            (user(&t["sender"]), num(&t["created_at_ms"]))
        );
        assert_eq!(
            hex::encode(item.body.encode().unwrap()),
            t["body"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(item.sign(&key).unwrap()),
            hex::encode(&bytes),
            "re-sign {}",
            t["kind"]
        );
        if let ItemBody::Rn1(p) = &item.body {
            let sk = DeliverySecret::from_bytes(&h32(&t["hpke_recipient_private"])).unwrap();
            let ctx = Rn1Context {
                group_id: &p.group_id,
                sender: &item.sender,
                recipient: &item.recipient,
                ref_id: &p.ref_id,
            };
            let r1 = open_rn1(&sk, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct).unwrap();
            assert_eq!(r1.expose_secret(), &h32(&t["r1"]));
        }
    }
}

#[test]
fn delivery_key_vectors() {
    for t in list(&vectors(), "delivery_keys") {
        let key = IdentityKey::from_seed(h32(&t["ed25519_seed"]));
        let secret = DeliverySecret::from_bytes(&h32(&t["x25519_private"])).unwrap();
        assert_eq!(secret.public().0, h32(&t["x25519_pub"]));
        let record = DeliveryKeyRecord {
            user: user(&t["user"]),
            key: secret.public(),
            created_at_ms: num(&t["created_at_ms"]),
        };
        let bytes = hx(&t["record"]);
        assert_eq!(hex::encode(record.sign(&key).unwrap()), hex::encode(&bytes));
        assert_eq!(
            DeliveryKeyRecord::verify(&bytes, &key.public()).unwrap(),
            record
        );
    }
}
