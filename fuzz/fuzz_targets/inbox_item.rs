//! Any bytes as a signed inbox item (SPEC §4): strict decoding never panics,
//! and whatever decodes re-encodes to the same body.
#![no_main]

use duokey_crypto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = SignedItem::parse(data) {
        let body = item.item.body.encode().unwrap_or_default();
        let again = ItemBody::decode(item.item.body.kind(), &body);
        assert_eq!(again.as_ref().ok(), Some(&item.item.body));
        let _ = item.open(
            &UserId::new("bob").unwrap_or_else(|_| unreachable!()),
            &IdentityKey::from_seed([2; 32]).public(),
        );
    }
});
