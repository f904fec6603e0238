//! Any bytes as a chain of membership changes (SPEC §4.7): strict decoding
//! and the shared state machine never panic; whatever decodes re-encodes to
//! the same bytes; a change the rules accept keeps the state's invariants
//! (the owner stays a member with every right, seq and head advance, the RN1
//! version never goes back and every version has its rotator).
//!
//! Input: a sequence of `u16 length || change` records. The corpus holds
//! the chains of `vectors/membership.json`.
#![no_main]

use duokey_crypto::Rights;
use duokey_crypto::membership::{SignedChange, State, apply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut state: Option<State> = None;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Ok(change) = SignedChange::parse(bytes) else {
            continue;
        };
        assert_eq!(change.as_bytes(), bytes);
        let Ok(next) = apply(state.as_ref(), &change) else {
            continue;
        };
        let owner = next.members.get(&next.owner).expect("the owner stays a member");
        assert_eq!(owner.rights, Rights::ALL);
        assert_eq!(next.head, change.hash());
        if let Some(before) = &state {
            assert_eq!(next.seq, before.seq + 1);
            assert!(next.rn1_version >= before.rn1_version);
        }
        assert!(next.rotator(next.rn1_version).is_some());
        state = Some(next);
    }
});
