//! Invite codes (SPEC §9; PROTOCOL §4.10; DESIGN D50): a short
//! one-time code, told out of band, authenticates the `ack` and `rn1`
//! exchange of an invitation with SPAKE2, so that neither the CA nor the CS
//! (nor both together) can stand in for the invitee or the inviter.
//!
//! ```text
//! id_A      = "duokey/v1 code inviter" || invite_id || group_id || lp16(inviter) || lp16(invitee)
//! id_B      = "duokey/v1 code invitee" || invite_id || group_id || lp16(inviter) || lp16(invitee)
//! msg_A     = SPAKE2-Ed25519 A message (33 bytes; password = the 8 ASCII digits),
//!             its scalar drawn from ChaCha20(seed), the inviter's 32-byte seed
//! msg_B     = SPAKE2-Ed25519 B message (33 bytes)
//! K         = SPAKE2 key (32 bytes)
//! T         = SHA-256(invite_id || group_id || lp16(inviter) || lp16(invitee) || msg_A ||
//!                     msg_B || inviter_identity[32] || invitee_identity[32] || invite_pub[32])
//! kA || kB  = HKDF-SHA256(salt = none, ikm = K, info = "duokey/v1 code confirm" || T, 64)
//! tag_B     = HMAC-SHA256(kB, "invitee" || T)     (in the `code_ack` item)
//! tag_A     = HMAC-SHA256(kA, "inviter" || T)     (in the `code_confirm` item)
//! ```
//!
//! The inviter keeps only the seed (sealed in its profile), and computes the
//! same `msg_A` and scalar again when the answer arrives. Each side checks
//! the other's tag, which binds the code, both identity keys (the keys that
//! signed the items, whatever certificate came with them) and the invitee's
//! fresh `invite_pub`: a wrong code, another invitation or group, or a key
//! put in by a rogue CA fails the tag. An attacker who answers gets one
//! guess per answer, and the inviter allows [`MAX_TRIES`].

use crate::codec::Writer;
use crate::error::{Error, Result};
use crate::identity::PublicIdentity;
use crate::ids::{GroupId, ItemId, UserId};
use crate::rn1_delivery::DeliveryPublic;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Digits in a code.
pub const CODE_DIGITS: usize = 8;
/// Length of a SPAKE2 message.
pub const PAKE_MSG_LEN: usize = 33;
/// Length of a confirmation tag.
pub const TAG_LEN: usize = 32;
/// Wrong answers an inviter accepts before the code is dead.
pub const MAX_TRIES: u32 = 3;

const ID_A: &[u8] = b"duokey/v1 code inviter";
const ID_B: &[u8] = b"duokey/v1 code invitee";
const CONFIRM_INFO: &[u8] = b"duokey/v1 code confirm";

/// A one-time invite code: eight decimal digits (about 26.6 bits; safe
/// because each answer is one online guess and [`MAX_TRIES`] are allowed).
#[derive(Clone)]
pub struct InviteCode(Zeroizing<String>);

impl InviteCode {
    /// A fresh code from the operating system's generator.
    pub fn generate() -> Result<InviteCode> {
        let mut b = [0u8; 8];
        crate::random::fill(&mut b)?;
        // 2^64 mod 10^8 is a bias below 2^-37: not worth a rejection loop.
        let n = u64::from_le_bytes(b) % 100_000_000;
        Ok(InviteCode(Zeroizing::new(format!("{n:08}"))))
    }

    /// The code as a person types it: eight digits, spaces and dashes
    /// ignored.
    pub fn parse(text: &str) -> Result<InviteCode> {
        let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.len() != CODE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidCode);
        }
        Ok(InviteCode(Zeroizing::new(digits)))
    }

    /// The eight digits.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InviteCode {
    /// `1234-5678`: easier to read aloud.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = self.0.split_at(CODE_DIGITS / 2);
        write!(f, "{a}-{b}")
    }
}

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteCode(…)")
    }
}

/// The invitation a code is bound to.
#[derive(Debug, Clone, Copy)]
pub struct CodeContext<'a> {
    /// The `invite_id` (the code invitation item's id).
    pub invite_id: &'a ItemId,
    /// The group.
    pub group_id: &'a GroupId,
    /// Who invites.
    pub inviter: &'a UserId,
    /// Who is invited.
    pub invitee: &'a UserId,
}

