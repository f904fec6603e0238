//! The delivery key record published in the CS directory (SPEC §2, §4):
//!
//! ```text
//! "DKD1" || lp16(user) || x25519_pub[32] || u64 created_at_ms || signature[64]
//! signature over "duokey/v1 delivery key" || lp16(user) || x25519_pub || u64 created_at_ms
//! ```

use crate::codec::{Reader, Writer};
use crate::error::Result;
use crate::identity::{IdentityKey, PublicIdentity};
use crate::ids::UserId;
use crate::rn1_delivery::DeliveryPublic;

/// Record magic.
pub const MAGIC: &[u8; 4] = b"DKD1";
/// Signature label (SPEC §4).
pub const SIGNATURE_LABEL: &[u8] = b"duokey/v1 delivery key";

/// A user's published X25519 delivery key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryKeyRecord {
    /// The user the key belongs to.
    pub user: UserId,
    /// The X25519 public key.
    pub key: DeliveryPublic,
    /// When it was made, Unix milliseconds.
    pub created_at_ms: u64,
}

impl DeliveryKeyRecord {
    /// Encodes and signs with the user's identity key.
    pub fn sign(&self, identity: &IdentityKey) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(128);
        w.bytes(MAGIC)
            .lp16(self.user.as_bytes())?
            .bytes(&self.key.0)
            .u64(self.created_at_ms);
        w.sign_from(MAGIC.len(), SIGNATURE_LABEL, identity)?;
        Ok(w.into_vec())
    }

    /// Decodes strictly and checks the signature with `signer`'s key.
    pub fn verify(bytes: &[u8], signer: &PublicIdentity) -> Result<DeliveryKeyRecord> {
        let mut r = Reader::new(bytes, "delivery key record");
        r.magic(MAGIC)?;
        let user = UserId::from_bytes(r.lp16()?)?;
        let key = DeliveryPublic(r.array()?);
        let created_at_ms = r.u64()?;
        let (signed, sig) = r.finish_signed(MAGIC.len())?;
        signer.verify_parts(&[SIGNATURE_LABEL, signed], &sig, "delivery key record")?;
        Ok(DeliveryKeyRecord {
            user,
            key,
            created_at_ms,
        })
    }
}
