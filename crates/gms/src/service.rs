//! The `GroupManagement` gRPC service (SPEC §5.2).

use crate::grants::{self, Next, build_grant, decode_grant, next_rotation, storage};
use crate::policy::{normalise, rotates_rn1_on_remove};
use crate::watch::WatchStream;
use crate::{Gms, now_ms};
use duokey_crypto::{GroupName, Rights, Rn2, UserId};
use duokey_pki::grpc::Caller;
use duokey_proto::group_management_server::GroupManagement;
use duokey_proto::*;
use duokey_storage::gms::{GroupRow, MemberRow};
use prost::Message;
use tonic::{Request, Response, Status};

fn group_id(bytes: &[u8]) -> Result<Vec<u8>, Status> {
    if bytes.len() == 16 {
        Ok(bytes.to_vec())
    } else {
        Err(Status::invalid_argument("group_id must be 16 bytes"))
    }
}

fn report_id(bytes: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match bytes.len() {
        0 => Ok(None),
        16 => Ok(Some(bytes.to_vec())),
        _ => Err(Status::invalid_argument("report_id must be 16 bytes")),
    }
}

/// The rotator of a leave (SPEC §4.3): the owner, else the first remaining
/// member by user id with the remove right, else the first remaining member.
fn leave_rotator(remaining: &[MemberRow]) -> Option<String> {
    let has = |m: &&MemberRow, r: Rights| Rights::from_bits(m.rights).is_ok_and(|x| x.contains(r));
    remaining
        .iter()
        .find(|m| has(m, Rights::OWNER))
        .or_else(|| remaining.iter().find(|m| has(m, Rights::REMOVE)))
        .or_else(|| remaining.first())
        .map(|m| m.user_id.clone())
}

impl Gms {
    /// The calling terminal's user id, after its per-certificate rate limit.
    fn user_of<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let user = Caller::of(req)?.terminal()?.0.to_string();
        self.inner.limiter.check_key(&user).map_err(|_| {
            metrics::counter!("duokey_refusals_total", "reason" => "rate_limited").increment(1);
            Status::resource_exhausted(
                "rate limit exceeded for this certificate; slow down and retry",
            )
        })?;
        Ok(user)
    }

    /// The grant an already-applied report produced, if `report_id` was seen.
    async fn replayed_report(
        &self,
        gid: &[u8],
        report: &Option<Vec<u8>>,
        user: &str,
    ) -> Result<Option<Grant>, Status> {
        let Some(rid) = report else { return Ok(None) };
        let Some((stored_gid, v)) = self.inner.db.report(rid).await.map_err(storage)? else {
            return Ok(None);
        };
        if stored_gid != gid {
            return Err(Status::invalid_argument(
                "report_id already used for another group",
            ));
        }
        let grant = self.grant_for(gid, v, user).await?;
        Ok(Some(grant))
    }

    /// A stored grant, only for a user who was a member at that version.
    async fn grant_for(&self, gid: &[u8], v: u64, user: &str) -> Result<Grant, Status> {
        let pb = self
            .inner
            .db
            .grant(gid, v)
            .await
            .map_err(storage)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no grant of version {v} is kept (outside retention or unknown)"
                ))
            })?;
        let grant = decode_grant(&pb)?;
        if grant.members.iter().any(|m| m.user_id == user) {
            Ok(grant)
        } else {
            metrics::counter!("duokey_refusals_total", "reason" => "grant_not_member").increment(1);
            Err(Status::permission_denied(format!(
                "you were not a member at RN2 version {v}"
            )))
        }
    }

    async fn current_grant(&self, gid: &[u8], user: &str) -> Result<Grant, Status> {
        let g = self
            .inner
            .db
            .group(gid)
            .await
            .map_err(storage)?
            .ok_or_else(|| Status::not_found("no such group"))?;
        self.grant_for(gid, g.rn2_version, user).await
    }
}

