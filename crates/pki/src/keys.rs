//! Ed25519 private keys in the form other tools read (SPEC §2): PKCS#8 v1
//! (RFC 5208 / RFC 8410 §7: algorithm and 32-byte seed, no public key).
//!
//! ring, and rcgen on ring, write PKCS#8 v2 (RFC 5958, with the public key),
//! which OpenSSL 3.0 (`openssl pkey`) and Python `cryptography` refuse. Every
//! Ed25519 key Duokey makes is built here from its seed, so the DER that rcgen
//! keeps and writes back out is v1. Reading accepts both forms.

use crate::error::Result;
use duokey_crypto::IdentityKey;
use rcgen::{KeyPair, PKCS_ED25519};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7), followed by the
/// 32-byte seed: `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
/// OCTET STRING { OCTET STRING seed } }`.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// `key` as PKCS#8 v1 DER (48 bytes), zeroized on drop.
pub(crate) fn pkcs8_v1(key: &IdentityKey) -> Zeroizing<Vec<u8>> {
    let seed = key.to_seed();
    let mut der = Zeroizing::new(Vec::with_capacity(PKCS8_V1_ED25519_PREFIX.len() + 32));
    der.extend_from_slice(&PKCS8_V1_ED25519_PREFIX);
    der.extend_from_slice(seed.as_slice());
    der
}

/// `key` as an rcgen key pair whose stored DER (what `serialize_pem` writes)
/// is PKCS#8 v1.
pub(crate) fn key_pair(key: &IdentityKey) -> Result<KeyPair> {
    let der = pkcs8_v1(key);
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.as_slice()),
        &PKCS_ED25519,
    )?)
}

/// A new random Ed25519 key pair (CA and server keys), written as PKCS#8 v1.
pub(crate) fn generate_key_pair() -> Result<KeyPair> {
    key_pair(&IdentityKey::generate())
}

/// The terminal's identity key as a rustls private key, so the terminal
/// authenticates its TLS connections with the key its certificate names
/// (SPEC §2). Pass it with the certificate to [`crate::client_config`].
pub fn identity_private_key_der(identity: &IdentityKey) -> PrivateKeyDer<'static> {
    let der = pkcs8_v1(identity);
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn generated_keys_are_written_as_pkcs8_v1_with_the_seed_only() {
        let kp = generate_key_pair().unwrap();
        let der = kp.serialize_der();
        assert_eq!(der.len(), 48, "v1 carries no public key");
        assert_eq!(der[..16], PKCS8_V1_ED25519_PREFIX);
        assert!(
            kp.serialize_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn the_v1_key_signs_as_the_identity_key() {
        let id = IdentityKey::from_seed([7; 32]);
        let kp = key_pair(&id).unwrap();
        assert_eq!(kp.public_key_raw(), id.public().to_bytes());
    }
}
