//! SPEC §3.3: every receiver check, each with its own error, in the spec's
//! order (ids V1…V13 as in docs/SECURITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, missing_docs)]
// A test fails by panicking: its casts of vector numbers need no checks.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;

struct Fixture {
    alice: IdentityKey,
    header: Header,
    gk: GroupKey,
    table: EpochTable,
}

fn fixture() -> Fixture {
    let alice = IdentityKey::from_seed([1; 32]);
    let header = Header {
        group_id: GroupId([7; 16]),
        epoch: Epoch::new(1, 3),
        sender: UserId::new("alice").unwrap(),
        seq: 0,
        sent_at_ms: 1_764_000_000_000,
        msg_id: MsgId([9; 16]),
    };
    let gk = GroupKey::from_bytes([5; 32]);
    let table = EpochTable::for_header(&header, gk.clone(), alice.public());
    Fixture {
        alice,
        header,
        gk,
        table,
    }
}

impl Fixture {
    fn seal_with(&self, header: &Header, gk: &GroupKey, body: &[u8]) -> Vec<u8> {
        let sk = SenderKey::derive(gk, &header.sender).unwrap();
        envelope::seal(&self.alice, &sk, header, ContentType::Text, body).unwrap()
    }
    fn seal(&self, body: &str) -> Vec<u8> {
        self.seal_with(&self.header, &self.gk, body.as_bytes())
    }
    fn open(&self, bytes: &[u8], replay: &mut ReplayGuard) -> Result<Opened> {
        envelope::open(bytes, &Limits::default(), &self.table, replay)
    }
    fn open_fresh(&self, bytes: &[u8]) -> Result<Opened> {
        self.open(bytes, &mut ReplayGuard::default())
    }
}

/// Re-signs `bytes` (magic excluded) with alice's key after `edit`, so that
/// later checks are reached with a valid signature.
fn resign(f: &Fixture, mut bytes: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    use ed25519_dalek::Signer;
    bytes.truncate(bytes.len() - 64);
    edit(&mut bytes);
    let mut msg = b"duokey/v1 envelope".to_vec();
    msg.extend_from_slice(&bytes[4..]);
    let sig = f.alice.signing_key().sign(&msg);
    bytes.extend_from_slice(&sig.to_bytes());
    bytes
}

fn check(r: Result<Opened>) -> &'static str {
    r.expect_err("must be rejected")
        .check_id()
        .expect("a receiver check")
}

#[test]
fn v1_wrong_magic() {
    let f = fixture();
    let mut e = f.seal("x");
    e[3] = b'2';
    assert_eq!(check(f.open_fresh(&e)), "V1");
}

#[test]
fn v2_unknown_suite_is_reported_before_anything_else_in_the_header() {
    let f = fixture();
    let e = f.seal("x");
    let e = resign(&f, e, |b| b[9] = 2); // header starts at 8: u16 suite = 0x0002
    assert_eq!(
        f.open_fresh(&e).unwrap_err(),
        Error::UnsupportedSuite { suite: 2 }
    );
}

#[test]
fn v3_oversized_header_body_and_trailing_bytes() {
    let f = fixture();
    let mut big_header = f.seal("x");
    big_header[4..8].copy_from_slice(&2000u32.to_be_bytes());
    assert!(matches!(
        f.open_fresh(&big_header),
        Err(Error::TooLarge { what: "header", .. })
    ));
    let small = Limits { max_body: 16 };
    let long = f.seal(&"y".repeat(100));
    let r = envelope::open(&long, &small, &f.table, &mut ReplayGuard::default());
    assert!(matches!(
        r,
        Err(Error::TooLarge {
            what: "ciphertext",
            ..
        })
    ));
    let mut trailing = f.seal("x");
    trailing.push(0);
    assert_eq!(check(f.open_fresh(&trailing)), "V3");
}

#[test]
fn v4_unknown_epoch_comes_before_membership_and_signature() {
    let f = fixture();
    let mut h = f.header.clone();
    h.epoch = Epoch::new(1, 4);
    let mut e = f.seal_with(&h, &f.gk, b"x");
    let n = e.len();
    e[n - 1] ^= 1; // a bad signature too: V4 must still be what is reported
    assert_eq!(
        f.open_fresh(&e).unwrap_err(),
        Error::UnknownEpoch {
            group: h.group_id,
            epoch: h.epoch
        }
    );
    h = f.header.clone();
    h.group_id = GroupId([8; 16]);
    assert_eq!(check(f.open_fresh(&f.seal_with(&h, &f.gk, b"x"))), "V4");
}

#[test]
fn v5_sender_not_a_member_comes_before_signature() {
    let f = fixture();
    let mut h = f.header.clone();
    h.sender = UserId::new("mallory").unwrap();
    let e = f.seal_with(&h, &f.gk, b"x");
    assert!(matches!(f.open_fresh(&e), Err(Error::NotAMember { .. })));
}

