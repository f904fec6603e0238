//! The `rn1_wait` fallback (SPEC §4.3 step 4): when the member who must send
//! a group's new RN1 does not, another member makes one. Who acts and when is
//! the pure rule [`duokey_crypto::membership::State::rn1_fallback_at`]; this
//! module applies it and tells the user why messages wait.
//!
//! Around it, the rest of RN1's life on a terminal (SPEC §4.2, §4.3): the
//! R1s held (sealed in the store), the rotator's duty to make and send a
//! new RN1, receiving one and checking its rotation, and erasing R1s
//! once superseded.

use crate::ErrorKind;
use crate::error::{Error, Result};
use crate::inbox::{ITEMS_PER_BATCH, SEND_ITEMS_BYTES, batches};
use crate::membership::Intent;
use crate::store::GroupState;
use crate::store::StoredGrant;
use crate::terminal::Terminal;
use duokey_crypto::ids::UserId;
use duokey_crypto::rn1_delivery::{open_rn1, seal_rn1};
use duokey_crypto::*;
use duokey_proto::SendItemsRequest;

/// Who a group's missing RN1 is awaited from, and when this terminal makes
/// a new one itself if it has not arrived.
struct MissingRn1 {
    rn1_version: u32,
    rotator: UserId,
    /// `None` when this terminal is not one of the members who act (it
    /// joined after the rotation: its inviter's hand-over brings the key).
    fallback_at_ms: Option<u64>,
}

impl Terminal {
    /// Why a message queued for a key waits, in words for the user, or
    /// `None` if the group's current RN1 is here.
    pub async fn key_wait(&mut self, gid: &GroupId) -> Result<Option<String>> {
        let Some(missing) = self.missing_rn1(gid).await? else {
            return Ok(None);
        };
        let from = &missing.rotator;
        Ok(Some(match missing.fallback_at_ms {
            Some(at) => {
                let secs = at.saturating_sub(self.now_ms()).div_ceil(1000);
                format!(
                    "the group's new key from {from} has not arrived yet; if it has not in {secs} s, \
                     this terminal makes a new one at its next sync"
                )
            }
            None => format!(
                "the group's key has not arrived yet (it comes from {from} or from whoever invited you)"
            ),
        }))
    }

    /// SPEC §4.3 step 4: every group whose current RN1 has not arrived by
    /// the time the verified history names for this terminal gets a new one
    /// from it (a signed `rotate_rn1`); the user is told. A transient fault
    /// stops the sync (retried later); a refusal is reported and skipped.
    pub(crate) async fn replace_missing_rn1(&mut self) -> Result<()> {
        for g in self.store.groups().await? {
            if g.state != GroupState::Active || self.store.forked(&g.group_id).await? {
                continue;
            }
            let Some(missing) = self.missing_rn1(&g.group_id).await? else {
                continue;
            };
            let due = missing.fallback_at_ms.is_some_and(|at| self.now_ms() >= at);
            if due && missing.rn1_version == g.rn1_version {
                self.replace_rn1(&g.group_id, &g.name, &missing).await?;
            }
        }
        Ok(())
    }

    async fn replace_rn1(&mut self, gid: &GroupId, name: &str, missing: &MissingRn1) -> Result<()> {
        let intent = Intent::ReplaceMissingRn1(missing.rn1_version);
        match self.submit(gid, intent, &ItemId::random()?).await {
            Ok((Some(grant), _)) => {
                let wait = self
                    .membership(gid)
                    .await?
                    .map_or(0, |s| s.policy.rn1_wait_secs);
                let text = format!(
                    "{}'s new group key did not arrive within {wait} s; this terminal made a new one \
                     and sends it to the members",
                    missing.rotator
                );
                self.store.notice(gid, &text, self.now_ms()).await?;
                self.warn(format!("{name}: {text}"));
                self.apply_grant(grant).await
            }
            Ok((None, _)) => Err(Error::Internal("rotation without a grant")),
            Err(Error::Superseded) => self.sync_grants().await,
            Err(e) if e.kind() == ErrorKind::Network => Err(e),
            Err(e) => {
                self.warn(format!(
                    "{name}: could not replace the missing group key: {e}"
                ));
                Ok(())
            }
        }
    }

