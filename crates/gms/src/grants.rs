//! Grants (SPEC §4.3 "Every grant therefore carries") and the one way a
//! group changes: [`Gms::change`], serialised per group.

use crate::membership::refusal;
use crate::{Gms, hex};
use duokey_crypto::membership::{Action, SignedChange, State};
use duokey_crypto::{Rights, Rn2};
use duokey_proto::{
    BusGrant, BusRemovals, Grant, GrantCause, Member, Policy, Removal, RemovalCause, WatchEvent,
    bus_frame, watch_event,
};
use duokey_storage::gms::{Change, Departure, GroupRow, MemberRow, MembershipRow};
use prost::Message;
use tonic::Status;

pub(crate) fn decode_policy(bytes: &[u8]) -> Policy {
    Policy::decode(bytes).unwrap_or_default()
}

pub(crate) fn decode_grant(bytes: &[u8]) -> Result<Grant, Status> {
    Grant::decode(bytes).map_err(|_| Status::internal("stored grant is corrupt"))
}

/// What one change does, decided by the caller's checks.
pub(crate) struct Next {
    pub(crate) cause: GrantCause,
    pub(crate) subject: String,
    pub(crate) report_id: Option<Vec<u8>>,
    /// The member that will send a new RN1 (SPEC §4.3 step 4), if RN1 rotates.
    pub(crate) rn1_rotator: Option<String>,
    /// Members whose rights this version sets: the one who enters (add), or
    /// the new and the former owner (transfer).
    pub(crate) upserts: Vec<MemberRow>,
    pub(crate) departure: Option<(String, RemovalCause, String)>,
    /// The signed change that causes this version, the state after it and
    /// its actor's certificate chain (SPEC §4.7).
    pub(crate) membership: Option<(SignedChange, State, Vec<Vec<u8>>)>,
    /// The group's new policy (a signed `policy` change), within this
    /// server's limits.
    pub(crate) policy: Option<Policy>,
}

impl Next {
    pub(crate) fn new(cause: GrantCause, subject: &str) -> Next {
        Next {
            cause,
            subject: subject.to_owned(),
            report_id: None,
            rn1_rotator: None,
            upserts: Vec::new(),
            departure: None,
            membership: None,
            policy: None,
        }
    }

    /// What a signed add, remove, leave, `rotate_rn1`, `policy` or `transfer` change
    /// does to the group `cur` (SPEC §4.7): checked with the shared rules
    /// first; a new policy within this server's limits (`limits`).
    pub(crate) fn from_change(
        cur: &Current,
        change: SignedChange,
        chain: Vec<Vec<u8>>,
        limits: crate::policy::PolicyLimits,
    ) -> Result<Next, Status> {
        let state = cur.membership.apply(&change).map_err(refusal)?;
        let c = change.change();
        let (actor, subject) = (c.actor.to_string(), c.subject.to_string());
        let mut next = match c.action {
            Action::Add => {
                let mut next = Next::new(GrantCause::MemberAdded, &subject);
                next.upserts = vec![MemberRow {
                    user_id: subject.clone(),
                    rights: c.rights.bits(),
                }];
                next
            }
            Action::Transfer => {
                let mut next = Next::new(GrantCause::OwnerChanged, &subject);
                next.upserts = [(subject, Rights::ALL), (actor, Rights::FORMER_OWNER)]
                    .into_iter()
                    .map(|(user_id, rights)| MemberRow {
                        user_id,
                        rights: rights.bits(),
                    })
                    .collect();
                next
            }
            Action::Remove => {
                let mut next = Next::new(GrantCause::MemberRemoved, &subject);
                next.departure = Some((subject, RemovalCause::Removed, actor));
                next
            }
            Action::Leave => {
                let mut next = Next::new(GrantCause::MemberLeft, &actor);
                next.departure = Some((actor, RemovalCause::Left, String::new()));
                next
            }
            Action::RotateRn1 => Next::new(GrantCause::Forced, &actor),
            Action::Policy => {
                let mut next = Next::new(GrantCause::PolicyChanged, &actor);
                next.policy = Some(crate::policy::from_signed(&state.policy, limits)?);
                next
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "a {} change does not belong in this call",
                    other.name()
                )));
            }
        };
        if state.rn1_version != cur.membership.rn1_version {
            next.rn1_rotator = state.rotator(state.rn1_version).map(|u| u.to_string());
        }
        next.membership = Some((change, state, chain));
        Ok(next)
    }
}

/// A group's state as read under its lock.
pub(crate) struct Current {
    pub(crate) group: GroupRow,
    pub(crate) policy: Policy,
    pub(crate) members: Vec<MemberRow>,
    /// The verified membership state (SPEC §4.7).
    pub(crate) membership: State,
}

impl Current {
    pub(crate) fn rights_of(&self, user: &str) -> Option<Rights> {
        self.members
            .iter()
            .find(|m| m.user_id == user)
            .map(|m| Rights::from_bits(m.rights).unwrap_or(Rights::NONE))
    }

