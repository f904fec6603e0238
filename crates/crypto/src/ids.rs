//! Validated identifiers: user ids (SPEC §2), group ids and names, message and
//! item ids (SPEC §3, §4).

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A user id: UTF-8, 1–255 bytes, `^[a-z0-9][a-z0-9._@-]*$` (SPEC §2).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    /// Largest user id in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates `s` against the SPEC §2 rule.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if Self::is_valid(s.as_bytes()) {
            Ok(Self(s))
        } else {
            Err(Error::InvalidUserId)
        }
    }

    /// Validates raw bytes as received on the wire.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if !Self::is_valid(b) {
            return Err(Error::InvalidUserId);
        }
        std::str::from_utf8(b)
            .map(|s| Self(s.to_owned()))
            .map_err(|_| Error::InvalidUserId)
    }

    fn is_valid(b: &[u8]) -> bool {
        let first_ok = matches!(b.first(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
        first_ok
            && b.len() <= Self::MAX_LEN
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b'@' | b'-')
            })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl FromStr for UserId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// True for a character that must not reach a terminal as it is: control
/// characters (C0, DEL, C1: escape sequences, carriage return, backspace),
/// the invisible bidirectional controls that reorder what is shown around
/// them ("Trojan Source", CVE-2021-42574), and the line and paragraph
/// separators. Text from the network is shown with these replaced.
pub fn is_unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// A group name: the exact UTF-8 bytes of the grant, 1–128 bytes (SPEC §4).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GroupName(String);

impl GroupName {
    /// Largest group name in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates the length; no normalisation is applied (SPEC §4).
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if (1..=Self::MAX_LEN).contains(&s.len()) {
            Ok(Self(s))
        } else {
            Err(Error::InvalidGroupName)
        }
    }

    /// Validates a name a person chooses for a new group: besides the length
    /// rule, no character that [`is_unsafe_to_show`] flags, so that no name
    /// can rewrite a terminal or reorder the text around it. Names
    /// received from others are not refused for this; they are neutralised
    /// where they are shown.
    pub fn new_chosen(s: impl Into<String>) -> Result<Self> {
        let name = Self::new(s)?;
        if name.0.chars().any(is_unsafe_to_show) {
            return Err(Error::UnsafeGroupName);
        }
        Ok(name)
    }

    /// Validates raw bytes as received on the wire.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let s = std::str::from_utf8(b).map_err(|_| Error::InvalidGroupName)?;
        Self::new(s)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName({:?})", self.0)
    }
}

/// Defines a 16-byte random identifier shown as 32 lowercase hex digits.
macro_rules! id16 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id from the operating system's generator.
            pub fn random() -> Result<Self> {
                let mut b = [0u8; 16];
                crate::random::fill(&mut b)?;
                Ok(Self(b))
            }

            /// The raw 16 bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// The raw bytes, as a slice (database keys, protocol fields).
            pub fn as_slice(&self) -> &[u8] {
                &self.0
            }

            /// The raw bytes, owned (protocol fields).
            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }

            /// From raw bytes, which must be exactly 16.
            pub fn from_slice(b: &[u8]) -> Result<Self> {
                <[u8; 16]>::try_from(b)
                    .map(Self)
                    .map_err(|_| Error::Malformed { what: $what })
            }

            /// 32 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let mut b = [0u8; 16];
                hex::decode_to_slice(s, &mut b)
                    .map_err(|_| Error::InvalidHex { what: $what, len: 32 })?;
                Ok(Self(b))
            }
        }
    };
}

id16!(
    /// A group id: 16 random bytes chosen by the creator (SPEC §3.1).
    GroupId,
    "group id"
);
id16!(
    /// A message id: 16 random bytes per message (SPEC §3.2).
    MsgId,
    "message id"
);
id16!(
    /// An inbox item id (also `invite_id` and `ref_id`, SPEC §4).
    ItemId,
    "item id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rule_of_spec_section_2() {
        for ok in [
            "alice@example.org",
            "user1.ntm.jp",
            "0",
            "a-b_c",
            &"a".repeat(255),
        ] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            ".alice",
            "-a",
            "a b",
            "ä",
            "a/b",
            &"a".repeat(256),
        ] {
            assert_eq!(UserId::new(bad), Err(Error::InvalidUserId), "{bad}");
        }
        assert!(UserId::from_bytes(&[b'a', 0xff]).is_err());
    }

    #[test]
    fn a_chosen_group_name_has_no_control_or_bidi_characters() {
        for bad in [
            "a\u{1b}[2Jb",
            "tab\there",
            "x\u{202e}gnp.exe",
            "a\u{2066}b",
            "del\u{7f}",
            "c1\u{9b}",
        ] {
            assert_eq!(
                GroupName::new_chosen(bad).unwrap_err(),
                Error::UnsafeGroupName,
                "{bad:?}"
            );
            assert!(
                GroupName::new(bad).is_ok(),
                "received names are not refused: {bad:?}"
            );
        }
        for good in [
            "proj",
            "équipe 🚀",
            "family 👨\u{200d}👩\u{200d}👧",
            "日本語",
        ] {
            assert!(GroupName::new_chosen(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn group_name_is_1_to_128_bytes_without_normalisation() {
        assert!(GroupName::new("").is_err());
        assert!(GroupName::new("x".repeat(129)).is_err());
        assert!(GroupName::new("営業チーム").is_ok());
        assert!(GroupName::from_bytes(&[0xc3]).is_err());
        // "é" precomposed and decomposed stay distinct names.
        assert_ne!(
            GroupName::new("\u{e9}").ok(),
            GroupName::new("e\u{301}").ok()
        );
    }

    #[test]
    fn ids_parse_and_print_as_lowercase_hex() {
        let g: GroupId = "55bad86b397f07d493aa0fa93b5ee7d8".parse().unwrap();
        assert_eq!(g.to_string(), "55bad86b397f07d493aa0fa93b5ee7d8");
        assert!("55bad86b".parse::<GroupId>().is_err());
        assert!(GroupId::from_slice(&[0; 15]).is_err());
        assert_ne!(GroupId::random().unwrap(), GroupId::random().unwrap());
    }
}
