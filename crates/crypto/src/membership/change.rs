//! A membership change as its actor signs it (SPEC §4.7):
//!
//! ```text
//! change    = "DKM1" || signed || signature[64]
//! signed    = group_id[16] || u64 seq || prev[32] || u8 action || lp16(actor) ||
//!             lp16(subject) || u8 rights || u8 flags || lp16(body) || u64 created_at_ms
//! signature = Ed25519-Sign(actor's key in the state, "duokey/v1 membership" || signed)
//! hash      = SHA-256("duokey/v1 membership hash" || change)
//! rekey body = new_key[32] || Ed25519-Sign(new key, "duokey/v1 rekey" || group_id ||
//!              lp16(user) || new_key)[64]
//! ```

use super::Rule;
use crate::codec::{Reader, Writer, wire_enum};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, PublicIdentity, SIGNATURE_LEN};
use crate::ids::{GroupId, UserId};
use crate::rights::Rights;
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};

/// Change magic.
pub const MAGIC: &[u8; 4] = b"DKM1";
/// Signature label of a change.
pub const SIGNATURE_LABEL: &[u8] = b"duokey/v1 membership";
/// Hash label of a change.
pub const HASH_LABEL: &[u8] = b"duokey/v1 membership hash";
/// Signature label of a rekey's proof of possession.
pub const REKEY_LABEL: &[u8] = b"duokey/v1 rekey";
/// The only flag: the change rotates RN1 (`rn1_version + 1`).
pub const FLAG_ROTATES_RN1: u8 = 0x01;
/// Largest encoded change accepted (a create carries a name and a policy).
pub const MAX_CHANGE_LEN: usize = 2048;

/// A 32-byte change hash; the `prev` of the next change and the group's head.
pub type Hash = [u8; 32];

wire_enum! {
    /// The actions of SPEC §4.7; other codes are rejected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Action {
        /// 1: the first change; the creator becomes the owner.
        Create = 1,
        /// 2: a member with the invite right adds the subject.
        Add = 2,
        /// 3: a member with the remove right removes the subject.
        Remove = 3,
        /// 4: a member other than the owner leaves.
        Leave = 4,
        /// 5: any member rotates RN1.
        RotateRn1 = 5,
        /// 6: the owner changes the policy.
        Policy = 6,
        /// 7: the owner deletes the group; nothing is valid after it.
        Delete = 7,
        /// 8: a member replaces its key (signed with the old one).
        Rekey = 8,
        /// 64: the owner hands ownership to another member and keeps the invite
        /// and remove rights (the project's own action, outside the spec's
        /// codes, PROTOCOL §4.8).
        Transfer = 64,
    }
    else |_| Rule::UnknownAction.into()
}

impl Action {
    /// The name people and logs see (`"add"` …).
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Leave => "leave",
            Action::RotateRn1 => "rotate_rn1",
            Action::Policy => "policy",
            Action::Delete => "delete",
            Action::Rekey => "rekey",
            Action::Transfer => "transfer",
        }
    }
}

/// The signed fields of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The group.
    pub group_id: GroupId,
    /// 1 for `create`, one more for each later change.
    pub seq: u64,
    /// Hash of the change before (zeros for `create`).
    pub prev: Hash,
    /// What the change does.
    pub action: Action,
    /// Who signs it.
    pub actor: UserId,
    /// Whom it concerns.
    pub subject: UserId,
    /// Rights given (`create`: 0x07; `add`: the new member's; otherwise 0).
    pub rights: Rights,
    /// [`FLAG_ROTATES_RN1`] or 0.
    pub flags: u8,
    /// Action-specific body (SPEC §4.7 table).
    pub body: Vec<u8>,
    /// The actor's clock, Unix milliseconds; never below the previous change's.
    pub created_at_ms: u64,
}

impl Change {
    fn signed_bytes(&self, w: &mut Writer) -> Result<()> {
        w.bytes(self.group_id.as_bytes())
            .u64(self.seq)
            .bytes(&self.prev)
            .u8(self.action as u8);
        w.lp16(self.actor.as_bytes())?
            .lp16(self.subject.as_bytes())?;
        w.u8(self.rights.bits()).u8(self.flags).lp16(&self.body)?;
        w.u64(self.created_at_ms);
        Ok(())
    }

    /// Encodes and signs the change with the actor's key.
    pub fn sign(&self, key: &IdentityKey) -> Result<SignedChange> {
        let mut w = Writer::with_capacity(160 + self.body.len());
        w.bytes(MAGIC);
        self.signed_bytes(&mut w)?;
        w.sign_from(MAGIC.len(), SIGNATURE_LABEL, key)?;
        SignedChange::parse(&w.into_vec())
    }
}

