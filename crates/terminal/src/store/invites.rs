//! Invitations, both sides of SPEC §4.2: those received (`invites_in`) and
//! those sent (`invites_out`), with their states stored by name.

use super::{Store, rn1};
use crate::error::{Error, Result};
use duokey_crypto::{GroupId, ItemId, Rights};
use sqlx::Row;

/// Where an invitation this terminal sent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteOutState {
    /// Sent; no answer yet.
    Sent,
    /// Accepted and reported to the GMS; the key is still to hand over.
    Reported,
    /// The invitee declined.
    Declined,
    /// Handed over (or no longer needed).
    Done,
    /// Cancelled by this terminal's user before an answer; an `ack` for it
    /// is ignored.
    Cancelled,
}

impl InviteOutState {
    /// The name stored in the profile.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteOutState::Sent => "sent",
            InviteOutState::Reported => "reported",
            InviteOutState::Declined => "declined",
            InviteOutState::Done => "done",
            InviteOutState::Cancelled => "cancelled",
        }
    }

    /// Where it stands, in words for the user.
    pub fn words(self) -> &'static str {
        match self {
            InviteOutState::Sent => "waiting",
            InviteOutState::Reported => "accepted, handing over the key",
            InviteOutState::Done => "joined",
            InviteOutState::Declined => "declined",
            InviteOutState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<InviteOutState> {
        Ok(match s {
            "sent" => InviteOutState::Sent,
            "reported" => InviteOutState::Reported,
            "declined" => InviteOutState::Declined,
            "done" => InviteOutState::Done,
            "cancelled" => InviteOutState::Cancelled,
            _ => return Err(Error::Corrupt("invitation state")),
        })
    }
}

/// Where an invitation this terminal received stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteInState {
    /// Waiting for the user's answer.
    Pending,
    /// Accepted; the invitation key waits for the inviter's RN1.
    Accepted,
    /// Declined.
    Declined,
    /// Joined; the invitation key is erased.
    Joined,
    /// A newer invitation to the same group replaced it (one pending
    /// invitation per group, so that `accept GROUP` is never ambiguous).
    Superseded,
}

impl InviteInState {
    /// The name stored in the profile.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteInState::Pending => "pending",
            InviteInState::Accepted => "accepted",
            InviteInState::Declined => "declined",
            InviteInState::Joined => "joined",
            InviteInState::Superseded => "superseded",
        }
    }
}

/// A received invitation still waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInvite {
    /// The invitation's item id.
    pub invite_id: Vec<u8>,
    /// The group.
    pub group_id: Vec<u8>,
    /// The group's name as the inviter sent it.
    pub group_name: String,
    /// The inviter.
    pub from: String,
    /// The rights offered.
    pub rights: Rights,
}

/// A sent invitation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentInvite {
    /// The group.
    pub group_id: Vec<u8>,
    /// The rights offered.
    pub rights: Rights,
    /// Where it stands.
    pub state: InviteOutState,
}

/// A reported invitation whose key is still to hand over (SPEC §4.2 step 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOver {
    /// The invitation's item id.
    pub invite_id: Vec<u8>,
    /// The group.
    pub group_id: Vec<u8>,
    /// The invitee.
    pub invitee: String,
    /// The RN1 version of the join.
    pub rn1_version: u32,
    /// The RN2 version that added the invitee.
    pub join_version: u64,
    /// The invitation's X25519 key (from the `ack`).
    pub invite_pub: Vec<u8>,
}

fn rights_of(v: i64) -> Result<Rights> {
    u8::try_from(v)
        .ok()
        .and_then(|b| Rights::from_bits(b).ok())
        .ok_or(Error::Corrupt("rights"))
}

