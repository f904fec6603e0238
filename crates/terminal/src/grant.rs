//! Grants from the GMS (SPEC §4.3–4.6): fetched, checked against the
//! member-signed membership, applied (new epochs, removals), or refused and
//! held.

use crate::error::{Error, Result};
use crate::group::gid16;
use crate::store::GroupState;
use crate::store::StoredGrant;
use crate::terminal::Terminal;
use duokey_crypto::*;
use duokey_proto::{
    GetGrantRequest, GetGrantsRequest, Grant, GrantCause, Member, Removal, RemovalCause,
};

fn cause_notice(g: &Grant) -> Option<String> {
    let s = &g.subject;
    match GrantCause::try_from(g.cause).ok()? {
        GrantCause::Created => Some(format!("{s} created the group")),
        GrantCause::MemberAdded => Some(format!("{s} joined")),
        GrantCause::MemberRemoved => Some(format!("{s} was removed")),
        GrantCause::MemberLeft => Some(format!("{s} left")),
        GrantCause::Periodic | GrantCause::Forced => Some(format!(
            "key rotated (member key #{}, server key #{})",
            g.rn1_version, g.rn2_version
        )),
        GrantCause::PolicyChanged => Some(format!("{s} changed the group's policy")),
        GrantCause::OwnerChanged => Some(format!("{s} is now the group's owner")),
        GrantCause::Unspecified => None,
    }
}

/// One key change of a group as this terminal saw it (`duokey status`'s
/// timeline, PROTOCOL §9.3): a new server key (RN2, SPEC §4.3), and
/// whether the member key (RN1) changed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Epoch {
    /// Server key number (RN2 version).
    pub rn2_version: u64,
    /// Member key number (RN1 version) in force from it.
    pub rn1_version: u32,
    /// Why the key changed.
    pub cause: KeyChange,
    /// Whom it concerns (the member who joined, left…), else empty.
    pub subject: String,
    /// When the GMS issued it.
    pub issued_at_ms: u64,
}

/// Why a group's key changed, as the grant's cause says (SPEC §4.3); in
/// JSON one lower-case word (`created`, `joined`, …, `unknown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyChange {
    /// The group was created.
    Created,
    /// A member joined.
    Joined,
    /// A member was removed.
    Removed,
    /// A member left.
    Left,
    /// The GMS's periodic rotation.
    Scheduled,
    /// A member rotated the key.
    Forced,
    /// The policy changed.
    Policy,
    /// Ownership was handed over (PROTOCOL §4.8).
    Owner,
    /// A cause this terminal does not know.
    Unknown,
}