impl CodeContext<'_> {
    fn binding(&self, w: &mut Writer) -> Result<()> {
        w.bytes(self.invite_id.as_bytes())
            .bytes(self.group_id.as_bytes())
            .lp16(self.inviter.as_bytes())?
            .lp16(self.invitee.as_bytes())?;
        Ok(())
    }

    fn identities(&self) -> Result<(Identity, Identity)> {
        let id = |label: &[u8]| -> Result<Identity> {
            let mut w = Writer::with_capacity(128);
            w.bytes(label);
            self.binding(&mut w)?;
            Ok(Identity::new(&w.into_vec()))
        };
        Ok((id(ID_A)?, id(ID_B)?))
    }
}

/// The identity keys and fresh key the tags bind.
#[derive(Debug, Clone, Copy)]
pub struct CodeKeys<'a> {
    /// The key that signed the code invitation (the inviter's).
    pub inviter: &'a PublicIdentity,
    /// The key that signed the code acknowledgement (the invitee's).
    pub invitee: &'a PublicIdentity,
    /// The invitee's fresh key for this invitation's `rn1`.
    pub invite_pub: &'a DeliveryPublic,
}

/// The inviter's SPAKE2 message for `code`, recomputed from its `seed`.
pub fn inviter_message(
    code: &InviteCode,
    seed: &[u8; 32],
    ctx: &CodeContext<'_>,
) -> Result<[u8; PAKE_MSG_LEN]> {
    let (_, msg) = inviter_start(code, seed, ctx)?;
    msg_array(&msg)
}

fn inviter_start(
    code: &InviteCode,
    seed: &[u8; 32],
    ctx: &CodeContext<'_>,
) -> Result<(Spake2<Ed25519Group>, Vec<u8>)> {
    let (id_a, id_b) = ctx.identities()?;
    let rng = chacha20::ChaCha20Rng::from_seed(*seed);
    Ok(Spake2::<Ed25519Group>::start_a_with_rng(
        &Password::new(code.digits()),
        &id_a,
        &id_b,
        rng,
    ))
}

fn msg_array(msg: &[u8]) -> Result<[u8; PAKE_MSG_LEN]> {
    msg.try_into()
        .map_err(|_| Error::Internal("SPAKE2 message length"))
}

/// Both tags of one run, once the key is agreed.
pub struct Confirmation {
    inviter_key: Zeroizing<[u8; 32]>,
    invitee_key: Zeroizing<[u8; 32]>,
    transcript: [u8; 32],
}

impl Confirmation {
    fn derive(
        key: &[u8],
        ctx: &CodeContext<'_>,
        msg_a: &[u8; PAKE_MSG_LEN],
        msg_b: &[u8; PAKE_MSG_LEN],
        keys: &CodeKeys<'_>,
    ) -> Result<Confirmation> {
        let mut w = Writer::with_capacity(256);
        ctx.binding(&mut w)?;
        w.bytes(msg_a)
            .bytes(msg_b)
            .bytes(&keys.inviter.to_bytes())
            .bytes(&keys.invitee.to_bytes())
            .bytes(&keys.invite_pub.0);
        let transcript: [u8; 32] = Sha256::digest(w.into_vec()).into();
        let mut okm = Zeroizing::new([0u8; 64]);
        Hkdf::<Sha256>::new(None, key)
            .expand_multi_info(&[CONFIRM_INFO, &transcript], okm.as_mut_slice())
            .map_err(|_| Error::Internal("HKDF length"))?;
        let (a, b) = okm.split_at(32);
        let half = |s: &[u8]| -> Result<Zeroizing<[u8; 32]>> {
            Ok(Zeroizing::new(
                s.try_into().map_err(|_| Error::Internal("HKDF split"))?,
            ))
        };
        Ok(Confirmation {
            inviter_key: half(a)?,
            invitee_key: half(b)?,
            transcript,
        })
    }

