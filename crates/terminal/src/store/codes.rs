//! Invite codes (PROTOCOL §4.10, DESIGN D50): what each side keeps between the
//! items of one code invitation, and the contacts' keys a code confirmed.

use super::Store;
use crate::error::Result;
use duokey_crypto::ItemId;
use sqlx::Row;

/// An outgoing code invitation's state.
#[derive(Debug, Clone)]
pub struct CodeOut {
    /// The code and seed, sealed by the profile key.
    pub sealed: Vec<u8>,
    /// When the code dies.
    pub expires_at_ms: u64,
    /// Wrong answers so far.
    pub tries: u32,
    /// No answer is taken any more.
    pub dead: bool,
    /// The digest of the answer that used the code, if one did.
    pub used_by: Option<Vec<u8>>,
}

/// An incoming code invitation's state.
#[derive(Debug, Clone)]
pub struct CodeIn {
    /// The inviter's SPAKE2 message and the identity key that signed the
    /// `code_invite` (33 + 32 bytes), sealed.
    pub sealed_msg_a: Vec<u8>,
    /// When the inviter's code dies.
    pub expires_at_ms: u64,
    /// The inviter's tag expected after accepting, sealed.
    pub expected_tag: Option<Vec<u8>>,
    /// The inviter's `code_confirm` matched.
    pub confirmed: bool,
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn db_ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Records a code invitation: `side` is `out` (sent) or `in` (received).
    pub async fn put_code(
        &self,
        invite_id: &ItemId,
        side: &str,
        sealed: &[u8],
        expires_at_ms: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO invite_codes (invite_id, side, sealed, expires_at_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(invite_id.as_slice())
        .bind(side)
        .bind(sealed)
        .bind(db_ms(expires_at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sent code invitation `invite_id`, if it is one.
    pub async fn code_out(&self, invite_id: &ItemId) -> Result<Option<CodeOut>> {
        let row = sqlx::query(
            "SELECT sealed, expires_at_ms, tries, dead, expected_tag FROM invite_codes \
             WHERE invite_id = ? AND side = 'out'",
        )
        .bind(invite_id.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CodeOut {
            sealed: r.get(0),
            expires_at_ms: ms(r.get(1)),
            tries: u32::try_from(r.get::<i64, _>(2)).unwrap_or(u32::MAX),
            dead: r.get::<i64, _>(3) != 0,
            used_by: r.get(4),
        }))
    }

    /// Takes one try of `invite_id`'s code before checking an answer (so
    /// that two processes on one profile cannot check more than `max`
    /// between them): the tries taken now, or `None` if the code is dead or
    /// its tries are used up.
    pub async fn code_take_try(&self, invite_id: &ItemId, max: u32) -> Result<Option<u32>> {
        let row = sqlx::query(
            "UPDATE invite_codes SET tries = tries + 1 \
             WHERE invite_id = ? AND side = 'out' AND dead = 0 AND tries < ? RETURNING tries",
        )
        .bind(invite_id.as_slice())
        .bind(i64::from(max))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| u32::try_from(r.get::<i64, _>(0)).unwrap_or(u32::MAX)))
    }

    /// The code of `invite_id` takes no answer any more (used, given up, or
    /// out of tries): its sealed code and seed are erased.
    /// The seed stays while an answer that used the code may still have to
    /// resume (`used_by`, its digest); it goes with the invitation.
    pub async fn code_dead(&self, invite_id: &ItemId, used_by: Option<&[u8]>) -> Result<()> {
        let sql = if used_by.is_some() {
            "UPDATE invite_codes SET dead = 1, expected_tag = ? WHERE invite_id = ? AND side = 'out'"
        } else {
            "UPDATE invite_codes SET dead = 1, sealed = x'', expected_tag = ? WHERE invite_id = ? AND side = 'out'"
        };
        sqlx::query(sql)
            .bind(used_by)
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The received code invitation `invite_id`, if it is one.
    pub async fn code_in(&self, invite_id: &ItemId) -> Result<Option<CodeIn>> {
        let row = sqlx::query(
            "SELECT sealed, expires_at_ms, expected_tag, confirmed FROM invite_codes \
             WHERE invite_id = ? AND side = 'in'",
        )
        .bind(invite_id.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CodeIn {
            sealed_msg_a: r.get(0),
            expires_at_ms: ms(r.get(1)),
            expected_tag: r.get(2),
            confirmed: r.get::<i64, _>(3) != 0,
        }))
    }

    /// Accepted with a code: the inviter's tag to expect, sealed.
    pub async fn code_answered(&self, invite_id: &ItemId, sealed_tag: &[u8]) -> Result<()> {
        sqlx::query("UPDATE invite_codes SET expected_tag = ? WHERE invite_id = ? AND side = 'in'")
            .bind(sealed_tag)
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The inviter's tag matched.
    pub async fn code_confirmed(&self, invite_id: &ItemId) -> Result<()> {
        sqlx::query("UPDATE invite_codes SET confirmed = 1 WHERE invite_id = ? AND side = 'in'")
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A code invitation answered: its invitation key, sealed, while the
    /// invitation stays pending (it may be answered again after a typo)
    /// until the inviter confirms ([`Store::code_invite_accepted`]).
    pub async fn set_invite_secret(&self, invite_id: &ItemId, sealed: &[u8]) -> Result<()> {
        sqlx::query("UPDATE invites_in SET secret = ? WHERE invite_id = ?")
            .bind(sealed)
            .bind(invite_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The inviter confirmed the code: the invitation counts as accepted
    /// (its RN1 is taken with the key of the last answer).
    pub async fn code_invite_accepted(&self, invite_id: &ItemId) -> Result<()> {
        sqlx::query(
            "UPDATE invites_in SET state = 'accepted' WHERE invite_id = ? AND state = 'pending'",
        )
        .bind(invite_id.as_slice())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `user`'s identity `key` was confirmed by a code.
    pub async fn put_contact_code(&self, user: &str, key: &[u8; 32], at_ms: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_codes (user_id, identity_key, at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(key.as_slice())
        .bind(db_ms(at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a code confirmed `user`'s identity `key`.
    pub async fn contact_code(&self, user: &str, key: &[u8; 32]) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM contact_codes WHERE user_id = ? AND identity_key = ?")
            .bind(user)
            .bind(key.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
