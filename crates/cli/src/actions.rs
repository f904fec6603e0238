//! What a user asks of a group, shared by the command line and `duokey
//! chat` (SPEC §8): each action is done once, here; the two front ends only
//! show its [`Done`] — as words (its `Display`), or as the JSON object of
//! `--json` ([`Done::json`]).

use duokey_crypto::GroupId;
use duokey_crypto::invite_code::InviteCode;
use duokey_crypto::{ItemId, Rights, UserId};
use duokey_terminal::contacts::Verification;
use duokey_terminal::{CodeInvitation, Error, GroupInfo, GroupPolicy, Result, Terminal};
use serde_json::{Value, json};
use std::fmt;

/// An action on the group the user chose (or on an invitation, or a contact).
#[derive(Debug, Clone)]
pub enum Action {
    /// Create a group with this name and policy.
    Create(String, GroupPolicy),
    /// Invite a user with these rights.
    Invite(UserId, Rights),
    /// Invite a user with these rights and a one-time code that lives this
    /// many milliseconds.
    InviteCode(UserId, Rights, u64),
    /// Remove a member.
    Remove(UserId),
    /// Leave the group.
    Leave,
    /// Replace the group key now (with a new RN1 too if `true`).
    Rotate(bool),
    /// Delete the group.
    Delete,
    /// Hand ownership of the group to a member.
    Transfer(UserId),
    /// Accept an invitation (by group name, group id or invitation id).
    Accept(String),
    /// Accept a code invitation with the code.
    AcceptCode(String, InviteCode),
    /// Decline an invitation.
    Decline(String),
    /// Show a contact's safety number (and with `true`, trust its key).
    Verify(UserId, bool),
}

/// What an [`Action`] did.
#[derive(Debug, Clone)]
pub enum Done {
    /// The group created.
    Created(GroupInfo),
    /// The invitation sent, to whom, in which group.
    Invited(ItemId, UserId, GroupId),
    /// A code invitation sent: its code, to whom, in which group.
    InvitedCode(CodeInvitation, UserId, GroupId),
    /// The member removed from the group.
    Removed(UserId, GroupId),
    /// The group left.
    Left(GroupId),
    /// The group's new RN2 version, and whether RN1 was replaced too.
    Rotated(GroupId, u64, bool),
    /// The group deleted.
    Deleted(GroupId),
    /// The group's new owner.
    Transferred(UserId, GroupId),
    /// The invitation accepted, and who invited.
    Accepted(String, String),
    /// The invitation declined.
    Declined(String),
    /// A contact's safety number and trust.
    Verified(Verification),
}

/// The rights given with an invitation (`--can-invite`, `--can-remove`;
/// `invite`, `remove` in the chat).
pub fn rights(can_invite: bool, can_remove: bool) -> Rights {
    let mut rights = Rights::NONE;
    if can_invite {
        rights = rights.union(Rights::INVITE);
    }
    if can_remove {
        rights = rights.union(Rights::REMOVE);
    }
    rights
}

/// Does `action`, on `group` where it acts on one.
pub async fn perform(t: &mut Terminal, group: Option<GroupId>, action: Action) -> Result<Done> {
    let group = || {
        group.ok_or_else(|| {
            Error::User("no group yet: /create NAME, or accept an invitation (F2)".into())
        })
    };
    Ok(match action {
        Action::Create(name, policy) => Done::Created(t.create_group(&name, policy).await?),
        Action::Invite(user, rights) => {
            let gid = group()?;
            Done::Invited(t.invite(&gid, &user, rights).await?, user, gid)
        }
        Action::Remove(user) => {
            let gid = group()?;
            t.remove(&gid, &user).await?;
            Done::Removed(user, gid)
        }
        Action::Leave => {
            let gid = group()?;
            t.leave(&gid).await?;
            Done::Left(gid)
        }
        Action::Rotate(rn1) => {
            let gid = group()?;
            Done::Rotated(gid, t.rotate(&gid, rn1).await?, rn1)
        }
        Action::Delete => {
            let gid = group()?;
            t.delete(&gid).await?;
            Done::Deleted(gid)
        }
        Action::Transfer(user) => {
            let gid = group()?;
            t.transfer(&gid, &user).await?;
            Done::Transferred(user, gid)
        }
        Action::InviteCode(user, rights, ttl_ms) => {
            let gid = group()?;
            let invitation = t.invite_with_code(&gid, &user, rights, ttl_ms).await?;
            Done::InvitedCode(invitation, user, gid)
        }
        Action::Accept(spec) => {
            let inviter = t.accept(&spec).await?;
            Done::Accepted(spec, inviter)
        }
        Action::AcceptCode(spec, code) => {
            let inviter = t.accept_with_code(&spec, &code).await?;
            Done::Accepted(spec, inviter)
        }
        Action::Decline(spec) => {
            t.decline(&spec).await?;
            Done::Declined(spec)
        }
        Action::Verify(user, confirm) => Done::Verified(t.verify(&user, confirm).await?),
    })
}