    fn tag(key: &[u8; 32], label: &[u8], transcript: &[u8; 32]) -> Result<[u8; TAG_LEN]> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map_err(|_| Error::Internal("HMAC key"))?;
        mac.update(label);
        mac.update(transcript);
        Ok(mac.finalize().into_bytes().into())
    }

    /// The inviter's tag (sent in `code_confirm`).
    pub fn inviter_tag(&self) -> Result<[u8; TAG_LEN]> {
        Self::tag(&self.inviter_key, b"inviter", &self.transcript)
    }

    /// The invitee's tag (sent in `code_ack`).
    pub fn invitee_tag(&self) -> Result<[u8; TAG_LEN]> {
        Self::tag(&self.invitee_key, b"invitee", &self.transcript)
    }

    /// Checks the invitee's tag in constant time: a mismatch means a wrong
    /// code, or a key other than the one the invitee holds.
    pub fn check_invitee(&self, tag: &[u8; TAG_LEN]) -> Result<()> {
        check(&self.invitee_tag()?, tag)
    }
}

fn check(expected: &[u8; TAG_LEN], got: &[u8; TAG_LEN]) -> Result<()> {
    if bool::from(expected.ct_eq(got)) {
        Ok(())
    } else {
        Err(Error::CodeMismatch)
    }
}

/// Checks the inviter's tag against the one the invitee expects (what
/// [`invitee_answer`] returned), in constant time.
pub fn check_inviter(expected: &[u8; TAG_LEN], got: &[u8; TAG_LEN]) -> Result<()> {
    check(expected, got)
}

/// What the invitee sends and keeps: its SPAKE2 message, its tag, and the
/// inviter's tag it expects in `code_confirm`.
#[derive(Debug, Clone)]
pub struct InviteeAnswer {
    /// `msg_B`.
    pub msg_b: [u8; PAKE_MSG_LEN],
    /// `tag_B`.
    pub tag: [u8; TAG_LEN],
    /// `tag_A`, to compare with the inviter's `code_confirm`.
    pub expected_inviter_tag: [u8; TAG_LEN],
}

/// The invitee's side: runs SPAKE2 against the inviter's message with the
/// code the person typed.
pub fn invitee_answer(
    code: &InviteCode,
    ctx: &CodeContext<'_>,
    msg_a: &[u8; PAKE_MSG_LEN],
    keys: &CodeKeys<'_>,
) -> Result<InviteeAnswer> {
    invitee_answer_with_rng(code, ctx, msg_a, keys, crate::random::os_rng())
}

/// [`invitee_answer`] with the caller's generator (test vectors).
pub fn invitee_answer_with_rng(
    code: &InviteCode,
    ctx: &CodeContext<'_>,
    msg_a: &[u8; PAKE_MSG_LEN],
    keys: &CodeKeys<'_>,
    rng: impl rand::CryptoRng,
) -> Result<InviteeAnswer> {
    let (id_a, id_b) = ctx.identities()?;
    let (state, msg_b) =
        Spake2::<Ed25519Group>::start_b_with_rng(&Password::new(code.digits()), &id_a, &id_b, rng);
    let msg_b = msg_array(&msg_b)?;
    let key = Zeroizing::new(state.finish(msg_a).map_err(|_| Error::Malformed {
        what: "code invitation",
    })?);
    let c = Confirmation::derive(&key, ctx, msg_a, &msg_b, keys)?;
    Ok(InviteeAnswer {
        msg_b,
        tag: c.invitee_tag()?,
        expected_inviter_tag: c.inviter_tag()?,
    })
}

