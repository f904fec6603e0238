//! Property tests (SPEC §3.3, §4; SECURITY P6): any bit flip, truncation or
//! extension of an envelope, item or delivery key record is rejected; wrong
//! key, epoch, group, sender or suite is rejected; content round-trips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, missing_docs)]

use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;
use proptest::prelude::*;

const GROUP: GroupId = GroupId([7; 16]);
const EPOCH: Epoch = Epoch::new(2, 5);

fn alice() -> (IdentityKey, UserId) {
    (
        IdentityKey::from_seed([1; 32]),
        UserId::new("alice@example.org").unwrap(),
    )
}

fn table(gk: &GroupKey) -> EpochTable {
    EpochTable::for_header(&header(0, [0; 16]), gk.clone(), alice().0.public())
}

fn header(seq: u64, msg_id: [u8; 16]) -> Header {
    Header {
        group_id: GROUP,
        epoch: EPOCH,
        sender: alice().1,
        seq,
        sent_at_ms: 1,
        msg_id: MsgId(msg_id),
    }
}

fn seal(gk: &GroupKey, h: &Header, ct: ContentType, body: &str) -> Vec<u8> {
    let sk = SenderKey::derive(gk, &h.sender).unwrap();
    envelope::seal(&alice().0, &sk, h, ct, body.as_bytes()).unwrap()
}

fn open(gk: &GroupKey, bytes: &[u8]) -> Result<Opened> {
    envelope::open(
        bytes,
        &Limits::default(),
        &table(gk),
        &mut ReplayGuard::default(),
    )
}

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![Just(ContentType::Text), Just(ContentType::Control)]
}

fn sample_item(body: ItemBody) -> Item {
    Item {
        item_id: ItemId([3; 16]),
        sender: alice().1,
        recipient: UserId::new("bob@example.org").unwrap(),
        created_at_ms: 42,
        body,
    }
}

fn item_body() -> impl Strategy<Value = ItemBody> {
    let g = any::<[u8; 16]>().prop_map(GroupId);
    let id = any::<[u8; 16]>().prop_map(ItemId);
    prop_oneof![
        (g.clone(), "[a-zA-Zé ]{1,40}", 0u8..8).prop_map(|(group_id, n, r)| ItemBody::Invite {
            group_id,
            group_name: GroupName::new(n).unwrap(),
            rights: Rights::from_bits(r).unwrap()
        }),
        (id.clone(), g.clone(), any::<[u8; 32]>()).prop_map(|(invite_id, group_id, k)| {
            ItemBody::Ack {
                invite_id,
                group_id,
                invite_pub: DeliveryPublic(k),
            }
        }),
        (id.clone(), g.clone()).prop_map(|(invite_id, group_id)| ItemBody::Decline {
            invite_id,
            group_id
        }),
        (
            id.clone(),
            g.clone(),
            any::<u32>(),
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(ref_id, group_id, rn1_version, at_rn2_version, enc, ct)| {
                ItemBody::Rn1(Rn1Payload {
                    ref_id,
                    group_id,
                    rn1_version,
                    at_rn2_version,
                    enc,
                    ct,
                })
            }),
        g.clone()
            .prop_map(|group_id| ItemBody::Removal { group_id }),
        (g.clone(), any::<u64>()).prop_map(|(group_id, v)| ItemBody::Stale {
            group_id,
            current_rn2_version: v
        }),
        (g.clone(), any::<u64>(), msg33()).prop_map(|(group_id, expires_at_ms, msg_a)| {
            ItemBody::CodeInvite {
                group_id,
                group_name: GroupName::new("proj").unwrap(),
                rights: Rights::NONE,
                expires_at_ms,
                msg_a,
            }
        }),
        (
            id.clone(),
            g.clone(),
            any::<[u8; 32]>(),
            msg33(),
            any::<[u8; 32]>()
        )
            .prop_map(|(invite_id, group_id, k, msg_b, tag)| {
                ItemBody::CodeAck(CodeAckPayload {
                    invite_id,
                    group_id,
                    invite_pub: DeliveryPublic(k),
                    msg_b,
                    tag,
                })
            }),
        (id, g, any::<[u8; 32]>()).prop_map(|(invite_id, group_id, tag)| {
            ItemBody::CodeConfirm {
                invite_id,
                group_id,
                tag,
            }
        }),
    ]
}

/// A SPAKE2 message's worth of bytes (invite codes, PROTOCOL §4.10).
fn msg33() -> impl Strategy<Value = [u8; 33]> {
    proptest::collection::vec(any::<u8>(), 33).prop_map(|v| v.try_into().unwrap())
}

