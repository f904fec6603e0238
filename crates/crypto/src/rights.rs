//! Member rights (SPEC §4): `0x01` may invite, `0x02` may remove, `0x04` owner.

use crate::error::{Error, Result};
use std::fmt;

/// A rights bit set; other bits are rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    /// No rights: a plain member.
    pub const NONE: Rights = Rights(0);
    /// May invite new members.
    pub const INVITE: Rights = Rights(0x01);
    /// May remove members and force rotations.
    pub const REMOVE: Rights = Rights(0x02);
    /// Owner: may delete the group.
    pub const OWNER: Rights = Rights(0x04);
    /// Every right, as the creator holds them.
    pub const ALL: Rights = Rights(0x07);
    /// What a former owner keeps after a `transfer` (PROTOCOL §4.8): invite
    /// and remove.
    pub const FORMER_OWNER: Rights = Rights(0x03);

    /// From a byte; undefined bits are an error.
    pub fn from_bits(bits: u8) -> Result<Rights> {
        if bits & !Self::ALL.0 == 0 {
            Ok(Rights(bits))
        } else {
            Err(Error::InvalidRights(bits))
        }
    }

    /// From a wider integer (protobuf fields are `uint32`).
    pub fn from_u32(bits: u32) -> Result<Rights> {
        u8::try_from(bits)
            .map_err(|_| Error::InvalidRights(0xff))
            .and_then(Self::from_bits)
    }

    /// The byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Every right of `other` is also in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (Self::OWNER, "owner"),
            (Self::INVITE, "invite"),
            (Self::REMOVE, "remove"),
        ]
        .into_iter()
        .filter(|(r, _)| self.contains(*r))
        .map(|(_, n)| n)
        .collect();
        if names.is_empty() {
            f.write_str("member")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rights({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_bits_are_rejected() {
        assert_eq!(Rights::from_bits(0x08), Err(Error::InvalidRights(0x08)));
        assert!(Rights::from_u32(0x107).is_err());
        assert_eq!(Rights::from_bits(7).unwrap(), Rights::ALL);
        assert!(Rights::ALL.contains(Rights::INVITE.union(Rights::REMOVE)));
        assert!(!Rights::INVITE.contains(Rights::REMOVE));
        assert_eq!(Rights::ALL.to_string(), "owner,invite,remove");
        assert_eq!(Rights::NONE.to_string(), "member");
    }
}
