//! HPKE delivery of RN1 between terminals (SPEC §4.2 step 3, §4.3 step 4):
//! base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

use crate::codec::Writer;
use crate::error::{Error, Result};
use crate::group_key::R1;
use crate::ids::{GroupId, ItemId, UserId};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

/// HPKE info prefix (SPEC §4.2 step 3).
pub const INFO_LABEL: &[u8] = b"duokey/v1 rn1";
/// Length of the HPKE encapsulated key.
pub const ENC_LEN: usize = 32;

type KemPrivate = <X25519HkdfSha256 as Kem>::PrivateKey;
type KemPublic = <X25519HkdfSha256 as Kem>::PublicKey;
type KemEnc = <X25519HkdfSha256 as Kem>::EncappedKey;

/// An X25519 private key for receiving RN1: a terminal's delivery key (SPEC
/// §2) or the fresh `invite_pub` key of one invitation (SPEC §4.2 step 2).
/// Zeroized on drop.
pub struct DeliverySecret(KemPrivate);

impl std::fmt::Debug for DeliverySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeliverySecret(<redacted>, public {})",
            hex::encode(self.public().0)
        )
    }
}

/// An X25519 public key to which RN1 is sealed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeliveryPublic(pub [u8; 32]);

impl DeliverySecret {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        let (sk, _) = X25519HkdfSha256::gen_keypair_with_rng(&mut crate::random::os_rng());
        Self(sk)
    }

    /// From stored bytes (clamped on load, as X25519 does).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        KemPrivate::from_bytes(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidPublicKey { what: "delivery" })
    }

    /// The secret bytes, for encrypted storage only.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&self.0.to_bytes());
        out
    }

    /// The public key.
    pub fn public(&self) -> DeliveryPublic {
        let mut out = [0u8; 32];
        out.copy_from_slice(&X25519HkdfSha256::sk_to_pk(&self.0).to_bytes());
        DeliveryPublic(out)
    }
}

/// Who sends RN1 to whom, and for which invitation or item (the HPKE `info`).
#[derive(Debug, Clone, Copy)]
pub struct Rn1Context<'a> {
    /// The group.
    pub group_id: &'a GroupId,
    /// The inviter, remover or rotator sending RN1.
    pub sender: &'a UserId,
    /// The invitee or remaining member receiving it.
    pub recipient: &'a UserId,
    /// The `invite_id`, or the `rn1` item's own id on a rotation.
    pub ref_id: &'a ItemId,
}

impl Rn1Context<'_> {
    /// `"duokey/v1 rn1" || lp16(group_id) || lp16(sender) || lp16(recipient) || ref_id`.
    fn info(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(
            64 + self.sender.as_bytes().len() + self.recipient.as_bytes().len(),
        );
        w.bytes(INFO_LABEL).lp16(self.group_id.as_bytes())?;
        w.lp16(self.sender.as_bytes())?
            .lp16(self.recipient.as_bytes())?;
        w.bytes(self.ref_id.as_bytes());
        Ok(w.into_vec())
    }
}

/// `u32(rn1_version) || u64(at_rn2_version)`.
fn aad(rn1_version: u32, at_rn2_version: u64) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&rn1_version.to_be_bytes());
    a[4..].copy_from_slice(&at_rn2_version.to_be_bytes());
    a
}

/// Seals `r1` (which must be at `at_rn2_version = r1.rn2_version()`) to `to`.
/// Returns `(enc, ct)`.
pub fn seal_rn1(
    to: &DeliveryPublic,
    ctx: &Rn1Context<'_>,
    rn1_version: u32,
    r1: &R1,
) -> Result<([u8; ENC_LEN], Vec<u8>)> {
    let pk =
        KemPublic::from_bytes(&to.0).map_err(|_| Error::InvalidPublicKey { what: "delivery" })?;
    let (enc, ct) = hpke::single_shot_seal_with_rng::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        &ctx.info()?,
        r1.expose_secret(),
        &aad(rn1_version, r1.rn2_version()),
        &mut crate::random::os_rng(),
    )
    .map_err(|_| Error::Internal("HPKE seal"))?;
    let mut enc_bytes = [0u8; ENC_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok((enc_bytes, ct))
}

/// Opens an RN1 payload; the result is `R1(at_rn2_version)`. Any mismatch
/// of key, context or versions is [`Error::Rn1OpenFailed`].
pub fn open_rn1(
    secret: &DeliverySecret,
    ctx: &Rn1Context<'_>,
    rn1_version: u32,
    at_rn2_version: u64,
    enc: &[u8; ENC_LEN],
    ct: &[u8],
) -> Result<R1> {
    let enc = KemEnc::from_bytes(enc).map_err(|_| Error::Rn1OpenFailed)?;
    let pt = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &secret.0,
        &enc,
        &ctx.info()?,
        ct,
        &aad(rn1_version, at_rn2_version),
    )
    .map_err(|_| Error::Rn1OpenFailed)?;
    let pt = Zeroizing::new(pt);
    let bytes = <[u8; 32]>::try_from(pt.as_slice()).map_err(|_| Error::Rn1OpenFailed)?;
    Ok(R1::from_bytes(bytes, at_rn2_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_rn1_opens_only_in_its_exact_context() {
        let g = GroupId([1; 16]);
        let (a, b, c) = (
            UserId::new("alice").unwrap(),
            UserId::new("bob").unwrap(),
            UserId::new("carol").unwrap(),
        );
        let id = ItemId([2; 16]);
        let ctx = Rn1Context {
            group_id: &g,
            sender: &a,
            recipient: &b,
            ref_id: &id,
        };
        let sk = DeliverySecret::generate();
        let r1 = R1::from_bytes([9; 32], 4);
        let (enc, ct) = seal_rn1(&sk.public(), &ctx, 2, &r1).unwrap();
        assert_eq!(open_rn1(&sk, &ctx, 2, 4, &enc, &ct).unwrap(), r1);
        let wrong_ctx = Rn1Context {
            recipient: &c,
            ..ctx
        };
        assert_eq!(
            open_rn1(&sk, &wrong_ctx, 2, 4, &enc, &ct),
            Err(Error::Rn1OpenFailed)
        );
        assert_eq!(
            open_rn1(&sk, &ctx, 3, 4, &enc, &ct),
            Err(Error::Rn1OpenFailed)
        );
        assert_eq!(
            open_rn1(&sk, &ctx, 2, 5, &enc, &ct),
            Err(Error::Rn1OpenFailed)
        );
        assert_eq!(
            open_rn1(&DeliverySecret::generate(), &ctx, 2, 4, &enc, &ct),
            Err(Error::Rn1OpenFailed)
        );
        let restored = DeliverySecret::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(restored.public(), sk.public());
        assert!(!format!("{sk:?}").contains(&hex::encode(*sk.to_bytes())));
    }
}
