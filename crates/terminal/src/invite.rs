//! Invitations, both sides of SPEC §4.2: the inviter's `invite`, the
//! invitee's `ack`, the inviter's hand-over of RN1 (with the member-signed
//! addition of §4.7), and the invitee's checks of the membership anchor.

use crate::Terminal;
use crate::error::{Error, Result};
use crate::group::gid16;
use crate::membership::Intent;
use crate::store::{GroupState, InviteOutState};
use duokey_crypto::membership;
use duokey_crypto::*;
use duokey_crypto::{DeliverySecret, PublicIdentity, UserId};
use duokey_proto::{Grant, ReportMemberRequest};

/// A pending invitation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invitation {
    /// The invitation; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub invite_id: ItemId,
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
    /// Group name.
    pub group_name: String,
    /// Inviter.
    pub from: String,
    /// Rights offered.
    #[serde(serialize_with = "crate::group::as_text")]
    pub rights: Rights,
    /// It was sent with a code (`accept --code`).
    pub needs_code: bool,
}

/// An invitation this terminal sent (`duokey invites --sent`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentInvitation {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
    /// The group's name here.
    pub group_name: String,
    /// The invitee.
    pub to: String,
    /// Rights offered.
    #[serde(serialize_with = "crate::group::as_text")]
    pub rights: Rights,
    /// Where it stands; in JSON in words ([`InviteOutState::words`]).
    #[serde(serialize_with = "state_words")]
    pub state: InviteOutState,
}

fn state_words<S: serde::Serializer>(
    s: &InviteOutState,
    to: S,
) -> std::result::Result<S::Ok, S::Error> {
    to.serialize_str(s.words())
}

impl Terminal {
    /// `duokey group invite GROUP USER [--can-invite] [--can-remove]` (SPEC §4.2 step 1).
    pub async fn invite(&mut self, gid: &GroupId, user: &UserId, rights: Rights) -> Result<ItemId> {
        let name = self.check_invite(gid, user, rights).await?;
        // One waiting invitation per person and group: the same offer again
        // is the one already sent (the CS keeps it for them); a different
        // one replaces it (their terminal keeps only the newest).
        if let Some((id, offered)) = self.store.waiting_invite_to(gid, user.as_str()).await? {
            if offered == rights {
                return Ok(id);
            }
            self.store.cancel_invites_to(gid, user.as_str()).await?;
        }
        let invite_id = ItemId::random()?;
        let body = ItemBody::Invite {
            group_id: *gid,
            group_name: name,
            rights,
        };
        self.store
            .put_invite_out(&invite_id, gid, user.as_str(), rights)
            .await?;
        self.send_item(invite_id, user, body).await?;
        Ok(invite_id)
    }

    /// SPEC §4.2 step 1 and §4.7: this terminal may invite `user` with
    /// `rights` to `gid` (it holds the invite right and every right it
    /// offers; `user` is not a member, and has a certified key). The
    /// group's name.
    pub(crate) async fn check_invite(
        &mut self,
        gid: &GroupId,
        user: &UserId,
        rights: Rights,
    ) -> Result<GroupName> {
        let (g, mine) = self.my_rights(gid).await?;
        if !mine.contains(Rights::INVITE) {
            return Err(Error::refused(format!(
                "you lack the invite right in group {}",
                g.name
            )));
        }
        if !mine.contains(rights) {
            return Err(Error::refused(format!(
                "you can grant only rights you hold ({mine}) in group {}",
                g.name
            )));
        }
        if self
            .members(gid)
            .await?
            .iter()
            .any(|m| m.user == user.as_str())
        {
            return Err(Error::refused(format!(
                "{user} is already a member of {}",
                g.name
            )));
        }
        self.contact_key(user).await?;
        Ok(GroupName::new(g.name)?)
    }

    /// `duokey group uninvite GROUP USER`: cancels the invitations to
    /// `user` still waiting for an answer; an acceptance arriving later is
    /// ignored (the invitee is not added). How many were cancelled.
    pub async fn uninvite(&self, gid: &GroupId, user: &UserId) -> Result<u64> {
        let n = self.store.cancel_invites_to(gid, user.as_str()).await?;
        if n == 0 {
            return Err(Error::not_found(format!(
                "no invitation to {user} is waiting for an answer; `duokey invites --sent` lists yours"
            )));
        }
        Ok(n)
    }

    /// `duokey invites --sent`: the invitations this terminal sent, newest
    /// first, with where each stands.
    pub async fn sent_invitations(&self) -> Result<Vec<SentInvitation>> {
        let names: std::collections::HashMap<GroupId, String> = self
            .store
            .groups()
            .await?
            .into_iter()
            .map(|g| (g.group_id, g.name))
            .collect();
        let mut out = Vec::new();
        for (gid, to, rights, state) in self.store.sent_invites().await? {
            let group_id = gid16(&gid)?;
            out.push(SentInvitation {
                group_name: names.get(&group_id).cloned().unwrap_or_default(),
                group_id,
                to,
                rights,
                state,
            });
        }
        Ok(out)
    }

