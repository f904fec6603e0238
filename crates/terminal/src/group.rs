//! Groups (SPEC §4.1, §4.4, §4.6, §4.7): creation, policy, the member list,
//! rights, removal, leaving, rotation on demand and deletion.

use crate::Terminal;
use crate::error::{Error, Result};
use crate::membership::Intent;
use crate::store::GroupState;
use duokey_crypto::UserId;
use duokey_crypto::membership;
use duokey_crypto::*;
use duokey_proto::{CreateGroupRequest, RotateRequest};
use std::sync::Arc;

/// Policy chosen at creation (SPEC §4.3–4.5); zero means the server default.
#[derive(Debug, Clone, Copy)]
pub struct GroupPolicy {
    /// Period of the RN2 rotation in seconds (default 1 h).
    pub rotate_every_secs: u64,
    /// Grace window for the previous epoch in seconds (default 5 min).
    pub grace_secs: u64,
    /// Rotate RN1 on every removal and leave (default on).
    pub rotate_rn1_on_remove: bool,
    /// How long RN2 history and ciphertext are kept, in seconds (default 30 days).
    pub retention_secs: u64,
    /// How long members wait for a rotator's new RN1 before one of them
    /// makes another (SPEC §4.3 step 4, D37), in seconds (default 2 min).
    pub rn1_wait_secs: u64,
}

impl GroupPolicy {
    /// The whole policy the creator signs (SPEC §4.7): zero fields take the
    /// defaults.
    pub fn signed(&self) -> membership::Policy {
        let d = membership::Policy::default();
        let or = |v: u64, default: u64| if v == 0 { default } else { v };
        membership::Policy {
            rotate_rn1_on_remove: self.rotate_rn1_on_remove,
            rotate_every_secs: or(self.rotate_every_secs, d.rotate_every_secs),
            grace_secs: or(self.grace_secs, d.grace_secs),
            retention_secs: or(self.retention_secs, d.retention_secs),
            max_members: d.max_members,
            rn1_wait_secs: or(self.rn1_wait_secs, d.rn1_wait_secs),
        }
    }
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self {
            rotate_every_secs: 0,
            grace_secs: 0,
            rotate_rn1_on_remove: true,
            retention_secs: 0,
            rn1_wait_secs: 0,
        }
    }
}

/// A change of a group's policy (`duokey group policy`): `None` keeps the
/// field as the members signed it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyChange {
    /// Period of the RN2 rotation in seconds.
    pub rotate_every_secs: Option<u64>,
    /// Grace window for the previous epoch in seconds.
    pub grace_secs: Option<u64>,
    /// How long history and keys are kept, in seconds.
    pub retention_secs: Option<u64>,
    /// How long members wait for a rotator's new RN1, in seconds.
    pub rn1_wait_secs: Option<u64>,
    /// Rotate RN1 on every removal and leave.
    pub rotate_rn1_on_remove: Option<bool>,
}

/// A group's policy as its members signed it (SPEC §4.7), as `duokey group
/// policy` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyView {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
    /// Period of the RN2 rotation in seconds.
    pub rotate_every_secs: u64,
    /// Grace window for the previous epoch in seconds.
    pub grace_secs: u64,
    /// How long history and keys are kept, in seconds.
    pub retention_secs: u64,
    /// How long members wait for a rotator's new RN1, in seconds.
    pub rn1_wait_secs: u64,
    /// Largest number of members.
    pub max_members: u32,
    /// Removals and leaves rotate RN1.
    pub rotate_rn1_on_remove: bool,
    /// The membership change that set it last is at or before this seq.
    pub seq: u64,
}

impl PolicyChange {
    /// `p` with the fields this change names replaced.
    fn applied_to(&self, p: &membership::Policy) -> membership::Policy {
        membership::Policy {
            rotate_every_secs: self.rotate_every_secs.unwrap_or(p.rotate_every_secs),
            grace_secs: self.grace_secs.unwrap_or(p.grace_secs),
            retention_secs: self.retention_secs.unwrap_or(p.retention_secs),
            rn1_wait_secs: self.rn1_wait_secs.unwrap_or(p.rn1_wait_secs),
            rotate_rn1_on_remove: self.rotate_rn1_on_remove.unwrap_or(p.rotate_rn1_on_remove),
            max_members: p.max_members,
        }
    }
}
pub(crate) use crate::store::gid16;

/// A group as listed to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupInfo {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "as_text")]
    pub group_id: GroupId,
    /// Name.
    pub name: String,
    /// Where this terminal stands in it.
    pub state: crate::store::GroupState,
    /// Current RN1 version.
    pub rn1_version: u32,
    /// Current RN2 version.
    pub rn2_version: u64,
}

