//! Invite codes, both sides (PROTOCOL §4.10, DESIGN D50): the
//! inviter's `code_invite` and its check of the invitee's `code_ack`, the
//! invitee's answer with the code the person typed, and the inviter's
//! `code_confirm`. The rest of the invitation (the member-signed add, the
//! anchor, RN1 sealed to `invite_pub`) is the plain invitation's (§4.2).

use crate::Terminal;
use crate::error::{Error, Result};
use duokey_crypto::invite_code::{
    self, CodeContext, CodeKeys, InviteCode, MAX_TRIES, PAKE_MSG_LEN, TAG_LEN,
};
use duokey_crypto::*;

/// How long a code stays usable unless the inviter says (`--code-ttl`).
pub const DEFAULT_CODE_TTL_MS: u64 = 24 * 3600 * 1000;

/// What `duokey group invite --code` shows: the code to tell the invitee.
#[derive(Debug, Clone)]
pub struct CodeInvitation {
    /// The invitation.
    pub invite_id: ItemId,
    /// The one-time code.
    pub code: InviteCode,
    /// When it dies (Unix milliseconds).
    pub expires_at_ms: u64,
}

const SEALED_CODE: &str = "invite code";

/// What identifies one answer to a code invitation (so that the answer that
/// used the code, and only it, may resume after a fault).
fn answer_digest(msg_b: &[u8; PAKE_MSG_LEN], invite_pub: &DeliveryPublic) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(msg_b);
    h.update(invite_pub.0);
    h.finalize().into()
}

impl Terminal {
    /// `duokey group invite GROUP USER --code`: an invitation that only the
    /// holder of the returned code can accept (PROTOCOL §4.10). A waiting
    /// invitation to the same person is replaced.
    pub async fn invite_with_code(
        &mut self,
        gid: &GroupId,
        user: &UserId,
        rights: Rights,
        ttl_ms: u64,
    ) -> Result<CodeInvitation> {
        let name = self.check_invite(gid, user, rights).await?;
        self.store.cancel_invites_to(gid, user.as_str()).await?;
        let invite_id = ItemId::random()?;
        let code = InviteCode::generate()?;
        let seed: [u8; 32] = crate::vault::random()?;
        let ctx = CodeContext {
            invite_id: &invite_id,
            group_id: gid,
            inviter: &self.me,
            invitee: user,
        };
        let msg_a = invite_code::inviter_message(&code, &seed, &ctx)?;
        let expires_at_ms = self.now_ms().saturating_add(ttl_ms);
        let mut secret = zeroize::Zeroizing::new(code.digits().as_bytes().to_vec());
        secret.extend_from_slice(&seed);
        let sealed = self.vault.seal(SEALED_CODE, &secret)?;
        self.store
            .put_code(&invite_id, "out", &sealed, expires_at_ms)
            .await?;
        self.store
            .put_invite_out(&invite_id, gid, user.as_str(), rights)
            .await?;
        let body = ItemBody::CodeInvite {
            group_id: *gid,
            group_name: name,
            rights,
            expires_at_ms,
            msg_a,
        };
        self.send_item(invite_id, user, body).await?;
        Ok(CodeInvitation {
            invite_id,
            code,
            expires_at_ms,
        })
    }

    /// A code invitation arrived: kept as a pending invitation that needs
    /// its code.
    pub(crate) async fn on_code_invite(&mut self, item: &Item) -> Result<()> {
        let ItemBody::CodeInvite {
            group_id,
            group_name,
            rights,
            expires_at_ms,
            msg_a,
        } = &item.body
        else {
            return Err(Error::Internal("not a code invitation"));
        };
        // The key that signed this item (checked by the inbox just now): the
        // inviter's key the transcript binds, whatever the directory says later.
        let signer = self.contact_key(&item.sender).await?;
        let mut kept = msg_a.to_vec();
        kept.extend_from_slice(&signer.to_bytes());
        let sealed = self.vault.seal(SEALED_CODE, &kept)?;
        self.store
            .put_code(&item.item_id, "in", &sealed, *expires_at_ms)
            .await?;
        let invite = crate::store::PendingInvite {
            invite_id: item.item_id.0.to_vec(),
            group_id: group_id.0.to_vec(),
            group_name: group_name.as_str().to_owned(),
            from: item.sender.to_string(),
            rights: *rights,
        };
        self.store.put_invite_in(&invite).await
    }