fn open_item(bytes: &[u8]) -> Result<Item> {
    let bob = UserId::new("bob@example.org").unwrap();
    SignedItem::parse(bytes)?.open(&bob, &alice().0.public())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn envelope_round_trips(body in ".{0,300}", ct in content_type(), seq: u64, id: [u8; 16], gk: [u8; 32]) {
        let gk = GroupKey::from_bytes(gk);
        let h = header(seq, id);
        let opened = open(&gk, &seal(&gk, &h, ct, &body)).unwrap();
        prop_assert_eq!((opened.header, opened.content_type, opened.body), (h, ct, body));
    }

    #[test]
    fn any_bit_flip_of_an_envelope_is_rejected(body in ".{0,64}", bit in any::<prop::sample::Index>()) {
        let gk = GroupKey::from_bytes([4; 32]);
        let mut e = seal(&gk, &header(0, [1; 16]), ContentType::Text, &body);
        let i = bit.index(e.len() * 8);
        e[i / 8] ^= 1 << (i % 8);
        prop_assert!(open(&gk, &e).is_err());
    }

    #[test]
    fn any_truncation_or_extension_of_an_envelope_is_rejected(
        body in ".{0,64}", cut in any::<prop::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 1..40)
    ) {
        let gk = GroupKey::from_bytes([4; 32]);
        let e = seal(&gk, &header(0, [1; 16]), ContentType::Text, &body);
        prop_assert!(open(&gk, &e[..cut.index(e.len())]).is_err());
        let mut longer = e.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(open(&gk, &longer).is_err());
    }

    #[test]
    fn wrong_key_epoch_group_or_sender_is_rejected(body in ".{0,64}", other: [u8; 32], v in 6u64..1000) {
        let gk = GroupKey::from_bytes([4; 32]);
        let wrong_gk = GroupKey::from_bytes(other);
        prop_assume!(wrong_gk != gk);
        let h = header(0, [1; 16]);
        prop_assert_eq!(open(&gk, &seal(&wrong_gk, &h, ContentType::Text, &body)).unwrap_err(), Error::DecryptFailed);
        let mut later = h.clone();
        later.epoch = Epoch::new(2, v);
        let r = open(&gk, &seal(&gk, &later, ContentType::Text, &body));
        prop_assert!(matches!(r, Err(Error::UnknownEpoch { .. })), "later epoch: {:?}", r);
        let mut moved = h.clone();
        moved.group_id = GroupId(other[..16].try_into().unwrap());
        prop_assume!(moved.group_id != GROUP);
        let r = open(&gk, &seal(&gk, &moved, ContentType::Text, &body));
        prop_assert!(matches!(r, Err(Error::UnknownEpoch { .. })), "moved group: {:?}", r);
        let mallory = IdentityKey::from_seed(other);
        let sk = SenderKey::derive(&gk, &h.sender).unwrap();
        let forged = envelope::seal(&mallory, &sk, &h, ContentType::Text, body.as_bytes()).unwrap();
        let r = open(&gk, &forged);
        prop_assert!(matches!(r, Err(Error::BadSignature { .. })), "forged: {:?}", r);
    }

    #[test]
    fn items_round_trip(body in item_body()) {
        let item = sample_item(body);
        let bytes = item.sign(&alice().0).unwrap();
        prop_assert_eq!(open_item(&bytes).unwrap(), item);
    }

    #[test]
    fn any_bit_flip_truncation_or_extension_of_an_item_is_rejected(
        body in item_body(), bit in any::<prop::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 1..20)
    ) {
        let bytes = sample_item(body).sign(&alice().0).unwrap();
        let mut flipped = bytes.clone();
        let i = bit.index(bytes.len() * 8);
        flipped[i / 8] ^= 1 << (i % 8);
        prop_assert!(open_item(&flipped).is_err());
        prop_assert!(open_item(&bytes[..bit.index(bytes.len())]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(open_item(&longer).is_err());
    }

    #[test]
    fn any_change_to_a_delivery_key_record_is_rejected(k: [u8; 32], t: u64, bit in any::<prop::sample::Index>()) {
        let (key, user) = alice();
        let rec = DeliveryKeyRecord { user, key: DeliveryPublic(k), created_at_ms: t };
        let bytes = rec.sign(&key).unwrap();
        prop_assert_eq!(DeliveryKeyRecord::verify(&bytes, &key.public()).unwrap(), rec);
        let mut flipped = bytes.clone();
        let i = bit.index(bytes.len() * 8);
        flipped[i / 8] ^= 1 << (i % 8);
        prop_assert!(DeliveryKeyRecord::verify(&flipped, &key.public()).is_err());
        prop_assert!(DeliveryKeyRecord::verify(&bytes[..bit.index(bytes.len())], &key.public()).is_err());
    }

    #[test]
    fn ratchet_composes(start in 1u64..1000, a in 0u64..50, b in 0u64..50, seed: [u8; 32]) {
        let r1 = R1::from_bytes(seed, start);
        prop_assert_eq!(r1.ratchet_to(start + a).unwrap().ratchet_to(start + a + b).unwrap(), r1.ratchet_to(start + a + b).unwrap());
    }
}

#[test]
fn unknown_item_kind_is_rejected() {
    let mut bytes = sample_item(ItemBody::Removal { group_id: GROUP })
        .sign(&alice().0)
        .unwrap();
    // Kinds 1–10 are defined (10: `code_confirm`, PROTOCOL §4.10).
    bytes[4] = 11;
    assert_eq!(
        SignedItem::parse(&bytes).unwrap_err(),
        Error::UnknownItemKind(11)
    );
}

#[test]
fn item_for_someone_else_is_rejected() {
    let bytes = sample_item(ItemBody::Removal { group_id: GROUP })
        .sign(&alice().0)
        .unwrap();
    let carol = UserId::new("carol").unwrap();
    let r = SignedItem::parse(&bytes)
        .unwrap()
        .open(&carol, &alice().0.public());
    assert!(matches!(r, Err(Error::WrongRecipient { .. })));
}