impl Done {
    /// The `--json` object (SPEC §8).
    pub fn json(&self) -> Value {
        match self {
            Done::Created(g) => json!({"group_id": g.group_id.to_hex(), "name": g.name}),
            Done::Invited(id, user, gid) => json!({
                "invite_id": id.to_hex(), "group_id": hex::encode(gid), "user": user.as_str(),
            }),
            Done::InvitedCode(c, user, gid) => json!({
                "invite_id": c.invite_id.to_hex(), "group_id": hex::encode(gid), "user": user.as_str(),
                "code": c.code.to_string(), "expires_at_ms": c.expires_at_ms,
            }),
            Done::Removed(user, gid) => {
                json!({"group_id": hex::encode(gid), "removed": user.as_str()})
            }
            Done::Left(gid) => json!({"group_id": hex::encode(gid), "left": true}),
            Done::Rotated(gid, v, rn1) => {
                json!({"group_id": hex::encode(gid), "rn2_version": v, "rn1": rn1})
            }
            Done::Deleted(gid) => json!({"group_id": hex::encode(gid), "deleted": true}),
            Done::Transferred(user, gid) => {
                json!({"group_id": hex::encode(gid), "owner": user.as_str()})
            }
            Done::Accepted(spec, inviter) => json!({"accepted": spec, "inviter": inviter}),
            Done::Declined(spec) => json!({"declined": spec}),
            Done::Verified(v) => serde_json::to_value(v).unwrap_or(Value::Null),
        }
    }
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SPEC §8: `group create` prints the group id (scripts read it).
            Done::Created(g) => write!(f, "{}", g.group_id),
            Done::Invited(id, user, _) => write!(
                f,
                "Invited {user} (invite {id}). They accept with `duokey accept {id}`; your terminal then adds them."
            ),
            Done::InvitedCode(c, user, _) => write!(
                f,
                "Invited {user} with a code. Tell them this code yourself (in person or by phone, not through this chat):\n\n    {}\n\nIt works once, until {}. They accept with `duokey accept {} --code`, which asks them for it; your terminal checks it and then adds them. After {} wrong answers the code is dead.",
                c.code,
                crate::when::when(c.expires_at_ms, duokey_terminal::now_ms()),
                c.invite_id,
                duokey_crypto::invite_code::MAX_TRIES,
            ),
            Done::Removed(user, _) => write!(f, "Removed {user}; the group key was replaced."),
            Done::Left(_) => write!(f, "You left the group."),
            Done::Rotated(_, v, rn1) => write!(
                f,
                "Rotated: RN2 version {v}{}",
                if *rn1 { " with a new RN1" } else { "" }
            ),
            Done::Deleted(_) => write!(f, "Group deleted."),
            Done::Transferred(user, _) => write!(
                f,
                "{user} now owns the group. You keep the invite and remove rights, and you may leave."
            ),
            Done::Accepted(_, from) => write!(
                f,
                "Accepted. You can read and send once {from}'s terminal has synced and sent you the group key."
            ),
            Done::Declined(_) => write!(f, "Declined."),
            Done::Verified(v) => {
                if v.key_changed {
                    writeln!(
                        f,
                        "WARNING: {}'s identity key CHANGED since you first saw it.",
                        v.user
                    )?;
                }
                writeln!(f, "{}'s certificate fingerprint: {}", v.user, v.fingerprint)?;
                writeln!(f, "Key confirmed by: {}", v.confirmed_by)?;
                writeln!(
                    f,
                    "Safety number (compare with {} out of band): {}",
                    v.user, v.safety_number
                )?;
                f.write_str(if v.verified {
                    "Verified."
                } else {
                    "Not verified yet: run with --confirm once the numbers match."
                })
            }
        }
    }
}