/// A strictly decoded change with its bytes; its signature is checked by
/// [`SignedChange::verify`] against the key the group's state names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChange {
    change: Change,
    bytes: Vec<u8>,
}

impl SignedChange {
    /// Decodes strictly: magic, known action, valid user ids and rights,
    /// known flags, exact lengths, no trailing bytes. Not verified yet.
    pub fn parse(bytes: &[u8]) -> Result<SignedChange> {
        if bytes.len() > MAX_CHANGE_LEN {
            return Err(Error::TooLarge {
                what: "membership change",
                len: bytes.len(),
                max: MAX_CHANGE_LEN,
            });
        }
        let mut r = Reader::new(bytes, "membership change");
        r.magic(MAGIC)?;
        let change = Change {
            group_id: GroupId(r.array()?),
            seq: r.u64()?,
            prev: r.array()?,
            action: Action::try_from(r.u8()?)?,
            actor: UserId::from_bytes(r.lp16()?)?,
            subject: UserId::from_bytes(r.lp16()?)?,
            rights: Rights::from_bits(r.u8()?)?,
            flags: r.u8()?,
            body: r.lp16()?.to_vec(),
            created_at_ms: r.u64()?,
        };
        r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        if change.flags & !FLAG_ROTATES_RN1 != 0 {
            return Err(Rule::UnknownFlags.into());
        }
        Ok(SignedChange {
            change,
            bytes: bytes.to_vec(),
        })
    }

    /// The decoded fields.
    pub fn change(&self) -> &Change {
        &self.change
    }

    /// The whole encoded change, as signed and hashed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `SHA-256("duokey/v1 membership hash" || change)`.
    pub fn hash(&self) -> Hash {
        Sha256::new()
            .chain_update(HASH_LABEL)
            .chain_update(&self.bytes)
            .finalize()
            .into()
    }

    /// Whether the change sets [`FLAG_ROTATES_RN1`].
    pub fn rotates_rn1(&self) -> bool {
        self.change.flags & FLAG_ROTATES_RN1 != 0
    }

    /// Checks the signature with `key` (RFC 8032 strict: no malleated `S`,
    /// no non-canonical or small-order points).
    pub fn verify(&self, key: &PublicIdentity) -> Result<()> {
        let split = self
            .bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(Error::Internal("change layout"))?;
        let (head, sig) = self.bytes.split_at(split);
        let signed = head
            .get(MAGIC.len()..)
            .ok_or(Error::Internal("change layout"))?;
        verify_strict(key, &[SIGNATURE_LABEL, signed], sig)
    }
}

/// `verify_strict` over the concatenation of `parts`.
fn verify_strict(key: &PublicIdentity, parts: &[&[u8]], sig: &[u8]) -> Result<()> {
    let sig = <[u8; SIGNATURE_LEN]>::try_from(sig).map_err(|_| Rule::Signature)?;
    let message = parts.concat();
    key.verifying_key()
        .verify_strict(&message, &Signature::from_bytes(&sig))
        .map_err(|_| Rule::Signature.into())
}

/// The body of a `rekey` change: the new key and its proof of possession.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyBody {
    /// The member's new identity key.
    pub new_key: PublicIdentity,
}

impl RekeyBody {
    /// Makes the body for `user` moving to `new_key` in `group`.
    pub fn make(group: &GroupId, user: &UserId, new_key: &IdentityKey) -> Result<Vec<u8>> {
        let public = new_key.public().to_bytes();
        let mut w = Writer::with_capacity(32 + SIGNATURE_LEN);
        w.bytes(&public);
        let proof = new_key.sign_parts(&[
            REKEY_LABEL,
            group.as_bytes(),
            &lp16(user.as_bytes())?,
            &public,
        ])?;
        w.bytes(&proof);
        Ok(w.into_vec())
    }

    /// Decodes the body and checks the proof with the new key itself.
    pub fn open(body: &[u8], group: &GroupId, user: &UserId) -> Result<RekeyBody> {
        let mut r = Reader::new(body, "rekey body");
        let key_bytes: [u8; 32] = r.array()?;
        let proof = r.array::<SIGNATURE_LEN>()?;
        r.finish()?;
        let new_key = PublicIdentity::from_bytes(&key_bytes)?;
        verify_strict(
            &new_key,
            &[
                REKEY_LABEL,
                group.as_bytes(),
                &lp16(user.as_bytes())?,
                &key_bytes,
            ],
            &proof,
        )?;
        Ok(RekeyBody { new_key })
    }
}

fn lp16(x: &[u8]) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(2 + x.len());
    w.lp16(x)?;
    Ok(w.into_vec())
}
