//! Signed inbox items between terminals (SPEC §4).
//!
//! ```text
//! item      = "DKI1" || u8 kind || item_id[16] || lp16(sender) || lp16(recipient) ||
//!             u64 created_at_ms || lp32(body) || signature[64]
//! signature = Ed25519(sender, "duokey/v1 item" || u8 kind || item_id || lp16(sender) ||
//!             lp16(recipient) || u64 created_at_ms || lp32(body))
//! ```

use crate::codec::{Reader, Writer, wire_enum};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, PublicIdentity, SIGNATURE_LEN};
use crate::ids::{GroupId, GroupName, ItemId, UserId};
use crate::invite_code::{PAKE_MSG_LEN, TAG_LEN};
use crate::rights::Rights;
use crate::rn1_delivery::{DeliveryPublic, ENC_LEN};

/// Item magic.
pub const MAGIC: &[u8; 4] = b"DKI1";
/// Signature label (SPEC §4).
pub const SIGNATURE_LABEL: &[u8] = b"duokey/v1 item";

wire_enum! {
    /// The kinds of SPEC §4; other values are rejected.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ItemKind {
        /// 1: an invitation to a group.
        Invite = 1,
        /// 2: the invitee accepts and sends a fresh X25519 key.
        Ack = 2,
        /// 3: the invitee declines.
        Decline = 3,
        /// 4: an HPKE-sealed R1.
        Rn1 = 4,
        /// 5: the recipient was removed from a group.
        Removal = 5,
        /// 6: the recipient's RN2 version is stale.
        Stale = 6,
        /// 7: names the membership change an `rn1` item was sent for (SPEC §4.7).
        Anchor = 7,
        /// 8: an invitation that needs a code (PROTOCOL §4.10).
        CodeInvite = 8,
        /// 9: the invitee accepts with the code.
        CodeAck = 9,
        /// 10: the inviter proves it knew the code too.
        CodeConfirm = 10,
    }
    else Error::UnknownItemKind
}

/// The body of an `rn1` item (SPEC §4.2 step 3, §4.3 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rn1Payload {
    /// The invite id, or this item's own id on a rotation.
    pub ref_id: ItemId,
    /// The group.
    pub group_id: GroupId,
    /// The RN1 version sealed.
    pub rn1_version: u32,
    /// The RN2 version the sealed R1 belongs to.
    pub at_rn2_version: u64,
    /// HPKE encapsulated key.
    pub enc: [u8; ENC_LEN],
    /// HPKE ciphertext of R1.
    pub ct: Vec<u8>,
}

/// The body of a `code_ack` item: an invitee's answer to a code
/// invitation (PROTOCOL §4.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeAckPayload {
    /// The code invitation accepted.
    pub invite_id: ItemId,
    /// The group.
    pub group_id: GroupId,
    /// A fresh X25519 key for this invitation only.
    pub invite_pub: DeliveryPublic,
    /// The invitee's SPAKE2 message.
    pub msg_b: [u8; PAKE_MSG_LEN],
    /// The invitee's confirmation tag.
    pub tag: [u8; TAG_LEN],
}

/// The typed body of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemBody {
    /// `group_id || lp16(group_name) || u8 rights`.
    Invite {
        /// The group.
        group_id: GroupId,
        /// Its name.
        group_name: GroupName,
        /// Rights offered.
        rights: Rights,
    },
    /// `invite_id || group_id || invite_pub[32]`.
    Ack {
        /// The invitation accepted.
        invite_id: ItemId,
        /// The group.
        group_id: GroupId,
        /// A fresh X25519 key for this invitation only.
        invite_pub: DeliveryPublic,
    },
    /// `invite_id || group_id`.
    Decline {
        /// The invitation declined.
        invite_id: ItemId,
        /// The group.
        group_id: GroupId,
    },
    /// `ref_id || group_id || u32 rn1_version || u64 at_rn2_version || enc[32] || lp16(ct)`.
    Rn1(Rn1Payload),
    /// `group_id`.
    Removal {
        /// The group the recipient was removed from.
        group_id: GroupId,
    },
    /// `group_id || u64 current_rn2_version`.
    Stale {
        /// The group.
        group_id: GroupId,
        /// The RN2 version the sender of this item holds.
        current_rn2_version: u64,
    },
    /// `group_id || u64 membership_seq || head[32] || u64 at_rn2_version` (SPEC §4.7).
    Anchor {
        /// The group.
        group_id: GroupId,
        /// The seq of the change the accompanying R1 was sent for.
        membership_seq: u64,
        /// The chain's head at that change, as the sender verified it.
        head: [u8; 32],
        /// The RN2 version of the grant that applied the change.
        at_rn2_version: u64,
    },
    /// `group_id || lp16(group_name) || u8 rights || u64 expires_at_ms ||
    /// msg_a[33]` (PROTOCOL §4.10).
    CodeInvite {
        /// The group.
        group_id: GroupId,
        /// Its name.
        group_name: GroupName,
        /// Rights offered.
        rights: Rights,
        /// After this (the inviter's clock) the code is dead.
        expires_at_ms: u64,
        /// The inviter's SPAKE2 message.
        msg_a: [u8; PAKE_MSG_LEN],
    },
    /// `invite_id || group_id || invite_pub[32] || msg_b[33] || tag[32]`.
    CodeAck(CodeAckPayload),
    /// `invite_id || group_id || tag[32]`.
    CodeConfirm {
        /// The code invitation.
        invite_id: ItemId,
        /// The group.
        group_id: GroupId,
        /// The inviter's confirmation tag.
        tag: [u8; TAG_LEN],
    },
}

