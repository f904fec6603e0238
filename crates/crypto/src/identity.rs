//! Terminal identity keys (SPEC §2): Ed25519, generated on the terminal.

use crate::error::{Error, Result};
use ed25519_dalek::ed25519::signature::{MultipartSigner, MultipartVerifier};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// A terminal's private identity key. Zeroized on drop; `Debug` shows only
/// the public half.
#[derive(Clone)]
pub struct IdentityKey(SigningKey);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IdentityKey(<redacted>, public {})",
            hex::encode(self.0.verifying_key().as_bytes())
        )
    }
}

impl IdentityKey {
    /// A new key from the operating system's generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut crate::random::os_rng()))
    }

    /// The key of a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for encrypted storage only.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity(self.0.verifying_key())
    }

    /// The underlying signing key, for building certificate requests.
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// Signs the concatenation of `parts` without copying them.
    pub(crate) fn sign_parts(&self, parts: &[&[u8]]) -> Result<[u8; SIGNATURE_LEN]> {
        let sig: Signature = self
            .0
            .try_multipart_sign(parts)
            .map_err(|_| Error::Internal("Ed25519 sign"))?;
        Ok(sig.to_bytes())
    }
}

/// A certified public identity key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity(VerifyingKey);

impl std::fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicIdentity({})", hex::encode(self.0.as_bytes()))
    }
}

impl PublicIdentity {
    /// From 32 bytes; rejects invalid encodings and weak (small-order) keys,
    /// under which anyone could forge signatures.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let vk = VerifyingKey::from_bytes(bytes)
            .map_err(|_| Error::InvalidPublicKey { what: "identity" })?;
        if vk.is_weak() {
            return Err(Error::InvalidPublicKey { what: "identity" });
        }
        Ok(Self(vk))
    }

    /// From a slice that must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr = <[u8; 32]>::try_from(bytes)
            .map_err(|_| Error::InvalidPublicKey { what: "identity" })?;
        Self::from_bytes(&arr)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The underlying verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Verifies a signature over the concatenation of `parts`.
    pub(crate) fn verify_parts(
        &self,
        parts: &[&[u8]],
        sig: &[u8; SIGNATURE_LEN],
        what: &'static str,
    ) -> Result<()> {
        self.0
            .multipart_verify(parts, &Signature::from_bytes(sig))
            .map_err(|_| Error::BadSignature { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_public_half_only() {
        let key = IdentityKey::from_seed([0x42; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains(&hex::encode(key.public().to_bytes())));
        assert!(!shown.contains(&hex::encode([0x42u8; 32])));
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) and a non-canonical encoding.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicIdentity::from_bytes(&identity).is_err());
        assert!(PublicIdentity::from_slice(&[1; 31]).is_err());
    }

    #[test]
    fn multipart_signature_equals_signature_of_concatenation() {
        use ed25519_dalek::Signer;
        let key = IdentityKey::from_seed([3; 32]);
        let parts: [&[u8]; 2] = [b"duokey/v1 ", b"test"];
        let sig = key.sign_parts(&parts).unwrap();
        assert_eq!(sig, key.0.sign(b"duokey/v1 test").to_bytes());
        key.public().verify_parts(&parts, &sig, "test").unwrap();
        assert!(
            key.public()
                .verify_parts(&[b"duokey/v1 tesT"], &sig, "test")
                .is_err()
        );
    }
}
