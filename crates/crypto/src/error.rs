//! The one error type of this crate.
//!
//! Messages name structures, groups, users and versions — never key material
//! or content (libsignal's rule: no user data in errors).

use crate::epoch::Epoch;
use crate::ids::{GroupId, UserId};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in suite 1.
///
/// Receiver checks of SPEC §3.3 have their own variant; [`Error::check_id`]
/// gives the check's id (`V1`…`V13`) as listed in `docs/SECURITY.md`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// V1: the bytes do not start with the expected magic.
    #[error("not a {what}: wrong magic")]
    BadMagic {
        /// The structure expected.
        what: &'static str,
    },
    /// V2: the envelope names a suite this build does not implement.
    #[error("unsupported suite {suite} (this terminal speaks suite 1)")]
    UnsupportedSuite {
        /// The suite number found.
        suite: u16,
    },
    /// V3: a field or the whole input is larger than allowed.
    #[error("{what} too large: {len} bytes, at most {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// V3: lengths do not add up, a field is short, or bytes trail.
    #[error("malformed {what}")]
    Malformed {
        /// The structure.
        what: &'static str,
    },
    /// V4: no group key is known for this epoch (fetch the grant, SPEC §4.5).
    #[error("unknown epoch {epoch} of group {group}")]
    UnknownEpoch {
        /// The group.
        group: GroupId,
        /// The epoch named by the envelope.
        epoch: Epoch,
    },
    /// V4: the epoch is known but no longer accepted (outside the grace
    /// window or erased after retention, SPEC §4.5, §7.5).
    #[error("epoch {epoch} of group {group} is closed")]
    EpochClosed {
        /// The group.
        group: GroupId,
        /// The epoch named by the envelope.
        epoch: Epoch,
    },
    /// V5: the sender is not a member of the group at that epoch.
    #[error("{user} is not a member of group {group} at epoch {epoch}")]
    NotAMember {
        /// The claimed sender.
        user: UserId,
        /// The group.
        group: GroupId,
        /// The epoch.
        epoch: Epoch,
    },
    /// V6: the signature does not verify with the sender's certified key.
    #[error("bad signature on {what}")]
    BadSignature {
        /// The structure.
        what: &'static str,
    },
    /// V7: this `msg_id` was already accepted from this sender in this epoch.
    #[error("replayed message id")]
    ReplayedMsgId,
    /// V8: this `seq` was already accepted for (sender, epoch), or is older
    /// than the replay window remembers.
    #[error("replayed or too old sequence number {seq}")]
    ReplayedSeq {
        /// The sequence number.
        seq: u64,
    },
    /// V9: AES-256-GCM authentication failed.
    #[error("decryption failed")]
    DecryptFailed,
    /// V10: `len(body)` does not fit the plaintext.
    #[error("body length does not fit the plaintext")]
    BadBodyLength,
    /// V11: the padding is not zeros, or not minimal.
    #[error("bad padding")]
    BadPadding,
    /// V12: a reserved `content_type`.
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
    /// V13: a text or control body is not UTF-8.
    #[error("body is not valid UTF-8")]
    InvalidUtf8,

    /// A user id breaks the SPEC §2 rule.
    #[error("invalid user id (1–255 bytes of a-z 0-9 . _ @ -, starting with a letter or digit)")]
    InvalidUserId,
    /// A group name is empty or longer than 128 bytes.
    #[error("invalid group name (1–128 bytes of UTF-8)")]
    InvalidGroupName,
    /// A new group's name holds a control or bidirectional-control character.
    #[error(
        "a group name may not contain control characters, escape sequences or invisible direction marks; choose a plain name"
    )]
    UnsafeGroupName,
    /// A hex id does not have the right length or digits.
    #[error("invalid {what}: expected {len} hex digits")]
    InvalidHex {
        /// The id kind.
        what: &'static str,
        /// Expected number of hex digits.
        len: usize,
    },
    /// An invite code that is not eight digits.
    #[error("an invite code is eight digits (spaces and dashes are ignored)")]
    InvalidCode,
    /// A code confirmation tag did not match (PROTOCOL §4.10).
    #[error("the invite code did not match (a wrong code, or a key that is not the person's)")]
    CodeMismatch,
    /// An OPAQUE login whose password (or server) does not match.
    #[error("wrong password")]
    WrongPassword,
    /// An inbox item kind not defined by SPEC §4.
    #[error("unknown inbox item kind {0}")]
    UnknownItemKind(u8),
    /// A membership change breaks a rule of SPEC §4.7.
    #[error("membership change refused: {0}")]
    Membership(crate::membership::Rule),
    /// A rights byte with undefined bits.
    #[error("invalid rights bits {0:#04x}")]
    InvalidRights(u8),
    /// An inbox item addressed to someone else (SPEC §4).
    #[error("item addressed to {recipient}, not to this terminal")]
    WrongRecipient {
        /// The item's recipient.
        recipient: UserId,
    },
    /// An item body of another kind than expected.
    #[error("unexpected item kind {0}")]
    UnexpectedItemKind(u8),
    /// A public key that is not a valid or safe point.
    #[error("invalid {what} public key")]
    InvalidPublicKey {
        /// Which key.
        what: &'static str,
    },
    /// HPKE seal or open of an RN1 failed (SPEC §4.2 step 3).
    #[error("RN1 payload could not be opened")]
    Rn1OpenFailed,
    /// A ratchet or version step outside what suite 1 allows.
    #[error("RN1 ratchet cannot go from version {from} to {to}")]
    RatchetRange {
        /// The R1 version held.
        from: u64,
        /// The version asked for.
        to: u64,
    },
    /// The operating system's random generator failed.
    #[error("operating system random generator failed")]
    Random,
    /// A bug in this crate: please report it.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    /// The id of the SPEC §3.3 receiver check this error reports, if any
    /// (`docs/SECURITY.md` lists them).
    pub fn check_id(&self) -> Option<&'static str> {
        Some(match self {
            Error::BadMagic { .. } => "V1",
            Error::UnsupportedSuite { .. } => "V2",
            Error::TooLarge { .. } | Error::Malformed { .. } => "V3",
            Error::UnknownEpoch { .. } | Error::EpochClosed { .. } => "V4",
            Error::NotAMember { .. } => "V5",
            Error::BadSignature { .. } => "V6",
            Error::ReplayedMsgId => "V7",
            Error::ReplayedSeq { .. } => "V8",
            Error::DecryptFailed => "V9",
            Error::BadBodyLength => "V10",
            Error::BadPadding => "V11",
            Error::UnknownContentType(_) => "V12",
            Error::InvalidUtf8 => "V13",
            _ => return None,
        })
    }
}
