//! The inbox (SPEC §4): signed items sent to members and received from
//! them, in bounded batches, each processed once; items that cannot be
//! processed yet are kept and retried (nothing lost).

use crate::contacts::Trust;
use crate::error::{Error, Result};
use crate::terminal::Terminal;
use duokey_crypto::*;
use duokey_proto::{AckItemsRequest, ItemsRequest, SendItemRequest};

/// Most items one `SendItems` call carries (the CS's limit).
pub(crate) const ITEMS_PER_BATCH: usize = 1000;

/// Bytes of items per `SendItems` call: well under the CS's request limit
/// (its largest envelope plus 1 KiB, 257 KiB by default), whatever the
/// length of the user ids inside the items.
pub(crate) const SEND_ITEMS_BYTES: usize = 192 * 1024;

/// Splits members' items (all of a member's items together) into batches of
/// at most `max_items` items and `max_bytes` bytes; a member whose items
/// alone exceed a limit gets a batch of its own.
pub(crate) fn batches(
    ready: &[(String, Vec<Vec<u8>>)],
    max_items: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut items, mut bytes) = (0, 0, 0);
    for (i, (_, its)) in ready.iter().enumerate() {
        let (n, b) = (its.len(), its.iter().map(Vec::len).sum::<usize>());
        if i > start && (items + n > max_items || bytes + b > max_bytes) {
            out.push(start..i);
            (start, items, bytes) = (i, 0, 0);
        }
        items += n;
        bytes += b;
    }
    if start < ready.len() {
        out.push(start..ready.len());
    }
    out
}

impl Terminal {
    /// An item from this terminal, signed.
    pub(crate) fn signed_item(
        &self,
        item_id: ItemId,
        to: &UserId,
        body: ItemBody,
    ) -> Result<Vec<u8>> {
        let item = Item {
            item_id,
            sender: self.me.clone(),
            recipient: to.clone(),
            created_at_ms: self.now_ms(),
            body,
        };
        Ok(item.sign(&self.identity)?)
    }

    pub(crate) async fn send_item(
        &mut self,
        item_id: ItemId,
        to: &UserId,
        body: ItemBody,
    ) -> Result<()> {
        let bytes = self.signed_item(item_id, to, body)?;
        self.cs
            .send_item(SendItemRequest { item: bytes })
            .await
            .map_err(Error::server(format!("sending to {to}")))?;
        Ok(())
    }

    /// Processes the inbox (SPEC §4): every item once, then acknowledges.
    pub async fn sync_items(&mut self) -> Result<()> {
        let mut after = 0;
        loop {
            let resp = self
                .cs
                .items(ItemsRequest {
                    after_cursor: after,
                    limit: 500,
                })
                .await
                .map_err(Error::server("fetching the inbox"))?
                .into_inner();
            for it in &resp.items {
                match self.process_item(&it.item).await {
                    Ok(()) => {}
                    // Nothing lost: a transient fault leaves this item (and
                    // those after it) in the inbox for the next sync.
                    Err(e) if e.kind() == crate::ErrorKind::Network => {
                        self.ack_up_to(after).await?;
                        return Err(e);
                    }
                    Err(e) => self.warn(format!("note: an inbox item was dropped: {e}")),
                }
                after = it.cursor;
            }
            self.ack_up_to(after).await?;
            if !resp.more {
                return Ok(());
            }
        }
    }

    async fn ack_up_to(&mut self, cursor: u64) -> Result<()> {
        if cursor > 0 {
            self.cs
                .ack_items(AckItemsRequest {
                    up_to_cursor: cursor,
                })
                .await
                .map_err(Error::server("acknowledging the inbox"))?;
        }
        Ok(())
    }

