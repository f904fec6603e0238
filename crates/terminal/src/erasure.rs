//! Erasure (SPEC §7, D36): superseded key material and, unless the user
//! keeps it, old history are erased on a schedule.

use crate::error::Result;
use crate::store::GroupState;
use crate::terminal::Terminal;

impl Terminal {
    /// Key erasure (SPEC §4.5, §7.5): grants older than the retention are
    /// deleted and every R1 is moved forward to the oldest epoch still kept,
    /// so older epochs cannot be derived from this terminal's state.
    pub async fn erase_expired(&mut self) -> Result<()> {
        self.erase_expired_at(self.now_ms()).await
    }

    /// [`Terminal::erase_expired`] as if the time were `now` (tests, tools).
    pub async fn erase_expired_at(&mut self, now: u64) -> Result<()> {
        self.rotate_delivery_key(now).await?;
        self.erase_old_history(now).await?;
        for g in self
            .store
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.state == GroupState::Active)
        {
            let Some(cur) = self.store.grant(&g.group_id, g.rn2_version).await? else {
                continue;
            };
            let cutoff = now.saturating_sub(cur.retention_secs.saturating_mul(1000));
            // R1 moves forward only when retention actually erased an epoch:
            // a terminal that has not fetched old grants yet still needs them.
            let erased = self
                .store
                .erase_grants_before(&g.group_id, cutoff, g.rn2_version)
                .await?;
            if erased > 0 {
                self.advance_r1_to_oldest(&g.group_id).await?;
                self.store.checkpoint().await?;
            }
            self.erase_superseded_r1s(&g.group_id, now).await?;
        }
        Ok(())
    }

    /// D36: erases the decrypted messages older than their group's
    /// retention (the last one this terminal verified, kept for groups it
    /// has left), unless the user chose to keep history
    /// ([`Terminal::set_keep_history`]).
    async fn erase_old_history(&mut self, now: u64) -> Result<()> {
        if self.store.meta("keep_history").await?.is_some() {
            return Ok(());
        }
        let mut erased = 0;
        for g in self.store.groups().await? {
            let key = format!("retention:{}", hex::encode(g.group_id));
            if let Some(cur) = self.store.grant(&g.group_id, g.rn2_version).await?
                && self.store.meta_u64(&key).await? != cur.retention_secs
            {
                self.store.set_meta_u64(&key, cur.retention_secs).await?;
            }
            let retention = self.store.meta_u64(&key).await?;
            if retention > 0 {
                let cutoff = now.saturating_sub(retention.saturating_mul(1000));
                erased += self
                    .store
                    .erase_messages_before(&g.group_id, cutoff)
                    .await?;
            }
        }
        if erased > 0 {
            self.store.checkpoint().await?;
        }
        Ok(())
    }

    /// `duokey init --keep-history`: this terminal keeps decrypted messages
    /// past their group's retention (D36; the default erases them).
    pub async fn set_keep_history(&self, keep: bool) -> Result<()> {
        match keep {
            true => self.store.set_meta("keep_history", b"1").await,
            false => self.store.delete_meta("keep_history").await,
        }
    }
}
