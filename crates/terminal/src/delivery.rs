//! This terminal's own delivery key (SPEC §2, §4.3 step 4; D38): the X25519 key rotation `rn1` items are sealed to. It is replaced
//! every [`DELIVERY_KEY_ROTATE_MS`]; the previous secret is kept
//! [`DELIVERY_KEY_KEEP_MS`] for items contacts sealed to it before they saw
//! the new one (they reuse a checked key for a day, D29), then erased. So a
//! thief who copies the profile, even with every `rn1` item the CS ever
//! stored, opens none sealed to a key erased before the theft.

use crate::{ErrorKind, Result, Terminal};
use duokey_crypto::{DeliveryKeyRecord, DeliverySecret};
use duokey_proto::PublishDeliveryKeyRequest;

/// How often the delivery key is replaced (7 days).
pub const DELIVERY_KEY_ROTATE_MS: u64 = 7 * 86_400_000;
/// How long a replaced delivery secret is kept before it is erased (7 days:
/// well beyond the day contacts reuse a checked key).
pub const DELIVERY_KEY_KEEP_MS: u64 = 7 * 86_400_000;

impl Terminal {
    /// Publishes the current delivery key in the CS directory, signed, with
    /// the time it was made.
    pub(crate) async fn publish_delivery_key(&mut self) -> Result<()> {
        let created = match self.store.meta_u64(crate::store::DELIVERY_CREATED).await? {
            0 => self.now_ms(),
            t => t,
        };
        let record = DeliveryKeyRecord {
            user: self.me.clone(),
            key: self.delivery.public(),
            created_at_ms: created,
        };
        let bytes = record.sign(&self.identity)?;
        self.cs
            .publish_delivery_key(PublishDeliveryKeyRequest { record: bytes })
            .await
            .map_err(crate::Error::server("publishing the delivery key"))?;
        self.store.set_meta("dk_published", b"1").await
    }

    /// The secrets an `rn1` item to this terminal may be sealed to: the
    /// current one first, then the retired ones still kept.
    pub(crate) fn delivery_secrets(&self) -> impl Iterator<Item = &DeliverySecret> {
        std::iter::once(&self.delivery).chain(&self.retired)
    }

    /// Reads the delivery secrets again from the profile: another process
    /// on the same profile may have replaced the key since this one opened.
    pub(crate) async fn reload_delivery_secrets(&mut self) -> Result<()> {
        let current = self.store.meta_req("delivery").await?;
        self.delivery = DeliverySecret::from_bytes(&*self.vault.open32("delivery", &current)?)?;
        self.retired = open_retired(&self.vault, &self.store.retired_delivery().await?)?;
        Ok(())
    }

    /// At a sync, as if the time were `now`: replaces the delivery key once
    /// it is [`DELIVERY_KEY_ROTATE_MS`] old (a profile that never recorded
    /// when its key was made replaces it at once), publishes it, and erases
    /// retired secrets kept [`DELIVERY_KEY_KEEP_MS`] — only once the new key
    /// is published, so the key the directory shows can always be opened.
    /// The secrets are replaced in one transaction before the new key is
    /// published: a crash in between leaves a key to publish at the next
    /// sync, never a published key without its secret.
    pub(crate) async fn rotate_delivery_key(&mut self, now: u64) -> Result<()> {
        let created = self.store.meta_u64(crate::store::DELIVERY_CREATED).await?;
        if now.saturating_sub(created) >= DELIVERY_KEY_ROTATE_MS {
            let next = DeliverySecret::generate();
            let sealed = self.vault.seal("delivery", next.to_bytes().as_slice())?;
            let old = self.store.meta_req("delivery").await?;
            self.store
                .retire_delivery(&self.delivery.public().0, &old, &sealed, now)
                .await?;
            let old = std::mem::replace(&mut self.delivery, next);
            self.retired.insert(0, old);
        }
        if self.store.meta("dk_published").await?.is_none() {
            match self.publish_delivery_key().await {
                Err(e) if e.kind() == ErrorKind::Network => return Ok(()),
                other => other?,
            }
        }
        let keep_from = now.saturating_sub(DELIVERY_KEY_KEEP_MS);
        if self.store.erase_retired_delivery(keep_from).await? > 0 {
            self.retired = open_retired(&self.vault, &self.store.retired_delivery().await?)?;
        }
        Ok(())
    }
}

/// The retired delivery secrets, opened from their sealed form.
pub(crate) fn open_retired(
    vault: &crate::vault::Vault,
    sealed: &[Vec<u8>],
) -> Result<Vec<DeliverySecret>> {
    let mut out = Vec::with_capacity(sealed.len());
    for s in sealed {
        out.push(DeliverySecret::from_bytes(&*vault.open32("delivery", s)?)?);
    }
    Ok(out)
}