    /// The group's current RN1, if this terminal does not hold it.
    async fn missing_rn1(&mut self, gid: &GroupId) -> Result<Option<MissingRn1>> {
        let Some(state) = self.membership(gid).await? else {
            return Ok(None);
        };
        if self.store.r1(gid, state.rn1_version).await?.is_some() {
            return Ok(None);
        }
        let Some(rotation) = state.rn1_rotations.last().cloned() else {
            return Ok(None);
        };
        let before = self
            .membership_at(gid, rotation.seq.saturating_sub(1))
            .await?;
        let fallback_at_ms = before.and_then(|b| state.rn1_fallback_at(&self.me, &b));
        Ok(Some(MissingRn1 {
            rn1_version: state.rn1_version,
            rotator: rotation.rotator,
            fallback_at_ms,
        }))
    }
}

impl Terminal {
    /// The R1 of `rn1_version` at `rn2_version`, if this terminal holds it.
    pub(crate) async fn r1_at(
        &self,
        gid: &GroupId,
        rn1_version: u32,
        rn2_version: u64,
    ) -> Result<Option<R1>> {
        let Some((at, sealed)) = self.store.r1(gid, rn1_version).await? else {
            return Ok(None);
        };
        let r1 = R1::from_bytes(*self.vault.open32("r1", &sealed)?, at);
        Ok(r1.ratchet_to(rn2_version).ok())
    }

