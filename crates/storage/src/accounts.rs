//! AS tables: one-time enrolment tokens, stored hashed (SPEC §2).

use crate::{Db, Result};
use sqlx::Row;

impl Db {
    /// Stores a token's hash for `user`, valid until `expires_at_ms`.
    pub async fn insert_token(
        &self,
        hash: &[u8],
        user: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrol_tokens (token_hash, user_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash.to_vec())
        .bind(user.to_owned())
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// The user of an unused, unexpired token, without using it.
    pub async fn token_user(&self, hash: &[u8], now_ms: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT user_id FROM enrol_tokens WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(hash.to_vec())
        .bind(now_ms)
        .fetch_optional(self.r())
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>("user_id")).transpose()?)
    }

    /// Marks an unused, unexpired token as used and returns its user id;
    /// `None` if the token is unknown, used or expired. Atomic: two
    /// concurrent enrolments with one token cannot both succeed.
    pub async fn use_token(&self, hash: &[u8], now_ms: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "UPDATE enrol_tokens SET used_at_ms = $1 \
             WHERE token_hash = $2 AND used_at_ms IS NULL AND expires_at_ms > $3 RETURNING user_id",
        )
        .bind(now_ms)
        .bind(hash.to_vec())
        .bind(now_ms)
        .fetch_optional(self.w())
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>("user_id")).transpose()?)
    }
}
