//! Any bytes as an envelope: parsing and the full receiver checks (SPEC §3.3)
//! must never panic, and nothing but the sealed original may open.
#![no_main]

use duokey_crypto::envelope::{self, Limits};
use duokey_crypto::*;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let key = IdentityKey::from_seed([1; 32]);
    let mut table = EpochTable::default();
    let sender = UserId::new("alice").unwrap_or_else(|_| unreachable!());
    table.insert(
        GroupId([7; 16]),
        Epoch::new(1, 1),
        OpenEpoch {
            key: GroupKey::from_bytes([5; 32]),
            senders: HashMap::from([(sender, key.public())]),
        },
    );
    let _ = EnvelopeRef::parse(data, &Limits::default()).map(|e| e.header);
    let _ = envelope::open(data, &Limits::default(), &table, &mut ReplayGuard::new(8));
});