    pub(crate) async fn put_r1(&self, gid: &GroupId, rn1_version: u32, r1: &R1) -> Result<()> {
        self.keylog.r1(gid, rn1_version, r1);
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
    /// to every other member sealed to its delivery key, with the anchor of
    /// the signed change it follows (`seq`, `head`).
    pub(crate) async fn rn1_duty(
        &mut self,
        gid: &GroupId,
        g: &StoredGrant,
        seq: u64,
        head: [u8; 32],
    ) -> Result<()> {
        let Some(r1) = self.own_r1(gid, g).await? else {
            return Ok(());
        };
        let sent = self.store.rn1_sent(gid, g.rn1_version).await?;
        let to_send = rn1_recipients(&g.members, &self.me, &sent);
        self.prefetch_delivery_keys(&to_send).await?;
        let state = self.membership(gid).await?;
        let anchor = ItemBody::Anchor {
            group_id: *gid,
            membership_seq: seq,
            head,
            at_rn2_version: g.rn2_version,
        };
        // Every member's anchor and rn1 item, then sent in batches of one
        // durable write each (`SendItems`); a member whose key cannot be
        // sealed to yet is retried at the next sync.
        let mut ready: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for to in to_send {
            let recorded = state.as_ref().and_then(|s| s.key_of(&to)).copied();
            if let Some(items) = self
                .rn1_items_for(gid, g.rn1_version, &to, recorded, &r1, &anchor)
                .await?
            {
                ready.push((to.to_string(), items));
            }
        }
        self.send_rn1_batches(gid, g.rn1_version, &ready).await
    }

    /// The R1 this rotator sends for `g`'s RN1 version, made once and kept
    /// durably before anything is sent; `None` if what it holds is not the
    /// R1 of `g`'s version (superseded meanwhile).
    async fn own_r1(&mut self, gid: &GroupId, g: &StoredGrant) -> Result<Option<R1>> {
        // An erased version stays erased (SPEC §4.3 step 1): a grant of it
        // fetched again later makes no new key for it.
        if self.store.r1_erased(gid, g.rn1_version).await? {
            return Ok(None);
        }
        if self.store.r1(gid, g.rn1_version).await?.is_none() {
            let rn1 = Rn1::random()?;
            self.put_r1(gid, g.rn1_version, &R1::from_rn1(&rn1, g.rn2_version))
                .await?;
        }
        let r1 = self.r1_at(gid, g.rn1_version, g.rn2_version).await?;
        Ok(r1.filter(|r1| r1.rn2_version() == g.rn2_version))
    }

    /// One member's anchor and `rn1` item, signed, or `None` (and a warning)
    /// when they cannot be sent to it now.
    async fn rn1_items_for(
        &mut self,
        gid: &GroupId,
        rn1_version: u32,
        to: &UserId,
        recorded: Option<PublicIdentity>,
        r1: &R1,
        anchor: &ItemBody,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        // SPEC §4.7: RN1 goes only to the key the group's history records
        // for the member. A pin changed since (`verify --confirm` of a new
        // certificate) does not speak for the group: the member must be
        // removed and added again (or sign a `rekey`).
        if let Some(recorded) = recorded
            && self.contact_key(to).await? != recorded
        {
            self.warn(format!(
                "the new group key was not sent to {to}: the key this terminal now trusts for {to} \
                 is not the one the group's history records; remove and invite {to} again"
            ));
            return Ok(None);
        }
        match self.rn1_item(gid, to, rn1_version, r1, None).await {
            Ok((id, body)) => Ok(Some(vec![
                self.signed_item(ItemId::random()?, to, anchor.clone())?,
                self.signed_item(id, to, body)?,
            ])),
            Err(e) => {
                self.warn(format!("could not send the new group key to {to} yet: {e}"));
                Ok(None)
            }
        }
    }

    /// Sends members' items in bounded batches, recording who got RN1 of
    /// `rn1_version` batch by batch; a batch that fails is retried later.
    async fn send_rn1_batches(
        &mut self,
        gid: &GroupId,
        rn1_version: u32,
        ready: &[(String, Vec<Vec<u8>>)],
    ) -> Result<()> {
        for range in batches(ready, ITEMS_PER_BATCH, SEND_ITEMS_BYTES) {
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
                    self.store.mark_rn1_sent(gid, rn1_version, users).await?;
                }
                Err(e) => self.warn(format!(
                    "could not send the new group key to {} member(s) yet: {e}",
                    batch.len()
                )),
            }
        }
        Ok(())
    }

    /// An `rn1` item's id and body: R1 sealed to an invitation's fresh key
    /// (`invite`) or to the recipient's published delivery key.
    pub(crate) async fn rn1_item(
        &mut self,
        gid: &GroupId,
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
        let g = *gid;
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

    /// An `rn1` item: from an inviter (sealed to our invitation key) or from a
    /// rotator (sealed to our delivery key).
    pub(crate) async fn on_rn1(&mut self, item: &Item, p: &Rn1Payload) -> Result<()> {
        // A code invitation's RN1 waits for the inviter's confirmation.
        self.code_confirmed_for(&p.ref_id).await?;
        let row = self
            .store
            .accepted_invite_secret(&p.ref_id, item.sender.as_str())
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
        let gid = p.group_id;
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
            self.store.joined_invite_in(&p.ref_id).await?;
        }
        Ok(())
    }

    /// SPEC §4.7 "Who gets R1", rotation: only from the rotator the verified
    /// history names for that RN1 version, at the grant that applied its
    /// change, and only if this terminal holds no R1 of that version.
    async fn check_rotation(&mut self, item: &Item, p: &Rn1Payload) -> Result<()> {
        let gid = p.group_id;
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

    /// SPEC §4.7: erases the R1 of every RN1 version superseded for longer
    /// than its grace window — once this terminal has read the group's log
    /// past the window's end in the CS's own time, the time the receiving
    /// rules judge envelopes by (SPEC §4.5), so that nothing it may still
    /// accept needs it. A quiet group keeps it until retention erases it.
    pub(crate) async fn erase_superseded_r1s(&mut self, gid: &GroupId, now: u64) -> Result<()> {
        let read = self
            .store
            .meta_u64(&crate::history::read_upto_key(gid))
            .await?;
        for (v, at, grace) in self.store.superseded_r1s(gid).await? {
            if read > at.saturating_add(grace.saturating_mul(1000)) {
                self.store.erase_r1(gid, v, now).await?;
            }
        }
        Ok(())
    }

    /// Moves every stored R1 forward to the oldest grant still kept.
    pub(crate) async fn advance_r1_to_oldest(&mut self, gid: &GroupId) -> Result<()> {
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

    /// Every R1 this terminal holds for a group, with its RN1 version: all of
    /// its RN1 key material, as a thief of the device would find it (used by
    /// the demo and the security tests to attack for real).
    pub async fn held_r1s(&self, gid: &GroupId) -> Result<Vec<(u32, R1)>> {
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
    pub fn r1s_in(&self, gid: &GroupId, items: &[Vec<u8>]) -> Vec<(u32, R1)> {
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
                (p.group_id == *gid)
                    .then_some(r1.map(|r1| (p.rn1_version, r1)))
                    .flatten()
            })
            .collect()
    }
}

/// Whom the rotator still owes RN1 of a version (SPEC §4.3 step 4): every
/// member of the grant but itself and those it already sent it to.
fn rn1_recipients(members: &[(String, Rights)], me: &UserId, sent: &[String]) -> Vec<UserId> {
    members
        .iter()
        .filter(|(u, _)| u != me.as_str() && !sent.contains(u))
        .filter_map(|(u, _)| UserId::new(u.clone()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rn1_is_owed_to_every_other_member_not_yet_served() {
        let members: Vec<(String, Rights)> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|u| ((*u).to_owned(), Rights::NONE))
            .collect();
        let me = UserId::new("alice").unwrap();
        let owed = rn1_recipients(&members, &me, &["carol".to_owned()]);
        let names: Vec<&str> = owed.iter().map(UserId::as_str).collect();
        assert_eq!(names, ["bob", "dave"]);
        assert!(rn1_recipients(&members[..1], &me, &[]).is_empty());
    }
}
