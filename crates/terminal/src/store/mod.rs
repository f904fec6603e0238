//! The profile store (SPEC §6): one SQLite file per profile, mode 0600.
//! Only sealed values hold secrets; see `schema.sql`.

use crate::error::{Error, Result};
use duokey_crypto::{GroupId, ItemId, Rights};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Row, SqlitePool};
use std::path::Path;

/// The database's own errors (kept behind the store: nothing else in the
/// terminal speaks SQL).
pub use sqlx::Error as DbError;

mod codes;
mod contacts;
mod history;
mod invites;
mod outbox;

pub use codes::{CodeIn, CodeOut};
pub use contacts::ContactState;
pub use history::{NewMessage, Seen, Stored, StoredMessage};
pub use invites::{HandOver, InviteInState, InviteOutState, PendingInvite, SentInvite};
pub use outbox::Queued;

/// Where this terminal stands in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// A member.
    Active,
    /// Removed by a member with the remove right.
    Removed,
    /// Left on its own.
    Left,
    /// The owner deleted the group.
    Deleted,
}

impl GroupState {
    /// The name stored in the profile and shown to the user.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Active => "active",
            GroupState::Removed => "removed",
            GroupState::Left => "left",
            GroupState::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Result<GroupState> {
        Ok(match s {
            "active" => GroupState::Active,
            "removed" => GroupState::Removed,
            "left" => GroupState::Left,
            "deleted" => GroupState::Deleted,
            _ => return Err(Error::Corrupt("group state")),
        })
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Meta key of when the current delivery key was made (Unix ms, u64).
pub const DELIVERY_CREATED: &str = "delivery_created_ms";

/// The profile database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

/// A contact's delivery key as this terminal checked it (D29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedDeliveryKey {
    /// The identity key the record's signature was checked with.
    pub identity_key: [u8; 32],
    /// The delivery (HPKE) public key.
    pub delivery_key: [u8; 32],
    /// When it was fetched and checked (Unix milliseconds).
    pub checked_ms: u64,
}

/// A stored grant (RN2 still sealed).
#[derive(Debug, Clone, Default)]
pub struct StoredGrant {
    /// RN2 version.
    pub rn2_version: u64,
    /// RN1 version of the epoch.
    pub rn1_version: u32,
    /// Sealed RN2.
    pub rn2_sealed: Vec<u8>,
    /// Members and rights.
    pub members: Vec<(String, Rights)>,
    /// When the GMS issued it.
    pub issued_at_ms: u64,
    /// Who must send the new RN1, if RN1 rotates here.
    pub rn1_rotator: String,
    /// `GrantCause`.
    pub cause: i32,
    /// Whom the change concerns.
    pub subject: String,
    /// Grace window.
    pub grace_secs: u64,
    /// Retention.
    pub retention_secs: u64,
}

/// A group as the terminal knows it.
#[derive(Debug, Clone)]
pub struct GroupRow {
    /// Raw id.
    pub group_id: GroupId,
    /// Name.
    pub name: String,
    /// Where this terminal stands in it.
    pub state: GroupState,
    /// Current RN2 version.
    pub rn2_version: u64,
    /// Current RN1 version.
    pub rn1_version: u32,
    /// Last log position read.
    pub log_cursor: u64,
}

/// A query for one group's grants (read by `grant_row`), with `$cond`.
macro_rules! select_grant {
    ($cond:literal) => {
        concat!(
            "SELECT rn2_version, rn1_version, rn2, members, issued_at_ms, rn1_rotator, cause, subject, \
             grace_secs, retention_secs FROM grants WHERE group_id = ? AND ",
            $cond
        )
    };
}

pub(crate) fn u(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt("negative integer"))
}

pub(crate) fn i(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Corrupt("integer too large"))
}

/// An RN1 version as stored (SQLite integers are `i64`).
pub(crate) fn rn1(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Corrupt("rn1_version"))
}

/// A group id as stored or received (16 bytes).
pub(crate) fn gid16(b: &[u8]) -> Result<GroupId> {
    GroupId::from_slice(b).map_err(|_| Error::Corrupt("group id"))
}

/// An anchor's head as stored (SPEC §4.7 "Equivocation").
fn anchor_head(v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| Error::Corrupt("anchor head"))
}

