//! SPEC §4.7: reproduce every entry of the repository's
//! `vectors/membership.json` (from an independent implementation): each
//! change of both chains is rebuilt from its fields and signed with its
//! actor's seed, byte for byte, with its hash and the state after it; every
//! invalid change is rejected at its position; the anchor body is rebuilt.
//! `DUOKEY_MEMBERSHIP_VECTORS` may point at another copy. The same checks
//! run on the project's own `vectors/membership_transfer.json` (the
//! `transfer` change, PROTOCOL §4.8, made by `scripts/vectors/membership_transfer.py`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::indexing_slicing, missing_docs)]
// A test fails by panicking: its casts of vector numbers need no checks.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::membership::{Action, Change, SignedChange, State, apply};
use duokey_crypto::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn read(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("test vectors {} must exist: {e}", path.display()));
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn own(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../vectors")
        .join(file)
}

/// The original set's file.
fn vectors() -> Value {
    let path = std::env::var_os("DUOKEY_MEMBERSHIP_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| own("membership.json"));
    read(&path)
}

/// Both files: the original set's, and the project's own for `transfer`.
fn every_file() -> [Value; 2] {
    [vectors(), read(&own("membership_transfer.json"))]
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn hx32(v: &Value) -> [u8; 32] {
    hx(v).try_into().unwrap()
}

/// Signing keys by user id; the rekeyed key under "bob@example.org (after rekey)".
fn keys(v: &Value) -> HashMap<String, IdentityKey> {
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let key = IdentityKey::from_seed(hx32(&u["ed25519_seed"]));
            assert_eq!(key.public().to_bytes(), hx32(&u["ed25519_public"]));
            (u["user"].as_str().unwrap().to_owned(), key)
        })
        .collect()
}

fn action(code: u64) -> Action {
    Action::try_from(u8::try_from(code).unwrap()).unwrap()
}

fn parse_chain(list: &Value) -> Vec<SignedChange> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let change = SignedChange::parse(&hx(&c["change"])).unwrap();
            assert_eq!(change.hash(), hx32(&c["hash"]));
            change
        })
        .collect()
}

