//! The sync engine (SPEC §4.5): grants from the GMS, items from the inbox,
//! RN1 rotations, removals, the outbox and key erasure.

use crate::contacts::Trust;
use crate::error::{Error, Result};
use crate::membership::Intent;
use crate::store::GroupState;
use crate::store::StoredGrant;
use crate::terminal::Terminal;
use duokey_crypto::rn1_delivery::{open_rn1, seal_rn1};
use duokey_crypto::*;
use duokey_proto::{
    AckItemsRequest, GetGrantRequest, GetGrantsRequest, Grant, GrantCause, ItemsRequest, Member,
    Removal, RemovalCause, ReportMemberRequest, SendItemRequest, SendItemsRequest,
};

/// Most items one `SendItems` call carries (the CS's limit).
const ITEMS_PER_BATCH: usize = 1000;

/// Bytes of items per `SendItems` call: well under the CS's request limit
/// (its largest envelope plus 1 KiB, 257 KiB by default), whatever the
/// length of the user ids inside the items.
const SEND_ITEMS_BYTES: usize = 192 * 1024;

/// Splits members' items (all of a member's items together) into batches of
/// at most `max_items` items and `max_bytes` bytes; a member whose items
/// alone exceed a limit gets a batch of its own.
fn batches(
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

pub(crate) fn gid16(b: &[u8]) -> Result<[u8; 16]> {
    b.try_into().map_err(|_| Error::Corrupt("group id"))
}

fn cause_notice(g: &Grant) -> Option<String> {
    let s = &g.subject;
    match GrantCause::try_from(g.cause).ok()? {
        GrantCause::Created => Some(format!("{s} created the group")),
        GrantCause::MemberAdded => Some(format!("{s} joined")),
        GrantCause::MemberRemoved => Some(format!("{s} was removed")),
        GrantCause::MemberLeft => Some(format!("{s} left")),
        GrantCause::Periodic | GrantCause::Forced => Some(format!(
            "key rotated (epoch {}/{})",
            g.rn1_version, g.rn2_version
        )),
        GrantCause::PolicyChanged => Some(format!("{s} changed the group's policy")),
        GrantCause::Unspecified => None,
    }
}

/// Whether the GMS's refusal of a grant is its definitive answer (this
/// terminal has no right to that version: before it joined, after it left,
/// or beyond what exists), not a transient failure to retry.
fn definitive(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::NotFound | tonic::Code::PermissionDenied | tonic::Code::OutOfRange
    )
}

impl Terminal {
    /// One full sync (SPEC §8: every command first syncs): grants, inbox,
    /// pending RN1 duties, the outbox, then key erasure.
    pub async fn sync(&mut self) -> Result<()> {
        self.renew_if_due().await?;
        self.sync_revocations().await?;
        self.sync_grants().await?;
        self.sync_items().await?;
        self.retry_pending_items().await?;
        self.replace_missing_rn1().await?;
        self.finish_invitations().await?;
        self.flush_outbox().await?;
        self.erase_expired().await
    }