    /// Whether the pending invitation `invite_id` needs a code.
    pub async fn needs_code(&self, invite_id: &ItemId) -> Result<bool> {
        Ok(self.store.code_in(invite_id).await?.is_some())
    }

    /// `duokey accept GROUP --code CODE`: answers a code invitation with
    /// the code the inviter told this person (PROTOCOL §4.10). A wrong code
    /// is found out by the inviter, who is told; the answer is sent either
    /// way.
    pub async fn accept_with_code(&mut self, spec: &str, code: &InviteCode) -> Result<String> {
        let (invite_id, gid, from) = self.find_invitation(spec).await?;
        let held = self.store.code_in(&invite_id).await?.ok_or_else(|| {
            Error::refused(format!(
                "⚠ the invitation from {from} was sent without a code, but you were given one: it may not come \
                 from {from} (someone able to answer in their name could have replaced theirs). Decline it \
                 (`duokey decline {spec}`) and ask {from}, out of band, to invite you again"
            ))
        })?;
        if self.now_ms() > held.expires_at_ms {
            return Err(Error::refused(format!(
                "{from}'s code expired; ask them to invite you again"
            )));
        }
        let kept = self.vault.open(SEALED_CODE, &held.sealed_msg_a)?;
        let (msg_a, signer) = kept
            .split_at_checked(PAKE_MSG_LEN)
            .ok_or(Error::Corrupt("code invitation"))?;
        let msg_a: [u8; PAKE_MSG_LEN] = msg_a
            .try_into()
            .map_err(|_| Error::Corrupt("code invitation"))?;
        let inviter_key = PublicIdentity::from_slice(signer)?;
        let secret = DeliverySecret::generate();
        let invite_pub = secret.public();
        let me = self.identity.public();
        let ctx = CodeContext {
            invite_id: &invite_id,
            group_id: &gid,
            inviter: &from,
            invitee: &self.me,
        };
        let keys = CodeKeys {
            inviter: &inviter_key,
            invitee: &me,
            invite_pub: &invite_pub,
        };
        let answer = invite_code::invitee_answer(code, &ctx, &msg_a, &keys)?;
        let sealed_tag = self.vault.seal(SEALED_CODE, &answer.expected_inviter_tag)?;
        self.store.code_answered(&invite_id, &sealed_tag).await?;
        let sealed = self.vault.seal("invite", secret.to_bytes().as_slice())?;
        self.store.set_invite_secret(&invite_id, &sealed).await?;
        let body = ItemBody::CodeAck(CodeAckPayload {
            invite_id,
            group_id: gid,
            invite_pub,
            msg_b: answer.msg_b,
            tag: answer.tag,
        });
        self.send_item(ItemId::random()?, &from, body).await?;
        Ok(from.to_string())
    }