    /// `PERMISSION_DENIED` unless `user` is a member holding `needed`.
    pub(crate) fn require(
        &self,
        user: &str,
        needed: Rights,
        action: &str,
    ) -> Result<Rights, Status> {
        let rights = self
            .rights_of(user)
            .ok_or_else(|| Status::permission_denied("you are not a member of this group"))?;
        if rights.contains(needed) {
            Ok(rights)
        } else {
            metrics::counter!("duokey_refusals_total", "reason" => "missing_right").increment(1);
            Err(Status::permission_denied(format!(
                "you lack the {action} right in group {}",
                self.group.name
            )))
        }
    }
}

pub(crate) fn build_grant(
    group: &GroupRow,
    policy: &Policy,
    members: &[MemberRow],
    rn2: &Rn2,
    issued_at_ms: i64,
    next: &Next,
    membership: &State,
) -> Grant {
    Grant {
        group_id: group.group_id.clone(),
        group_name: group.name.clone(),
        rn2_version: group.rn2_version,
        rn2: rn2.expose_secret().to_vec(),
        rn1_version: group.rn1_version,
        members: members
            .iter()
            .map(|m| Member {
                user_id: m.user_id.clone(),
                rights: u32::from(m.rights),
            })
            .collect(),
        policy: Some(*policy),
        issued_at_ms: u64::try_from(issued_at_ms).unwrap_or(0),
        report_id: next.report_id.clone().unwrap_or_default(),
        rn1_rotator: next.rn1_rotator.clone().unwrap_or_default(),
        cause: next.cause as i32,
        subject: next.subject.clone(),
        subject_rights: next
            .upserts
            .iter()
            .find(|m| m.user_id == next.subject)
            .map_or(0, |m| u32::from(m.rights)),
        members_omitted: false,
        membership_seq: membership.seq,
        membership_head: membership.head.to_vec(),
        changes: next
            .membership
            .iter()
            .map(|(c, _, _)| c.as_bytes().to_vec())
            .collect(),
    }
}

/// The grant as `Watch` pushes it: without the member list, which the
/// terminal rebuilds from the previous version and the change (D27). A
/// re-key of an N-member group then pushes O(N) bytes in all, not O(N²).
/// A change of owner keeps its list: two members' rights change, which the
/// rule of D27 does not rebuild (and ownership changes are rare).
fn compact(grant: &Grant) -> Grant {
    if grant.cause == GrantCause::OwnerChanged as i32 {
        return grant.clone();
    }
    Grant {
        members: Vec::new(),
        members_omitted: true,
        ..grant.clone()
    }
}