    /// Verifies and applies one item, once by `item_id`. An item whose
    /// processing failed for a transient reason (a server unreachable) is
    /// not marked seen, so the next sync processes it again; any other
    /// failure drops it for good.
    pub async fn process_item(&mut self, bytes: &[u8]) -> Result<()> {
        let signed = SignedItem::parse(bytes)?;
        let sender = signed.item.sender.clone();
        let key = self.contact_key(&sender).await?;
        let item = match signed.open(&self.me, &key) {
            Ok(item) => item,
            Err(e) => return self.item_under_new_key(bytes, e).await,
        };
        // PROTOCOL §2.4: nothing signed with a key whose certificate was revoked.
        self.check_not_revoked(&sender).await?;
        let id = item.item_id;
        if self.store.seen(&id).await? {
            return Ok(());
        }
        let result = self.apply_item(&item, &sender).await;
        match &result {
            Err(e) if e.kind() == crate::ErrorKind::Network => {}
            Err(Error::Pending(_)) => {
                self.store.put_pending(&id, bytes, self.now_ms()).await?;
                return Ok(());
            }
            _ => {
                self.store.first_sight(&id, self.now_ms()).await?;
            }
        }
        result
    }

    /// An item whose signature fails under its sender's pinned key. If the
    /// directory now holds another key for the sender and the item verifies
    /// with it, the sender was enrolled again (or someone poses as them):
    /// the user is told once to compare safety numbers, and the item is kept
    /// until they confirm the new key, then taken. Otherwise it
    /// is refused.
    async fn item_under_new_key(&mut self, bytes: &[u8], err: duokey_crypto::Error) -> Result<()> {
        let signed = SignedItem::parse(bytes)?;
        let (sender, id) = (signed.item.sender.clone(), signed.item.item_id);
        let (current, _, _, serial) = self.fetch_identity(&sender).await?;
        if current == self.contact_key(&sender).await? || signed.open(&self.me, &current).is_err() {
            return Err(err.into());
        }
        self.check_serial(&sender, &serial).await?;
        let told = self.trust(sender.as_str()).await? == Trust::KeyChanged;
        let warning = self.key_changed(&sender, &current).await?;
        if !told {
            self.warn(warning.to_string());
        }
        self.store.put_pending(&id, bytes, self.now_ms()).await
    }

    /// Retries the items kept because what they depend on had not arrived;
    /// after `rn1_wait` without it, the user is told and the item dropped
    /// (SPEC §4.7: a change the GMS does not produce within `rn1_wait`).
    pub(crate) async fn retry_pending_items(&mut self) -> Result<()> {
        for (bytes, since) in self.store.pending().await? {
            let Ok(signed) = SignedItem::parse(&bytes) else {
                continue;
            };
            let id = signed.item.item_id;
            let gid = signed.item.body.group_id();
            match self.process_item(&bytes).await {
                Err(e) if e.kind() == crate::ErrorKind::Network => return Err(e),
                Ok(()) if self.store.seen(&id).await? => self.store.drop_pending(&id).await?,
                // Kept until the user confirms the sender's new key.
                Ok(()) if self.trust(signed.item.sender.as_str()).await? == Trust::KeyChanged => {}
                Ok(()) => {
                    let wait_ms = self
                        .membership(gid)
                        .await?
                        .map_or(120_000, |s| s.policy.rn1_wait_secs.saturating_mul(1000));
                    if self.now_ms() > since.saturating_add(wait_ms) {
                        let text = format!(
                            "⚠ a new group key from {} waited {} s for the membership change it belongs to, \
                             which the group server has not shown this terminal; it may be withholding it or \
                             showing members different histories. Compare `duokey group verify` codes",
                            signed.item.sender,
                            wait_ms / 1000
                        );
                        self.store.notice(gid, &text, self.now_ms()).await?;
                        self.warn(text);
                        self.store.first_sight(&id, self.now_ms()).await?;
                        self.store.drop_pending(&id).await?;
                    }
                }
                Err(e) => {
                    self.warn(format!("note: an inbox item was dropped: {e}"));
                    self.store.drop_pending(&id).await?;
                }
            }
        }
        Ok(())
    }

