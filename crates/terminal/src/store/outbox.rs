//! The outbox (PROTOCOL §5.10): messages written but not yet acknowledged
//! by the CS, sealed, in the order they were written.

use super::Store;
use crate::error::{Error, Result};
use duokey_crypto::GroupId;
use sqlx::Row;

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its place in the outbox.
    pub id: i64,
    /// The group.
    pub group_id: Vec<u8>,
    /// The text, sealed.
    pub sealed: Vec<u8>,
    /// The envelope last posted for it, whose answer never came (the CS
    /// may have stored it): posted again as it is while its epoch is
    /// current, so that the CS recognises it (DESIGN D49).
    pub attempt: Option<Vec<u8>>,
}

impl Store {
    /// Queues a sealed message for `gid`, with the envelope already posted
    /// for it if its answer was lost.
    pub async fn queue(
        &self,
        gid: &GroupId,
        sealed: &[u8],
        now_ms: u64,
        attempt: Option<&[u8]>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO outbox (group_id, body, queued_ms) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(gid.as_slice())
        .bind(sealed)
        .bind(i64::try_from(now_ms).map_err(|_| Error::Corrupt("time"))?)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        if let Some(envelope) = attempt {
            sqlx::query("INSERT INTO outbox_attempts (outbox_id, envelope) VALUES (?, ?)")
                .bind(id)
                .bind(envelope)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every queued message, oldest first.
    pub async fn queued(&self) -> Result<Vec<Queued>> {
        let rows = sqlx::query(
            "SELECT o.id, o.group_id, o.body, a.envelope FROM outbox o \
             LEFT JOIN outbox_attempts a ON a.outbox_id = o.id ORDER BY o.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Queued {
                id: r.get(0),
                group_id: r.get(1),
                sealed: r.get(2),
                attempt: r.get(3),
            })
            .collect())
    }

    /// Records the envelope about to be posted for queued message `id`.
    pub async fn set_attempt(&self, id: i64, envelope: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO outbox_attempts (outbox_id, envelope) VALUES (?, ?) \
             ON CONFLICT (outbox_id) DO UPDATE SET envelope = excluded.envelope",
        )
        .bind(id)
        .bind(envelope)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many messages are queued.
    pub async fn queued_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        u64::try_from(n).map_err(|_| Error::Corrupt("outbox"))
    }

    /// The CS acknowledged the queued message `id`.
    pub async fn sent(&self, id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM outbox_attempts WHERE outbox_id = ?",
            "DELETE FROM outbox WHERE id = ?",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
