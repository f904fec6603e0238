//! The `GroupManagement` gRPC service (SPEC §5.2).

use crate::Gms;
use crate::grants::{self, Next, build_grant, decode_grant, next_rotation};
use crate::membership::{parse_change, refusal};
use crate::policy;
use crate::watch::WatchStream;
use duokey_crypto::membership::{Action, SignedChange, State};
use duokey_crypto::{GroupName, PublicIdentity, Rights, Rn2};
use duokey_pki::grpc::Caller;
use duokey_proto::group_management_server::GroupManagement;
use duokey_proto::*;
use duokey_storage::gms::{GroupRow, MemberRow, MembershipRow};
use prost::Message;
use tonic::{Request, Response, Status};

use duokey_proto::group_id_arg as group_id;

fn report_id(bytes: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match bytes.len() {
        0 => Ok(None),
        16 => Ok(Some(bytes.to_vec())),
        _ => Err(Status::invalid_argument("report_id must be 16 bytes")),
    }
}

/// The signed change of a request (see [`parse_change`]), refused unless
/// its action is one of `allowed`, what the call is for (`what`).
fn change_of(
    bytes: &[u8],
    gid: &[u8],
    caller: &str,
    allowed: &[Action],
    what: &'static str,
) -> Result<SignedChange, Status> {
    let change = parse_change(bytes, gid, caller)?;
    if !allowed.contains(&change.change().action) {
        return Err(Status::invalid_argument(what));
    }
    Ok(change)
}

impl Gms {
    /// What a call carrying a signed change starts with: the caller's user
    /// id and certificate chain (after its rate limit), and the message.
    fn signed_call<T>(&self, req: Request<T>) -> Result<(String, Vec<Vec<u8>>, T), Status> {
        let (user, _, chain) = self.caller_of(&req)?;
        Ok((user, chain, req.into_inner()))
    }

    /// The calling terminal's user id, after its per-certificate rate limit.
    fn user_of<T>(&self, req: &Request<T>) -> Result<String, Status> {
        Ok(self.caller_of(req)?.0)
    }

    /// The calling terminal: user id, certified key and certificate chain,
    /// after its per-certificate rate limit.
    fn caller_of<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(String, PublicIdentity, Vec<Vec<u8>>), Status> {
        let caller = Caller::of(req)?;
        let (user, key) = caller.terminal()?;
        let user = user.to_string();
        self.inner.limiter.check_key(&user).map_err(|_| {
            metrics::counter!("duokey_refusals_total", "reason" => "rate_limited").increment(1);
            Status::resource_exhausted("rate limit exceeded for this user; slow down and retry")
        })?;
        Ok((user, key, caller.chain))
    }

