//! Epochs: the pair (rn1_version, rn2_version) (SPEC §3.1).

use std::fmt;

/// An epoch of a group: the RN1 version and the RN2 version that together
/// select one group key (SPEC §3.1).
///
/// Ordered by `rn2_version` first: RN2 versions strictly increase with every
/// change, and an RN1 rotation always comes with a new RN2 version.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Epoch {
    /// RN2 version: 1 at creation, +1 on every RN2 change.
    pub rn2_version: u64,
    /// RN1 version: 1 at creation, +1 on every RN1 rotation.
    pub rn1_version: u32,
}

impl Epoch {
    /// The epoch `(rn1_version, rn2_version)`.
    pub const fn new(rn1_version: u32, rn2_version: u64) -> Self {
        Self {
            rn2_version,
            rn1_version,
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.rn1_version, self.rn2_version)
    }
}