impl ItemBody {
    /// The kind byte of this body.
    pub fn kind(&self) -> ItemKind {
        match self {
            ItemBody::Invite { .. } => ItemKind::Invite,
            ItemBody::Ack { .. } => ItemKind::Ack,
            ItemBody::Decline { .. } => ItemKind::Decline,
            ItemBody::Rn1(_) => ItemKind::Rn1,
            ItemBody::Removal { .. } => ItemKind::Removal,
            ItemBody::Stale { .. } => ItemKind::Stale,
            ItemBody::Anchor { .. } => ItemKind::Anchor,
            ItemBody::CodeInvite { .. } => ItemKind::CodeInvite,
            ItemBody::CodeAck(_) => ItemKind::CodeAck,
            ItemBody::CodeConfirm { .. } => ItemKind::CodeConfirm,
        }
    }

    /// The group every kind of item concerns.
    pub fn group_id(&self) -> &GroupId {
        match self {
            ItemBody::Invite { group_id, .. }
            | ItemBody::Ack { group_id, .. }
            | ItemBody::Decline { group_id, .. }
            | ItemBody::Removal { group_id }
            | ItemBody::Stale { group_id, .. }
            | ItemBody::Anchor { group_id, .. }
            | ItemBody::CodeInvite { group_id, .. }
            | ItemBody::CodeConfirm { group_id, .. } => group_id,
            ItemBody::Rn1(p) => &p.group_id,
            ItemBody::CodeAck(a) => &a.group_id,
        }
    }

    /// Encodes the body.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(128);
        match self {
            ItemBody::Invite {
                group_id,
                group_name,
                rights,
            } => {
                w.bytes(group_id.as_bytes())
                    .lp16(group_name.as_bytes())?
                    .u8(rights.bits());
            }
            ItemBody::Ack {
                invite_id,
                group_id,
                invite_pub,
            } => {
                w.bytes(invite_id.as_bytes())
                    .bytes(group_id.as_bytes())
                    .bytes(&invite_pub.0);
            }
            ItemBody::Decline {
                invite_id,
                group_id,
            } => {
                w.bytes(invite_id.as_bytes()).bytes(group_id.as_bytes());
            }
            ItemBody::Rn1(p) => {
                w.bytes(p.ref_id.as_bytes()).bytes(p.group_id.as_bytes());
                w.u32(p.rn1_version)
                    .u64(p.at_rn2_version)
                    .bytes(&p.enc)
                    .lp16(&p.ct)?;
            }
            ItemBody::Removal { group_id } => {
                w.bytes(group_id.as_bytes());
            }
            ItemBody::Stale {
                group_id,
                current_rn2_version,
            } => {
                w.bytes(group_id.as_bytes()).u64(*current_rn2_version);
            }
            ItemBody::Anchor {
                group_id,
                membership_seq,
                head,
                at_rn2_version,
            } => {
                w.bytes(group_id.as_bytes())
                    .u64(*membership_seq)
                    .bytes(head)
                    .u64(*at_rn2_version);
            }
            ItemBody::CodeInvite {
                group_id,
                group_name,
                rights,
                expires_at_ms,
                msg_a,
            } => {
                w.bytes(group_id.as_bytes())
                    .lp16(group_name.as_bytes())?
                    .u8(rights.bits())
                    .u64(*expires_at_ms)
                    .bytes(msg_a);
            }
            ItemBody::CodeAck(a) => {
                w.bytes(a.invite_id.as_bytes())
                    .bytes(a.group_id.as_bytes())
                    .bytes(&a.invite_pub.0)
                    .bytes(&a.msg_b)
                    .bytes(&a.tag);
            }
            ItemBody::CodeConfirm {
                invite_id,
                group_id,
                tag,
            } => {
                w.bytes(invite_id.as_bytes())
                    .bytes(group_id.as_bytes())
                    .bytes(tag);
            }
        }
        Ok(w.into_vec())
    }

    /// Decodes a body of `kind` strictly (exact lengths, no trailing bytes).
    pub fn decode(kind: ItemKind, bytes: &[u8]) -> Result<ItemBody> {
        let mut r = Reader::new(bytes, "item body");
        let body = match kind {
            ItemKind::Invite => ItemBody::Invite {
                group_id: GroupId(r.array()?),
                group_name: GroupName::from_bytes(r.lp16()?)?,
                rights: Rights::from_bits(r.u8()?)?,
            },
            ItemKind::Ack => ItemBody::Ack {
                invite_id: ItemId(r.array()?),
                group_id: GroupId(r.array()?),
                invite_pub: DeliveryPublic(r.array()?),
            },
            ItemKind::Decline => ItemBody::Decline {
                invite_id: ItemId(r.array()?),
                group_id: GroupId(r.array()?),
            },
            ItemKind::Rn1 => ItemBody::Rn1(Rn1Payload {
                ref_id: ItemId(r.array()?),
                group_id: GroupId(r.array()?),
                rn1_version: r.u32()?,
                at_rn2_version: r.u64()?,
                enc: r.array()?,
                ct: r.lp16()?.to_vec(),
            }),
            ItemKind::Removal => ItemBody::Removal {
                group_id: GroupId(r.array()?),
            },
            ItemKind::Stale => ItemBody::Stale {
                group_id: GroupId(r.array()?),
                current_rn2_version: r.u64()?,
            },
            ItemKind::Anchor => ItemBody::Anchor {
                group_id: GroupId(r.array()?),
                membership_seq: r.u64()?,
                head: r.array()?,
                at_rn2_version: r.u64()?,
            },
            ItemKind::CodeInvite => ItemBody::CodeInvite {
                group_id: GroupId(r.array()?),
                group_name: GroupName::from_bytes(r.lp16()?)?,
                rights: Rights::from_bits(r.u8()?)?,
                expires_at_ms: r.u64()?,
                msg_a: r.array()?,
            },
            ItemKind::CodeAck => ItemBody::CodeAck(CodeAckPayload {
                invite_id: ItemId(r.array()?),
                group_id: GroupId(r.array()?),
                invite_pub: DeliveryPublic(r.array()?),
                msg_b: r.array()?,
                tag: r.array()?,
            }),
            ItemKind::CodeConfirm => ItemBody::CodeConfirm {
                invite_id: ItemId(r.array()?),
                group_id: GroupId(r.array()?),
                tag: r.array()?,
            },
        };
        r.finish()?;
        Ok(body)
    }
}