#[test]
fn v6_signature_by_another_member_or_tampered_bytes() {
    let mut f = fixture();
    let bob = IdentityKey::from_seed([2; 32]);
    // bob signs an envelope claiming to be from alice.
    let sk = SenderKey::derive(&f.gk, &f.header.sender).unwrap();
    let forged = envelope::seal(&bob, &sk, &f.header, ContentType::Text, b"x").unwrap();
    assert_eq!(check(f.open_fresh(&forged)), "V6");
    let mut tampered = f.seal("hello");
    let i = tampered.len() - 70; // inside the ciphertext
    tampered[i] ^= 0x80;
    assert_eq!(check(f.open_fresh(&tampered)), "V6");
    f.alice = bob;
    assert_eq!(check(f.open_fresh(&f.seal("x"))), "V6");
}

#[test]
fn v7_v8_replayed_envelope_msg_id_and_seq() {
    let f = fixture();
    let mut replay = ReplayGuard::default();
    let e = f.seal("once");
    f.open(&e, &mut replay).unwrap();
    assert_eq!(check(f.open(&e, &mut replay)), "V7");
    let mut h = f.header.clone();
    h.msg_id = MsgId([10; 16]); // fresh msg_id, same seq
    assert_eq!(
        check(f.open(&f.seal_with(&h, &f.gk, b"x"), &mut replay)),
        "V8"
    );
    h.seq = 1;
    f.open(&f.seal_with(&h, &f.gk, b"x"), &mut replay).unwrap();
}

#[test]
fn v9_wrong_group_key_fails_decryption_and_is_not_recorded() {
    let f = fixture();
    let e = f.seal_with(&f.header, &GroupKey::from_bytes([6; 32]), b"x");
    let mut replay = ReplayGuard::default();
    assert_eq!(check(f.open(&e, &mut replay)), "V9");
    assert_eq!(
        replay.streams(),
        0,
        "a failed envelope leaves no replay state"
    );
}

/// Builds an envelope whose plaintext is `pt` exactly (bypassing padding),
/// correctly encrypted and signed, to reach the plaintext checks.
fn with_plaintext(f: &Fixture, pt: &[u8]) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let header = f.header.encode().unwrap();
    let sk = SenderKey::derive(&f.gk, &f.header.sender).unwrap();
    let mk = MessageKey::derive(&sk, &f.header.msg_id).unwrap();
    let cipher = aes_gcm::Aes256Gcm::new(mk.key().into());
    let ct = cipher
        .encrypt(
            &(*mk.nonce()).into(),
            Payload {
                msg: pt,
                aad: &header,
            },
        )
        .unwrap();
    let mut e = b"DKE1".to_vec();
    e.extend_from_slice(&(header.len() as u32).to_be_bytes());
    e.extend_from_slice(&header);
    e.extend_from_slice(&(ct.len() as u32).to_be_bytes());
    e.extend_from_slice(&ct);
    e.extend_from_slice(&[0; 64]);
    resign(f, e, |_| {})
}

fn plaintext(content_type: u8, len: u32, body: &[u8], total: usize) -> Vec<u8> {
    let mut pt = vec![content_type];
    pt.extend_from_slice(&len.to_be_bytes());
    pt.extend_from_slice(body);
    pt.resize(total, 0);
    pt
}

#[test]
fn v10_to_v13_plaintext_checks() {
    let f = fixture();
    assert_eq!(
        f.open_fresh(&with_plaintext(&f, &plaintext(1, 2, b"hi", 32)))
            .unwrap()
            .body,
        "hi"
    );
    assert_eq!(
        check(f.open_fresh(&with_plaintext(&f, &plaintext(1, 40, b"hi", 32)))),
        "V10"
    );
    let mut nonzero = plaintext(1, 2, b"hi", 32);
    nonzero[31] = 1;
    assert_eq!(check(f.open_fresh(&with_plaintext(&f, &nonzero))), "V11");
    assert_eq!(
        check(f.open_fresh(&with_plaintext(&f, &plaintext(1, 2, b"hi", 64)))),
        "V11"
    );
    assert_eq!(
        check(f.open_fresh(&with_plaintext(&f, &plaintext(1, 2, b"hi", 33)))),
        "V11"
    );
    assert_eq!(
        check(f.open_fresh(&with_plaintext(&f, &plaintext(9, 2, b"hi", 32)))),
        "V12"
    );
    assert_eq!(
        check(f.open_fresh(&with_plaintext(&f, &plaintext(1, 2, &[0xc3, 0x28], 32)))),
        "V13"
    );
}

#[test]
fn envelope_parse_gives_the_cs_only_the_clear_header() {
    let f = fixture();
    let e = f.seal("secret marker 42");
    let parsed = EnvelopeRef::parse(&e, &Limits::default()).unwrap();
    assert_eq!(parsed.header, f.header);
    assert!(!String::from_utf8_lossy(&e).contains("secret marker"));
}