impl Store {
    /// Records an invitation sent to `invitee`.
    pub async fn put_invite_out(
        &self,
        invite_id: &ItemId,
        gid: &GroupId,
        invitee: &str,
        rights: Rights,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO invites_out (invite_id, group_id, invitee, rights, state) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(invite_id.as_slice())
        .bind(gid.as_slice())
        .bind(invitee)
        .bind(i64::from(rights.bits()))
        .bind(InviteOutState::Sent.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The invitation `invite_id` sent to `invitee`, if there is one.
    pub async fn invite_out(
        &self,
        invite_id: &ItemId,
        invitee: &str,
    ) -> Result<Option<SentInvite>> {
        let row = sqlx::query(
            "SELECT group_id, rights, state FROM invites_out WHERE invite_id = ? AND invitee = ?",
        )
        .bind(invite_id.as_slice())
        .bind(invitee)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SentInvite {
                group_id: r.get(0),
                rights: rights_of(r.get(1))?,
                state: InviteOutState::parse(&r.get::<String, _>(2))?,
            })
        })
        .transpose()
    }

    /// The invitation to `invitee` in `gid` still waiting for an answer,
    /// with the rights it offers.
    pub async fn waiting_invite_to(
        &self,
        gid: &GroupId,
        invitee: &str,
    ) -> Result<Option<(ItemId, Rights)>> {
        let row = sqlx::query(
            "SELECT invite_id, rights FROM invites_out \
             WHERE group_id = ? AND invitee = ? AND state = ? ORDER BY rowid DESC LIMIT 1",
        )
        .bind(gid.as_slice())
        .bind(invitee)
        .bind(InviteOutState::Sent.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                ItemId::from_slice(&r.get::<Vec<u8>, _>(0))?,
                rights_of(r.get(1))?,
            ))
        })
        .transpose()
    }

    /// Cancels the invitations to `invitee` in `gid` still waiting for an
    /// answer; how many there were.
    pub async fn cancel_invites_to(&self, gid: &GroupId, invitee: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE invites_out SET state = ? WHERE group_id = ? AND invitee = ? AND state = ?",
        )
        .bind(InviteOutState::Cancelled.as_str())
        .bind(gid.as_slice())
        .bind(invitee)
        .bind(InviteOutState::Sent.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Every invitation this terminal sent, newest first:
    /// (group id, invitee, rights, state).
    pub async fn sent_invites(&self) -> Result<Vec<(Vec<u8>, String, Rights, InviteOutState)>> {
        let rows = sqlx::query(
            "SELECT group_id, invitee, rights, state FROM invites_out ORDER BY rowid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get(0),
                    r.get(1),
                    rights_of(r.get(2))?,
                    InviteOutState::parse(&r.get::<String, _>(3))?,
                ))
            })
            .collect()
    }

    /// `invitee` declined the invitation `invite_id`.
    pub async fn invite_out_declined(&self, invite_id: &ItemId, invitee: &str) -> Result<()> {
        sqlx::query("UPDATE invites_out SET state = ? WHERE invite_id = ? AND invitee = ?")
            .bind(InviteOutState::Declined.as_str())
            .bind(invite_id.as_slice())
            .bind(invitee)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The GMS added the invitee at `join_version`: the key is to hand over.
    pub async fn invite_out_reported(
        &self,
        invite_id: &ItemId,
        rn1_version: u32,
        join_version: u64,
        invite_pub: &[u8; 32],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE invites_out SET state = ?, rn1_version = ?, join_version = ?, invite_pub = ? WHERE invite_id = ?",
        )
        .bind(InviteOutState::Reported.as_str())
        .bind(i64::from(rn1_version))
        .bind(i64::try_from(join_version).map_err(|_| Error::Corrupt("version"))?)
        .bind(invite_pub.as_slice())
        .bind(invite_id.as_slice())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The reported invitations whose key is still to hand over.
    pub async fn hand_overs(&self) -> Result<Vec<HandOver>> {
        let rows = sqlx::query(
            "SELECT invite_id, group_id, invitee, rn1_version, join_version, invite_pub FROM invites_out WHERE state = ?",
        )
        .bind(InviteOutState::Reported.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HandOver {
                    invite_id: r.get(0),
                    group_id: r.get(1),
                    invitee: r.get(2),
                    rn1_version: rn1(r.get(3))?,
                    join_version: u64::try_from(r.get::<i64, _>(4))
                        .map_err(|_| Error::Corrupt("join_version"))?,
                    invite_pub: r.get(5),
                })
            })
            .collect()
    }

    /// The invitation `invite_id` needs nothing more.
    pub async fn invite_out_done(&self, invite_id: &ItemId) -> Result<()> {
        sqlx::query("UPDATE invites_out SET state = ? WHERE invite_id = ?")
            .bind(InviteOutState::Done.as_str())
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an invitation received (once: a repeat changes nothing); it
    /// supersedes an earlier one from the same sender still pending for the
    /// same group (another sender's stays: nobody can hide someone else's
    /// invitation).
    pub async fn put_invite_in(&self, invite: &PendingInvite) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE invites_in SET state = ? \
             WHERE group_id = ? AND from_user = ? AND state = ? AND invite_id != ?",
        )
        .bind(InviteInState::Superseded.as_str())
        .bind(&invite.group_id)
        .bind(&invite.from)
        .bind(InviteInState::Pending.as_str())
        .bind(&invite.invite_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO invites_in (invite_id, group_id, group_name, from_user, rights, state) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&invite.invite_id)
        .bind(&invite.group_id)
        .bind(&invite.group_name)
        .bind(&invite.from)
        .bind(i64::from(invite.rights.bits()))
        .bind(InviteInState::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The received invitations waiting for an answer.
    pub async fn pending_invites(&self) -> Result<Vec<PendingInvite>> {
        let rows = sqlx::query(
            "SELECT invite_id, group_id, group_name, from_user, rights FROM invites_in WHERE state = ?",
        )
        .bind(InviteInState::Pending.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingInvite {
                    invite_id: r.get(0),
                    group_id: r.get(1),
                    group_name: r.get(2),
                    from: r.get(3),
                    rights: rights_of(r.get(4))?,
                })
            })
            .collect()
    }

    /// The user accepted `invite_id`; `sealed_secret` is the invitation key.
    pub async fn accept_invite_in(&self, invite_id: &ItemId, sealed_secret: &[u8]) -> Result<()> {
        sqlx::query("UPDATE invites_in SET state = ?, secret = ? WHERE invite_id = ?")
            .bind(InviteInState::Accepted.as_str())
            .bind(sealed_secret)
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The user declined `invite_id`.
    pub async fn decline_invite_in(&self, invite_id: &ItemId) -> Result<()> {
        sqlx::query("UPDATE invites_in SET state = ? WHERE invite_id = ?")
            .bind(InviteInState::Declined.as_str())
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The sealed invitation key of an accepted invitation from `from`.
    pub async fn accepted_invite_secret(
        &self,
        invite_id: &ItemId,
        from: &str,
    ) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT secret FROM invites_in WHERE invite_id = ? AND from_user = ? AND state = ?",
        )
        .bind(invite_id.as_slice())
        .bind(from)
        .bind(InviteInState::Accepted.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The group name and rights of the invitation `invite_id` from `from`.
    pub async fn invite_in_offer(
        &self,
        invite_id: &ItemId,
        from: &str,
    ) -> Result<(String, Rights)> {
        let row = sqlx::query(
            "SELECT group_name, rights FROM invites_in WHERE invite_id = ? AND from_user = ?",
        )
        .bind(invite_id.as_slice())
        .bind(from)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::Corrupt("invitation"))?;
        Ok((row.get(0), rights_of(row.get(1))?))
    }

    /// Joined through `invite_id`: its key is erased.
    pub async fn joined_invite_in(&self, invite_id: &ItemId) -> Result<()> {
        sqlx::query("UPDATE invites_in SET state = ?, secret = NULL WHERE invite_id = ?")
            .bind(InviteInState::Joined.as_str())
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
