//! Sender keys and per-message keys of SPEC §3.2.

use crate::error::{Error, Result};
use crate::group_key::GroupKey;
use crate::ids::{MsgId, UserId};
use crate::secret::secret32;
use hkdf::Hkdf;
use sha2::Sha256;

/// HKDF info prefix of a sender key (SPEC §3.2).
pub const SENDER_LABEL: &[u8] = b"duokey/v1 sender";
/// HKDF info prefix of a message key (SPEC §3.2).
pub const MESSAGE_LABEL: &[u8] = b"duokey/v1 message";

secret32!(
    /// `sender_key = HKDF-Expand(GK, "duokey/v1 sender" || lp16(sender_id), 32)`.
    SenderKey
);

/// An AES-256-GCM key and nonce for one message. Zeroized on drop.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct MessageKey {
    key: [u8; 32],
    nonce: [u8; 12],
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey(<redacted>)")
    }
}

fn expand(prk: &[u8; 32], info: &[&[u8]], okm: &mut [u8]) -> Result<()> {
    Hkdf::<Sha256>::from_prk(prk)
        .map_err(|_| Error::Internal("PRK length"))?
        .expand_multi_info(info, okm)
        .map_err(|_| Error::Internal("HKDF length"))
}

impl SenderKey {
    /// Derives the key of `sender` in the epoch of `gk` (SPEC §3.2).
    pub fn derive(gk: &GroupKey, sender: &UserId) -> Result<SenderKey> {
        let id = sender.as_bytes();
        let len = u16::try_from(id.len())
            .map_err(|_| Error::InvalidUserId)?
            .to_be_bytes();
        let mut key = SenderKey::from_bytes([0u8; 32]);
        expand(gk.expose_secret(), &[SENDER_LABEL, &len, id], &mut key.0)?;
        Ok(key)
    }
}

impl MessageKey {
    /// `msg_key || msg_nonce = HKDF-Expand(sender_key, "duokey/v1 message" || msg_id, 44)`.
    pub fn derive(sender_key: &SenderKey, msg_id: &MsgId) -> Result<MessageKey> {
        let mut okm = zeroize::Zeroizing::new([0u8; 44]);
        expand(
            sender_key.expose_secret(),
            &[MESSAGE_LABEL, msg_id.as_bytes()],
            &mut okm[..],
        )?;
        let mut mk = MessageKey {
            key: [0; 32],
            nonce: [0; 12],
        };
        let (key, nonce) = okm.split_at(32);
        mk.key.copy_from_slice(key);
        mk.nonce.copy_from_slice(nonce);
        Ok(mk)
    }

    /// The AES-256-GCM key. Callers must not log or store it.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The 96-bit GCM nonce.
    pub fn nonce(&self) -> &[u8; 12] {
        &self.nonce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_sender_and_message_and_hide_their_bytes() {
        let gk = GroupKey::from_bytes([7; 32]);
        let a = SenderKey::derive(&gk, &UserId::new("alice").unwrap()).unwrap();
        let b = SenderKey::derive(&gk, &UserId::new("bob").unwrap()).unwrap();
        assert_ne!(a, b);
        let m1 = MessageKey::derive(&a, &MsgId([1; 16])).unwrap();
        let m2 = MessageKey::derive(&a, &MsgId([2; 16])).unwrap();
        assert_ne!(m1.key(), m2.key());
        assert_ne!(m1.nonce(), m2.nonce());
        assert_eq!(
            format!("{a:?} {m1:?}"),
            "SenderKey(<redacted>) MessageKey(<redacted>)"
        );
    }
}
