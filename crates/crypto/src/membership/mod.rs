//! Member-signed membership (SPEC §4.7): the GMS orders, stores and
//! distributes membership changes, but every change is signed by the member
//! who makes it with the key the group's own history recorded for that
//! member, and the changes form a hash chain. Terminals keep their own
//! verified [`State`] and act only on it, so a lying GMS cannot add a member,
//! name a rotator, turn RN1 rotation off, or replay or reorder changes.
//!
//! * [`change`]: the `DKM1` encoding, its hash and signature, the rekey body;
//! * [`policy`]: the 37-byte policy;
//! * [`state`]: the state and [`State::apply`], the one home of the rules.

pub mod change;
pub mod policy;
pub mod state;

pub use change::{Action, Change, FLAG_ROTATES_RN1, Hash, RekeyBody, SignedChange};
pub use policy::Policy;
pub use state::{Member, Rn1Rotation, State, apply, create_body, create_change, extend};

/// The rule of SPEC §4.7 a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    /// The signature does not verify with the actor's key in the state.
    #[error("the signature does not verify with the key the group's history recorded")]
    Signature,
    /// The first change must be a `create` with seq 1 and a zero `prev`.
    #[error("the first change must be a create with seq 1")]
    FirstChange,
    /// A second `create`.
    #[error("create only once")]
    CreateOnce,
    /// A field the action does not use is set, or one it needs is missing.
    #[error("fields do not fit the action")]
    Fields,
    /// `seq` is not one more than the head's.
    #[error("seq must be one more than the current")]
    Seq,
    /// `prev` is not the head's hash.
    #[error("prev must be the hash of the current head")]
    Prev,
    /// Another group's change.
    #[error("change of another group")]
    GroupId,
    /// `created_at_ms` below the previous change's.
    #[error("created before the previous change")]
    CreatedAt,
    /// Nothing is valid after `delete`.
    #[error("the group is deleted")]
    Deleted,
    /// The actor is not a member.
    #[error("the actor is not a member")]
    ActorNotMember,
    /// The actor lacks the invite right.
    #[error("the actor lacks the invite right")]
    LacksInvite,
    /// The actor lacks the remove right.
    #[error("the actor lacks the remove right")]
    LacksRemove,
    /// An `add` gives a right the actor does not hold.
    #[error("cannot grant a right the actor lacks")]
    RightsNotHeld,
    /// An `add` gives the owner right.
    #[error("the owner right cannot be granted")]
    OwnerRight,
    /// The subject of an `add` is a member already.
    #[error("the subject is already a member")]
    AlreadyMember,
    /// The subject of a `remove` is not a member.
    #[error("the subject is not a member")]
    SubjectNotMember,
    /// The owner cannot be removed.
    #[error("the owner cannot be removed")]
    OwnerCannotBeRemoved,
    /// A member removes itself (it leaves instead).
    #[error("use leave to remove oneself")]
    RemoveSelf,
    /// The owner cannot leave (it deletes the group, or transfers it first).
    #[error("the owner cannot leave (transfer the group or delete it instead)")]
    OwnerCannotLeave,
    /// Ownership is transferred to another member, not to the owner.
    #[error("ownership goes to another member")]
    TransferToSelf,
    /// The action must name its actor as subject.
    #[error("the action must name its actor as subject")]
    ActorMustBeSubject,
    /// Only the owner may do this.
    #[error("only the owner may do this")]
    OnlyOwner,
    /// The RN1 flag of a removal or leave does not follow the policy.
    #[error("the RN1 rotation flag must follow the policy")]
    Rn1Flag,
    /// The group has `max_members` members.
    #[error("the group is full")]
    GroupFull,
    /// An unknown action code.
    #[error("unknown action")]
    UnknownAction,
    /// Unknown flag bits.
    #[error("unknown flag bits")]
    UnknownFlags,
    /// A policy field is out of range.
    #[error("policy out of range")]
    PolicyRange,
    /// The group name is not 1–128 bytes of UTF-8.
    #[error("invalid group name")]
    Name,
}

impl From<Rule> for crate::Error {
    fn from(rule: Rule) -> Self {
        crate::Error::Membership(rule)
    }
}