    /// `duokey invites`: invitations waiting for an answer.
    pub async fn invitations(&self) -> Result<Vec<Invitation>> {
        let mut out = Vec::new();
        for i in self.store.pending_invites().await? {
            let invite_id = ItemId::from_slice(&i.invite_id)?;
            out.push(Invitation {
                needs_code: self.needs_code(&invite_id).await?,
                invite_id,
                group_id: gid16(&i.group_id)?,
                group_name: i.group_name,
                from: i.from,
                rights: i.rights,
            });
        }
        Ok(out)
    }

    pub(crate) async fn find_invitation(&self, spec: &str) -> Result<(ItemId, GroupId, UserId)> {
        let lower = spec.to_lowercase();
        let hits: Vec<Invitation> = self
            .invitations()
            .await?
            .into_iter()
            .filter(|i| {
                i.invite_id.to_hex().starts_with(&lower)
                    || i.group_id.to_hex().starts_with(&lower)
                    || i.group_name == spec
            })
            .collect();
        match hits.as_slice() {
            [one] => Ok((one.invite_id, one.group_id, UserId::new(one.from.clone())?)),
            [] => Err(Error::not_found(format!(
                "no pending invitation matches {spec:?}; `duokey invites` lists them"
            ))),
            _ => Err(Error::user(format!(
                "{spec:?} matches several invitations; use the invite id"
            ))),
        }
    }

    /// `duokey accept INVITE_ID|GROUP` (SPEC §4.2 step 2).
    pub async fn accept(&mut self, spec: &str) -> Result<String> {
        let (invite_id, gid, from) = self.find_invitation(spec).await?;
        if self.needs_code(&invite_id).await? {
            return Err(Error::user(format!(
                "{from}'s invitation needs the code they gave you: `duokey accept {spec} --code CODE`"
            )));
        }
        let secret = DeliverySecret::generate();
        let sealed = self.vault.seal("invite", secret.to_bytes().as_slice())?;
        self.store.accept_invite_in(&invite_id, &sealed).await?;
        let body = ItemBody::Ack {
            invite_id,
            group_id: gid,
            invite_pub: secret.public(),
        };
        self.send_item(ItemId::random()?, &from, body).await?;
        Ok(from.to_string())
    }

    /// `duokey decline INVITE_ID|GROUP`.
    pub async fn decline(&mut self, spec: &str) -> Result<()> {
        let (invite_id, gid, from) = self.find_invitation(spec).await?;
        self.store.decline_invite_in(&invite_id).await?;
        self.send_item(
            ItemId::random()?,
            &from,
            ItemBody::Decline {
                invite_id,
                group_id: gid,
            },
        )
        .await
    }

    /// SPEC §4.2 steps 3–4 and 6, on the inviter's side.
    pub(crate) async fn on_ack(
        &mut self,
        invitee: &UserId,
        invite_id: &ItemId,
        gid: &GroupId,
        invite_pub: DeliveryPublic,
    ) -> Result<()> {
        let sent = self
            .store
            .invite_out(invite_id, invitee.as_str())
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
        let (grant, seq, head) = match self.reported_before(gid, invitee, &key, invite_id).await? {
            Some(reported) => reported,
            None => {
                let intent = Intent::Add {
                    subject: invitee.clone(),
                    rights: sent.rights,
                    key,
                };
                let (grant, change) = self.submit(gid, intent, invite_id).await?;
                let grant = grant.ok_or(Error::Internal("add without a grant"))?;
                (grant, change.change().seq, change.hash())
            }
        };
        crate::failpoint("invite-reported");
        self.store.put_anchor_out(invite_id, seq, &head).await?;
        self.store
            .invite_out_reported(
                invite_id,
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
        gid: &GroupId,
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
            let anchor = self.store.anchor_out(&invite_id).await?;
            let (Some((seq, head)), true) = (anchor, still_member) else {
                self.store.invite_out_done(&invite_id).await?;
                continue;
            };
            let Some(r1) = self.r1_at(&gid, rn1_version, w).await? else {
                self.warn(format!(
                    "{invitee} was added, but the group's new RN1 has not reached this terminal yet"
                ));
                continue;
            };
            let anchor = ItemBody::Anchor {
                group_id: gid,
                membership_seq: seq,
                head,
                at_rn2_version: w,
            };
            let anchor_id = ItemId::random()?;
            let sent = async {
                self.send_item(anchor_id, &invitee, anchor).await?;
                let invitation = Some((invite_id, key));
                let (id, rn1) = self
                    .rn1_item(&gid, &invitee, rn1_version, &r1, invitation)
                    .await?;
                self.send_item(id, &invitee, rn1).await
            };
            if let Err(e) = sent.await {
                self.warn(format!(
                    "could not hand the group key to {invitee} yet (retried at the next sync): {e}"
                ));
                continue;
            }
            self.store.invite_out_done(&invite_id).await?;
        }
        Ok(())
    }