    /// The inviter's side of a `code_ack`: a tag that matches confirms the
    /// invitee's key (pinned as confirmed by code), the inviter confirms in
    /// turn, and the invitation proceeds as a plain one; a tag that does not
    /// is a wrong try, and the third kills the code. The user is told.
    pub(crate) async fn on_code_ack(&mut self, item: &Item) -> Result<()> {
        let CodeAckPayload {
            invite_id,
            group_id,
            invite_pub,
            msg_b,
            ..
        } = code_ack(item)?;
        let invitee = &item.sender;
        let Some(held) = self.store.code_out(invite_id).await? else {
            return Err(Error::refused(format!(
                "{invitee} answered with a code an invitation that needs none"
            )));
        };
        let Some(sent) = self.store.invite_out(invite_id, invitee.as_str()).await? else {
            return Err(Error::refused(format!(
                "{invitee} answered a code invitation we did not send them"
            )));
        };
        if sent.group_id != group_id.0 {
            return Err(Error::refused(format!(
                "{invitee} answered a code invitation naming another group"
            )));
        }
        // Already taken (this item again, after a network fault part-way).
        if sent.state != crate::store::InviteOutState::Sent {
            return Ok(());
        }
        let answer = answer_digest(msg_b, invite_pub);
        let resumed = held.dead && held.used_by.as_deref() == Some(answer.as_slice());
        if !resumed {
            if self.now_ms() > held.expires_at_ms {
                self.store.code_dead(invite_id, None).await?;
                let text = format!("{invitee} answered after the code expired; invite them again");
                return self.code_notice(group_id, &text).await;
            }
            // The try is taken before the answer is checked.
            let Some(tries) = self.store.code_take_try(invite_id, MAX_TRIES).await? else {
                let text =
                    format!("{invitee} answered a code that is no longer valid; nothing was done");
                return self.code_notice(group_id, &text).await;
            };
            if !self.code_answer_matches(item, &held.sealed).await? {
                return self.wrong_code(invite_id, group_id, invitee, tries).await;
            }
            // Used: no other answer is taken; this one may resume.
            self.store.code_dead(invite_id, Some(&answer)).await?;
        }
        let invitee_key = self.contact_key(invitee).await?;
        self.store
            .put_contact_code(invitee.as_str(), &invitee_key.to_bytes(), self.now_ms())
            .await?;
        let confirm = ItemBody::CodeConfirm {
            invite_id: *invite_id,
            group_id: *group_id,
            tag: self.code_confirmation(item, &held.sealed).await?,
        };
        self.send_item(ItemId::random()?, invitee, confirm).await?;
        self.on_ack(invitee, invite_id, group_id, *invite_pub).await
    }