/// A member and its rights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// User id.
    pub user: String,
    /// Rights; in JSON as words, e.g. "owner,invite,remove" or "member".
    #[serde(serialize_with = "as_text")]
    pub rights: Rights,
}

/// A value in JSON as it is shown: a group id as hex, rights as words.
pub(crate) fn as_text<S: serde::Serializer>(
    v: &impl std::fmt::Display,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Terminal {
    /// `duokey group policy GROUP`: the policy of the verified history.
    pub async fn policy(&mut self, gid: &GroupId) -> Result<PolicyView> {
        let state = self.membership(gid).await?.ok_or_else(|| {
            Error::refused(
                "this terminal has not verified the group's membership yet; run `duokey sync`",
            )
        })?;
        let p = &state.policy;
        Ok(PolicyView {
            group_id: *gid,
            rotate_every_secs: p.rotate_every_secs,
            grace_secs: p.grace_secs,
            retention_secs: p.retention_secs,
            rn1_wait_secs: p.rn1_wait_secs,
            max_members: p.max_members,
            rotate_rn1_on_remove: p.rotate_rn1_on_remove,
            seq: state.seq,
        })
    }

    /// `duokey group policy GROUP --…`: the owner signs a `policy` change
    /// (SPEC §4.7) with the fields `change` names; a new key version follows
    /// and every member's terminal uses the signed policy from then on.
    pub async fn change_policy(
        &mut self,
        gid: &GroupId,
        change: PolicyChange,
    ) -> Result<PolicyView> {
        let state = self.as_owner(gid, "change its policy").await?;
        let policy = change.applied_to(&state.policy);
        if policy.check().is_err() {
            return Err(Error::user(
                "that policy is out of range: the rotation period must be at least 60 s, the retention \
                 at least the rotation period, and the RN1 wait at least 1 s",
            ));
        }
        if policy == state.policy {
            return Err(Error::user(
                "nothing to change: name at least one setting that differs (see `duokey group policy --help`)",
            ));
        }
        drop(state);
        let (grant, _) = self
            .submit(gid, Intent::Policy(policy), &ItemId::random()?)
            .await?;
        if let Some(g) = grant {
            self.apply_grant(g).await?;
        }
        self.policy(gid).await
    }

    /// `duokey group transfer GROUP USER`: the owner signs a `transfer`
    /// change (PROTOCOL §4.8); `user`, a member, becomes the owner, and this
    /// terminal's user keeps the invite and remove rights (and may then
    /// leave). A new key version follows, as for any change.
    pub async fn transfer(&mut self, gid: &GroupId, user: &UserId) -> Result<()> {
        self.active(gid).await?;
        let state = self.as_owner(gid, "hand ownership over").await?;
        if *user == self.me {
            return Err(Error::user(
                "you already own the group; name another member",
            ));
        }
        if !state.members.contains_key(user) {
            return Err(Error::refused(format!(
                "{user} is not a member of {}: invite them first (`duokey group invite`)",
                state.name.as_str()
            )));
        }
        drop(state);
        let intent = Intent::Transfer {
            subject: user.clone(),
        };
        let (grant, _) = self.submit(gid, intent, &ItemId::random()?).await?;
        if let Some(g) = grant {
            self.apply_grant(g).await?;
        }
        Ok(())
    }

    /// The verified membership of `gid` when this terminal's user owns the
    /// group (SPEC §4.7); otherwise a refusal saying who alone can `act`.
    async fn as_owner(&mut self, gid: &GroupId, act: &str) -> Result<Arc<membership::State>> {
        let state = self.membership(gid).await?.ok_or_else(|| {
            Error::refused(
                "this terminal has not verified the group's membership yet; run `duokey sync`",
            )
        })?;
        if state.owner != self.me {
            return Err(Error::refused(format!(
                "only the group's owner ({}) can {act}",
                state.owner
            )));
        }
        Ok(state)
    }

    /// Resolves `GROUP`: a group id, a unique id prefix, or a unique name.
    pub async fn resolve_group(&self, spec: &str) -> Result<GroupId> {
        let groups = self.store.groups().await?;
        let lower = spec.to_lowercase();
        let by_id: Vec<_> = groups
            .iter()
            .filter(|g| hex::encode(g.group_id).starts_with(&lower) && lower.len() >= 4)
            .collect();
        if by_id.len() == 1 {
            return Ok(by_id[0].group_id);
        }
        let named: Vec<_> = groups
            .iter()
            .filter(|g| g.name == spec)
            .map(|g| (g.group_id, g.state == GroupState::Active))
            .collect();
        match pick_by_name(&named) {
            Some(gid) => Ok(gid),
            None if named.is_empty() && by_id.is_empty() => Err(Error::not_found(format!(
                "no group {spec:?} in this profile; `duokey group list --all` shows yours"
            ))),
            None => Err(Error::user(format!(
                "{spec:?} names several groups; use the group id from `duokey group list --all`"
            ))),
        }
    }

    /// `duokey group forget GROUP`: removes a group this terminal is no
    /// longer a member of (left, removed, deleted) from the profile, with
    /// its history and keys. A group still active is refused.
    pub async fn forget_group(&self, gid: &GroupId) -> Result<String> {
        let g = self
            .store
            .group(gid)
            .await?
            .ok_or_else(|| Error::not_found("no such group in this profile"))?;
        if g.state == GroupState::Active {
            return Err(Error::refused(format!(
                "you are still a member of {:?}: leave it first (`duokey group leave`), or delete it if you own it",
                g.name
            )));
        }
        self.store.forget_group(gid).await?;
        Ok(g.name)
    }

    /// `duokey group create NAME` (SPEC §4.1).
    pub async fn create_group(&mut self, name: &str, policy: GroupPolicy) -> Result<GroupInfo> {
        let name = GroupName::new_chosen(name)?;
        let gid = GroupId::random()?;
        let rn1 = Rn1::random()?;
        let policy = policy.signed();
        policy.check().map_err(|e| {
            Error::user(format!(
                "{e}: the rotation period must be at least 60 s and the retention at least the period"
            ))
        })?;
        let me = self.me.clone();
        let create = membership::create_change(
            gid,
            &me,
            &self.identity.public(),
            &name,
            &policy,
            self.now_ms(),
        )?
        .sign(&self.identity)?;
        let state = membership::State::create(&create)?;
        // RN1 and the signed creation are stored before the GMS learns of the
        // group, so a crash cannot leave a group whose key nobody holds.
        self.store.upsert_group(&gid, name.as_str(), 0, 1).await?;
        self.put_r1(&gid, 1, &R1::from_rn1(&rn1, 1)).await?;
        self.adopt_all(&gid, std::slice::from_ref(&create), state)
            .await?;
        let grant = self
            .gms
            .create_group(CreateGroupRequest {
                change: create.as_bytes().to_vec(),
            })
            .await
            .map_err(Error::server("creating the group"))?
            .into_inner();
        self.apply_grant(grant).await?;
        Ok(GroupInfo {
            group_id: gid,
            name: name.to_string(),
            state: GroupState::Active,
            rn1_version: 1,
            rn2_version: 1,
        })
    }

    /// `duokey group list`.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        Ok(self
            .store
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.rn2_version > 0)
            .map(|g| GroupInfo {
                group_id: g.group_id,
                name: g.name,
                state: g.state,
                rn1_version: g.rn1_version,
                rn2_version: g.rn2_version,
            })
            .collect())
    }

    /// `duokey group members GROUP`: members and rights of the current grant.
    pub async fn members(&self, gid: &GroupId) -> Result<Vec<MemberInfo>> {
        let (_, grant) = self.current_grant(gid).await?;
        Ok(grant
            .members
            .into_iter()
            .map(|(user, r)| MemberInfo { user, rights: r })
            .collect())
    }

    /// A group this terminal is an active member of, or an error that says
    /// why not.
    pub(crate) async fn active(&self, gid: &GroupId) -> Result<crate::store::GroupRow> {
        let g =
            self.store.group(gid).await?.ok_or_else(|| {
                Error::not_found("unknown group; `duokey group list` shows yours")
            })?;
        if g.state != GroupState::Active {
            return Err(Error::refused(format!(
                "you are no longer a member of {} ({})",
                g.name, g.state
            )));
        }
        Ok(g)
    }

    /// An active group and its current grant.
    async fn current_grant(
        &self,
        gid: &GroupId,
    ) -> Result<(crate::store::GroupRow, crate::store::StoredGrant)> {
        let g = self.active(gid).await?;
        let grant = self
            .store
            .grant(gid, g.rn2_version)
            .await?
            .ok_or_else(|| Error::user("no grant yet; run `duokey sync`"))?;
        Ok((g, grant))
    }

    /// This terminal's rights in an active group (SPEC §4.6).
    pub(crate) async fn my_rights(
        &self,
        gid: &GroupId,
    ) -> Result<(crate::store::GroupRow, Rights)> {
        let (g, grant) = self.current_grant(gid).await?;
        let mine = grant
            .members
            .iter()
            .find(|(u, _)| u == self.me.as_str())
            .map_or(Rights::NONE, |(_, r)| *r);
        Ok((g, mine))
    }

    /// `duokey group remove GROUP USER` (SPEC §4.3).
    pub async fn remove(&mut self, gid: &GroupId, user: &UserId) -> Result<()> {
        let (g, mine) = self.my_rights(gid).await?;
        if !mine.contains(Rights::REMOVE) {
            return Err(Error::refused(format!(
                "you lack the remove right in group {}",
                g.name
            )));
        }
        // The signed removal carries the RN1 flag the signed policy demands
        // (SPEC §4.7): RN1 rotates unless the group opted out at creation.
        let intent = Intent::Remove {
            subject: user.clone(),
        };
        let (grant, _) = self.submit(gid, intent, &ItemId::random()?).await?;
        let grant = grant.ok_or(Error::Internal("removal without a grant"))?;
        // The removal item is a courtesy: the GMS's answer is what counts.
        let _ = self
            .send_item(
                ItemId::random()?,
                user,
                ItemBody::Removal { group_id: *gid },
            )
            .await;
        self.apply_grant(grant).await
    }

    /// `duokey group leave GROUP`.
    pub async fn leave(&mut self, gid: &GroupId) -> Result<()> {
        self.active(gid).await?;
        let (g, mine) = self.my_rights(gid).await?;
        if mine.contains(Rights::OWNER) {
            // SPEC §4.7: nobody else could ever delete the group.
            return Err(Error::refused(format!(
                "you own {:?}, and an owner cannot leave: nobody could delete the group afterwards. \
                 Hand it to another member first (`duokey group transfer {} USER`, you keep the invite \
                 and remove rights) and then leave, or delete it for every member (`duokey group delete`)",
                g.name, g.name
            )));
        }
        // Keep what was said up to now: fetched while a member.
        self.last_fetch(gid).await?;
        self.submit(gid, Intent::Leave, &ItemId::random()?).await?;
        self.store
            .end_membership(gid, GroupState::Left, "you left the group", self.now_ms())
            .await
    }

    /// `duokey group rotate GROUP [--rn1]` (SPEC §4.4).
    pub async fn rotate(&mut self, gid: &GroupId, rn1: bool) -> Result<u64> {
        let report = ItemId::random()?;
        let grant = if rn1 {
            // SPEC §4.4: any member may rotate RN1, with a signed change.
            self.active(gid).await?;
            let (grant, _) = self.submit(gid, Intent::RotateRn1, &report).await?;
            grant.ok_or(Error::Internal("rotation without a grant"))?
        } else {
            let (g, mine) = self.my_rights(gid).await?;
            if !mine.contains(Rights::REMOVE) {
                return Err(Error::refused(format!(
                    "you lack the remove right in group {} (needed to rotate RN2; any member may rotate with --rn1)",
                    g.name
                )));
            }
            self.gms
                .rotate(RotateRequest {
                    group_id: gid.to_vec(),
                    report_id: report.0.to_vec(),
                    change: Vec::new(),
                })
                .await
                .map_err(Error::server("rotating"))?
                .into_inner()
        };
        let v = grant.rn2_version;
        self.apply_grant(grant).await?;
        Ok(v)
    }

    /// `duokey group delete GROUP` (owner only).
    pub async fn delete(&mut self, gid: &GroupId) -> Result<()> {
        let (g, mine) = self.my_rights(gid).await?;
        if !mine.contains(Rights::OWNER) {
            return Err(Error::refused(format!(
                "only the owner can delete group {}",
                g.name
            )));
        }
        self.last_fetch(gid).await?;
        self.submit(gid, Intent::Delete, &ItemId::random()?).await?;
        self.store
            .end_membership(
                gid,
                GroupState::Deleted,
                "you deleted the group",
                self.now_ms(),
            )
            .await
    }
}

/// The group a name means among `named` (id, active): the one active group
/// of that name, else the one group of that name, else none (ambiguous or
/// absent). Left and deleted groups keep their names, so re-creating a name
/// must not make it ambiguous.
fn pick_by_name(named: &[(GroupId, bool)]) -> Option<GroupId> {
    let active: Vec<_> = named.iter().filter(|(_, a)| *a).collect();
    match (active.as_slice(), named) {
        ([(gid, _)], _) | ([], [(gid, _)]) => Some(*gid),
        _ => None,
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn a_name_means_its_one_active_group_first() {
        let (a, b, c) = (GroupId([1; 16]), GroupId([2; 16]), GroupId([3; 16]));
        assert_eq!(pick_by_name(&[(a, true)]), Some(a));
        assert_eq!(
            pick_by_name(&[(a, false)]),
            Some(a),
            "a left group by its name"
        );
        assert_eq!(pick_by_name(&[(a, false), (b, true)]), Some(b));
        assert_eq!(pick_by_name(&[(a, false), (b, false)]), None);
        assert_eq!(pick_by_name(&[(a, true), (b, true), (c, false)]), None);
        assert_eq!(pick_by_name(&[]), None);
    }
}