/// A statement with its values bound, to run on the pool or in a
/// transaction.
type Statement = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Moves a group's log cursor forward to `cursor`, never back.
fn advance_cursor(gid: &GroupId, cursor: u64) -> Result<Statement> {
    Ok(
        sqlx::query("UPDATE groups SET log_cursor = ?1 WHERE group_id = ?2 AND log_cursor < ?1")
            .bind(i(cursor)?)
            .bind(gid.as_slice()),
    )
}

/// Drops the R1 of one RN1 version of a group.
fn delete_r1(gid: &GroupId, rn1_version: u32) -> Statement {
    sqlx::query("DELETE FROM r1 WHERE group_id = ? AND rn1_version = ?")
        .bind(gid.as_slice())
        .bind(i64::from(rn1_version))
}

impl Store {
    /// Opens or creates the store at `path` (file mode 0600).
    pub async fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            o.open(path)?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Erased keys are overwritten, not left in free pages (SPEC §7 P5).
            .pragma("secure_delete", "ON")
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            // No idle reaper: sqlx's pool maintenance task can spin at 100 %
            // CPU for ever after a rare race in its idle count (sqlx issue
            // 3645: a `duokey` command hung so once in a test run); one local
            // connection needs no reaping.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        pool.execute(include_str!("schema.sql")).await?;
        Ok(Store { pool })
    }

    /// A metadata value.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    /// A metadata value that must exist.
    pub async fn meta_req(&self, key: &'static str) -> Result<Vec<u8>> {
        self.meta(key).await?.ok_or(Error::Corrupt(key))
    }

    /// Sets a metadata value.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a metadata value.
    pub async fn delete_meta(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM meta WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A numeric metadata value (0 if absent).
    pub async fn meta_u64(&self, key: &str) -> Result<u64> {
        Ok(self
            .meta(key)
            .await?
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Sets a numeric metadata value.
    pub async fn set_meta_u64(&self, key: &str, v: u64) -> Result<()> {
        self.set_meta(key, &v.to_be_bytes()).await
    }

    /// Every group.
    pub async fn groups(&self) -> Result<Vec<GroupRow>> {
        let rows = sqlx::query("SELECT group_id, name, state, rn2_version, rn1_version, log_cursor FROM groups ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(group_row).collect()
    }

    /// One group.
    pub async fn group(&self, gid: &GroupId) -> Result<Option<GroupRow>> {
        let row = sqlx::query("SELECT group_id, name, state, rn2_version, rn1_version, log_cursor FROM groups WHERE group_id = ?")
            .bind(gid.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(group_row).transpose()
    }

    /// Creates or updates a group from a newer grant.
    pub async fn upsert_group(&self, gid: &GroupId, name: &str, rn2: u64, rn1: u32) -> Result<()> {
        sqlx::query(
            "INSERT INTO groups (group_id, name, state, rn2_version, rn1_version) VALUES (?1, ?2, ?5, ?3, ?4) \
             ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, state = ?5, \
             rn2_version = excluded.rn2_version, rn1_version = excluded.rn1_version \
             WHERE excluded.rn2_version > groups.rn2_version OR groups.state != ?5",
        )
        .bind(gid.as_slice())
        .bind(name)
        .bind(i(rn2)?)
        .bind(i64::from(rn1))
        .bind(GroupState::Active.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a group removed, left or deleted.
    pub async fn set_group_state(&self, gid: &GroupId, state: GroupState) -> Result<()> {
        sqlx::query("UPDATE groups SET state = ? WHERE group_id = ?")
            .bind(state.as_str())
            .bind(gid.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes every trace of a group from the profile (`duokey group
    /// forget`): its state, keys, history, invitations and queued messages,
    /// in one transaction, then checkpoints so that the erased keys survive
    /// in no file (`secure_delete` overwrote them in their pages).
    pub async fn forget_group(&self, gid: &GroupId) -> Result<()> {
        // Every table with a `group_id` column, read from the schema so
        // that a table added later is not forgotten; `groups` last.
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND p.name = 'group_id' ORDER BY m.name = 'groups'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM anchors_out WHERE invite_id IN \
             (SELECT invite_id FROM invites_out WHERE group_id = ?)",
        )
        .bind(gid.as_slice())
        .execute(&mut *tx)
        .await?;
        for table in tables {
            // `table` comes from the profile's own schema, never from input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE group_id = ?"
            )))
            .bind(gid.as_slice())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.checkpoint().await
    }

    /// Records how far the group's log was read.
    pub async fn set_log_cursor(&self, gid: &GroupId, cursor: u64) -> Result<()> {
        advance_cursor(gid, cursor)?.execute(&self.pool).await?;
        Ok(())
    }

    /// The next `seq` for sending in `epoch` (SPEC §3.3: from 0 per epoch), reserved.
    pub async fn next_seq(&self, gid: &GroupId, epoch: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT send_epoch, next_seq FROM groups WHERE group_id = ?")
            .bind(gid.as_slice())
            .fetch_one(&mut *tx)
            .await?;
        let (e, n): (String, i64) = (row.get(0), row.get(1));
        let seq = if e == epoch { u(n)? } else { 0 };
        sqlx::query("UPDATE groups SET send_epoch = ?, next_seq = ? WHERE group_id = ?")
            .bind(epoch)
            .bind(i(seq + 1)?)
            .bind(gid.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Stores a grant (first writer wins: grants never change).
    pub async fn put_grant(&self, gid: &GroupId, g: &StoredGrant) -> Result<bool> {
        let bits: Vec<(&str, u8)> = g
            .members
            .iter()
            .map(|(u, r)| (u.as_str(), r.bits()))
            .collect();
        let members = serde_json::to_string(&bits).map_err(|_| Error::Internal("json"))?;
        let n = sqlx::query(
            "INSERT INTO grants (group_id, rn2_version, rn1_version, rn2, members, issued_at_ms, rn1_rotator, cause, subject, grace_secs, retention_secs) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(gid.as_slice())
        .bind(i(g.rn2_version)?)
        .bind(i64::from(g.rn1_version))
        .bind(g.rn2_sealed.as_slice())
        .bind(members)
        .bind(i(g.issued_at_ms)?)
        .bind(&g.rn1_rotator)
        .bind(i64::from(g.cause))
        .bind(&g.subject)
        .bind(i(g.grace_secs)?)
        .bind(i(g.retention_secs)?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A stored grant.
    pub async fn grant(&self, gid: &GroupId, rn2_version: u64) -> Result<Option<StoredGrant>> {
        self.one_grant(select_grant!("rn2_version = ?"), gid, rn2_version)
            .await
    }

    /// The newest `n` stored grants of a group, oldest first.
    pub async fn recent_grants(&self, gid: &GroupId, n: u64) -> Result<Vec<StoredGrant>> {
        let rows = sqlx::query(select_grant!("1 = 1 ORDER BY rn2_version DESC LIMIT ?"))
            .bind(gid.as_slice())
            .bind(i(n)?)
            .fetch_all(&self.pool)
            .await?;
        let mut grants = rows.iter().map(grant_row).collect::<Result<Vec<_>>>()?;
        grants.reverse();
        Ok(grants)
    }

    /// The first stored grant after `rn2_version` (the one that superseded it).
    pub async fn next_grant(&self, gid: &GroupId, rn2_version: u64) -> Result<Option<StoredGrant>> {
        let sql = select_grant!("rn2_version > ? ORDER BY rn2_version LIMIT 1");
        self.one_grant(sql, gid, rn2_version).await
    }

    /// The grant `sql` (from `select_grant!`) finds for `gid` and a version.
    async fn one_grant(
        &self,
        sql: &'static str,
        gid: &GroupId,
        rn2_version: u64,
    ) -> Result<Option<StoredGrant>> {
        let row = sqlx::query(sql)
            .bind(gid.as_slice())
            .bind(i(rn2_version)?)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant_row).transpose()
    }

    /// Erases grants issued before `before_ms` except the newest (SPEC §7.5).
    pub async fn erase_grants_before(
        &self,
        gid: &GroupId,
        before_ms: u64,
        keep: u64,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM grants WHERE group_id = ? AND issued_at_ms < ? AND rn2_version < ?",
        )
        .bind(gid.as_slice())
        .bind(i(before_ms)?)
        .bind(i(keep)?)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The oldest stored grant version of a group.
    pub async fn oldest_grant(&self, gid: &GroupId) -> Result<Option<u64>> {
        self.first_grant(gid, None).await
    }

    /// The first stored grant version of a group, or of one RN1 version of it.
    async fn first_grant(&self, gid: &GroupId, rn1_version: Option<u32>) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT MIN(rn2_version) FROM grants \
             WHERE group_id = ?1 AND (?2 IS NULL OR rn1_version = ?2)",
        )
        .bind(gid.as_slice())
        .bind(rn1_version.map(i64::from))
        .fetch_one(&self.pool)
        .await?;
        row.get::<Option<i64>, _>(0).map(u).transpose()
    }

    /// Ends this terminal's membership (removed, left, deleted): records the
    /// state, erases every key of the group for new epochs (SPEC §4.3 step 1)
    /// and writes the notice. The history already read stays.
    pub async fn end_membership(
        &self,
        gid: &GroupId,
        state: GroupState,
        notice: &str,
        at_ms: u64,
    ) -> Result<()> {
        self.set_group_state(gid, state).await?;
        self.erase_group_keys(gid).await?;
        self.notice(gid, notice, at_ms).await
    }

    /// Erases every key of a group (removal, leave, deletion).
    pub async fn erase_group_keys(&self, gid: &GroupId) -> Result<()> {
        for sql in [
            "DELETE FROM grants WHERE group_id = ?",
            "DELETE FROM r1 WHERE group_id = ?",
        ] {
            sqlx::query(sql)
                .bind(gid.as_slice())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The stored R1 of an RN1 version: (rn2_version it is at, sealed value).
    pub async fn r1(&self, gid: &GroupId, rn1_version: u32) -> Result<Option<(u64, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT rn2_version, secret FROM r1 WHERE group_id = ? AND rn1_version = ?",
        )
        .bind(gid.as_slice())
        .bind(i64::from(rn1_version))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((u(r.get(0))?, r.get(1)))).transpose()
    }

    /// Stores (or moves forward) the R1 of an RN1 version.
    pub async fn put_r1(
        &self,
        gid: &GroupId,
        rn1_version: u32,
        rn2_version: u64,
        sealed: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO r1 (group_id, rn1_version, rn2_version, secret) VALUES (?, ?, ?, ?) \
             ON CONFLICT (group_id, rn1_version) DO UPDATE SET rn2_version = excluded.rn2_version, secret = excluded.secret",
        )
        .bind(gid.as_slice())
        .bind(i64::from(rn1_version))
        .bind(i(rn2_version)?)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The R1s held of RN1 versions a later grant superseded: (rn1_version,
    /// when the first grant of a later version was issued, its grace in
    /// seconds).
    pub async fn superseded_r1s(&self, gid: &GroupId) -> Result<Vec<(u32, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT r.rn1_version, g.issued_at_ms, g.grace_secs FROM r1 r JOIN grants g \
             ON g.group_id = r.group_id AND g.rn2_version = \
             (SELECT MIN(rn2_version) FROM grants WHERE group_id = r.group_id AND rn1_version > r.rn1_version) \
             WHERE r.group_id = ?",
        )
        .bind(gid.as_slice())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| Ok((rn1(r.get(0))?, u(r.get(1))?, u(r.get(2))?)))
            .collect()
    }

    /// Erases the R1 of an RN1 version for good and remembers that it did
    /// (SPEC §4.7): one transaction, then the write-ahead log is emptied so
    /// that no copy stays on disk.
    pub async fn erase_r1(&self, gid: &GroupId, rn1_version: u32, now_ms: u64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO r1_erased (group_id, rn1_version, erased_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(gid.as_slice())
        .bind(i64::from(rn1_version))
        .bind(i(now_ms)?)
        .execute(&mut *tx)
        .await?;
        delete_r1(gid, rn1_version).execute(&mut *tx).await?;
        tx.commit().await?;
        self.checkpoint().await
    }

    /// Replaces this terminal's delivery secret, in one
    /// transaction: the current one (`old_public`, `old_sealed`) is kept as
    /// retired from `now_ms`, `new_sealed` becomes the current one, made at
    /// `now_ms` and not yet published.
    pub async fn retire_delivery(
        &self,
        old_public: &[u8; 32],
        old_sealed: &[u8],
        new_sealed: &[u8],
        now_ms: u64,
    ) -> Result<()> {
        let now = i64::try_from(now_ms).map_err(|_| Error::Corrupt("time"))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT OR REPLACE INTO delivery_retired (public, secret, retired_ms) VALUES (?, ?, ?)",
        )
        .bind(old_public.as_slice())
        .bind(old_sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (key, value) in [
            ("delivery", new_sealed.to_vec()),
            (DELIVERY_CREATED, now_ms.to_be_bytes().to_vec()),
        ] {
            sqlx::query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM meta WHERE key = 'dk_published'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The retired delivery secrets (sealed), newest first.
    pub async fn retired_delivery(&self) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query("SELECT secret FROM delivery_retired ORDER BY retired_ms DESC")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Erases the delivery secrets retired before `before_ms` (overwritten,
    /// and out of the write-ahead log); returns how many.
    pub async fn erase_retired_delivery(&self, before_ms: u64) -> Result<u64> {
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM delivery_retired WHERE retired_ms < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            self.checkpoint().await?;
        }
        Ok(done.rows_affected())
    }

    /// Moves the write-ahead log into the database and empties it, so that
    /// erased values (overwritten there: `secure_delete`) leave no copy in
    /// the log (SPEC §7 P5).
    pub async fn checkpoint(&self) -> Result<()> {
        self.pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        Ok(())
    }

    /// The RN1 versions of `gid` whose R1 is held, each with the RN2
    /// version it is at.
    pub async fn r1_versions(&self, gid: &GroupId) -> Result<Vec<(u32, u64)>> {
        let rows = sqlx::query("SELECT rn1_version, rn2_version FROM r1 WHERE group_id = ?")
            .bind(gid.as_slice())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let at =
                    u64::try_from(r.get::<i64, _>(1)).map_err(|_| Error::Corrupt("rn2_version"))?;
                Ok((rn1(r.get(0))?, at))
            })
            .collect()
    }

    /// Drops the R1 of an RN1 version no kept grant uses any more.
    pub async fn drop_r1(&self, gid: &GroupId, rn1_version: u32) -> Result<()> {
        delete_r1(gid, rn1_version).execute(&self.pool).await?;
        Ok(())
    }

    /// Whether this terminal erased the R1 of an RN1 version.
    pub async fn r1_erased(&self, gid: &GroupId, rn1_version: u32) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM r1_erased WHERE group_id = ? AND rn1_version = ?")
            .bind(gid.as_slice())
            .bind(i64::from(rn1_version))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Appends a verified membership change (SPEC §4.7).
    pub async fn put_change(&self, gid: &GroupId, seq: u64, change: &[u8]) -> Result<()> {
        self.put_changes(gid, &[(seq, change)]).await
    }

    /// A contact's delivery key checked earlier (D29): the identity key it
    /// was checked with, the key, and when.
    pub async fn delivery_key(&self, user: &str) -> Result<Option<CheckedDeliveryKey>> {
        let row = sqlx::query(
            "SELECT identity_key, delivery_key, checked_ms FROM delivery_keys WHERE user_id = ?",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let fixed =
            |v: Vec<u8>| <[u8; 32]>::try_from(v).map_err(|_| Error::Corrupt("delivery_keys"));
        Ok(Some(CheckedDeliveryKey {
            identity_key: fixed(r.get(0))?,
            delivery_key: fixed(r.get(1))?,
            checked_ms: u64::try_from(r.get::<i64, _>(2)).unwrap_or(0),
        }))
    }

    /// Records a contact's delivery key, checked now against `identity_key`.
    pub async fn put_delivery_key(&self, user: &str, key: &CheckedDeliveryKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO delivery_keys (user_id, identity_key, delivery_key, checked_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET identity_key = excluded.identity_key, \
             delivery_key = excluded.delivery_key, checked_ms = excluded.checked_ms",
        )
        .bind(user)
        .bind(key.identity_key.as_slice())
        .bind(key.delivery_key.as_slice())
        .bind(i(key.checked_ms)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records verified membership changes `(seq, bytes)`, all or none.
    pub async fn put_changes(&self, gid: &GroupId, changes: &[(u64, &[u8])]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (seq, change) in changes {
            sqlx::query(
                "INSERT INTO membership (group_id, seq, change) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(gid.as_slice())
            .bind(i(*seq)?)
            .bind(*change)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The verified membership changes of a group, in order.
    pub async fn changes(&self, gid: &GroupId) -> Result<Vec<Vec<u8>>> {
        let rows = sqlx::query("SELECT change FROM membership WHERE group_id = ? ORDER BY seq")
            .bind(gid.as_slice())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// The first stored grant of an RN1 version: the one that applied the
    /// change that created it.
    pub async fn first_grant_of_rn1(&self, gid: &GroupId, rn1_version: u32) -> Result<Option<u64>> {
        self.first_grant(gid, Some(rn1_version)).await
    }

    /// Records the change an invitation's hand-over names.
    pub async fn put_anchor_out(
        &self,
        invite_id: &ItemId,
        seq: u64,
        head: &[u8; 32],
    ) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO anchors_out (invite_id, seq, head) VALUES (?, ?, ?)")
            .bind(invite_id.as_slice())
            .bind(i(seq)?)
            .bind(head.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The change an invitation's hand-over names.
    pub async fn anchor_out(&self, invite_id: &ItemId) -> Result<Option<(u64, [u8; 32])>> {
        let row = sqlx::query("SELECT seq, head FROM anchors_out WHERE invite_id = ?")
            .bind(invite_id.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((u(r.get(0))?, anchor_head(r.get(1))?)))
            .transpose()
    }

    /// Records an anchor received from `sender`.
    pub async fn put_anchor_in(
        &self,
        gid: &GroupId,
        sender: &str,
        seq: u64,
        head: &[u8; 32],
        at_rn2_version: u64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT OR REPLACE INTO anchors_in (group_id, sender, seq, head, at_rn2_version) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(gid.as_slice())
        .bind(sender)
        .bind(i(seq)?)
        .bind(head.as_slice())
        .bind(i(at_rn2_version)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every member's latest anchor for a group: (sender, seq, head).
    pub async fn anchors_in(&self, gid: &GroupId) -> Result<Vec<(String, u64, [u8; 32])>> {
        let rows = sqlx::query("SELECT sender, seq, head FROM anchors_in WHERE group_id = ?")
            .bind(gid.as_slice())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.get(0), u(r.get(1))?, anchor_head(r.get(2))?)))
            .collect()
    }

    /// The verified change at `seq` of a group, if this terminal holds it.
    pub async fn change_at(&self, gid: &GroupId, seq: u64) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT change FROM membership WHERE group_id = ? AND seq = ?")
            .bind(gid.as_slice())
            .bind(i(seq)?)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Keeps the evidence of a fork (SPEC §4.7 "Equivocation"); whether it
    /// is new.
    pub async fn put_fork(
        &self,
        gid: &GroupId,
        sender: &str,
        seq: u64,
        their_head: &[u8; 32],
        my_head: &[u8; 32],
        now_ms: u64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO forks (group_id, sender, seq, their_head, my_head, seen_ms) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(gid.as_slice())
        .bind(sender)
        .bind(i(seq)?)
        .bind(their_head.as_slice())
        .bind(my_head.as_slice())
        .bind(i(now_ms)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether a fork of the group's history was seen.
    pub async fn forked(&self, gid: &GroupId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM forks WHERE group_id = ? LIMIT 1")
            .bind(gid.as_slice())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The latest anchor from `sender` for a group: (seq, head, at_rn2_version).
    pub async fn anchor_in(
        &self,
        gid: &GroupId,
        sender: &str,
    ) -> Result<Option<(u64, [u8; 32], u64)>> {
        let row = sqlx::query(
            "SELECT seq, head, at_rn2_version FROM anchors_in WHERE group_id = ? AND sender = ?",
        )
        .bind(gid.as_slice())
        .bind(sender)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((u(r.get(0))?, anchor_head(r.get(1))?, u(r.get(2))?)))
            .transpose()
    }

    /// Members already sent the RN1 of a rotation.
    pub async fn rn1_sent(&self, gid: &GroupId, rn1_version: u32) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT user_id FROM rn1_sent WHERE group_id = ? AND rn1_version = ?")
                .bind(gid.as_slice())
                .bind(i64::from(rn1_version))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records that `user` was sent the RN1 of a rotation.
    pub async fn mark_rn1_sent<'a>(
        &self,
        gid: &GroupId,
        rn1_version: u32,
        users: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        // One transaction (one sync to disk) for a whole batch of members.
        let mut tx = self.pool.begin().await?;
        for user in users {
            sqlx::query("INSERT INTO rn1_sent (group_id, rn1_version, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(gid.as_slice())
                .bind(i64::from(rn1_version))
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps an item to retry later (first time only).
    pub async fn put_pending(&self, item_id: &ItemId, item: &[u8], now_ms: u64) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO items_pending (item_id, item, since_ms) VALUES (?, ?, ?)",
        )
        .bind(item_id.as_slice())
        .bind(item)
        .bind(i(now_ms)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Items kept to retry: (item bytes, since when).
    pub async fn pending(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let rows = sqlx::query("SELECT item, since_ms FROM items_pending ORDER BY since_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.get(0), u(r.get(1))?)))
            .collect()
    }

    /// Forgets a kept item.
    pub async fn drop_pending(&self, item_id: &ItemId) -> Result<()> {
        sqlx::query("DELETE FROM items_pending WHERE item_id = ?")
            .bind(item_id.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether an item id was processed already (SPEC §4: each item once).
    pub async fn seen(&self, item_id: &ItemId) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM items_seen WHERE item_id = ?")
            .bind(item_id.as_slice())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// `true` the first time an item id is seen (SPEC §4: each item once).
    pub async fn first_sight(&self, item_id: &ItemId, now_ms: u64) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO items_seen (item_id, at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(item_id.as_slice())
        .bind(i(now_ms)?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Erases the text of a group's messages sent before `before_ms` (D36:
    /// decrypted history lasts as long as the group's retention). Each row
    /// stays as a tombstone (content type 0, empty body) so that a replay
    /// of its envelope is still recognised (V7). Returns how many.
    pub async fn erase_messages_before(&self, gid: &GroupId, before_ms: u64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE messages SET body = x'', content_type = 0 \
             WHERE group_id = ? AND sent_at_ms < ? AND content_type <> 0",
        )
        .bind(gid.as_slice())
        .bind(i(before_ms)?)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Records the serial of the certificate that certified `user`'s `key`.
    pub async fn put_contact_serial(&self, user: &str, key: &[u8], serial: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_serials (user_id, identity_key, serial) VALUES (?, ?, ?) \
             ON CONFLICT (user_id, identity_key) DO UPDATE SET serial = excluded.serial",
        )
        .bind(user)
        .bind(key)
        .bind(serial)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The serial of the certificate that certified `user`'s `key`, if known.
    pub async fn contact_serial(&self, user: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT serial FROM contact_serials WHERE user_id = ? AND identity_key = ?",
        )
        .bind(user)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    /// Adds a notice (joined, removed, left, key rotated, deleted).
    pub async fn notice(&self, gid: &GroupId, text: &str, at_ms: u64) -> Result<()> {
        sqlx::query("INSERT INTO notices (group_id, text, at_ms) VALUES (?, ?, ?)")
            .bind(gid.as_slice())
            .bind(text)
            .bind(i(at_ms)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Notices of a group after an id: (id, text, at_ms).
    pub async fn notices(&self, gid: &GroupId, after: i64) -> Result<Vec<(i64, String, u64)>> {
        let rows = sqlx::query(
            "SELECT id, text, at_ms FROM notices WHERE group_id = ? AND id > ? ORDER BY id",
        )
        .bind(gid.as_slice())
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.get(0), r.get(1), u(r.get(2))?)))
            .collect()
    }
}

fn group_row(r: &sqlx::sqlite::SqliteRow) -> Result<GroupRow> {
    let id: Vec<u8> = r.get(0);
    Ok(GroupRow {
        group_id: gid16(&id)?,
        name: r.get(1),
        state: GroupState::parse(&r.get::<String, _>(2))?,
        rn2_version: u(r.get(3))?,
        rn1_version: rn1(r.get(4))?,
        log_cursor: u(r.get(5))?,
    })
}

fn grant_row(r: &sqlx::sqlite::SqliteRow) -> Result<StoredGrant> {
    let members: String = r.get(3);
    Ok(StoredGrant {
        rn2_version: u(r.get(0))?,
        rn1_version: rn1(r.get(1))?,
        rn2_sealed: r.get(2),
        members: members_of(&members)?,
        issued_at_ms: u(r.get(4))?,
        rn1_rotator: r.get(5),
        cause: i32::try_from(r.get::<i64, _>(6)).map_err(|_| Error::Corrupt("cause"))?,
        subject: r.get(7),
        grace_secs: u(r.get(8))?,
        retention_secs: u(r.get(9))?,
    })
}

/// A grant's member list as stored: `[[user, rights bits], …]` in JSON.
fn members_of(json: &str) -> Result<Vec<(String, Rights)>> {
    let bits: Vec<(String, u8)> =
        serde_json::from_str(json).map_err(|_| Error::Corrupt("members"))?;
    bits.into_iter()
        .map(|(u, r)| {
            Ok((
                u,
                Rights::from_bits(r).map_err(|_| Error::Corrupt("rights"))?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh profile store, in a folder removed when dropped.
    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).await.unwrap();
        (dir, store)
    }

    fn grant(rn2_version: u64, rn1_version: u32) -> StoredGrant {
        StoredGrant {
            rn2_version,
            rn1_version,
            rn2_sealed: vec![1],
            ..StoredGrant::default()
        }
    }

    #[tokio::test]
    async fn the_first_grant_is_found_for_the_group_and_for_each_rn1_version() {
        let (_dir, store) = store().await;
        let gid = GroupId::random().unwrap();
        assert_eq!(store.oldest_grant(&gid).await.unwrap(), None);
        for (rn2, rn1) in [(4, 1), (3, 1), (7, 2), (5, 2)] {
            assert!(store.put_grant(&gid, &grant(rn2, rn1)).await.unwrap());
        }
        assert_eq!(store.oldest_grant(&gid).await.unwrap(), Some(3));
        assert_eq!(store.first_grant_of_rn1(&gid, 1).await.unwrap(), Some(3));
        assert_eq!(store.first_grant_of_rn1(&gid, 2).await.unwrap(), Some(5));
        assert_eq!(store.first_grant_of_rn1(&gid, 9).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_log_cursor_only_moves_forward_a_change_is_kept_once_and_a_dropped_r1_is_gone() {
        let (_dir, store) = store().await;
        let gid = GroupId::random().unwrap();
        store.upsert_group(&gid, "g", 1, 1).await.unwrap();
        let cursor = async || store.group(&gid).await.unwrap().unwrap().log_cursor;
        store.set_log_cursor(&gid, 5).await.unwrap();
        store.set_log_cursor(&gid, 3).await.unwrap();
        assert_eq!(cursor().await, 5);
        store.put_messages(&gid, &[], 8).await.unwrap();
        store.put_messages(&gid, &[], 6).await.unwrap();
        assert_eq!(cursor().await, 8);
        for _ in 0..2 {
            store.put_change(&gid, 1, b"add").await.unwrap();
        }
        assert_eq!(store.changes(&gid).await.unwrap(), vec![b"add".to_vec()]);
        store.put_r1(&gid, 1, 1, b"r1").await.unwrap();
        store.put_r1(&gid, 2, 2, b"r1").await.unwrap();
        store.drop_r1(&gid, 1).await.unwrap();
        store.erase_r1(&gid, 2, 9).await.unwrap();
        assert_eq!(store.r1(&gid, 1).await.unwrap(), None);
        assert_eq!(store.r1(&gid, 2).await.unwrap(), None);
        assert!(store.r1_erased(&gid, 2).await.unwrap());
        assert!(!store.r1_erased(&gid, 1).await.unwrap());
    }

    #[tokio::test]
    async fn a_delivery_key_is_recorded_and_replaced_whole() {
        let (_dir, store) = store().await;
        assert_eq!(store.delivery_key("bob").await.unwrap(), None);
        let checked = |identity, delivery, checked_ms| CheckedDeliveryKey {
            identity_key: [identity; 32],
            delivery_key: [delivery; 32],
            checked_ms,
        };
        for key in [checked(1, 2, 5), checked(3, 4, 6)] {
            store.put_delivery_key("bob", &key).await.unwrap();
            assert_eq!(store.delivery_key("bob").await.unwrap(), Some(key));
        }
        assert_eq!(store.delivery_key("carol").await.unwrap(), None);
    }
}
