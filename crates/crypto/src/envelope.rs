//! The envelope of SPEC §3.3: what the CS stores and relays.
//!
//! ```text
//! header    = u16 suite || group_id[16] || u32 rn1_version || u64 rn2_version ||
//!             lp16(sender_id) || u64 seq || u64 sent_at_ms || msg_id[16]
//! envelope  = "DKE1" || lp32(header) || lp32(ciphertext) || signature[64]
//! signature = Ed25519(sender, "duokey/v1 envelope" || lp32(header) || lp32(ciphertext))
//! ```
//! [`open`] runs every receiver check of SPEC §3.3 in the spec's order
//! (V1…V13, listed in `docs/SECURITY.md`).

use crate::codec::{Reader, Writer};
use crate::epoch::Epoch;
use crate::error::{Error, Result};
use crate::group_key::GroupKey;
use crate::identity::{IdentityKey, PublicIdentity, SIGNATURE_LEN};
use crate::ids::{GroupId, MsgId, UserId};
use crate::message_key::{MessageKey, SenderKey};
use crate::padding::{self, ContentType};
use crate::receiver::ReceiverState;
use crate::replay::{ReplayGuard, StreamKey};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// Envelope magic.
pub const MAGIC: &[u8; 4] = b"DKE1";
/// The one suite this crate implements.
pub const SUITE_1: u16 = 1;
/// Signature label (SPEC §3.3).
pub const SIGNATURE_LABEL: &[u8] = b"duokey/v1 envelope";
/// Largest header (V3).
pub const MAX_HEADER_LEN: usize = 1024;
/// Default largest body (V3): 256 KiB.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// Size limits a receiver applies (V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

impl Limits {
    /// Largest ciphertext a body within the limit can produce.
    pub fn max_ciphertext(&self) -> usize {
        padding::padded_len(self.max_body) + TAG_LEN
    }

    /// Largest whole envelope within the limits (for transport frame limits).
    pub fn max_envelope(&self) -> usize {
        MAGIC.len() + 4 + MAX_HEADER_LEN + 4 + self.max_ciphertext() + SIGNATURE_LEN
    }
}

/// The clear header of an envelope (SPEC §3.3). Suite 1 is implied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The group.
    pub group_id: GroupId,
    /// The epoch whose group key encrypts the message.
    pub epoch: Epoch,
    /// The sender's user id.
    pub sender: UserId,
    /// The sender's message counter in this epoch, from 0.
    pub seq: u64,
    /// The sender's clock at sending, Unix milliseconds.
    pub sent_at_ms: u64,
    /// 16 random bytes per message.
    pub msg_id: MsgId,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::with_capacity(64 + self.sender.as_bytes().len());
        self.encode_into(&mut w)?;
        Ok(w.into_vec())
    }

    fn encode_into(&self, w: &mut Writer) -> Result<()> {
        w.u16(SUITE_1).bytes(self.group_id.as_bytes());
        w.u32(self.epoch.rn1_version).u64(self.epoch.rn2_version);
        w.lp16(self.sender.as_bytes())?;
        w.u64(self.seq)
            .u64(self.sent_at_ms)
            .bytes(self.msg_id.as_bytes());
        Ok(())
    }

    /// Decodes a header: V2 suite, then V3 structure.
    pub fn decode(bytes: &[u8]) -> Result<Header> {
        let mut r = Reader::new(bytes, "envelope header");
        let suite = r.u16()?;
        if suite != SUITE_1 {
            return Err(Error::UnsupportedSuite { suite });
        }
        let group_id = GroupId(r.array()?);
        let epoch = Epoch::new(r.u32()?, r.u64()?);
        let sender = UserId::from_bytes(r.lp16()?).map_err(|_| Error::Malformed {
            what: "envelope sender",
        })?;
        let header = Header {
            group_id,
            epoch,
            sender,
            seq: r.u64()?,
            sent_at_ms: r.u64()?,
            msg_id: MsgId(r.array()?),
        };
        r.finish()?;
        Ok(header)
    }
}