/// A verified inbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// 16 random bytes; for an invite also the `invite_id`.
    pub item_id: ItemId,
    /// The signer.
    pub sender: UserId,
    /// The addressee.
    pub recipient: UserId,
    /// The sender's clock, Unix milliseconds.
    pub created_at_ms: u64,
    /// The typed body.
    pub body: ItemBody,
}

impl Item {
    /// Encodes and signs the item with the sender's identity key.
    pub fn sign(&self, key: &IdentityKey) -> Result<Vec<u8>> {
        let body = self.body.encode()?;
        let mut w = Writer::with_capacity(128 + body.len());
        w.bytes(MAGIC)
            .u8(self.body.kind() as u8)
            .bytes(self.item_id.as_bytes());
        w.lp16(self.sender.as_bytes())?
            .lp16(self.recipient.as_bytes())?;
        w.u64(self.created_at_ms).lp32(&body)?;
        w.sign_from(MAGIC.len(), SIGNATURE_LABEL, key)?;
        Ok(w.into_vec())
    }
}

/// A decoded but not yet verified item: all the CS may look at (SPEC §4:
/// "kind, id, sender, recipient, time").
#[derive(Debug, Clone)]
pub struct SignedItem<'a> {
    /// The item with its decoded body.
    pub item: Item,
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

impl<'a> SignedItem<'a> {
    /// Decodes strictly: magic, known kind, valid ids, exact lengths, no
    /// trailing bytes. The signature is not checked yet.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "inbox item");
        r.magic(MAGIC)?;
        let kind = ItemKind::try_from(r.u8()?)?;
        let item_id = ItemId(r.array()?);
        let sender = UserId::from_bytes(r.lp16()?)?;
        let recipient = UserId::from_bytes(r.lp16()?)?;
        let created_at_ms = r.u64()?;
        let body = ItemBody::decode(kind, r.lp32()?)?;
        let (signed, signature) = r.finish_signed(MAGIC.len())?;
        Ok(Self {
            item: Item {
                item_id,
                sender,
                recipient,
                created_at_ms,
                body,
            },
            signed,
            signature,
        })
    }

    /// Checks the signature with the sender's certified key.
    pub fn verify_signature(&self, sender_key: &PublicIdentity) -> Result<()> {
        sender_key.verify_parts(
            &[SIGNATURE_LABEL, self.signed],
            &self.signature,
            "inbox item",
        )
    }

    /// What a recipient does (SPEC §4): rejects an item addressed to someone
    /// else, then checks the signature. Replay of `item_id` is the caller's
    /// persistent check.
    pub fn open(self, me: &UserId, sender_key: &PublicIdentity) -> Result<Item> {
        if &self.item.recipient != me {
            return Err(Error::WrongRecipient {
                recipient: self.item.recipient,
            });
        }
        self.verify_signature(sender_key)?;
        Ok(self.item)
    }
}