    /// The inviter's side of the run for `item` (a `code_ack`), from its
    /// sealed code and seed.
    async fn code_run(
        &mut self,
        item: &Item,
        sealed: &[u8],
    ) -> Result<std::result::Result<invite_code::Confirmation, duokey_crypto::Error>> {
        let ack = code_ack(item)?;
        let secret = self.vault.open(SEALED_CODE, sealed)?;
        let (digits, seed) = secret
            .split_at_checked(invite_code::CODE_DIGITS)
            .ok_or(Error::Corrupt("code"))?;
        let code =
            InviteCode::parse(std::str::from_utf8(digits).map_err(|_| Error::Corrupt("code"))?)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| Error::Corrupt("code seed"))?;
        let invitee_key = self.contact_key(&item.sender).await?;
        let me = self.identity.public();
        let ctx = CodeContext {
            invite_id: &ack.invite_id,
            group_id: &ack.group_id,
            inviter: &self.me,
            invitee: &item.sender,
        };
        let keys = CodeKeys {
            inviter: &me,
            invitee: &invitee_key,
            invite_pub: &ack.invite_pub,
        };
        Ok(invite_code::inviter_finish(
            &code, &seed, &ctx, &ack.msg_b, &keys,
        ))
    }

    async fn code_answer_matches(&mut self, item: &Item, sealed: &[u8]) -> Result<bool> {
        let tag = code_ack(item)?.tag;
        Ok(self
            .code_run(item, sealed)
            .await?
            .and_then(|c| c.check_invitee(&tag))
            .is_ok())
    }

    async fn code_confirmation(&mut self, item: &Item, sealed: &[u8]) -> Result<[u8; TAG_LEN]> {
        Ok(self.code_run(item, sealed).await??.inviter_tag()?)
    }

    async fn wrong_code(
        &mut self,
        invite_id: &ItemId,
        gid: &GroupId,
        invitee: &UserId,
        tries: u32,
    ) -> Result<()> {
        let text = if tries >= MAX_TRIES {
            self.store.code_dead(invite_id, None).await?;
            self.store.cancel_invites_to(gid, invitee.as_str()).await?;
            format!(
                "⚠ {invitee}'s answer to your code invitation did not match the code ({tries} wrong of {MAX_TRIES}): \
                 the code is dead. If you did not expect this, someone else may be answering in their name; \
                 invite them again with a new code"
            )
        } else {
            format!(
                "⚠ {invitee}'s answer to your code invitation did not match the code ({tries} wrong of {MAX_TRIES}); \
                 check that they typed the code you gave them"
            )
        };
        self.code_notice(gid, &text).await
    }

    async fn code_notice(&mut self, gid: &GroupId, text: &str) -> Result<()> {
        self.store.notice(gid, text, self.now_ms()).await?;
        self.warn(text.to_owned());
        Ok(())
    }

    /// The invitee's side of a `code_confirm`: the inviter knew the code,
    /// so its key is confirmed by code and its RN1 will be taken; a tag
    /// that does not match refuses the invitation.
    pub(crate) async fn on_code_confirm(&mut self, item: &Item) -> Result<()> {
        let ItemBody::CodeConfirm {
            invite_id,
            group_id,
            tag,
        } = &item.body
        else {
            return Err(Error::Internal("not a code confirmation"));
        };
        // Only the inviter, with the key that signed the invitation, confirms.
        let not_ours =
            || Error::refused("a code confirmation for no code invitation this terminal answered");
        let held = self.store.code_in(invite_id).await?.ok_or_else(not_ours)?;
        if self
            .store
            .invite_in_offer(invite_id, item.sender.as_str())
            .await
            .is_err()
        {
            return Err(not_ours());
        }
        let (Some(sealed_tag), false) = (held.expected_tag, held.confirmed) else {
            return Ok(());
        };
        let kept = self.vault.open(SEALED_CODE, &held.sealed_msg_a)?;
        let signer = kept
            .get(PAKE_MSG_LEN..)
            .ok_or(Error::Corrupt("code invitation"))?;
        let signer = PublicIdentity::from_slice(signer)?;
        if self.contact_key(&item.sender).await? != signer {
            return Err(Error::refused(
                "a code confirmation signed with another key than the invitation",
            ));
        }
        let expected: [u8; TAG_LEN] = self
            .vault
            .open(SEALED_CODE, &sealed_tag)?
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("code tag"))?;
        if invite_code::check_inviter(&expected, tag).is_err() {
            self.store.decline_invite_in(invite_id).await?;
            let text = format!(
                "⚠ {}'s confirmation of the invite code did not match: someone other than {} may be answering; \
                 the invitation is refused",
                item.sender, item.sender
            );
            return self.code_notice(group_id, &text).await;
        }
        self.store.code_confirmed(invite_id).await?;
        self.store.code_invite_accepted(invite_id).await?;
        self.store
            .put_contact_code(item.sender.as_str(), &signer.to_bytes(), self.now_ms())
            .await
    }

    /// An invitation's RN1 is taken only once the inviter confirmed the
    /// code, if the invitation had one.
    pub(crate) async fn code_confirmed_for(&self, invite_id: &ItemId) -> Result<()> {
        match self.store.code_in(invite_id).await? {
            // Kept, not dropped: the confirmation may come after it.
            Some(c) if !c.confirmed => Err(Error::Pending(
                "the inviter has not confirmed the invite code yet".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether an invite code confirmed the key pinned for `user`.
    pub async fn confirmed_by_code(&self, user: &UserId) -> Result<bool> {
        let Some(pinned) = self.store.pinned_key(user.as_str()).await? else {
            return Ok(false);
        };
        let key: [u8; 32] = pinned
            .as_slice()
            .try_into()
            .map_err(|_| Error::Corrupt("pinned key"))?;
        self.store.contact_code(user.as_str(), &key).await
    }
}

/// The body of a `code_ack` item (PROTOCOL §4.10).
fn code_ack(item: &Item) -> Result<&CodeAckPayload> {
    match &item.body {
        ItemBody::CodeAck(ack) => Ok(ack),
        _ => Err(Error::Internal("not a code acknowledgement")),
    }
}