    /// SPEC §4.7 "Who gets R1", invitation: the inviter's anchor names its
    /// signed `add` of this terminal, with this terminal's key, the rights
    /// and name of the invitation, at the R1's version; the chain from
    /// `create` must end at the anchor's head. The chain is then adopted.
    pub(crate) async fn check_invitation_anchor(
        &mut self,
        item: &Item,
        p: &Rn1Payload,
    ) -> Result<()> {
        let gid = p.group_id;
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
            .invite_in_offer(&p.ref_id, item.sender.as_str())
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
            && c.rights == rights
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
        // The version that added this terminal, now verified: the versions
        // from it on are this terminal's to read (SPEC §4.5).
        self.store.set_meta_u64(&joined_key(&gid), at).await?;
        if let Err(e) = self.fetch_since_joining(&gid).await {
            tracing::warn!(error = %e, "the versions since joining are fetched later");
        }
        Ok(())
    }

    /// An anchor: kept for the invitation it accompanies, and compared with
    /// this terminal's own history (SPEC §4.7 "Equivocation").
    pub(crate) async fn on_anchor(
        &mut self,
        sender: &UserId,
        gid: &GroupId,
        seq: u64,
        head: &[u8; 32],
        at_rn2_version: u64,
    ) -> Result<()> {
        self.store
            .put_anchor_in(gid, sender.as_str(), seq, head, at_rn2_version)
            .await?;
        self.check_anchor(gid, sender.as_str(), seq, head).await
    }

    /// A newcomer's first grant may come several versions after the one
    /// that added it; the versions in between carry notices (who joined or
    /// left, who owns the group now) and keys. Once the inviter's anchor is
    /// verified (it names the signed add of this terminal), those it lacks
    /// are fetched and verified against the adopted history (SPEC §4.5).
    async fn fetch_since_joining(&mut self, gid: &GroupId) -> Result<()> {
        let joined = self.joined_at(gid).await?;
        let Some(cur) = self.store.group(gid).await? else {
            return Ok(());
        };
        if joined == 0
            || cur.state != GroupState::Active
            || cur.rn2_version == 0
            || joined >= cur.rn2_version
        {
            return Ok(());
        }
        self.fetch_grant_range(gid, joined, cur.rn2_version).await
    }

    /// The version whose grant added this terminal to `gid`, from its
    /// inviter's verified anchor; 0 if not known (yet).
    pub(crate) async fn joined_at(&self, gid: &GroupId) -> Result<u64> {
        self.store.meta_u64(&joined_key(gid)).await
    }

    /// SPEC §4.7 "Equivocation": an anchor naming another head than the
    /// change this terminal verified at that seq is kept as evidence, the
    /// user is told once, and the group stops sending. An anchor ahead of
    /// this terminal is checked when the chain reaches it
    /// ([`Terminal::recheck_anchors`]).
    async fn check_anchor(
        &mut self,
        gid: &GroupId,
        sender: &str,
        seq: u64,
        head: &[u8; 32],
    ) -> Result<()> {
        let Some(bytes) = self.store.change_at(gid, seq).await? else {
            return Ok(());
        };
        // Only a member's word counts: anyone enrolled can sign an anchor,
        // and a false one would stop this group's sending.
        let Ok(member) = UserId::new(sender) else {
            return Ok(());
        };
        if let Some(state) = self.membership(gid).await?
            && !state.members.contains_key(&member)
        {
            return Ok(());
        }
        let mine = membership::SignedChange::parse(&bytes)?.hash();
        if &mine == head
            || !self
                .store
                .put_fork(gid, sender, seq, head, &mine, self.now_ms())
                .await?
        {
            return Ok(());
        }
        let text = format!(
            "⚠ the group server is showing members different membership histories: {sender}'s change {seq} \
             is not the one this terminal verified. Sending in this group is stopped; compare \
             `duokey group verify` codes out of band"
        );
        self.store.notice(gid, &text, self.now_ms()).await?;
        self.warn(text);
        Ok(())
    }

    /// Checks every member's latest anchor against the chain as it stands
    /// now (after it moved forward).
    pub(crate) async fn recheck_anchors(&mut self, gid: &GroupId) -> Result<()> {
        for (sender, seq, head) in self.store.anchors_in(gid).await? {
            self.check_anchor(gid, &sender, seq, &head).await?;
        }
        Ok(())
    }
}

/// Where the version that added this terminal to a group is kept.
fn joined_key(gid: &GroupId) -> String {
    format!("joined_at:{}", hex::encode(gid))
}