    async fn apply_item(&mut self, item: &Item, sender: &UserId) -> Result<()> {
        let sender = sender.clone();
        match &item.body {
            ItemBody::Invite {
                group_id,
                group_name,
                rights,
            } => {
                let invite = crate::store::PendingInvite {
                    invite_id: item.item_id.0.to_vec(),
                    group_id: group_id.0.to_vec(),
                    group_name: group_name.as_str().to_owned(),
                    from: sender.to_string(),
                    rights: *rights,
                };
                self.store.put_invite_in(&invite).await?;
            }
            ItemBody::Ack {
                invite_id,
                group_id,
                invite_pub,
            } => {
                self.on_plain_ack(&sender, invite_id, group_id, *invite_pub)
                    .await?
            }
            ItemBody::Decline {
                invite_id,
                group_id,
            } => {
                let store = &self.store;
                store
                    .invite_out_declined(invite_id, sender.as_str())
                    .await?;
                let text = format!("{sender} declined the invitation");
                store.notice(group_id, &text, self.now_ms()).await?;
            }
            ItemBody::Rn1(p) => self.on_rn1(item, p).await?,
            ItemBody::Removal { .. } => self.sync_grants().await?,
            ItemBody::Stale {
                group_id,
                current_rn2_version,
            } => {
                self.on_stale(&sender, group_id, *current_rn2_version)
                    .await?
            }
            ItemBody::Anchor {
                group_id,
                membership_seq,
                head,
                at_rn2_version,
            } => {
                self.on_anchor(&sender, group_id, *membership_seq, head, *at_rn2_version)
                    .await?
            }
            ItemBody::CodeInvite { .. } => self.on_code_invite(item).await?,
            ItemBody::CodeAck(_) => self.on_code_ack(item).await?,
            ItemBody::CodeConfirm { .. } => self.on_code_confirm(item).await?,
        }
        Ok(())
    }

    /// An `ack`. A code invitation is answered with `code_ack` only: a
    /// plain `ack` would skip the code (PROTOCOL §4.10).
    async fn on_plain_ack(
        &mut self,
        sender: &UserId,
        invite_id: &ItemId,
        group_id: &GroupId,
        invite_pub: DeliveryPublic,
    ) -> Result<()> {
        if self.store.code_out(invite_id).await?.is_none() {
            return self.on_ack(sender, invite_id, group_id, invite_pub).await;
        }
        let text = format!(
            "⚠ {sender} answered your code invitation without the code; nothing was done. \
             If you did not expect this, someone else may be answering in their name"
        );
        self.store.notice(group_id, &text, self.now_ms()).await?;
        self.warn(text);
        Ok(())
    }

    /// A `stale` item (SPEC §4.5): our RN2 was stale; re-fetch. Messages
    /// sent with the old key after the grace window were dropped by the
    /// others, and the user is told so.
    async fn on_stale(&mut self, sender: &UserId, group_id: &GroupId, current: u64) -> Result<()> {
        self.sync_grants().await?;
        let text = format!(
            "{sender} told this terminal its group key was outdated (now at version {current}); \
             it has caught up — messages you sent just before may not have been read, send them again"
        );
        self.store.notice(group_id, &text, self.now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(items: &[usize]) -> (String, Vec<Vec<u8>>) {
        ("m".into(), items.iter().map(|n| vec![0; *n]).collect())
    }

    #[test]
    fn items_are_sent_in_batches_bounded_by_count_and_bytes_keeping_a_member_whole() {
        // 1,000 members with two 300-byte items each (long user ids): by
        // count alone one batch would be 1,000 items of 300 KB, above the
        // CS's request limit.
        let ready: Vec<_> = (0..1000).map(|_| member(&[300, 300])).collect();
        let got = batches(&ready, ITEMS_PER_BATCH, SEND_ITEMS_BYTES);
        assert_eq!(got.first(), Some(&(0..327)), "{got:?}");
        assert_eq!(got.iter().map(|r| r.len()).sum::<usize>(), 1000);
        for r in &got {
            let bytes: usize = ready[r.clone()]
                .iter()
                .flat_map(|(_, i)| i)
                .map(Vec::len)
                .sum();
            assert!(bytes <= SEND_ITEMS_BYTES && r.len() * 2 <= ITEMS_PER_BATCH);
        }
        // Small items: the count decides.
        let small: Vec<_> = (0..1200).map(|_| member(&[10, 10])).collect();
        assert_eq!(
            batches(&small, 1000, SEND_ITEMS_BYTES),
            [0..500, 500..1000, 1000..1200]
        );
        // One member bigger than a batch is sent alone; nothing is dropped.
        let big = [member(&[10]), member(&[500_000]), member(&[10])];
        assert_eq!(batches(&big, 1000, SEND_ITEMS_BYTES), [0..1, 1..2, 2..3]);
        assert!(batches(&[], 1000, SEND_ITEMS_BYTES).is_empty());
    }
}