    /// The grant an already-applied report produced, if `report_id` was seen.
    async fn replayed_report(
        &self,
        gid: &[u8],
        report: &Option<Vec<u8>>,
        user: &str,
    ) -> Result<Option<Grant>, Status> {
        let Some(rid) = report else { return Ok(None) };
        let Some((stored_gid, v)) = self.inner.db.report(rid).await? else {
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
        let pb = self.inner.db.grant(gid, v).await?.ok_or_else(|| {
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
            .await?
            .ok_or_else(|| Status::not_found("no such group"))?;
        self.grant_for(gid, g.rn2_version, user).await
    }

    /// `FAILED_PRECONDITION` when `user` is a member of as many groups as
    /// this server allows (nobody can be added to a million
    /// groups); a definitive answer, not a transient one.
    async fn check_group_quota(&self, user: &str) -> Result<(), Status> {
        let max = self.inner.config.max_groups_per_user;
        let n = self.inner.db.groups_of(user).await?.len();
        if u64::try_from(n).unwrap_or(u64::MAX) >= max {
            return Err(Status::failed_precondition(format!(
                "{user} is a member of {n} groups, the most this server allows; leave or delete some first"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl GroupManagement for Gms {
    async fn create_group(
        &self,
        req: Request<CreateGroupRequest>,
    ) -> Result<Response<Grant>, Status> {
        let (user, key, chain) = self.caller_of(&req)?;
        self.check_group_quota(user.as_str()).await?;
        let bytes = req.into_inner().change;
        let gid = SignedChange::parse(&bytes)
            .map(|c| c.change().group_id.0.to_vec())
            .map_err(|e| Status::invalid_argument(format!("membership change: {e}")))?;
        let change = parse_change(&bytes, &gid, &user)?;
        let state = State::create(&change).map_err(refusal)?;
        if state.key_of(&change.change().actor) != Some(&key) {
            return Err(Status::permission_denied(
                "the create change must name the key of your certificate",
            ));
        }
        GroupName::new_chosen(state.name.as_str())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let policy = policy::from_signed(&state.policy, self.inner.config.policy_limits())?;
        let now = self.now_ms();
        let group = GroupRow {
            group_id: gid.clone(),
            name: state.name.to_string(),
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
        let mut next = Next::new(GrantCause::Created, &user);
        next.membership = Some((change.clone(), state.clone(), chain.clone()));
        let grant = build_grant(
            &group,
            &policy,
            std::slice::from_ref(&owner),
            &rn2,
            now,
            &next,
            &state,
        );
        let row = MembershipRow {
            seq: 1,
            change: change.as_bytes(),
            actor_chain: &chain,
        };
        let lock = self.group_lock(&gid);
        let _guard = lock.lock().await;
        let started = std::time::Instant::now();
        let created = self
            .inner
            .db
            .create_group(&group, &owner, &grant.encode_to_vec(), now, &row)
            .await;
        metrics::histogram!("duokey_db_seconds", "op" => "gms_create_group")
            .record(started.elapsed().as_secs_f64());
        if !created? {
            return Err(Status::already_exists("a group with this id exists"));
        }
        self.remember(&gid, &state);
        tracing::info!(group = %crate::hex(&gid), "group created");
        self.publish(&grant, None);
        self.inner.schedule_changed.notify_one();
        Ok(Response::new(grant))
    }

    async fn report_member(
        &self,
        req: Request<ReportMemberRequest>,
    ) -> Result<Response<Grant>, Status> {
        let (me, chain, r) = self.signed_call(req)?;
        let gid = group_id(&r.group_id)?;
        let report = report_id(&r.report_id)?;
        if let Some(g) = self.replayed_report(&gid, &report, &me).await? {
            return Ok(Response::new(g));
        }
        let change = change_of(
            &r.change,
            &gid,
            &me,
            &[Action::Add, Action::Remove],
            "ReportMember carries an add or a remove change",
        )?;
        if change.change().action == Action::Add {
            self.check_group_quota(change.change().subject.as_str())
                .await?;
        }
        let grant = self
            .change(&gid, |cur| {
                // The rules (rights, a full group, the RN1 flag) are the
                // signed chain's: `Next::from_change` applies them.
                let mut next =
                    Next::from_change(cur, change, chain, self.inner.config.policy_limits())?;
                next.report_id = report.clone();
                Ok(next)
            })
            .await?;
        Ok(Response::new(grant))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let (me, chain, r) = self.signed_call(req)?;
        let gid = group_id(&r.group_id)?;
        let change = change_of(
            &r.change,
            &gid,
            &me,
            &[Action::Leave],
            "Leave carries a leave change",
        )?;
        let grant = self
            .change(&gid, |cur| {
                Next::from_change(cur, change, chain, self.inner.config.policy_limits())
            })
            .await?;
        Ok(Response::new(LeaveResponse {
            rn2_version: grant.rn2_version,
        }))
    }

    async fn rotate(&self, req: Request<RotateRequest>) -> Result<Response<Grant>, Status> {
        let (me, chain, r) = self.signed_call(req)?;
        let gid = group_id(&r.group_id)?;
        let report = report_id(&r.report_id)?;
        if let Some(g) = self.replayed_report(&gid, &report, &me).await? {
            return Ok(Response::new(g));
        }
        let change = if r.change.is_empty() {
            None
        } else {
            Some(change_of(
                &r.change,
                &gid,
                &me,
                &[Action::RotateRn1, Action::Policy, Action::Transfer],
                "Rotate carries a rotate_rn1, policy or transfer change, or none",
            )?)
        };
        let grant = self
            .change(&gid, |cur| {
                let mut next = match change {
                    // SPEC §4.4: any member may rotate RN1 (a signed change);
                    // the owner may change the policy or hand ownership over
                    // (SPEC §4.7 rules, PROTOCOL §4.8).
                    Some(change) => {
                        Next::from_change(cur, change, chain, self.inner.config.policy_limits())?
                    }
                    // A forced RN2 rotation needs the remove right.
                    None => {
                        cur.require(&me, Rights::REMOVE, "remove")?;
                        Next::new(GrantCause::Forced, &me)
                    }
                };
                next.report_id = report.clone();
                Ok(next)
            })
            .await?;
        Ok(Response::new(grant))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let (me, chain, r) = self.signed_call(req)?;
        let gid = group_id(&r.group_id)?;
        let change = change_of(
            &r.change,
            &gid,
            &me,
            &[Action::Delete],
            "Delete carries a delete change",
        )?;
        self.delete_group(&gid, &me, &change, &chain).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn get_changes(
        &self,
        req: Request<GetChangesRequest>,
    ) -> Result<Response<GetChangesResponse>, Status> {
        let me = self.user_of(&req)?;
        let r = req.into_inner();
        let gid = group_id(&r.group_id)?;
        if !self.inner.db.groups_of(&me).await?.contains(&gid) {
            return Err(Status::permission_denied(
                "you are not a member of this group",
            ));
        }
        let limit = if r.limit == 0 { 500 } else { r.limit.min(500) };
        let changes = self.inner.db.changes(&gid, r.after_seq, limit + 1).await?;
        let (changes, more) = duokey_proto::page(changes, limit as usize, |c| {
            c.change.len() + c.actor_chain.iter().map(Vec::len).sum::<usize>()
        });
        Ok(Response::new(GetChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| StoredChange {
                    change: c.change,
                    actor_cert_chain: c.actor_chain,
                })
                .collect(),
            more,
        }))
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
        let mine = self.inner.db.groups_of(&me).await?;
        let wanted = if asked.is_empty() {
            mine.clone()
        } else {
            asked
        };
        let mut out = GetGrantsResponse::default();
        for gid in wanted {
            if mine.contains(&gid) {
                out.grants.push(self.current_grant(&gid, &me).await?);
            } else if let Some(d) = self.inner.db.departure(&gid, &me).await? {
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
        for gid in self.inner.db.groups_of(&me).await? {
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
        Ok(Response::new(self.inner.watchers.subscribe(&me)?))
    }
}

impl Gms {
    /// The owner's signed `delete` (SPEC §4.3, §4.7): every member departs.
    async fn delete_group(
        &self,
        gid: &[u8],
        by: &str,
        change: &SignedChange,
        chain: &[Vec<u8>],
    ) -> Result<(), Status> {
        let lock = self.group_lock(gid);
        let _guard = lock.lock().await;
        let cur = self.current(gid).await?;
        let state = cur.membership.apply(change).map_err(refusal)?;
        let v = cur.group.rn2_version + 1;
        let cause = RemovalCause::Deleted as i32;
        let row = MembershipRow {
            seq: state.seq,
            change: change.as_bytes(),
            actor_chain: chain,
        };
        let members = self.inner.db.delete_group(gid, v, cause, by, &row).await?;
        self.inner.db.checkpoint().await?;
        self.remember(gid, &state);
        let d = duokey_storage::gms::Departure {
            user_id: String::new(),
            rn2_version: v,
            cause,
            by: by.to_owned(),
        };
        let removal = std::sync::Arc::new(grants::removal_event(gid, &d));
        self.tell_removals(members.clone(), &removal);
        for user in members {
            self.inner.watchers.push(&user, removal.clone());
        }
        self.inner.cs_changed.notify_one();
        tracing::info!(group = %crate::hex(gid), "group deleted");
        Ok(())
    }
}