fn check_state(state: &State, want: &Value) {
    assert_eq!(state.owner.as_str(), want["owner"]);
    assert_eq!(state.name.as_str(), want["name"]);
    assert_eq!(
        state.rn1_version,
        want["rn1_version"].as_u64().unwrap() as u32
    );
    assert_eq!(state.deleted, want["deleted"]);
    assert_eq!(state.seq, want["seq"]);
    assert_eq!(state.head, hx32(&want["head"]));
    let members: Vec<(String, u8, [u8; 32])> = state
        .members
        .iter()
        .map(|(u, m)| (u.as_str().to_owned(), m.rights.bits(), m.key.to_bytes()))
        .collect();
    let mut expected: Vec<(String, u8, [u8; 32])> = want["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_owned(),
                m["rights"].as_u64().unwrap() as u8,
                hx32(&m["key"]),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(members, expected);
    let rotations: Vec<(u32, &str, u64)> = state
        .rn1_rotations
        .iter()
        .map(|r| (r.rn1_version, r.rotator.as_str(), r.seq))
        .collect();
    let expected: Vec<(u32, &str, u64)> = want["rn1_rotators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rn1_version"].as_u64().unwrap() as u32,
                r["rotator"].as_str().unwrap(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rotations, expected);
    let p = &want["policy"];
    assert_eq!(state.policy.rotate_rn1_on_remove, p["rotate_rn1_on_remove"]);
    assert_eq!(state.policy.rotate_every_secs, p["rotate_every_secs"]);
    assert_eq!(state.policy.grace_secs, p["grace_secs"]);
    assert_eq!(state.policy.retention_secs, p["retention_secs"]);
    assert_eq!(u64::from(state.policy.max_members), p["max_members"]);
    assert_eq!(state.policy.rn1_wait_secs, p["rn1_wait_secs"]);
}

#[test]
fn every_change_of_the_chain_is_rebuilt_byte_for_byte_from_its_fields() {
    every_file().iter().for_each(rebuilt_byte_for_byte);
}

fn rebuilt_byte_for_byte(v: &Value) {
    let keys = keys(v);
    let group = GroupId(hx(&v["group_id"]).try_into().unwrap());
    let mut signer_of_bob = "bob@example.org";
    for c in v["chain"].as_array().unwrap() {
        let actor = c["actor"].as_str().unwrap();
        let change = Change {
            group_id: group,
            seq: c["seq"].as_u64().unwrap(),
            prev: hx32(&c["prev"]),
            action: action(c["action_code"].as_u64().unwrap()),
            actor: UserId::new(actor).unwrap(),
            subject: UserId::new(c["subject"].as_str().unwrap()).unwrap(),
            rights: Rights::from_bits(c["rights"].as_u64().unwrap() as u8).unwrap(),
            flags: c["flags"].as_u64().unwrap() as u8,
            body: hx(&c["body"]),
            created_at_ms: c["created_at_ms"].as_u64().unwrap(),
        };
        assert_eq!(change.action.name(), c["action"]);
        let signer = if actor == "bob@example.org" {
            signer_of_bob
        } else {
            actor
        };
        let signed = change.sign(&keys[signer]).unwrap();
        assert_eq!(
            hex::encode(signed.as_bytes()),
            c["change"],
            "seq {}",
            change.seq
        );
        assert_eq!(signed.hash(), hx32(&c["hash"]));
        assert_eq!(signed.change(), &change);
        if change.action == Action::Rekey {
            signer_of_bob = "bob@example.org (after rekey)";
        }
    }
}

#[test]
fn applying_each_chain_gives_the_state_after_every_change() {
    let [v, transfer] = every_file();
    let last = states_after(&v);
    assert!(last.deleted);
    let mut small: Option<State> = None;
    for change in parse_chain(&v["small_chain"]) {
        small = Some(apply(small.as_ref(), &change).unwrap());
    }
    assert_eq!(small.unwrap().members.len(), 2);
    // The project's own chain: the transfer moved the owner, and the former
    // owner left; then the new owner's delete is accepted.
    let last = states_after(&transfer);
    assert_eq!(last.owner.as_str(), "bob@example.org");
    let chain = parse_chain(&transfer["chain"]);
    for case in transfer["valid_extra"].as_array().unwrap() {
        assert_eq!(case["expect"], "accept");
        let after = case["after_seq"].as_u64().unwrap() as usize;
        let mut state: Option<State> = None;
        for change in &chain[..after] {
            state = Some(apply(state.as_ref(), change).unwrap());
        }
        let change = SignedChange::parse(&hx(&case["change"])).unwrap();
        apply(state.as_ref(), &change).unwrap_or_else(|e| panic!("{}: {e}", case["case"]));
    }
}

/// Applies `v`'s main chain, checking the state after each change.
fn states_after(v: &Value) -> State {
    let mut state: Option<State> = None;
    for (change, c) in parse_chain(&v["chain"])
        .iter()
        .zip(v["chain"].as_array().unwrap())
    {
        let next =
            apply(state.as_ref(), change).unwrap_or_else(|e| panic!("seq {}: {e}", c["seq"]));
        check_state(&next, &c["state_after"]);
        state = Some(next);
    }
    state.unwrap()
}

#[test]
fn every_invalid_change_is_rejected_where_it_stands() {
    let [v, transfer] = every_file();
    assert!(v["invalid"].as_array().unwrap().len() >= 40);
    assert!(transfer["invalid"].as_array().unwrap().len() >= 12);
    rejected_where_they_stand(&v);
    rejected_where_they_stand(&transfer);
}

fn rejected_where_they_stand(v: &Value) {
    let mut chains: HashMap<&str, Vec<SignedChange>> = [("main", parse_chain(&v["chain"]))].into();
    if !v["small_chain"].is_null() {
        chains.insert("small", parse_chain(&v["small_chain"]));
    }
    for case in v["invalid"].as_array().unwrap() {
        assert_eq!(case["expect"], "reject");
        let chain = &chains[case["chain"].as_str().unwrap()];
        let after = case["after_seq"].as_u64().unwrap() as usize;
        let mut state: Option<State> = None;
        for change in &chain[..after] {
            state = Some(apply(state.as_ref(), change).unwrap());
        }
        let outcome =
            SignedChange::parse(&hx(&case["change"])).and_then(|c| apply(state.as_ref(), &c));
        let rule = case["rule"].as_str().unwrap();
        // In place, a refused change leaves the state exactly as it was.
        if let (Some(before), Ok(c)) = (&state, SignedChange::parse(&hx(&case["change"]))) {
            let mut s = before.clone();
            assert!(s.advance(&c).is_err(), "{}", case["case"]);
            assert_eq!(
                &s, before,
                "{}: a refused change altered the state",
                case["case"]
            );
        }
        match outcome {
            Ok(_) => panic!("accepted: {} (rule: {rule})", case["case"]),
            Err(e) => assert_eq!(
                e,
                expected_error(rule, case["case"].as_str().unwrap()),
                "{}",
                case["case"]
            ),
        }
    }
}

/// The error each rule of the vectors must be refused with, so that a case
/// cannot pass by failing some other check.
fn expected_error(rule: &str, case: &str) -> Error {
    use membership::Rule as R;
    let r = match rule {
        "signature" | "signature S not below the group order" => R::Signature,
        "create must have seq 1 and zero prev" => R::FirstChange,
        "create fields" | "add fields" | "remove fields" | "leave fields" => R::Fields,
        "rotate_rn1 fields" if case.contains("naming") => R::ActorMustBeSubject,
        "rotate_rn1 fields" => R::Fields,
        "rekey fields" | "leave names the actor" => R::ActorMustBeSubject,
        "group name length" | "group name not UTF-8" => R::Name,
        "rotate_every_secs below 60" => R::PolicyRange,
        "create only once" => R::CreateOnce,
        "actor is not a member" => R::ActorNotMember,
        "actor lacks the invite right" => R::LacksInvite,
        "cannot grant a right the actor lacks" => R::RightsNotHeld,
        "owner right cannot be granted" => R::OwnerRight,
        "subject is already a member" => R::AlreadyMember,
        "invalid user id" => return Error::InvalidUserId,
        "unknown rights bits" => return Error::InvalidRights(8),
        "RN1 rotation flag must follow the policy" => R::Rn1Flag,
        "the owner cannot be removed" => R::OwnerCannotBeRemoved,
        "actor lacks the remove right" => R::LacksRemove,
        "use leave to remove oneself" => R::RemoveSelf,
        "subject is not a member" => R::SubjectNotMember,
        "the owner cannot leave (delete instead)" => R::OwnerCannotLeave,
        "only the owner changes the policy" | "only the owner deletes" => R::OnlyOwner,
        "unknown action" => R::UnknownAction,
        "unknown flag bits" => R::UnknownFlags,
        "only the owner transfers" => R::OnlyOwner,
        "transfer subject is not a member" => R::SubjectNotMember,
        "transfer to oneself" => R::TransferToSelf,
        "transfer fields" => R::Fields,
        "seq must be one more than the current" => R::Seq,
        "prev must be the hash of the current head" => R::Prev,
        "group id" => R::GroupId,
        "created_at_ms below the previous change's" => R::CreatedAt,
        "group deleted" => R::Deleted,
        "group full" => R::GroupFull,
        "trailing bytes" | "truncated" => {
            return Error::Malformed {
                what: "membership change",
            };
        }
        "magic" => {
            return Error::BadMagic {
                what: "membership change",
            };
        }
        other => panic!("a rule this test does not know: {other}"),
    };
    Error::Membership(r)
}

#[test]
fn the_anchor_body_is_rebuilt() {
    let v = vectors();
    let a = &v["anchor_item_body"];
    let body = ItemBody::Anchor {
        group_id: GroupId(hx(&v["group_id"]).try_into().unwrap()),
        membership_seq: a["seq"].as_u64().unwrap(),
        head: hx32(&a["head"]),
        at_rn2_version: a["at_rn2_version"].as_u64().unwrap(),
    };
    assert_eq!(hex::encode(body.encode().unwrap()), a["body"]);
    assert_eq!(
        ItemBody::decode(ItemKind::Anchor, &hx(&a["body"])).unwrap(),
        body
    );
    // The anchor names the add of dave as the chain has it.
    assert_eq!(a["head"], v["chain"][3]["hash"]);
}

#[test]
fn any_bit_flipped_in_any_change_of_the_chain_is_rejected() {
    let v = vectors();
    let chain = parse_chain(&v["chain"]);
    let mut state: Option<State> = None;
    for change in &chain {
        let bytes = change.as_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.to_vec();
                bad[i] ^= bit;
                let outcome = SignedChange::parse(&bad).and_then(|c| apply(state.as_ref(), &c));
                assert!(
                    outcome.is_err(),
                    "byte {i} bit {bit:#x} of seq {}",
                    change.change().seq
                );
            }
        }
        state = Some(apply(state.as_ref(), change).unwrap());
    }
}
