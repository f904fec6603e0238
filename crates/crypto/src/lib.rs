//! # duokey-crypto — suite 1 of the Duokey specification
//!
//! Everything of SPEC §3 and the encodings of §4, with no I/O and no async:
//!
//! * [`group_key`]: RN1, the one-way R1 ratchet, RN2 and the group key GK (§3.1);
//! * [`message_key`]: sender keys and per-message keys (§3.2);
//! * [`padding`]: the padded plaintext (§3.3);
//! * [`envelope`]: sealing, and opening with every receiver check of §3.3 in
//!   order (V1…V13, see `docs/SECURITY.md`);
//! * [`receiver`]: what a receiver must know (epoch keys, members);
//! * [`replay`]: bounded replay protection per (sender, epoch);
//! * [`rn1_delivery`]: HPKE sealing of R1 between terminals (§4.2 step 3);
//! * [`item`] and [`delivery_key`]: signed inbox items and the signed delivery key (§4);
//! * [`membership`]: member-signed membership changes and the group state (§4.7);
//! * [`ids`], [`epoch`], [`rights`], [`identity`]: validated types.
//!
//! Secret types ([`Rn1`], [`R1`], [`Rn2`], [`GroupKey`], [`SenderKey`],
//! [`IdentityKey`], [`DeliverySecret`]) zeroize on drop and never show their
//! bytes in `Debug`.
#![forbid(unsafe_code)]

pub mod chain;
mod codec;
pub mod delivery_key;
pub mod envelope;
pub mod epoch;
mod error;
pub mod group_key;
pub mod identity;
pub mod ids;
pub mod invite_code;
pub mod item;
pub mod membership;
pub mod message_key;
pub mod padding;
pub mod password;
mod random;
pub mod receiver;
pub mod replay;
pub mod rights;
pub mod rn1_delivery;
mod secret;

pub use delivery_key::DeliveryKeyRecord;
pub use envelope::{EnvelopeRef, Header, Limits, Opened};
pub use epoch::Epoch;
pub use error::{Error, Result};
pub use group_key::{GroupKey, R1, Rn1, Rn2};
pub use identity::{IdentityKey, PublicIdentity};
pub use ids::{GroupId, GroupName, ItemId, MsgId, UserId};
pub use item::{CodeAckPayload, Item, ItemBody, ItemKind, Rn1Payload, SignedItem};
pub use message_key::{MessageKey, SenderKey};
pub use padding::ContentType;
pub use receiver::{EpochTable, OpenEpoch, ReceiverState};
pub use replay::ReplayGuard;
pub use rights::Rights;
pub use rn1_delivery::{DeliveryPublic, DeliverySecret, Rn1Context};