/// Seals `body` into a signed envelope (SPEC §3.3). `sender_key` must be the
/// key of `header.sender` in `header.epoch` ([`SenderKey::derive`]).
pub fn seal(
    identity: &IdentityKey,
    sender_key: &SenderKey,
    header: &Header,
    content_type: ContentType,
    body: &[u8],
) -> Result<Vec<u8>> {
    let ct_len = padding::padded_len(body.len()) + TAG_LEN;
    let mut w = Writer::with_capacity(MAGIC.len() + 8 + 96 + ct_len + SIGNATURE_LEN);
    w.bytes(MAGIC).u32(0);
    let header_start = w.len();
    header.encode_into(&mut w)?;
    let header_len = w.len() - header_start;
    let ct_len32 = u32::try_from(ct_len).map_err(|_| Error::TooLarge {
        what: "body",
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    w.u32(ct_len32);
    let buf = w.as_mut_vec();
    let len_field = buf
        .get_mut(4..8)
        .ok_or(Error::Internal("envelope layout"))?;
    let header_len32 = u32::try_from(header_len).map_err(|_| Error::Internal("header length"))?;
    len_field.copy_from_slice(&header_len32.to_be_bytes());
    let pt_start = buf.len();
    padding::pad_into(buf, content_type, body)?;
    let mk = MessageKey::derive(sender_key, &header.msg_id)?;
    let tag = {
        let (head, pt) = buf.split_at_mut(pt_start);
        let aad = head
            .get(header_start..header_start + header_len)
            .ok_or(Error::Internal("aad"))?;
        cipher(&mk)
            .encrypt_inout_detached(&Nonce::from(*mk.nonce()), aad, pt.into())
            .map_err(|_| Error::Internal("AES-GCM seal"))?
    };
    buf.extend_from_slice(&tag);
    w.sign_from(MAGIC.len(), SIGNATURE_LABEL, identity)?;
    Ok(w.into_vec())
}

fn cipher(mk: &MessageKey) -> Aes256Gcm {
    Aes256Gcm::new(mk.key().into())
}

/// An envelope split into its parts, checked for V1–V3 only. This is all the
/// CS can do with an envelope: it learns the clear header, never the content.
#[derive(Debug, Clone)]
pub struct EnvelopeRef<'a> {
    /// The decoded clear header.
    pub header: Header,
    header_bytes: &'a [u8],
    ciphertext: &'a [u8],
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

impl<'a> EnvelopeRef<'a> {
    /// V1 magic, V2 suite, V3 sizes and structure (no trailing bytes).
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, "envelope");
        r.magic(MAGIC)?;
        let header_len = r.clone().u32()? as usize;
        if header_len > MAX_HEADER_LEN {
            return Err(Error::TooLarge {
                what: "header",
                len: header_len,
                max: MAX_HEADER_LEN,
            });
        }
        let header_bytes = r.lp32()?;
        let header = Header::decode(header_bytes)?;
        let ct_len = r.clone().u32()? as usize;
        if ct_len > limits.max_ciphertext() {
            return Err(Error::TooLarge {
                what: "ciphertext",
                len: ct_len,
                max: limits.max_ciphertext(),
            });
        }
        let ciphertext = r.lp32()?;
        if ciphertext.len() < padding::PAD_BLOCK + TAG_LEN {
            return Err(Error::Malformed {
                what: "envelope ciphertext",
            });
        }
        let (signed, signature) = r.finish_signed(MAGIC.len())?;
        Ok(Self {
            header,
            header_bytes,
            ciphertext,
            signed,
            signature,
        })
    }

    /// V6: the sender's signature over header and ciphertext.
    pub fn verify(&self, sender_key: &PublicIdentity) -> Result<()> {
        sender_key.verify_parts(&[SIGNATURE_LABEL, self.signed], &self.signature, "envelope")
    }

    /// V9–V13: decrypts and checks the plaintext.
    pub fn decrypt(&self, gk: &GroupKey) -> Result<(ContentType, String)> {
        let sk = SenderKey::derive(gk, &self.header.sender)?;
        let mk = MessageKey::derive(&sk, &self.header.msg_id)?;
        let (ct, tag) = self
            .ciphertext
            .split_at_checked(self.ciphertext.len() - TAG_LEN)
            .ok_or(Error::Malformed {
                what: "envelope ciphertext",
            })?;
        let tag = Tag::try_from(tag).map_err(|_| Error::Malformed {
            what: "envelope tag",
        })?;
        // The plaintext is content, not key material: it is handed to the
        // caller, so it is not zeroized here.
        let mut pt = ct.to_vec();
        cipher(&mk)
            .decrypt_inout_detached(
                &Nonce::from(*mk.nonce()),
                self.header_bytes,
                pt.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| Error::DecryptFailed)?;
        padding::into_body(pt)
    }
}

/// An envelope that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The clear header.
    pub header: Header,
    /// Text or control.
    pub content_type: ContentType,
    /// The body, valid UTF-8 (V13).
    pub body: String,
}

/// Opens an envelope with every receiver check of SPEC §3.3, in order:
/// V1 magic, V2 suite, V3 sizes, V4 epoch known, V5 sender a member, V6
/// signature, V7 `msg_id` and V8 `seq` not seen, V9 decryption, V10 body
/// length, V11 padding, V12 content type, V13 UTF-8. Only an envelope that
/// passes all of them is recorded in `replay`.
pub fn open(
    bytes: &[u8],
    limits: &Limits,
    state: &impl ReceiverState,
    replay: &mut ReplayGuard,
) -> Result<Opened> {
    let env = EnvelopeRef::parse(bytes, limits)?;
    let h = &env.header;
    let gk = state.group_key(&h.group_id, h.epoch)?;
    let sender_key = state.member_key(&h.group_id, h.epoch, &h.sender)?;
    env.verify(sender_key)?;
    let stream = StreamKey {
        group: h.group_id,
        epoch: h.epoch,
        sender: h.sender.clone(),
    };
    replay.check(&stream, h.seq, &h.msg_id)?;
    let (content_type, body) = env.decrypt(gk)?;
    replay.commit(&stream, h.seq, h.msg_id);
    Ok(Opened {
        header: env.header,
        content_type,
        body,
    })
}