pub(crate) fn next_rotation(now_ms: i64, policy: &Policy) -> i64 {
    now_ms.saturating_add(
        i64::try_from(policy.rotate_every_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    )
}

impl Gms {
    /// Reads a group's state; `NOT_FOUND` or `FAILED_PRECONDITION` if deleted.
    pub(crate) async fn current(&self, gid: &[u8]) -> Result<Current, Status> {
        let db = &self.inner.db;
        let group = db
            .group(gid)
            .await?
            .ok_or_else(|| Status::not_found("no such group"))?;
        if group.deleted {
            return Err(Status::failed_precondition("the group was deleted"));
        }
        let members = db.members(gid).await?;
        Ok(Current {
            policy: decode_policy(&group.policy),
            membership: self.membership(gid).await?,
            group,
            members,
        })
    }

    /// Applies one change: under the group's lock, `decide` checks the
    /// caller's rights on the current state and says what changes; a new RN2
    /// version is issued, stored, pushed to every member and queued for the CS.
    pub(crate) async fn change(
        &self,
        gid: &[u8],
        decide: impl FnOnce(&Current) -> Result<Next, Status>,
    ) -> Result<Grant, Status> {
        let lock = self.group_lock(gid);
        let _guard = lock.lock().await;
        let cur = self.current(gid).await?;
        let next = decide(&cur)?;
        let now = self.now_ms();
        let mut group = cur.group.clone();
        group.rn2_version = group
            .rn2_version
            .checked_add(1)
            .ok_or_else(|| Status::out_of_range("RN2 version exhausted"))?;
        let membership = next
            .membership
            .as_ref()
            .map_or(&cur.membership, |(_, state, _)| state);
        group.rn1_version = membership.rn1_version;
        let mut members = cur.members.clone();
        duokey_proto::members_after(
            &mut members,
            |m| &m.user_id,
            next.cause,
            &next.subject,
            next.upserts.first().cloned(),
        );
        // A transfer changes the rights of two members who stay.
        for u in &next.upserts {
            if let Some(m) = members.iter_mut().find(|m| m.user_id == u.user_id) {
                m.rights = u.rights;
            }
        }
        let rn2 = Rn2::random().map_err(|_| Status::internal("random generator failed"))?;
        let policy = next.policy.as_ref().unwrap_or(&cur.policy);
        let policy_pb = next.policy.as_ref().map(|p| p.encode_to_vec());
        let grant = build_grant(&group, policy, &members, &rn2, now, &next, membership);
        let grant_pb = grant.encode_to_vec();
        let departure = next.departure.as_ref().map(|(user, cause, by)| Departure {
            user_id: user.clone(),
            rn2_version: group.rn2_version,
            cause: *cause as i32,
            by: by.clone(),
        });
        let change = Change {
            group_id: gid,
            from_rn2_version: cur.group.rn2_version,
            rn2_version: group.rn2_version,
            rn1_version: group.rn1_version,
            grant_pb: &grant_pb,
            issued_at_ms: now,
            next_rotation_ms: next_rotation(now, policy),
            upserts: next.upserts.clone(),
            departure: departure.clone(),
            report_id: next.report_id.as_deref(),
            membership: next.membership.as_ref().map(|(c, s, chain)| MembershipRow {
                seq: s.seq,
                change: c.as_bytes(),
                actor_chain: chain,
            }),
            policy: policy_pb.as_deref(),
        };
        let started = std::time::Instant::now();
        let applied = self.inner.db.apply_change(&change).await;
        metrics::histogram!("duokey_db_seconds", "op" => "gms_apply_change")
            .record(started.elapsed().as_secs_f64());
        if !applied? {
            return Err(Status::aborted("the group changed concurrently; retry"));
        }
        self.remember(gid, membership);
        metrics::counter!("duokey_gms_rotations_total", "cause" => cause_name(next.cause))
            .increment(1);
        tracing::info!(group = %hex(gid), rn2_version = group.rn2_version, cause = cause_name(next.cause), "new RN2 version");
        self.publish(&grant, departure.as_ref());
        Ok(grant)
    }

    /// Pushes a new grant to its members and a removal to a departed user,
    /// and wakes the CS sync.
    pub(crate) fn publish(&self, grant: &Grant, departure: Option<&Departure>) {
        let event = std::sync::Arc::new(WatchEvent {
            event: Some(watch_event::Event::Grant(compact(grant))),
        });
        for m in &grant.members {
            self.inner.watchers.push(&m.user_id, event.clone());
        }
        if let Some(d) = departure {
            let removal = removal_event(&grant.group_id, d);
            self.tell_removals(vec![d.user_id.clone()], &removal);
            self.inner.watchers.push(&d.user_id, removal.into());
        }
        self.tell_others(bus_frame::Body::Grant(BusGrant {
            group_id: grant.group_id.clone(),
            rn2_version: grant.rn2_version,
        }));
        self.inner.cs_changed.notify_one();
    }

    /// Tells the other GMS nodes (if any) of removals for `users`.
    pub(crate) fn tell_removals(&self, users: Vec<String>, removal: &WatchEvent) {
        if let Some(watch_event::Event::Removal(r)) = &removal.event
            && self.clustered()
        {
            self.tell_others(bus_frame::Body::Removals(BusRemovals {
                users,
                removal: Some(r.clone()),
            }));
        }
    }

    /// Pushes a grant another GMS node committed to the members watching
    /// here: read from the database, never from the bus.
    pub(crate) async fn push_stored_grant(&self, gid: &[u8], rn2_version: u64) {
        let stored = match self.inner.db.grant(gid, rn2_version).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a grant another node made");
                return;
            }
        };
        let Ok(grant) = decode_grant(&stored) else {
            return;
        };
        let event = std::sync::Arc::new(WatchEvent {
            event: Some(watch_event::Event::Grant(compact(&grant))),
        });
        for m in &grant.members {
            self.inner.watchers.push(&m.user_id, event.clone());
        }
    }

    /// A periodic rotation if still due (SPEC §4.4).
    pub(crate) async fn periodic_rotation(&self, gid: &[u8], now_ms: i64) -> Result<bool, Status> {
        let result = self
            .change(gid, |cur| {
                if cur.group.next_rotation_ms > now_ms {
                    return Err(Status::already_exists("not due"));
                }
                Ok(Next::new(GrantCause::Periodic, ""))
            })
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(s) => Err(s),
        }
    }
}

pub(crate) fn removal_event(gid: &[u8], d: &Departure) -> WatchEvent {
    WatchEvent {
        event: Some(watch_event::Event::Removal(Removal {
            group_id: gid.to_vec(),
            rn2_version: d.rn2_version,
            cause: d.cause,
            by: d.by.clone(),
        })),
    }
}

fn cause_name(c: GrantCause) -> &'static str {
    match c {
        GrantCause::Unspecified => "unspecified",
        GrantCause::Created => "created",
        GrantCause::MemberAdded => "added",
        GrantCause::MemberRemoved => "removed",
        GrantCause::MemberLeft => "left",
        GrantCause::Periodic => "periodic",
        GrantCause::Forced => "forced",
        GrantCause::PolicyChanged => "policy",
        GrantCause::OwnerChanged => "owner",
    }
}