impl KeyChange {
    fn of(cause: i32) -> KeyChange {
        match GrantCause::try_from(cause) {
            Ok(GrantCause::Created) => KeyChange::Created,
            Ok(GrantCause::MemberAdded) => KeyChange::Joined,
            Ok(GrantCause::MemberRemoved) => KeyChange::Removed,
            Ok(GrantCause::MemberLeft) => KeyChange::Left,
            Ok(GrantCause::Periodic) => KeyChange::Scheduled,
            Ok(GrantCause::Forced) => KeyChange::Forced,
            Ok(GrantCause::PolicyChanged) => KeyChange::Policy,
            Ok(GrantCause::OwnerChanged) => KeyChange::Owner,
            Ok(GrantCause::Unspecified) | Err(_) => KeyChange::Unknown,
        }
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
    /// The last `n` key changes of a group this terminal holds, oldest
    /// first (older ones are erased with the retention, SPEC §7.5).
    pub async fn timeline(&self, gid: &GroupId, n: u64) -> Result<Vec<Epoch>> {
        let grants = self.store.recent_grants(gid, n).await?;
        Ok(grants
            .into_iter()
            .map(|g| Epoch {
                rn2_version: g.rn2_version,
                rn1_version: g.rn1_version,
                cause: KeyChange::of(g.cause),
                subject: g.subject,
                issued_at_ms: g.issued_at_ms,
            })
            .collect())
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
                .map(|m| (m.user_id.clone(), wire_rights(m.rights)))
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
            self.keylog.rn2(&gid, g.rn2_version, &rn2);
            if let Some(text) = cause_notice(&g)
                && self.cause_verified(&gid, &g).await?
            {
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
    async fn refuse_grant(&mut self, gid: &GroupId, version: u64, reason: &str) -> Result<()> {
        let key = format!("refused_grant:{}:{version}", hex::encode(gid));
        let since = format!("refused_since:{}", hex::encode(gid));
        if self.store.meta_u64(&since).await? == 0 {
            self.store.set_meta_u64(&since, self.now_ms()).await?;
        }
        if self.store.meta(&key).await?.is_none() {
            let text = format!(
                "⚠ refused group key version {version}: {reason}. This terminal keeps the last \
                 verified key: it sends with it only within the grace window, then holds your messages \
                 until the group server sends a valid change"
            );
            self.store.notice(gid, &text, self.now_ms()).await?;
            self.warn(text);
            self.store.set_meta(&key, b"1").await?;
        }
        Ok(())
    }

    /// SPEC §4.7: after a refused grant, the last verified epoch is used for
    /// sending only within its grace window; then sends queue until a valid
    /// grant arrives.
    pub(crate) async fn held_by_refusal(&self, gid: &GroupId) -> Result<bool> {
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
        Ok(self.now_ms() > at.saturating_add(grace_ms))
    }

    /// (seq, head) of the change that made `g`'s RN1 version, if this
    /// terminal is its rotator in the verified state and `g` is the grant
    /// that applied it.
    async fn my_rotation(&mut self, gid: &GroupId, g: &Grant) -> Result<Option<(u64, [u8; 32])>> {
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
    async fn whole_grant(&mut self, gid: &GroupId, mut g: Grant) -> Result<Grant> {
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
        let entered = wire_rights(g.subject_rights);
        if let Ok(cause) = GrantCause::try_from(g.cause) {
            duokey_proto::members_after(
                &mut members,
                |(u, _)| u,
                cause,
                &g.subject,
                Some((g.subject.clone(), entered)),
            );
        }
        g.members = members
            .into_iter()
            .map(|(user_id, rights)| Member {
                user_id,
                rights: rights.bits().into(),
            })
            .collect();
        g.members_omitted = false;
        Ok(g)
    }

    /// A terminal that was offline through several versions fetches the ones
    /// it missed (it was a member at each), for their notices and keys.
    async fn fetch_missed_grants(&mut self, gid: &GroupId, upto: u64) -> Result<()> {
        let Some(cur) = self.store.group(gid).await? else {
            return Ok(());
        };
        if cur.state != GroupState::Active {
            return Ok(());
        }
        // A newcomer's first grant: from the version that added it, once
        // its inviter's anchor is verified (none before that).
        let from = match cur.rn2_version {
            0 => self.joined_at(gid).await?,
            v => v + 1,
        };
        if from == 0 {
            return Ok(());
        }
        self.fetch_grant_range(gid, from, upto).await
    }

    /// Whether a grant's cause and subject are what the verified history
    /// says of the change it names (SPEC §4.7): otherwise a GMS could label
    /// a rotation "mallory is now the group's owner". Causes without a
    /// change, and a terminal that does not hold the chain yet, keep the
    /// GMS's word.
    async fn cause_verified(&self, gid: &GroupId, g: &Grant) -> Result<bool> {
        use membership::Action;
        let want = match GrantCause::try_from(g.cause) {
            Ok(GrantCause::MemberAdded) => Action::Add,
            Ok(GrantCause::MemberRemoved) => Action::Remove,
            Ok(GrantCause::MemberLeft) => Action::Leave,
            Ok(GrantCause::OwnerChanged) => Action::Transfer,
            _ => return Ok(true),
        };
        let Some(bytes) = self.store.change_at(gid, g.membership_seq).await? else {
            return Ok(true);
        };
        let change = membership::SignedChange::parse(&bytes)?;
        let c = change.change();
        Ok(c.action == want && c.subject.as_str() == g.subject)
    }

    /// Fetches and applies the grants `from..upto` this terminal does not
    /// hold (at most 1,000 at a time), for their notices and keys.
    pub(crate) async fn fetch_grant_range(
        &mut self,
        gid: &GroupId,
        from: u64,
        upto: u64,
    ) -> Result<()> {
        for v in from..upto.min(from.saturating_add(1000)) {
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
        gid: &GroupId,
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
                .end_membership(&gid, state, &text, self.now_ms())
                .await?;
        }
        Ok(())
    }
}

/// Rights as a grant carries them (`u32` on the wire); bits this terminal
/// does not know give no right.
fn wire_rights(bits: u32) -> Rights {
    u8::try_from(bits)
        .ok()
        .and_then(|b| Rights::from_bits(b).ok())
        .unwrap_or(Rights::NONE)
}