/// The inviter's side, when the answer arrives: the key from its seed and
/// the invitee's message, as a [`Confirmation`] to check the invitee's tag
/// with (and to take its own tag from).
pub fn inviter_finish(
    code: &InviteCode,
    seed: &[u8; 32],
    ctx: &CodeContext<'_>,
    msg_b: &[u8; PAKE_MSG_LEN],
    keys: &CodeKeys<'_>,
) -> Result<Confirmation> {
    let (state, msg_a) = inviter_start(code, seed, ctx)?;
    let msg_a = msg_array(&msg_a)?;
    let key = Zeroizing::new(state.finish(msg_b).map_err(|_| Error::Malformed {
        what: "code acknowledgement",
    })?);
    Confirmation::derive(&key, ctx, &msg_a, msg_b, keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::identity::IdentityKey;
    use crate::rn1_delivery::DeliverySecret;

    struct Run {
        invite_id: ItemId,
        group_id: GroupId,
        inviter: UserId,
        invitee: UserId,
        a: IdentityKey,
        b: IdentityKey,
        invite_pub: DeliveryPublic,
    }

    fn run() -> Run {
        Run {
            invite_id: ItemId([1; 16]),
            group_id: GroupId([2; 16]),
            inviter: UserId::new("alice").unwrap(),
            invitee: UserId::new("bob").unwrap(),
            a: IdentityKey::from_seed([3; 32]),
            b: IdentityKey::from_seed([4; 32]),
            invite_pub: DeliverySecret::generate().public(),
        }
    }

    impl Run {
        fn ctx(&self) -> CodeContext<'_> {
            CodeContext {
                invite_id: &self.invite_id,
                group_id: &self.group_id,
                inviter: &self.inviter,
                invitee: &self.invitee,
            }
        }
    }

    /// Runs both sides: the inviter with `code_a`, the invitee with `code_b`
    /// and `keys_b` (what it believes); the inviter checks with `keys_a`.
    fn exchange(
        r: &Run,
        code_a: &str,
        code_b: &str,
        b_as_seen_by_a: &PublicIdentity,
    ) -> Result<()> {
        let (pa, pb) = (r.a.public(), r.b.public());
        let seed = [9; 32];
        let code_a = InviteCode::parse(code_a)?;
        let msg_a = inviter_message(&code_a, &seed, &r.ctx())?;
        let keys_b = CodeKeys {
            inviter: &pa,
            invitee: &pb,
            invite_pub: &r.invite_pub,
        };
        let answer = invitee_answer(&InviteCode::parse(code_b)?, &r.ctx(), &msg_a, &keys_b)?;
        let keys_a = CodeKeys {
            inviter: &pa,
            invitee: b_as_seen_by_a,
            invite_pub: &r.invite_pub,
        };
        let c = inviter_finish(&code_a, &seed, &r.ctx(), &answer.msg_b, &keys_a)?;
        c.check_invitee(&answer.tag)?;
        check_inviter(&answer.expected_inviter_tag, &c.inviter_tag()?)
    }

    #[test]
    fn the_same_code_confirms_both_sides() {
        let r = run();
        exchange(&r, "1234-5678", "1234 5678", &r.b.public()).unwrap();
    }

    #[test]
    fn a_wrong_code_or_a_substituted_key_fails_the_tag() {
        let r = run();
        assert!(matches!(
            exchange(&r, "12345678", "12345679", &r.b.public()),
            Err(Error::CodeMismatch)
        ));
        // A rogue CA's key for bob, as the inviter's terminal saw it.
        let rogue = IdentityKey::from_seed([5; 32]).public();
        assert!(matches!(
            exchange(&r, "12345678", "12345678", &rogue),
            Err(Error::CodeMismatch)
        ));
    }

    #[test]
    fn a_code_is_bound_to_its_invitation_and_group() {
        let r = run();
        let (pa, pb) = (r.a.public(), r.b.public());
        let code = InviteCode::parse("00000042").unwrap();
        let seed = [7; 32];
        let msg_a = inviter_message(&code, &seed, &r.ctx()).unwrap();
        let keys = CodeKeys {
            inviter: &pa,
            invitee: &pb,
            invite_pub: &r.invite_pub,
        };
        let mut other = run();
        other.group_id = GroupId([8; 16]);
        let answer = invitee_answer(&code, &other.ctx(), &msg_a, &keys).unwrap();
        let c = inviter_finish(&code, &seed, &r.ctx(), &answer.msg_b, &keys).unwrap();
        assert!(c.check_invitee(&answer.tag).is_err());
    }

    #[test]
    fn the_inviter_message_is_the_same_from_the_same_seed() {
        let r = run();
        let code = InviteCode::parse("31415926").unwrap();
        let one = inviter_message(&code, &[1; 32], &r.ctx()).unwrap();
        assert_eq!(one, inviter_message(&code, &[1; 32], &r.ctx()).unwrap());
        assert_ne!(one, inviter_message(&code, &[2; 32], &r.ctx()).unwrap());
        assert_eq!(one[0], b'A');
    }

    #[test]
    fn codes_parse_strictly_and_print_in_two_halves() {
        let c = InviteCode::generate().unwrap();
        assert_eq!(c.digits().len(), 8);
        assert_eq!(
            InviteCode::parse(&c.to_string()).unwrap().digits(),
            c.digits()
        );
        for bad in ["1234567", "123456789", "1234abcd", "", "１２３４５６７８"] {
            assert!(InviteCode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{c:?}"), "InviteCode(…)");
    }
}
