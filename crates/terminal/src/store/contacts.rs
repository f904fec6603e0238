//! Contacts' pinned identity keys and how they were confirmed (PROTOCOL §7).

use super::Store;
use crate::error::Result;
use sqlx::Row;

/// What the profile records of a contact's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactState {
    /// The user confirmed the pinned key (`verify --confirm`).
    pub verified: bool,
    /// The directory now shows another key, not yet confirmed.
    pub key_changed: bool,
    /// The pinned key was confirmed inside an invite code's exchange
    /// (PROTOCOL §4.10).
    pub by_code: bool,
}

impl Store {
    /// The identity key pinned for `user`, if any.
    pub async fn pinned_key(&self, user: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT identity_key FROM contacts WHERE user_id = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Pins `key` (and its certificate's fingerprint) for `user`, unless a
    /// key is pinned already.
    pub async fn pin_contact(&self, user: &str, key: &[u8; 32], fingerprint: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO contacts (user_id, identity_key, fingerprint) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(key.as_slice())
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the directory shows `new` for `user`, not the pin.
    pub async fn mark_key_changed(&self, user: &str, new: &[u8; 32]) -> Result<()> {
        sqlx::query("UPDATE contacts SET changed_key = ? WHERE user_id = ?")
            .bind(new.as_slice())
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// What is recorded of `user`'s key, if it was ever pinned.
    pub async fn contact_state(&self, user: &str) -> Result<Option<ContactState>> {
        let row = sqlx::query(
            "SELECT c.verified, c.changed_key, EXISTS (SELECT 1 FROM contact_codes k \
             WHERE k.user_id = c.user_id AND k.identity_key = c.identity_key) \
             FROM contacts c WHERE c.user_id = ?",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ContactState {
            verified: r.get::<i64, _>(0) != 0,
            key_changed: r.get::<Option<Vec<u8>>, _>(1).is_some(),
            by_code: r.get::<i64, _>(2) != 0,
        }))
    }

    /// `verify --confirm`: `key` becomes the pin, confirmed by the user.
    pub async fn confirm_contact(
        &self,
        user: &str,
        key: &[u8; 32],
        fingerprint: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE contacts SET identity_key = ?, fingerprint = ?, verified = 1, changed_key = NULL WHERE user_id = ?",
        )
        .bind(key.as_slice())
        .bind(fingerprint)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
