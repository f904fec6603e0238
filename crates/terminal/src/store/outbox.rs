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
}

impl Store {
    /// Queues a sealed message for `gid`.
    pub async fn queue(&self, gid: &GroupId, sealed: &[u8], now_ms: u64) -> Result<()> {
        sqlx::query("INSERT INTO outbox (group_id, body, queued_ms) VALUES (?, ?, ?)")
            .bind(gid.as_slice())
            .bind(sealed)
            .bind(i64::try_from(now_ms).map_err(|_| Error::Corrupt("time"))?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every queued message, oldest first.
    pub async fn queued(&self) -> Result<Vec<Queued>> {
        let rows = sqlx::query("SELECT id, group_id, body FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Queued {
                id: r.get(0),
                group_id: r.get(1),
                sealed: r.get(2),
            })
            .collect())
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
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
