//! AS tables: one-time enrolment tokens, stored hashed (SPEC §2), and the
//! certificates issued with them (re-enrolment is explicit).

use crate::Result;
use sqlx::Row;

crate::role_store!(
    /// The AS's store (SPEC §2): one-time tokens and the certificates issued.
    AsStore,
    As
);

impl AsStore {
    /// Stores a token's hash for `user`, valid until `expires_at_ms`; with
    /// `replace` it may replace a certificate the user still holds.
    pub async fn insert_token(
        &self,
        hash: &[u8],
        user: &str,
        now_ms: i64,
        expires_at_ms: i64,
        replace: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO enrol_tokens (token_hash, user_id, created_at_ms, expires_at_ms, replace_cert) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash.to_vec())
        .bind(user.to_owned())
        .bind(now_ms)
        .bind(expires_at_ms)
        .bind(i64::from(replace))
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// Tokens neither used nor expired at `now_ms`, oldest first:
    /// (user, created, expires; Unix ms). Only hashes are stored, so the
    /// tokens themselves cannot be shown again.
    pub async fn waiting_tokens(&self, now_ms: i64) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT user_id, created_at_ms, expires_at_ms FROM enrol_tokens \
             WHERE used_at_ms IS NULL AND expires_at_ms > $1 ORDER BY created_at_ms",
        )
        .bind(now_ms)
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Ends `user`'s unused tokens now; how many there were.
    pub async fn cancel_tokens(&self, user: &str, now_ms: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE enrol_tokens SET expires_at_ms = $1 \
             WHERE user_id = $2 AND used_at_ms IS NULL AND expires_at_ms > $1",
        )
        .bind(now_ms)
        .bind(user.to_owned())
        .execute(self.w())
        .await?;
        Ok(done.rows_affected())
    }

    /// The user of an unused, unexpired token and whether it may replace
    /// a certificate, without using it.
    pub async fn token_user(&self, hash: &[u8], now_ms: i64) -> Result<Option<(String, bool)>> {
        let row = sqlx::query(
            "SELECT user_id, replace_cert FROM enrol_tokens WHERE token_hash = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(hash.to_vec())
        .bind(now_ms)
        .fetch_optional(self.r())
        .await?;
        row.map(|r| {
            let replace: i64 = r.try_get("replace_cert")?;
            Ok((r.try_get::<String, _>("user_id")?, replace != 0))
        })
        .transpose()
    }

    /// Records a certificate the AS issued to `user`.
    pub async fn record_cert(
        &self,
        serial: &[u8],
        user: &str,
        issued_at_ms: i64,
        not_after_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO as_certs (serial, user_id, issued_at_ms, not_after_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (serial) DO NOTHING",
        )
        .bind(serial.to_vec())
        .bind(user.to_owned())
        .bind(issued_at_ms)
        .bind(not_after_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// The serials of `user`'s certificates that have not expired at
    /// `now_ms` (whether they are revoked is the caller's to check).
    pub async fn unexpired_certs(&self, user: &str, now_ms: i64) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query(
            "SELECT serial FROM as_certs WHERE user_id = $1 AND not_after_ms > $2 ORDER BY issued_at_ms",
        )
        .bind(user.to_owned())
        .bind(now_ms)
        .fetch_all(self.w())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("serial")?)).collect()
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

    /// Marks the token `hash` as one that sets up a password (DESIGN D51).
    pub async fn mark_password_token(&self, hash: &[u8]) -> Result<()> {
        sqlx::query("UPDATE enrol_tokens SET password_setup = 1 WHERE token_hash = $1")
            .bind(hash.to_vec())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Whether the token `hash` sets up a password.
    pub async fn is_password_token(&self, hash: &[u8]) -> Result<bool> {
        let row = sqlx::query("SELECT password_setup FROM enrol_tokens WHERE token_hash = $1")
            .bind(hash.to_vec())
            .fetch_optional(self.r())
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .is_some_and(|v| v != 0))
    }

    /// Stores (or replaces) `user`'s OPAQUE record.
    pub async fn put_password(&self, user: &str, record: &[u8], now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO as_passwords (user_id, record, created_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET record = $2, created_at_ms = $3",
        )
        .bind(user.to_owned())
        .bind(record.to_vec())
        .bind(now_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// `user`'s OPAQUE record, if the user has a password.
    pub async fn password_record(&self, user: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT record FROM as_passwords WHERE user_id = $1")
            .bind(user.to_owned())
            .fetch_optional(self.r())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Keeps a login's server state between its two steps; logins expired
    /// at `now_ms` are erased on the way (a client that never comes back
    /// leaves nothing behind).
    pub async fn put_login(
        &self,
        login_id: &[u8],
        user: &str,
        state: &[u8],
        (now_ms, expires_at_ms): (i64, i64),
    ) -> Result<()> {
        self.erase_expired_logins(now_ms).await?;
        sqlx::query(
            "INSERT INTO as_logins (login_id, user_id, state, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(login_id.to_vec())
        .bind(user.to_owned())
        .bind(state.to_vec())
        .bind(expires_at_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// Erases the logins expired at `now_ms`.
    async fn erase_expired_logins(&self, now_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM as_logins WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Takes a login's state, once: `None` if unknown, taken or expired
    /// (expired ones are erased on the way).
    pub async fn take_login(
        &self,
        login_id: &[u8],
        now_ms: i64,
    ) -> Result<Option<(String, Vec<u8>)>> {
        self.erase_expired_logins(now_ms).await?;
        let row = sqlx::query("DELETE FROM as_logins WHERE login_id = $1 RETURNING user_id, state")
            .bind(login_id.to_vec())
            .fetch_optional(self.w())
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The first step of login `login_id` for `user` from client address
    /// `addr` at `at_ms`: counted as a wrong password until the login
    /// succeeds (its client can test a guess without a second step).
    /// Attempts older than `forget_before_ms` are dropped on the way.
    pub async fn record_login_attempt(
        &self,
        login_id: &[u8],
        user: &str,
        addr: &str,
        at_ms: i64,
        forget_before_ms: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM as_login_attempts WHERE at_ms <= $1")
            .bind(forget_before_ms)
            .execute(self.w())
            .await?;
        sqlx::query(
            "INSERT INTO as_login_attempts (login_id, user_id, addr, at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(login_id.to_vec())
        .bind(user.to_owned())
        .bind(addr.to_owned())
        .bind(at_ms)
        .execute(self.w())
        .await?;
        Ok(())
    }

    /// How many logins of `user` since `since_ms`, and since its last right
    /// password, did not succeed.
    pub async fn login_failures(&self, user: &str, since_ms: i64) -> Result<u64> {
        self.count_failures(
            "SELECT COUNT(*) FROM as_login_attempts WHERE user_id = $1 AND at_ms > $2 AND cleared = 0",
            user,
            since_ms,
        )
        .await
    }

    /// How many logins from client address `addr` since `since_ms`, for
    /// any account, did not succeed (right passwords of others do not
    /// reset it).
    pub async fn address_login_failures(&self, addr: &str, since_ms: i64) -> Result<u64> {
        self.count_failures(
            "SELECT COUNT(*) FROM as_login_attempts WHERE addr = $1 AND at_ms > $2",
            addr,
            since_ms,
        )
        .await
    }

    async fn count_failures(&self, sql: &'static str, key: &str, since_ms: i64) -> Result<u64> {
        let row = sqlx::query(sql)
            .bind(key.to_owned())
            .bind(since_ms)
            .fetch_one(self.r())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    /// Forgets the attempt of login `login_id` (refused before any answer).
    pub async fn drop_login_attempt(&self, login_id: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM as_login_attempts WHERE login_id = $1")
            .bind(login_id.to_vec())
            .execute(self.w())
            .await?;
        Ok(())
    }

    /// Login `login_id` of `user` succeeded: it was no wrong password, and
    /// `user`'s count starts again (its address's does not).
    pub async fn login_succeeded(&self, login_id: &[u8], user: &str) -> Result<()> {
        self.drop_login_attempt(login_id).await?;
        sqlx::query("UPDATE as_login_attempts SET cleared = 1 WHERE user_id = $1")
            .bind(user.to_owned())
            .execute(self.w())
            .await?;
        Ok(())
    }
}
