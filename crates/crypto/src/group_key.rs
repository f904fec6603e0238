//! The group key of SPEC §3.1: RN1, its one-way ratchet R1, RN2, and
//! `GK = HKDF(R1(rn2_version) || RN2, group id, name, versions)`.

use crate::codec::Writer;
use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::ids::{GroupId, GroupName};
use crate::secret::secret32;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// HKDF info of one ratchet step (SPEC §3.1).
pub const RATCHET_LABEL: &[u8] = b"duokey/v1 rn1 ratchet";
/// HKDF-Extract salt of the group key (SPEC §3.1).
pub const GROUP_KEY_SALT: &[u8] = b"duokey/v1 group key";
/// The most ratchet steps one call takes (2^20 ≈ two years of one-minute
/// rotations). Bounds the work an attacker-chosen version can cause.
pub const MAX_RATCHET_STEPS: u64 = 1 << 20;

secret32!(
    /// RN1: 32 random bytes shared among members' terminals only (SPEC §3.1).
    Rn1
);
secret32!(
    /// RN2: 32 random bytes from the GMS, one per RN2 version (SPEC §3.1).
    Rn2
);
secret32!(
    /// A group key GK of one epoch (SPEC §3.1).
    GroupKey
);

/// `R1(v)`: RN1 ratcheted to RN2 version `v` (SPEC §3.1). Zeroized on drop.
#[derive(Clone, PartialEq, Eq, zeroize::ZeroizeOnDrop)]
pub struct R1 {
    key: Rn1,
    #[zeroize(skip)]
    rn2_version: u64,
}

impl std::fmt::Debug for R1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "R1(v{}, <redacted>)", self.rn2_version)
    }
}

impl R1 {
    /// `R1(base) = RN1`, where `base` is the RN2 version at which this RN1
    /// took effect.
    pub fn from_rn1(rn1: &Rn1, base_rn2_version: u64) -> Self {
        Self {
            key: rn1.clone(),
            rn2_version: base_rn2_version,
        }
    }

    /// An R1 value received or stored at a known version.
    pub fn from_bytes(bytes: [u8; 32], rn2_version: u64) -> Self {
        Self {
            key: Rn1::from_bytes(bytes),
            rn2_version,
        }
    }

    /// The RN2 version this value belongs to.
    pub fn rn2_version(&self) -> u64 {
        self.rn2_version
    }

    /// The secret bytes. Callers must not log or store them unencrypted.
    pub fn expose_secret(&self) -> &[u8; 32] {
        self.key.expose_secret()
    }

    /// `R1(v+1) = HKDF-Expand(PRK = R1(v), "duokey/v1 rn1 ratchet", 32)`.
    fn step(key: &[u8; 32]) -> Result<[u8; 32]> {
        let hk = Hkdf::<Sha256>::from_prk(key).map_err(|_| Error::Internal("PRK length"))?;
        let mut next = [0u8; 32];
        hk.expand(RATCHET_LABEL, &mut next)
            .map_err(|_| Error::Internal("HKDF length"))?;
        Ok(next)
    }

    /// R1 at a later (or the same) RN2 version. Going back is impossible by
    /// design and reported as [`Error::RatchetRange`], as is a jump of more than
    /// [`MAX_RATCHET_STEPS`].
    pub fn ratchet_to(&self, rn2_version: u64) -> Result<R1> {
        let range = Error::RatchetRange {
            from: self.rn2_version,
            to: rn2_version,
        };
        let steps = rn2_version
            .checked_sub(self.rn2_version)
            .ok_or(range.clone())?;
        if steps > MAX_RATCHET_STEPS {
            return Err(range);
        }
        let mut key = Zeroizing::new(*self.key.expose_secret());
        for _ in 0..steps {
            let mut next = Self::step(&key)?;
            key.copy_from_slice(&next);
            next.zeroize();
        }
        Ok(R1::from_bytes(*key, rn2_version))
    }

    /// Moves this value forward in place, overwriting the old one (so the old
    /// epoch can no longer be derived from this terminal's state, SPEC §7.5).
    pub fn advance_to(&mut self, rn2_version: u64) -> Result<()> {
        *self = self.ratchet_to(rn2_version)?;
        Ok(())
    }
}