    /// Fetches the current grants of all groups (SPEC §4.5) and the groups lost.
    pub async fn sync_grants(&mut self) -> Result<()> {
        let resp = self
            .gms
            .get_grants(GetGrantsRequest { group_ids: vec![] })
            .await
            .map_err(Error::server("fetching grants"))?
            .into_inner();
        let current: Vec<Vec<u8>> = resp.grants.iter().map(|g| g.group_id.clone()).collect();
        for g in resp.grants {
            self.apply_grant(g).await?;
        }
        let lost: Vec<Vec<u8>> = self
            .store
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.state == GroupState::Active && !current.contains(&g.group_id.to_vec()))
            .map(|g| g.group_id.to_vec())
            .collect();
        if !lost.is_empty() {
            let resp = self
                .gms
                .get_grants(GetGrantsRequest { group_ids: lost })
                .await
                .map_err(Error::server("fetching grants"))?
                .into_inner();
            for r in resp.removals {
                self.apply_removal(&r).await?;
            }
        }
        Ok(())
    }

    /// Applies a grant from the GMS (a sync, `Watch`, or an answer): stores it,
    /// moves the group forward — never back: an older grant replayed by a
    /// dishonest GMS does not roll the group's epoch back (SPEC §7.6) —,
    /// writes its notice once, and does this terminal's RN1 duty if it is the
    /// grant's `rn1_rotator`.
    pub async fn apply_grant(&mut self, g: Grant) -> Result<()> {
        let gid = gid16(&g.group_id)?;
        self.fetch_missed_grants(&gid, g.rn2_version).await?;
        let version = g.rn2_version;
        // SPEC §4.7: a grant whose membership no member signed is refused and
        // kept out of use; the group stays at its last verified epoch.
        let g = match self.verify_grant(&gid, g).await {
            Ok(g) => g,
            Err(Error::Refused(reason)) => return self.refuse_grant(&gid, version, &reason).await,
            Err(e) => return Err(e),
        };
        let g = self.whole_grant(&gid, g).await?;
        let rn2 = Rn2::from_slice(&g.rn2).map_err(|_| Error::Corrupt("grant RN2"))?;
        let policy = g.policy.unwrap_or_default();
        let stored = StoredGrant {
            rn2_version: g.rn2_version,
            rn1_version: g.rn1_version,
            rn2_sealed: self.vault.seal("rn2", rn2.expose_secret())?,
            members: g
                .members
                .iter()
                .map(|m| (m.user_id.clone(), u8::try_from(m.rights).unwrap_or(0)))
                .collect(),
            issued_at_ms: g.issued_at_ms,
            rn1_rotator: g.rn1_rotator.clone(),
            cause: g.cause,
            subject: g.subject.clone(),
            grace_secs: policy.grace_secs,
            retention_secs: policy.retention_secs,
        };
        let is_new = self.store.put_grant(&gid, &stored).await?;
        // A verified grant ends a refusal's hold on sending.
        let since = format!("refused_since:{}", hex::encode(gid));
        if is_new && self.store.meta_u64(&since).await? != 0 {
            self.store.set_meta(&since, b"").await?;
        }
        self.store
            .upsert_group(&gid, &g.group_name, g.rn2_version, g.rn1_version)
            .await?;
        if is_new {
            self.keylog.rn2(&GroupId(gid), g.rn2_version, &rn2);
            if let Some(text) = cause_notice(&g) {
                self.store.notice(&gid, &text, g.issued_at_ms).await?;
            }
        }
        // The rotator is the one the verified history names (SPEC §4.7),
        // never the GMS's `rn1_rotator` field.
        if let Some((seq, head)) = self.my_rotation(&gid, &g).await? {
            self.rn1_duty(&gid, &stored, seq, head).await?;
        }
        Ok(())
    }

    /// Tells the user, once per version, that a grant was refused.
    async fn refuse_grant(&mut self, gid: &[u8; 16], version: u64, reason: &str) -> Result<()> {
        let key = format!("refused_grant:{}:{version}", hex::encode(gid));
        let since = format!("refused_since:{}", hex::encode(gid));
        if self.store.meta_u64(&since).await? == 0 {
            self.store.set_meta_u64(&since, crate::now_ms()).await?;
        }
        if self.store.meta(&key).await?.is_none() {
            let text = format!(
                "⚠ refused group key version {version}: {reason}. This terminal keeps the last \
                 verified key: it sends with it only within the grace window, then holds your messages \
                 until the group server sends a valid change"
            );
            self.store.notice(gid, &text, crate::now_ms()).await?;
            self.warn(text);
            self.store.set_meta(&key, b"1").await?;
        }
        Ok(())
    }

    /// SPEC §4.7: after a refused grant, the last verified epoch is used for
    /// sending only within its grace window; then sends queue until a valid
    /// grant arrives.
    pub(crate) async fn held_by_refusal(&self, gid: &[u8; 16]) -> Result<bool> {
        let since = format!("refused_since:{}", hex::encode(gid));
        let at = self.store.meta_u64(&since).await?;
        if at == 0 {
            return Ok(false);
        }
        let grace_ms = match self.store.group(gid).await? {
            Some(g) => self
                .store
                .grant(gid, g.rn2_version)
                .await?
                .map_or(0, |c| c.grace_secs.saturating_mul(1000)),
            None => 0,
        };
        Ok(crate::now_ms() > at.saturating_add(grace_ms))
    }

    /// (seq, head) of the change that made `g`'s RN1 version, if this
    /// terminal is its rotator in the verified state and `g` is the grant
    /// that applied it.
    async fn my_rotation(&mut self, gid: &[u8; 16], g: &Grant) -> Result<Option<(u64, [u8; 32])>> {
        let Some(state) = self.membership(gid).await? else {
            return Ok(None);
        };
        let Some(rotation) = state
            .rn1_rotations
            .iter()
            .find(|r| r.rn1_version == g.rn1_version && r.rotator == self.me)
        else {
            return Ok(None);
        };
        if self.store.first_grant_of_rn1(gid, g.rn1_version).await? != Some(g.rn2_version) {
            return Ok(None);
        }
        let seq = rotation.seq;
        Ok(self.membership_at(gid, seq).await?.map(|at| (seq, at.head)))
    }

    /// A grant pushed without its member list (D27) made whole: the previous
    /// version's list with the grant's change applied, or, if this terminal
    /// does not hold the previous version (it just joined), fetched whole.
    async fn whole_grant(&mut self, gid: &[u8; 16], mut g: Grant) -> Result<Grant> {
        if !g.members_omitted {
            return Ok(g);
        }
        let prev = match g.rn2_version.checked_sub(1) {
            Some(v) => self.store.grant(gid, v).await?,
            None => None,
        };
        let Some(prev) = prev else {
            let whole = self
                .gms
                .get_grant(GetGrantRequest {
                    group_id: gid.to_vec(),
                    rn2_version: g.rn2_version,
                })
                .await
                .map_err(Error::server("fetching a grant"))?
                .into_inner();
            if whole.members_omitted {
                return Err(Error::refused(
                    "the GMS sent a grant without its member list",
                ));
            }
            return Ok(whole);
        };
        let mut members = prev.members;
        match GrantCause::try_from(g.cause) {
            Ok(GrantCause::MemberAdded) => {
                members.retain(|(u, _)| u != &g.subject);
                members.push((
                    g.subject.clone(),
                    u8::try_from(g.subject_rights).unwrap_or(0),
                ));
                members.sort();
            }
            Ok(GrantCause::MemberRemoved | GrantCause::MemberLeft) => {
                members.retain(|(u, _)| u != &g.subject)
            }
            _ => {}
        }
        g.members = members
            .into_iter()
            .map(|(user_id, rights)| Member {
                user_id,
                rights: rights.into(),
            })
            .collect();
        g.members_omitted = false;
        Ok(g)
    }

    /// A terminal that was offline through several versions fetches the ones
    /// it missed (it was a member at each), for their notices and keys.
    async fn fetch_missed_grants(&mut self, gid: &[u8; 16], upto: u64) -> Result<()> {
        let Some(cur) = self.store.group(gid).await? else {
            return Ok(());
        };
        if cur.state != GroupState::Active || cur.rn2_version == 0 {
            return Ok(());
        }
        let from = cur.rn2_version + 1;
        for v in from..upto.min(from + 1000) {
            if self.store.grant(gid, v).await?.is_some() {
                continue;
            }
            let answer = self
                .gms
                .get_grant(GetGrantRequest {
                    group_id: gid.to_vec(),
                    rn2_version: v,
                })
                .await;
            match answer {
                Ok(resp) => Box::pin(self.apply_grant(resp.into_inner())).await?,
                // A definitive answer: this terminal has no right to it.
                Err(s) if definitive(&s) => {}
                // Anything else is retried at the next sync.
                Err(s) => return Err(Error::from_status("fetching a missed group key", &s)),
            }
        }
        Ok(())
    }

    /// Fetches a past grant this terminal is entitled to (SPEC §4.5).
    /// `Ok(None)` only when the GMS says this terminal has no right to it
    /// (not a member then, or erased after retention); a GMS that cannot
    /// answer now is an error, and a grant it answers that this terminal
    /// refuses is "not yet" (`Error::Pending`): neither may make a message
    /// count as unreadable for good.
    pub(crate) async fn fetch_grant(
        &mut self,
        gid: &[u8; 16],
        rn2_version: u64,
    ) -> Result<Option<StoredGrant>> {
        if let Some(g) = self.store.grant(gid, rn2_version).await? {
            return Ok(Some(g));
        }
        let answer = self
            .gms
            .get_grant(GetGrantRequest {
                group_id: gid.to_vec(),
                rn2_version,
            })
            .await;
        match answer {
            Ok(resp) => {
                self.apply_grant(resp.into_inner()).await?;
                match self.store.grant(gid, rn2_version).await? {
                    Some(g) => Ok(Some(g)),
                    None => Err(Error::Pending(format!(
                        "the group key of version {rn2_version} was refused; waiting for a valid one"
                    ))),
                }
            }
            Err(s) if definitive(&s) => Ok(None),
            Err(s) => Err(Error::from_status("fetching a group key", &s)),
        }
    }

    async fn apply_removal(&mut self, r: &Removal) -> Result<()> {
        let gid = gid16(&r.group_id)?;
        let (state, text) = match RemovalCause::try_from(r.cause).unwrap_or(RemovalCause::Removed) {
            RemovalCause::Left => (GroupState::Left, "you left the group".to_owned()),
            RemovalCause::Deleted => (
                GroupState::Deleted,
                format!("the group was deleted by {}", r.by),
            ),
            _ => (GroupState::Removed, format!("you were removed by {}", r.by)),
        };
        if self
            .store
            .group(&gid)
            .await?
            .is_some_and(|g| g.state == GroupState::Active)
        {
            // What was said while this terminal was a member stays its own.
            self.last_fetch(&gid).await?;
            self.store
                .end_membership(&gid, state, &text, crate::now_ms())
                .await?;
        }
        Ok(())
    }

    /// The R1 of `rn1_version` at `rn2_version`, if this terminal holds it.
    pub(crate) async fn r1_at(
        &self,
        gid: &[u8; 16],
        rn1_version: u32,
        rn2_version: u64,
    ) -> Result<Option<R1>> {
        let Some((at, sealed)) = self.store.r1(gid, rn1_version).await? else {
            return Ok(None);
        };
        let r1 = R1::from_bytes(*self.vault.open32("r1", &sealed)?, at);
        Ok(r1.ratchet_to(rn2_version).ok())
    }

    pub(crate) async fn put_r1(&self, gid: &[u8; 16], rn1_version: u32, r1: &R1) -> Result<()> {
        self.keylog.r1(&GroupId(*gid), rn1_version, r1);
        self.store
            .put_r1(
                gid,
                rn1_version,
                r1.rn2_version(),
                &self.vault.seal("r1", r1.expose_secret())?,
            )
            .await
    }

    /// SPEC §4.3 step 4: as the rotator, make RN1' (once, durably) and send it
    /// to every other member sealed to its delivery key.
    async fn rn1_duty(
        &mut self,
        gid: &[u8; 16],
        g: &StoredGrant,
        seq: u64,
        head: [u8; 32],
    ) -> Result<()> {
        if self.store.r1(gid, g.rn1_version).await?.is_none() {
            let rn1 = Rn1::random()?;
            self.put_r1(gid, g.rn1_version, &R1::from_rn1(&rn1, g.rn2_version))
                .await?;
        }
        let Some(r1) = self.r1_at(gid, g.rn1_version, g.rn2_version).await? else {
            return Ok(());
        };
        if r1.rn2_version() != g.rn2_version {
            return Ok(());
        }
        let sent = self.store.rn1_sent(gid, g.rn1_version).await?;
        // Every member's anchor and rn1 item, then sent in batches of one
        // durable write each (`SendItems`); a member whose key cannot be
        // sealed to yet is retried at the next sync.
        let mut ready: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let to_send: Vec<UserId> = g
            .members
            .iter()
            .filter(|(u, _)| u != self.me.as_str() && !sent.contains(u))
            .filter_map(|(u, _)| UserId::new(u.clone()).ok())
            .collect();
        self.prefetch_delivery_keys(&to_send).await?;
        let state = self.membership(gid).await?;
        for (user, _) in &g.members {
            if user == self.me.as_str() || sent.contains(user) {
                continue;
            }
            let to = UserId::new(user.clone())?;
            // SPEC §4.7: RN1 goes only to the key the group's history
            // records for the member. A pin changed since (`verify
            // --confirm` of a new certificate) does not speak for the group:
            // the member must be removed and added again (or sign a `rekey`).
            let recorded = state.as_ref().and_then(|s| s.key_of(&to)).copied();
            if let Some(recorded) = recorded
                && self.contact_key(&to).await? != recorded
            {
                self.warn(format!(
                    "the new group key was not sent to {user}: the key this terminal now trusts for {user} \
                     is not the one the group's history records; remove and invite {user} again"
                ));
                continue;
            }
            let anchor = ItemBody::Anchor {
                group_id: GroupId(*gid),
                membership_seq: seq,
                head,
                at_rn2_version: g.rn2_version,
            };
            let items = match self.rn1_item(gid, &to, g.rn1_version, &r1, None).await {
                Ok((id, body)) => vec![
                    self.signed_item(ItemId::random()?, &to, anchor)?,
                    self.signed_item(id, &to, body)?,
                ],
                Err(e) => {
                    self.warn(format!(
                        "could not send the new group key to {user} yet: {e}"
                    ));
                    continue;
                }
            };
            ready.push((user.clone(), items));
        }
        for range in batches(&ready, ITEMS_PER_BATCH, SEND_ITEMS_BYTES) {
            let batch = &ready[range];
            let items: Vec<Vec<u8>> = batch.iter().flat_map(|(_, i)| i.clone()).collect();
            match self
                .cs
                .send_items(SendItemsRequest { items })
                .await
                .map_err(Error::server("sending the new group key"))
            {
                Ok(_) => {
                    let users = batch.iter().map(|(u, _)| u.as_str());
                    self.store.mark_rn1_sent(gid, g.rn1_version, users).await?;
                }
                Err(e) => self.warn(format!(
                    "could not send the new group key to {} member(s) yet: {e}",
                    batch.len()
                )),
            }
        }
        Ok(())
    }

    /// Sends an `rn1` item: to an invitation's fresh key (`invite`), or to
    /// the recipient's published delivery key.
    pub(crate) async fn send_rn1(
        &mut self,
        gid: &[u8; 16],
        to: &UserId,
        rn1_version: u32,
        r1: &R1,
        invite: Option<(ItemId, DeliveryPublic)>,
    ) -> Result<()> {
        let (item_id, body) = self.rn1_item(gid, to, rn1_version, r1, invite).await?;
        self.send_item(item_id, to, body).await
    }

    /// An `rn1` item's id and body: R1 sealed to an invitation's fresh key
    /// (`invite`) or to the recipient's published delivery key.
    async fn rn1_item(
        &mut self,
        gid: &[u8; 16],
        to: &UserId,
        rn1_version: u32,
        r1: &R1,
        invite: Option<(ItemId, DeliveryPublic)>,
    ) -> Result<(ItemId, ItemBody)> {
        // PROTOCOL §2.4: no RN1 to a certificate the organisation revoked.
        self.check_not_revoked(to).await?;
        let item_id = ItemId::random()?;
        let (ref_id, key) = match invite {
            Some((id, k)) => (id, k),
            None => (item_id, self.delivery_key(to).await?),
        };
        let g = GroupId(*gid);
        let ctx = Rn1Context {
            group_id: &g,
            sender: &self.me,
            recipient: to,
            ref_id: &ref_id,
        };
        let (enc, ct) = seal_rn1(&key, &ctx, rn1_version, r1)?;
        let body = ItemBody::Rn1(Rn1Payload {
            ref_id,
            group_id: g,
            rn1_version,
            at_rn2_version: r1.rn2_version(),
            enc,
            ct,
        });
        Ok((item_id, body))
    }

    /// An item from this terminal, signed.
    fn signed_item(&self, item_id: ItemId, to: &UserId, body: ItemBody) -> Result<Vec<u8>> {
        let item = Item {
            item_id,
            sender: self.me.clone(),
            recipient: to.clone(),
            created_at_ms: crate::now_ms(),
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
        let id = *item.item_id.as_bytes();
        if self.store.seen(&id).await? {
            return Ok(());
        }
        let result = self.apply_item(&item, &sender).await;
        match &result {
            Err(e) if e.kind() == crate::ErrorKind::Network => {}
            Err(Error::Pending(_)) => {
                self.store.put_pending(&id, bytes, crate::now_ms()).await?;
                return Ok(());
            }
            _ => {
                self.store.first_sight(&id, crate::now_ms()).await?;
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
        let (sender, id) = (signed.item.sender.clone(), *signed.item.item_id.as_bytes());
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
        self.store.put_pending(&id, bytes, crate::now_ms()).await
    }

    /// Retries the items kept because what they depend on had not arrived;
    /// after `rn1_wait` without it, the user is told and the item dropped
    /// (SPEC §4.7: a change the GMS does not produce within `rn1_wait`).
    pub(crate) async fn retry_pending_items(&mut self) -> Result<()> {
        for (bytes, since) in self.store.pending().await? {
            let Ok(signed) = SignedItem::parse(&bytes) else {
                continue;
            };
            let id = *signed.item.item_id.as_bytes();
            let gid = signed.item.body.group_id().0;
            match self.process_item(&bytes).await {
                Err(e) if e.kind() == crate::ErrorKind::Network => return Err(e),
                Ok(()) if self.store.seen(&id).await? => self.store.drop_pending(&id).await?,
                // Kept until the user confirms the sender's new key.
                Ok(()) if self.trust(signed.item.sender.as_str()).await? == Trust::KeyChanged => {}
                Ok(()) => {
                    let wait_ms = self
                        .membership(&gid)
                        .await?
                        .map_or(120_000, |s| s.policy.rn1_wait_secs.saturating_mul(1000));
                    if crate::now_ms() > since.saturating_add(wait_ms) {
                        let text = format!(
                            "⚠ a new group key from {} waited {} s for the membership change it belongs to, \
                             which the group server has not shown this terminal; it may be withholding it or \
                             showing members different histories. Compare `duokey group verify` codes",
                            signed.item.sender,
                            wait_ms / 1000
                        );
                        self.store.notice(&gid, &text, crate::now_ms()).await?;
                        self.warn(text);
                        self.store.first_sight(&id, crate::now_ms()).await?;
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
                    rights: rights.bits(),
                };
                self.store.put_invite_in(&invite).await?;
            }
            ItemBody::Ack {
                invite_id,
                group_id,
                invite_pub,
            } => {
                self.on_ack(&sender, invite_id, group_id, *invite_pub)
                    .await?
            }
            ItemBody::Decline {
                invite_id,
                group_id,
            } => {
                self.store
                    .invite_out_declined(&invite_id.0, sender.as_str())
                    .await?;
                self.store
                    .notice(
                        &group_id.0,
                        &format!("{sender} declined the invitation"),
                        crate::now_ms(),
                    )
                    .await?;
            }
            ItemBody::Rn1(p) => self.on_rn1(item, p).await?,
            ItemBody::Removal { .. } => self.sync_grants().await?,
            ItemBody::Stale {
                group_id,
                current_rn2_version,
            } => {
                // SPEC §4.5: our RN2 was stale; re-fetch. Messages sent with the
                // old key after the grace window were dropped by the others.
                self.sync_grants().await?;
                let text = format!(
                    "{sender} told this terminal its group key was outdated (now at version {current_rn2_version}); \
                     it has caught up — messages you sent just before may not have been read, send them again"
                );
                self.store
                    .notice(&group_id.0, &text, crate::now_ms())
                    .await?;
            }
            ItemBody::Anchor {
                group_id,
                membership_seq,
                head,
                at_rn2_version,
            } => {
                self.on_anchor(&sender, &group_id.0, *membership_seq, head, *at_rn2_version)
                    .await?
            }
        }
        Ok(())
    }

    /// SPEC §4.2 steps 3–4 and 6, on the inviter's side.
    async fn on_ack(
        &mut self,
        invitee: &UserId,
        invite_id: &ItemId,
        gid: &GroupId,
        invite_pub: DeliveryPublic,
    ) -> Result<()> {
        let sent = self
            .store
            .invite_out(&invite_id.0, invitee.as_str())
            .await?
            .ok_or_else(|| {
                Error::refused(format!(
                    "{invitee} acknowledged an invitation we did not send"
                ))
            })?;
        if sent.group_id != gid.0 || sent.state != crate::store::InviteOutState::Sent {
            return Ok(());
        }
        // Report first, then hand over R1 at exactly the version that adds the
        // invitee (docs/DESIGN.md D18): the invitee never holds the R1 of an
        // epoch before it joined, so even a dishonest GMS handing it old RN2s
        // cannot open earlier messages (SPEC §7.4). The state is recorded
        // between the two steps, so an interrupted hand-over resumes at the
        // next sync instead of stranding the new member.
        // The add names the key that signed the ack (SPEC §4.7).
        let key = self.contact_key(invitee).await?;
        let (grant, seq, head) = match self
            .reported_before(&gid.0, invitee, &key, invite_id)
            .await?
        {
            Some(reported) => reported,
            None => {
                let intent = Intent::Add {
                    subject: invitee.clone(),
                    rights: Rights::from_bits(sent.rights)?,
                    key,
                };
                let (grant, change) = self.submit(&gid.0, intent, invite_id).await?;
                let grant = grant.ok_or(Error::Internal("add without a grant"))?;
                (grant, change.change().seq, change.hash())
            }
        };
        crate::failpoint("invite-reported");
        self.store.put_anchor_out(&invite_id.0, seq, &head).await?;
        self.store
            .invite_out_reported(
                &invite_id.0,
                grant.rn1_version,
                grant.rn2_version,
                &invite_pub.0,
            )
            .await?;
        self.apply_grant(grant).await?;
        crate::failpoint("invite-recorded");
        self.finish_invitations().await
    }

    /// An invitation the GMS already applied although this terminal did not
    /// record it (the process stopped between the GMS's answer and the
    /// record): the verified history holds the invitee's add with the key
    /// that signed the ack, so the add is not signed again (it would be
    /// refused as "already a member" and the invitee stranded). The GMS
    /// answers a known `report_id` with the grant it produced (§5.3); the
    /// add's seq and hash come from this terminal's verified chain.
    async fn reported_before(
        &mut self,
        gid: &[u8; 16],
        invitee: &UserId,
        key: &PublicIdentity,
        invite_id: &ItemId,
    ) -> Result<Option<(Grant, u64, [u8; 32])>> {
        let added = self
            .membership(gid)
            .await?
            .is_some_and(|s| s.key_of(invitee) == Some(key));
        if !added {
            return Ok(None);
        }
        let grant = self
            .gms
            .report_member(ReportMemberRequest {
                group_id: gid.to_vec(),
                report_id: invite_id.0.to_vec(),
                change: Vec::new(),
            })
            .await
            .map_err(Error::server("resuming an invitation"))?
            .into_inner();
        let seq = grant.membership_seq;
        let at = self.membership_at(gid, seq).await?;
        let before = self.membership_at(gid, seq.saturating_sub(1)).await?;
        let is_the_add = at.as_ref().is_some_and(|s| s.key_of(invitee) == Some(key))
            && before.is_some_and(|s| !s.members.contains_key(invitee));
        match (at, is_the_add) {
            (Some(at), true) => Ok(Some((grant, seq, at.head))),
            _ => Err(Error::refused(format!(
                "the group server's answer for {invitee}'s invitation does not name the add in the verified history"
            ))),
        }
    }

    /// Sends R1 to every invitee that was added but has not received it yet.
    pub(crate) async fn finish_invitations(&mut self) -> Result<()> {
        for h in self.store.hand_overs().await? {
            let invite_id = ItemId::from_slice(&h.invite_id)?;
            let gid = gid16(&h.group_id)?;
            let invitee = UserId::new(h.invitee)?;
            let (rn1_version, w) = (h.rn1_version, h.join_version);
            let key = DeliveryPublic(
                h.invite_pub
                    .try_into()
                    .map_err(|_| Error::Corrupt("invite key"))?,
            );
            // SPEC §4.2 step 5: only while the invitee is still a member of
            // the verified state, and with the anchor naming the add.
            let still_member = self
                .membership(&gid)
                .await?
                .is_some_and(|s| s.members.contains_key(&invitee));
            let anchor = self.store.anchor_out(&invite_id.0).await?;
            let (Some((seq, head)), true) = (anchor, still_member) else {
                self.store.invite_out_done(&invite_id.0).await?;
                continue;
            };
            let Some(r1) = self.r1_at(&gid, rn1_version, w).await? else {
                self.warn(format!(
                    "{invitee} was added, but the group's new RN1 has not reached this terminal yet"
                ));
                continue;
            };
            let anchor = ItemBody::Anchor {
                group_id: GroupId(gid),
                membership_seq: seq,
                head,
                at_rn2_version: w,
            };
            let sent = match self.send_item(ItemId::random()?, &invitee, anchor).await {
                Ok(()) => {
                    self.send_rn1(&gid, &invitee, rn1_version, &r1, Some((invite_id, key)))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                self.warn(format!(
                    "could not hand the group key to {invitee} yet (retried at the next sync): {e}"
                ));
                continue;
            }
            self.store.invite_out_done(&invite_id.0).await?;
        }
        Ok(())
    }

    /// An `rn1` item: from an inviter (sealed to our invitation key) or from a
    /// rotator (sealed to our delivery key).
    async fn on_rn1(&mut self, item: &Item, p: &Rn1Payload) -> Result<()> {
        let row = self
            .store
            .accepted_invite_secret(&p.ref_id.0, item.sender.as_str())
            .await?;
        let secret = match row {
            Some(sealed) => Some(DeliverySecret::from_bytes(
                &*self.vault.open32("invite", &sealed)?,
            )?),
            None if p.ref_id == item.item_id => None,
            None => return Err(Error::refused("an rn1 item matches no accepted invitation")),
        };
        if secret.is_some() {
            self.check_invitation_anchor(item, p).await?;
        } else {
            self.check_rotation(item, p).await?;
        }
        let me = self.me.clone();
        let ctx = Rn1Context {
            group_id: &p.group_id,
            sender: &item.sender,
            recipient: &me,
            ref_id: &p.ref_id,
        };
        let gid = p.group_id.0;
        let r1 = match &secret {
            Some(key) => open_rn1(key, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct)?,
            // The current delivery key, or one replaced recently;
            // read again if none opens it (another process on this profile
            // may have replaced the key).
            None => {
                let open = |t: &Terminal| {
                    t.delivery_secrets().find_map(|k| {
                        open_rn1(k, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct).ok()
                    })
                };
                match open(self) {
                    Some(r1) => r1,
                    None => {
                        self.reload_delivery_secrets().await?;
                        match open(self) {
                            Some(r1) => r1,
                            None => open_rn1(
                                &self.delivery,
                                &ctx,
                                p.rn1_version,
                                p.at_rn2_version,
                                &p.enc,
                                &p.ct,
                            )?,
                        }
                    }
                }
            }
        };
        // SPEC §4.7: an R1 is never replaced.
        if self.store.r1(&gid, p.rn1_version).await?.is_none() {
            self.put_r1(&gid, p.rn1_version, &r1).await?;
        }
        if secret.is_some() {
            self.store.joined_invite_in(&p.ref_id.0).await?;
        }
        Ok(())
    }

    /// SPEC §4.7 "Who gets R1", rotation: only from the rotator the verified
    /// history names for that RN1 version, at the grant that applied its
    /// change, and only if this terminal holds no R1 of that version.
    async fn check_rotation(&mut self, item: &Item, p: &Rn1Payload) -> Result<()> {
        let gid = p.group_id.0;
        let mut state = self.membership(&gid).await?.ok_or_else(|| {
            Error::refused(
                "an RN1 rotation for a group whose membership this terminal has not verified",
            )
        })?;
        if p.rn1_version > state.rn1_version {
            self.sync_grants().await?;
            state = self.membership(&gid).await?.unwrap_or(state);
        }
        let first = self.store.first_grant_of_rn1(&gid, p.rn1_version).await?;
        if p.rn1_version > state.rn1_version || first.is_none() {
            // Not yet: the change or the grant that makes this RN1 version
            // has not reached this terminal. Kept and retried.
            return Err(Error::Pending(format!(
                "an RN1 rotation to version {} waits for its membership change",
                p.rn1_version
            )));
        }
        if state.rotator(p.rn1_version) != Some(&item.sender) {
            return Err(Error::refused(format!(
                "an RN1 rotation from {}, who is not the rotator the group's signed history names for RN1 version {}",
                item.sender, p.rn1_version
            )));
        }
        if first != Some(p.at_rn2_version) {
            return Err(Error::refused(format!(
                "an RN1 rotation at RN2 version {}, not at the grant that applied its change",
                p.at_rn2_version
            )));
        }
        if self.store.r1(&gid, p.rn1_version).await?.is_some() {
            return Err(Error::refused(format!(
                "a second RN1 for version {} (an R1 is never replaced)",
                p.rn1_version
            )));
        }
        if self.store.r1_erased(&gid, p.rn1_version).await? {
            return Err(Error::refused(format!(
                "an RN1 for version {}, whose R1 this terminal erased after its grace window",
                p.rn1_version
            )));
        }
        Ok(())
    }

    /// SPEC §4.7 "Who gets R1", invitation: the inviter's anchor names its
    /// signed `add` of this terminal, with this terminal's key, the rights
    /// and name of the invitation, at the R1's version; the chain from
    /// `create` must end at the anchor's head. The chain is then adopted.
    async fn check_invitation_anchor(&mut self, item: &Item, p: &Rn1Payload) -> Result<()> {
        let gid = p.group_id.0;
        let (seq, head, at) = self
            .store
            .anchor_in(&gid, item.sender.as_str())
            .await?
            .ok_or_else(|| Error::refused("an invitation's RN1 without its inviter's anchor"))?;
        if at != p.at_rn2_version {
            return Err(Error::refused(
                "the inviter's anchor and RN1 name different versions",
            ));
        }
        let (name, rights) = self
            .store
            .invite_in_offer(&p.ref_id.0, item.sender.as_str())
            .await?;
        let (chain, state) = self.verify_chain_to(&gid, seq, &head).await?;
        let Some(add) = chain.last() else {
            return Err(Error::refused("the inviter's anchor names no change"));
        };
        let c = add.change();
        let ok = c.action == membership::Action::Add
            && c.actor == item.sender
            && c.subject == self.me
            && state.key_of(&self.me) == Some(&self.identity.public())
            && c.rights.bits() == rights
            && state.name.as_str() == name
            && state.rn1_version == p.rn1_version;
        if !ok {
            return Err(Error::refused(
                "the inviter's anchor does not name its signed add of this terminal as invited",
            ));
        }
        let known = self.membership(&gid).await?.map_or(0, |s| s.seq);
        if state.seq > known {
            self.adopt_all(&gid, &chain, state).await?;
        }
        // Changes made since the add (the GMS may have applied more before
        // this item arrived) are verified as any other.
        self.catch_up_membership(&gid, None, &[]).await?;
        Ok(())
    }

    /// An anchor: kept for the invitation it accompanies, and compared with
    /// this terminal's own history (SPEC §4.7 "Equivocation").
    async fn on_anchor(
        &mut self,
        sender: &UserId,
        gid: &[u8; 16],
        seq: u64,
        head: &[u8; 32],
        at_rn2_version: u64,
    ) -> Result<()> {
        self.store
            .put_anchor_in(gid, sender.as_str(), seq, head, at_rn2_version)
            .await?;
        self.check_anchor(gid, sender.as_str(), seq, head).await
    }

    /// SPEC §4.7 "Equivocation": an anchor naming another head than the
    /// change this terminal verified at that seq is kept as evidence, the
    /// user is told once, and the group stops sending. An anchor ahead of
    /// this terminal is checked when the chain reaches it
    /// ([`Terminal::recheck_anchors`]).
    async fn check_anchor(
        &mut self,
        gid: &[u8; 16],
        sender: &str,
        seq: u64,
        head: &[u8; 32],
    ) -> Result<()> {
        let Some(bytes) = self.store.change_at(gid, seq).await? else {
            return Ok(());
        };
        let mine = membership::SignedChange::parse(&bytes)?.hash();
        if &mine == head
            || !self
                .store
                .put_fork(gid, sender, seq, head, &mine, crate::now_ms())
                .await?
        {
            return Ok(());
        }
        let text = format!(
            "⚠ the group server is showing members different membership histories: {sender}'s change {seq} \
             is not the one this terminal verified. Sending in this group is stopped; compare \
             `duokey group verify` codes out of band"
        );
        self.store.notice(gid, &text, crate::now_ms()).await?;
        self.warn(text);
        Ok(())
    }

    /// Checks every member's latest anchor against the chain as it stands
    /// now (after it moved forward).
    pub(crate) async fn recheck_anchors(&mut self, gid: &[u8; 16]) -> Result<()> {
        for (sender, seq, head) in self.store.anchors_in(gid).await? {
            self.check_anchor(gid, &sender, seq, &head).await?;
        }
        Ok(())
    }

    /// Key erasure (SPEC §4.5, §7.5): grants older than the retention are
    /// deleted and every R1 is moved forward to the oldest epoch still kept,
    /// so older epochs cannot be derived from this terminal's state.
    pub async fn erase_expired(&mut self) -> Result<()> {
        self.erase_expired_at(crate::now_ms()).await
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

    /// SPEC §4.7: erases the R1 of every RN1 version superseded for longer
    /// than its grace window — once this terminal has read the group's log
    /// past the window's end in the CS's own time, the time the receiving
    /// rules judge envelopes by (SPEC §4.5), so that nothing it may still
    /// accept needs it. A quiet group keeps it until retention erases it.
    async fn erase_superseded_r1s(&mut self, gid: &[u8; 16], now: u64) -> Result<()> {
        let read = self
            .store
            .meta_u64(&crate::messages::read_upto_key(gid))
            .await?;
        for (v, at, grace) in self.store.superseded_r1s(gid).await? {
            if read > at.saturating_add(grace.saturating_mul(1000)) {
                self.store.erase_r1(gid, v, now).await?;
            }
        }
        Ok(())
    }

    /// Moves every stored R1 forward to the oldest grant still kept.
    pub(crate) async fn advance_r1_to_oldest(&mut self, gid: &[u8; 16]) -> Result<()> {
        let Some(oldest) = self.store.oldest_grant(gid).await? else {
            return Ok(());
        };
        let Some(og) = self.store.grant(gid, oldest).await? else {
            return Ok(());
        };
        for (v1, at) in self.store.r1_versions(gid).await? {
            if v1 < og.rn1_version {
                self.store.drop_r1(gid, v1).await?;
            } else if v1 == og.rn1_version
                && at < oldest
                && let Some(r1) = self.r1_at(gid, v1, oldest).await?
            {
                self.put_r1(gid, v1, &r1).await?;
            }
        }
        Ok(())
    }

    /// Sends queued messages whose group key is now complete.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        for q in self.store.queued().await? {
            let gid = gid16(&q.group_id)?;
            let Some(g) = self.store.group(&gid).await? else {
                continue;
            };
            if g.state != GroupState::Active
                || self.store.r1(&gid, g.rn1_version).await?.is_none()
                || self.held_by_refusal(&gid).await?
                || self.store.forked(&gid).await?
            {
                continue;
            }
            let text = String::from_utf8(self.vault.open("outbox", &q.sealed)?.to_vec())
                .map_err(|_| Error::Corrupt("outbox"))?;
            self.post_now(&gid, &text).await?;
            self.store.sent(q.id).await?;
        }
        Ok(())
    }
}

impl Terminal {
    /// Every R1 this terminal holds for a group, with its RN1 version: all of
    /// its RN1 key material, as a thief of the device would find it (used by
    /// the demo and the security tests to attack for real).
    pub async fn held_r1s(&self, gid: &[u8; 16]) -> Result<Vec<(u32, R1)>> {
        let mut out = Vec::new();
        for (v, _) in self.store.r1_versions(gid).await? {
            if let Some((at, sealed)) = self.store.r1(gid, v).await? {
                out.push((v, R1::from_bytes(*self.vault.open32("r1", &sealed)?, at)));
            }
        }
        Ok(out)
    }

    /// Every R1 of `gid` this terminal's user could take from `items` (inbox
    /// items as the CS keeps them, whether processed or not): each `rn1`
    /// item addressed to it opened with its delivery key, with no check of
    /// sender or version — what an attacker's program holding this profile
    /// would get (used by the demo and the security tests, with
    /// [`Terminal::held_r1s`], to attack for real).
    pub fn r1s_in(&self, gid: &[u8; 16], items: &[Vec<u8>]) -> Vec<(u32, R1)> {
        items
            .iter()
            .filter_map(|bytes| SignedItem::parse(bytes).ok())
            .filter_map(|s| {
                let ItemBody::Rn1(p) = &s.item.body else {
                    return None;
                };
                let ctx = Rn1Context {
                    group_id: &p.group_id,
                    sender: &s.item.sender,
                    recipient: &s.item.recipient,
                    ref_id: &p.ref_id,
                };
                let r1 = self.delivery_secrets().find_map(|k| {
                    open_rn1(k, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct).ok()
                });
                (p.group_id.0 == *gid)
                    .then_some(r1.map(|r1| (p.rn1_version, r1)))
                    .flatten()
            })
            .collect()
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
