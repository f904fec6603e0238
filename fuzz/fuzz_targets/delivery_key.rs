//! Any bytes as a delivery key record (SPEC §4): never panics.
#![no_main]

use duokey_crypto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = DeliveryKeyRecord::verify(data, &IdentityKey::from_seed([3; 32]).public());
});