#[tonic::async_trait]
impl GroupManagement for Gms {
    async fn create_group(
        &self,
        req: Request<CreateGroupRequest>,
    ) -> Result<Response<Grant>, Status> {
        let user = self.user_of(&req)?;
        let r = req.into_inner();
        let gid = group_id(&r.group_id)?;
        let name =
            GroupName::new_chosen(r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let policy = normalise(r.policy, self.inner.config.min_rotate_every_secs)?;
        let now = now_ms();
        let group = GroupRow {
            group_id: gid.clone(),
            name: name.to_string(),
            rn2_version: 1,
            rn1_version: 1,
            policy: policy.encode_to_vec(),
            deleted: false,
            next_rotation_ms: next_rotation(now, &policy),
        };
        let owner = MemberRow {
            user_id: user.clone(),
            rights: Rights::ALL.bits(),
        };
        let rn2 = Rn2::random().map_err(|_| Status::internal("random generator failed"))?;
        let grant = build_grant(
            &group,
            &policy,
            std::slice::from_ref(&owner),
            &rn2,
            now,
            &Next::new(GrantCause::Created, &user),
        );
        if !self
            .inner
            .db
            .create_group(&group, &owner, &grant.encode_to_vec(), now)
            .await
            .map_err(storage)?
        {
            return Err(Status::already_exists("a group with this id exists"));
        }
        tracing::info!(group = %crate::hex(&gid), "group created");
        self.publish(&grant, None);
        self.inner.schedule_changed.notify_one();
        Ok(Response::new(grant))
    }

    async fn report_member(
        &self,
        req: Request<ReportMemberRequest>,
    ) -> Result<Response<Grant>, Status> {
        let me = self.user_of(&req)?;
        let r = req.into_inner();
        let gid = group_id(&r.group_id)?;
        let report = report_id(&r.report_id)?;
        if let Some(g) = self.replayed_report(&gid, &report, &me).await? {
            return Ok(Response::new(g));
        }
        let subject = UserId::new(r.user_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .to_string();
        let grant = match MemberChange::try_from(r.change) {
            Ok(MemberChange::Add) => {
                let rights = Rights::from_u32(r.rights)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.change(&gid, |cur| {
                    let mine = cur.require(&me, Rights::INVITE, "invite")?;
                    if !mine.contains(rights) {
                        return Err(Status::permission_denied(
                            "you can grant only rights you hold",
                        ));
                    }
                    if cur.rights_of(&subject).is_some() {
                        return Err(Status::already_exists(format!(
                            "{subject} is already a member"
                        )));
                    }
                    if cur.members.len() >= cur.policy.max_members as usize {
                        return Err(Status::resource_exhausted(
                            "the group is full (max_members)",
                        ));
                    }
                    let mut next = Next::new(GrantCause::MemberAdded, &subject);
                    next.upsert = Some(MemberRow {
                        user_id: subject.clone(),
                        rights: rights.bits(),
                    });
                    next.report_id = report.clone();
                    Ok(next)
                })
                .await?
            }
            Ok(MemberChange::Remove) => {
                self.change(&gid, |cur| {
                    cur.require(&me, Rights::REMOVE, "remove")?;
                    let theirs = cur
                        .rights_of(&subject)
                        .ok_or_else(|| Status::not_found(format!("{subject} is not a member")))?;
                    if subject == me {
                        return Err(Status::invalid_argument("to leave a group, use Leave"));
                    }
                    if theirs.contains(Rights::OWNER) {
                        return Err(Status::permission_denied("the owner cannot be removed"));
                    }
                    let mut next = Next::new(GrantCause::MemberRemoved, &subject);
                    next.departure = Some((subject.clone(), RemovalCause::Removed, me.clone()));
                    next.report_id = report.clone();
                    if r.rotate_rn1 || rotates_rn1_on_remove(&cur.policy) {
                        next.rn1_rotator = Some(me.clone());
                    }
                    Ok(next)
                })
                .await?
            }
            _ => return Err(Status::invalid_argument("change must be ADD or REMOVE")),
        };
        Ok(Response::new(grant))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let me = self.user_of(&req)?;
        let gid = group_id(&req.get_ref().group_id)?;
        let cur = self.current(&gid).await?;
        if cur.rights_of(&me).is_none() {
            return Err(Status::permission_denied(
                "you are not a member of this group",
            ));
        }
        if cur.members.len() == 1 {
            let v = cur.group.rn2_version + 1;
            self.delete_group(&gid, v, &me).await?;
            return Ok(Response::new(LeaveResponse { rn2_version: v }));
        }
        let grant = self
            .change(&gid, |cur| {
                cur.rights_of(&me).ok_or_else(|| {
                    Status::permission_denied("you are not a member of this group")
                })?;
                let mut next = Next::new(GrantCause::MemberLeft, &me);
                next.departure = Some((me.clone(), RemovalCause::Left, String::new()));
                if rotates_rn1_on_remove(&cur.policy) {
                    let remaining: Vec<MemberRow> = cur
                        .members
                        .iter()
                        .filter(|m| m.user_id != me)
                        .cloned()
                        .collect();
                    next.rn1_rotator = leave_rotator(&remaining);
                }
                Ok(next)
            })
            .await?;
        Ok(Response::new(LeaveResponse {
            rn2_version: grant.rn2_version,
        }))
    }

    async fn rotate(&self, req: Request<RotateRequest>) -> Result<Response<Grant>, Status> {
        let me = self.user_of(&req)?;
        let r = req.into_inner();
        let gid = group_id(&r.group_id)?;
        let report = report_id(&r.report_id)?;
        if let Some(g) = self.replayed_report(&gid, &report, &me).await? {
            return Ok(Response::new(g));
        }
        let grant = self
            .change(&gid, |cur| {
                cur.require(&me, Rights::REMOVE, "remove")?;
                let mut next = Next::new(GrantCause::Forced, &me);
                next.report_id = report.clone();
                if r.rotate_rn1 {
                    next.rn1_rotator = Some(me.clone());
                }
                Ok(next)
            })
            .await?;
        Ok(Response::new(grant))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let me = self.user_of(&req)?;
        let gid = group_id(&req.get_ref().group_id)?;
        let cur = self.current(&gid).await?;
        cur.require(&me, Rights::OWNER, "owner")?;
        self.delete_group(&gid, cur.group.rn2_version + 1, &me)
            .await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn get_grants(
        &self,
        req: Request<GetGrantsRequest>,
    ) -> Result<Response<GetGrantsResponse>, Status> {
        let me = self.user_of(&req)?;
        let asked: Vec<Vec<u8>> = req
            .get_ref()
            .group_ids
            .iter()
            .map(|g| group_id(g))
            .collect::<Result<_, _>>()?;
        if asked.len() > 10_000 {
            return Err(Status::invalid_argument(
                "at most 10,000 groups per request",
            ));
        }
        let mine = self.inner.db.groups_of(&me).await.map_err(storage)?;
        let wanted = if asked.is_empty() {
            mine.clone()
        } else {
            asked
        };
        let mut out = GetGrantsResponse::default();
        for gid in wanted {
            if mine.contains(&gid) {
                out.grants.push(self.current_grant(&gid, &me).await?);
            } else if let Some(d) = self.inner.db.departure(&gid, &me).await.map_err(storage)? {
                out.removals.push(Removal {
                    group_id: gid,
                    rn2_version: d.rn2_version,
                    cause: d.cause,
                    by: d.by,
                });
            }
        }
        Ok(Response::new(out))
    }

    async fn get_grant(&self, req: Request<GetGrantRequest>) -> Result<Response<Grant>, Status> {
        let me = self.user_of(&req)?;
        let gid = group_id(&req.get_ref().group_id)?;
        Ok(Response::new(
            self.grant_for(&gid, req.get_ref().rn2_version, &me).await?,
        ))
    }

    async fn list_groups(
        &self,
        req: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let me = self.user_of(&req)?;
        let mut groups = Vec::new();
        for gid in self.inner.db.groups_of(&me).await.map_err(storage)? {
            let cur = self.current(&gid).await?;
            groups.push(GroupSummary {
                group_id: gid,
                name: cur.group.name.clone(),
                rn2_version: cur.group.rn2_version,
                rn1_version: cur.group.rn1_version,
                rights: cur.rights_of(&me).map(|r| u32::from(r.bits())).unwrap_or(0),
                member_count: u32::try_from(cur.members.len()).unwrap_or(u32::MAX),
            });
        }
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let me = self.user_of(&req)?;
        Ok(Response::new(self.inner.watchers.subscribe(&me)))
    }
}

impl Gms {
    async fn delete_group(&self, gid: &[u8], v: u64, by: &str) -> Result<(), Status> {
        let lock = self.group_lock(gid);
        let _guard = lock.lock().await;
        let cause = RemovalCause::Deleted as i32;
        let members = self
            .inner
            .db
            .delete_group(gid, v, cause, by)
            .await
            .map_err(storage)?;
        for user in members {
            let d = duokey_storage::gms::Departure {
                user_id: user.clone(),
                rn2_version: v,
                cause,
                by: by.to_owned(),
            };
            self.inner
                .watchers
                .push(&user, grants::removal_event(gid, &d).into());
        }
        self.inner.cs_changed.notify_one();
        tracing::info!(group = %crate::hex(gid), "group deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_rotator_follows_spec_order() {
        let m = |u: &str, r: u8| MemberRow {
            user_id: u.into(),
            rights: r,
        };
        assert_eq!(
            leave_rotator(&[m("a", 0), m("b", 2), m("c", 7)]).as_deref(),
            Some("c")
        );
        assert_eq!(
            leave_rotator(&[m("a", 0), m("b", 2), m("c", 2)]).as_deref(),
            Some("b")
        );
        assert_eq!(leave_rotator(&[m("a", 0), m("b", 1)]).as_deref(), Some("a"));
        assert_eq!(leave_rotator(&[]), None);
    }
}
