//! The group policy as members sign it (SPEC §4.7):
//!
//! ```text
//! policy = u8 rotate_rn1_on_remove (0|1) || u64 rotate_every_secs || u64 grace_secs ||
//!          u64 retention_secs || u32 max_members || u64 rn1_wait_secs      (37 bytes)
//! ```

use super::Rule;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};

/// Encoded length of a [`Policy`].
pub const POLICY_LEN: usize = 37;

/// A group's policy; every field explicit (the creator fills in defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Removals and leaves rotate RN1 (their change carries flag 0x01).
    pub rotate_rn1_on_remove: bool,
    /// Period of the GMS's RN2 rotation; at least 60.
    pub rotate_every_secs: u64,
    /// How long the previous epoch stays accepted after a rotation.
    pub grace_secs: u64,
    /// How long history and keys are kept; at least `rotate_every_secs`.
    pub retention_secs: u64,
    /// Largest number of members, 1–100,000.
    pub max_members: u32,
    /// How long members wait for a rotator's RN1 before anyone may rotate; at least 1.
    pub rn1_wait_secs: u64,
}

impl Default for Policy {
    /// SPEC's defaults: RN1 rotation on, 1 h, 5 min grace, 30 days, 10,000 members, 2 min.
    fn default() -> Self {
        Policy {
            rotate_rn1_on_remove: true,
            rotate_every_secs: 3600,
            grace_secs: 300,
            retention_secs: 30 * 86_400,
            max_members: 10_000,
            rn1_wait_secs: 120,
        }
    }
}

impl Policy {
    /// Smallest `rotate_every_secs`.
    pub const MIN_ROTATE_EVERY_SECS: u64 = 60;
    /// Largest `max_members`.
    pub const MAX_MEMBERS: u32 = 100_000;

    /// The 37-byte encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(POLICY_LEN);
        w.u8(u8::from(self.rotate_rn1_on_remove))
            .u64(self.rotate_every_secs)
            .u64(self.grace_secs)
            .u64(self.retention_secs)
            .u32(self.max_members)
            .u64(self.rn1_wait_secs);
        w.into_vec()
    }

    /// Decodes strictly (exact length, the flag 0 or 1) and checks the ranges.
    pub fn decode(bytes: &[u8]) -> Result<Policy> {
        let mut r = Reader::new(bytes, "policy");
        let rotate = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Error::Malformed { what: "policy" }),
        };
        let policy = Policy {
            rotate_rn1_on_remove: rotate,
            rotate_every_secs: r.u64()?,
            grace_secs: r.u64()?,
            retention_secs: r.u64()?,
            max_members: r.u32()?,
            rn1_wait_secs: r.u64()?,
        };
        r.finish()?;
        policy.check()?;
        Ok(policy)
    }

    /// The ranges of SPEC §4.7.
    pub fn check(&self) -> Result<()> {
        let ok = self.rotate_every_secs >= Self::MIN_ROTATE_EVERY_SECS
            && (1..=Self::MAX_MEMBERS).contains(&self.max_members)
            && self.rn1_wait_secs >= 1
            && self.retention_secs >= self.rotate_every_secs;
        if ok {
            Ok(())
        } else {
            Err(Rule::PolicyRange.into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_policy_round_trips_in_37_bytes() {
        let bytes = Policy::default().encode();
        assert_eq!(bytes.len(), POLICY_LEN);
        assert_eq!(Policy::decode(&bytes).unwrap(), Policy::default());
    }

    #[test]
    fn out_of_range_and_malformed_policies_are_refused() {
        let bad = [
            Policy {
                rotate_every_secs: 59,
                ..Policy::default()
            },
            Policy {
                max_members: 0,
                ..Policy::default()
            },
            Policy {
                max_members: 100_001,
                ..Policy::default()
            },
            Policy {
                rn1_wait_secs: 0,
                ..Policy::default()
            },
            Policy {
                retention_secs: 3599,
                ..Policy::default()
            },
        ];
        for p in bad {
            assert!(Policy::decode(&p.encode()).is_err(), "{p:?}");
        }
        let mut flag2 = Policy::default().encode();
        flag2[0] = 2;
        assert!(Policy::decode(&flag2).is_err());
        assert!(Policy::decode(&Policy::default().encode()[..36]).is_err());
    }
}
