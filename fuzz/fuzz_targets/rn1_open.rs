//! Any bytes as an HPKE-sealed RN1 (SPEC §4.2 step 3): opening never panics
//! and never yields a value.
#![no_main]

use duokey_crypto::rn1_delivery::{Rn1Context, open_rn1};
use duokey_crypto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((enc, ct)) = data.split_first_chunk::<32>() else {
        return;
    };
    let sk = DeliverySecret::from_bytes(&[4; 32]).unwrap_or_else(|_| unreachable!());
    let (a, b) = (
        UserId::new("a").unwrap_or_else(|_| unreachable!()),
        UserId::new("b").unwrap_or_else(|_| unreachable!()),
    );
    let ctx = Rn1Context {
        group_id: &GroupId([1; 16]),
        sender: &a,
        recipient: &b,
        ref_id: &ItemId([2; 16]),
    };
    assert!(open_rn1(&sk, &ctx, 1, 1, enc, ct).is_err());
});