impl GroupKey {
    /// `GK = HKDF-Expand(HKDF-Extract("duokey/v1 group key", R1(v) || RN2),
    /// lp16(group_id) || lp16(group_name) || u32(rn1_version) || u64(rn2_version), 32)`
    /// (SPEC §3.1). `r1` must be at `epoch.rn2_version`.
    pub fn derive(
        r1: &R1,
        rn2: &Rn2,
        group_id: &GroupId,
        group_name: &GroupName,
        epoch: Epoch,
    ) -> Result<GroupKey> {
        if r1.rn2_version != epoch.rn2_version {
            return Err(Error::RatchetRange {
                from: r1.rn2_version,
                to: epoch.rn2_version,
            });
        }
        let mut ikm = Zeroizing::new([0u8; 64]);
        let (r1_part, rn2_part) = ikm.split_at_mut(32);
        r1_part.copy_from_slice(r1.expose_secret());
        rn2_part.copy_from_slice(rn2.expose_secret());
        let hk = Hkdf::<Sha256>::new(Some(GROUP_KEY_SALT), &ikm[..]);
        let mut info = Writer::with_capacity(16 + 2 + group_name.as_bytes().len() + 2 + 12);
        info.lp16(group_id.as_bytes())?
            .lp16(group_name.as_bytes())?;
        info.u32(epoch.rn1_version).u64(epoch.rn2_version);
        let mut gk = GroupKey::from_bytes([0u8; 32]);
        hk.expand(&info.into_vec(), &mut gk.0)
            .map_err(|_| Error::Internal("HKDF length"))?;
        Ok(gk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_shows_no_secret_bytes() {
        let bytes = [0xab; 32];
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            Rn1::from_bytes(bytes),
            Rn2::from_bytes(bytes),
            GroupKey::from_bytes(bytes),
            R1::from_bytes(bytes, 7)
        );
        assert!(
            !shown.to_lowercase().contains("ab, ") && !shown.contains("171"),
            "{shown}"
        );
        assert!(!shown.contains("abab"), "{shown}");
        assert_eq!(
            shown,
            "Rn1(<redacted>) Rn2(<redacted>) GroupKey(<redacted>) R1(v7, <redacted>)"
        );
    }

    #[test]
    fn ratchet_moves_forward_only_and_is_bounded() {
        let r1 = R1::from_bytes([1; 32], 5);
        assert_eq!(r1.ratchet_to(5).unwrap(), r1);
        let r7 = r1.ratchet_to(7).unwrap();
        assert_eq!(r1.ratchet_to(6).unwrap().ratchet_to(7).unwrap(), r7);
        assert!(matches!(
            r7.ratchet_to(6),
            Err(Error::RatchetRange { from: 7, to: 6 })
        ));
        assert!(r1.ratchet_to(5 + MAX_RATCHET_STEPS + 1).is_err());
        let mut r = r1.clone();
        r.advance_to(7).unwrap();
        assert_eq!(r, r7);
    }

    #[test]
    fn group_key_binds_every_input() {
        let g = GroupId([1; 16]);
        let n = GroupName::new("proj").unwrap();
        let r1 = R1::from_bytes([2; 32], 3);
        let rn2 = Rn2::from_bytes([3; 32]);
        let base = GroupKey::derive(&r1, &rn2, &g, &n, Epoch::new(1, 3)).unwrap();
        let others = [
            GroupKey::derive(&r1, &rn2, &GroupId([9; 16]), &n, Epoch::new(1, 3)),
            GroupKey::derive(
                &r1,
                &rn2,
                &g,
                &GroupName::new("proj2").unwrap(),
                Epoch::new(1, 3),
            ),
            GroupKey::derive(&r1, &rn2, &g, &n, Epoch::new(2, 3)),
            GroupKey::derive(&r1, &Rn2::from_bytes([4; 32]), &g, &n, Epoch::new(1, 3)),
            GroupKey::derive(&R1::from_bytes([5; 32], 3), &rn2, &g, &n, Epoch::new(1, 3)),
        ];
        for other in others {
            assert_ne!(other.unwrap(), base);
        }
        assert!(GroupKey::derive(&r1, &rn2, &g, &n, Epoch::new(1, 4)).is_err());
    }
}
