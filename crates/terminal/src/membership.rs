//! Member-signed membership on the terminal (SPEC §4.7, property P9): the
//! terminal keeps each group's chain of signed changes, verified with the
//! same pure rules as the GMS ([`State::apply`]), signs its own changes on
//! top of it, checks every grant against it, and takes the member list, the
//! RN1 rotator and the RN1 version from it alone — never from the GMS's
//! fields. A GMS can delay or withhold changes; it cannot make one.

use crate::error::{Error, Result};
use crate::terminal::Terminal;
use duokey_crypto::membership::{self, Action, SignedChange, State};
use duokey_crypto::*;
use duokey_proto::{
    DeleteRequest, GetChangesRequest, Grant, LeaveRequest, ReportMemberRequest, RotateRequest,
};
use std::collections::VecDeque;
use std::sync::Arc;

/// What the user asked for, re-checked against the verified state before
/// every signature (SPEC §4.7: after `ABORTED`, re-sign only if it still holds).
#[derive(Debug, Clone)]
pub(crate) enum Intent {
    /// Add `subject` with `rights` and the key that signed its `ack`.
    Add {
        subject: UserId,
        rights: Rights,
        key: PublicIdentity,
    },
    /// Remove `subject`.
    Remove { subject: UserId },
    /// Leave the group.
    Leave,
    /// Rotate RN1 by hand.
    RotateRn1,
    /// Rotate RN1 because version `0` never arrived (SPEC §4.3 step 4,
    /// `rn1_wait`): refused if the group has moved past that version.
    ReplaceMissingRn1(u32),
    /// Delete the group.
    Delete,
    /// Replace the group's policy (the owner only).
    Policy(membership::Policy),
    /// Hand ownership to `subject`, a member (the owner only, PROTOCOL §4.8).
    Transfer { subject: UserId },
}

/// The verified head of a group's membership, as `duokey group verify` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MembershipCode {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
    /// The seq of the last verified change.
    pub seq: u64,
    /// Its hash, 64 hex digits.
    pub head: String,
    /// The code members compare.
    pub code: String,
    /// Whether a member's signed anchor named another change than this
    /// terminal's at the same seq (evidence kept; sending is stopped).
    pub histories_differ: bool,
}

/// Meta key: the membership seq the newest accepted grant of a group named.
fn grant_seq_key(gid: &GroupId) -> String {
    format!("grant_seq:{}", hex::encode(gid))
}

/// How many times a change is re-signed after `ABORTED` before giving up.
const SIGN_ATTEMPTS: usize = 3;

/// The refusal of a change the GMS presented that no member signed validly.
fn unsigned(e: impl std::fmt::Display) -> Error {
    Error::refused(format!(
        "the group server sent a membership change no member signed ({e})"
    ))
}

impl Terminal {
    /// The verified membership state of a group, if this terminal holds its
    /// chain (shared: [`Terminal::catch_up_membership`] advances it in place
    /// when no one else holds it, without copying the member list).
    pub(crate) async fn membership(&mut self, gid: &GroupId) -> Result<Option<Arc<State>>> {
        if let Some(s) = self.states.get(gid) {
            return Ok(Some(s.clone()));
        }
        let state = self.membership_at(gid, u64::MAX).await?.map(Arc::new);
        if let Some(s) = &state {
            self.states.insert(*gid, s.clone());
        }
        Ok(state)
    }

    /// The verified state as it was at `seq` (rebuilt from the stored chain).
    pub(crate) async fn membership_at(&self, gid: &GroupId, seq: u64) -> Result<Option<State>> {
        let mut state: Option<State> = None;
        for bytes in self.store.changes(gid).await? {
            let change = SignedChange::parse(&bytes)?;
            if change.change().seq > seq {
                break;
            }
            membership::extend(&mut state, &change)?;
        }
        Ok(state)
    }

    /// Records changes this terminal verified, in one transaction, and the
    /// state after the last.
    pub(crate) async fn adopt_all(
        &mut self,
        gid: &GroupId,
        changes: &[SignedChange],
        state: State,
    ) -> Result<()> {
        let rows: Vec<(u64, &[u8])> = changes
            .iter()
            .map(|c| (c.change().seq, c.as_bytes()))
            .collect();
        self.store.put_changes(gid, &rows).await?;
        self.states.insert(*gid, Arc::new(state));
        self.recheck_anchors(gid).await
    }

    /// A page of the group's stored changes after `after_seq`, from the GMS.
    async fn fetch_changes(&mut self, gid: &GroupId, after_seq: u64) -> Result<Vec<SignedChange>> {
        let resp = self
            .gms
            .get_changes(GetChangesRequest {
                group_id: gid.to_vec(),
                after_seq,
                limit: 500,
            })
            .await
            .map_err(Error::server("fetching membership changes"))?
            .into_inner();
        resp.changes
            .iter()
            .map(|c| SignedChange::parse(&c.change).map_err(unsigned))
            .collect()
    }

    /// Verifies the changes after this terminal's head, from `given` (a
    /// grant's) and then from the GMS, up to `upto` = (seq, head) — or as far
    /// as the GMS has them when `None` — and records them. Every key that
    /// enters the state must be the one this terminal knows for that user.
    pub(crate) async fn catch_up_membership(
        &mut self,
        gid: &GroupId,
        upto: Option<(u64, [u8; 32])>,
        given: &[Vec<u8>],
    ) -> Result<Arc<State>> {
        let mut state = self.membership(gid).await?.ok_or_else(|| {
            Error::refused("this terminal holds no membership chain of the group")
        })?;
        // Taken out of the cache so that it is advanced without a copy; put
        // back only once every change verified (else rebuilt from the store).
        self.states.remove(gid);
        let mut pending: VecDeque<SignedChange> = given
            .iter()
            .map(|b| SignedChange::parse(b).map_err(unsigned))
            .collect::<Result<_>>()?;
        loop {
            if upto.is_some_and(|(seq, _)| state.seq >= seq) {
                break;
            }
            pending.retain(|c| c.change().seq > state.seq);
            if pending
                .front()
                .is_none_or(|c| c.change().seq != state.seq + 1)
            {
                pending = self.fetch_changes(gid, state.seq).await?.into();
                if pending.is_empty() {
                    break;
                }
            }
            let Some(change) = pending.pop_front() else {
                break;
            };
            Arc::make_mut(&mut state)
                .advance(&change)
                .map_err(unsigned)?;
            self.check_entering_key(&change, &state).await?;
            self.store
                .put_change(gid, state.seq, change.as_bytes())
                .await?;
        }
        self.states.insert(*gid, state.clone());
        self.recheck_anchors(gid).await?;
        if let Some((seq, head)) = upto
            && (state.seq != seq || state.head != head)
        {
            return Err(unsigned(format!(
                "the chain does not reach the head the grant names at seq {seq}"
            )));
        }
        Ok(state)
    }

    /// SPEC §4.7 "Keys and certificates": a key entering the state (`add`,
    /// `rekey`) must be the one this terminal pinned for that user from the
    /// CA's certificate; otherwise the change waits for `verify --confirm`.
    async fn check_entering_key(&mut self, change: &SignedChange, after: &State) -> Result<()> {
        let c = change.change();
        let user = match c.action {
            Action::Add => &c.subject,
            Action::Rekey => &c.actor,
            _ => return Ok(()),
        };
        let Some(recorded) = after.key_of(user) else {
            return Ok(());
        };
        if &self.contact_key(user).await? != recorded {
            return Err(Error::refused(format!(
                "{user}'s key changed: the group's history records a key for {user} that is not the one \
                 this terminal knows; compare safety numbers with `duokey verify {user}`"
            )));
        }
        Ok(())
    }

    /// Verifies a whole chain from `create` up to (seq, head), as a new
    /// member does from its inviter's anchor: the changes and the state
    /// after the last. Certificate and pin problems in this prefix do not
    /// stop it: the inviter vouches for it (SPEC §4.7).
    pub(crate) async fn verify_chain_to(
        &mut self,
        gid: &GroupId,
        seq: u64,
        head: &[u8; 32],
    ) -> Result<(Vec<SignedChange>, State)> {
        let mut changes: Vec<SignedChange> = Vec::new();
        let mut state: Option<State> = None;
        while state.as_ref().map_or(0, |s| s.seq) < seq {
            let after = state.as_ref().map_or(0, |s| s.seq);
            let page = self.fetch_changes(gid, after).await?;
            if page.is_empty() {
                break;
            }
            for change in page.into_iter().take_while(|c| c.change().seq <= seq) {
                membership::extend(&mut state, &change).map_err(unsigned)?;
                changes.push(change);
            }
        }
        match state {
            Some(s) if s.seq == seq && &s.head == head => Ok((changes, s)),
            _ => Err(unsigned(format!(
                "the group's history does not reach the change the inviter named (seq {seq})"
            ))),
        }
    }

    /// Checks a grant against the verified state (SPEC §4.7 "Grants"): its
    /// changes must extend the chain to its seq and head, its RN1 version and
    /// name must be the state's, and a member list in it must be the state's.
    /// The grant comes back with the member list of the verified state; a
    /// grant without a chain to check (a new member before its anchor) comes
    /// back as it is, since R1 still only follows the verified rules.
    pub(crate) async fn verify_grant(&mut self, gid: &GroupId, mut g: Grant) -> Result<Grant> {
        let Some(mine) = self.membership(gid).await? else {
            return Ok(g);
        };
        let head: [u8; 32] = g
            .membership_head
            .as_slice()
            .try_into()
            .map_err(|_| unsigned("a grant without a membership head"))?;
        // A new version may not roll membership back: it names at least the
        // head the newest accepted grant named (SPEC §4.7: a grant with no
        // new change keeps seq, head and rn1_version). Only past versions
        // name older heads. (The verified chain itself may run ahead of the
        // grants, after a catch-up; versions in between are not rollbacks.)
        let current = self.store.group(gid).await?.map_or(0, |r| r.rn2_version);
        let granted = self.store.meta_u64(&grant_seq_key(gid)).await?;
        if g.rn2_version > current && g.membership_seq < granted {
            return Err(unsigned(format!(
                "a new key version naming membership change {} after a grant named {}",
                g.membership_seq, granted
            )));
        }
        let at = if g.membership_seq > mine.seq {
            drop(mine);
            self.catch_up_membership(gid, Some((g.membership_seq, head)), &g.changes)
                .await?
        } else if g.membership_seq == mine.seq {
            mine
        } else {
            self.membership_at(gid, g.membership_seq)
                .await?
                .map(Arc::new)
                .ok_or_else(|| unsigned("a grant before the group's creation"))?
        };
        if at.head != head {
            return Err(unsigned(format!(
                "the grant names another head at seq {}",
                g.membership_seq
            )));
        }
        if g.rn1_version != at.rn1_version {
            return Err(unsigned(format!(
                "the grant names RN1 version {} where the history has {}",
                g.rn1_version, at.rn1_version
            )));
        }
        if g.group_name != at.name.as_str() {
            return Err(unsigned("the grant renames the group"));
        }
        let verified = duokey_proto::members_of(&at);
        if !g.members_omitted {
            let mut theirs = g.members.clone();
            theirs.sort_by(|a, b| a.user_id.cmp(&b.user_id));
            if theirs != verified {
                return Err(unsigned("the grant's member list is not the signed one"));
            }
        }
        if g.rn2_version > current {
            self.store
                .set_meta_u64(&grant_seq_key(gid), g.membership_seq)
                .await?;
        }
        g.members = verified;
        g.members_omitted = false;
        // The policy members signed, not the GMS's copy: grace and retention
        // decide what a terminal accepts and when it erases keys.
        g.policy = Some(duokey_proto::Policy::from(&at.policy));
        Ok(g)
    }

    /// `duokey group verify GROUP` (SPEC §4.7 "Equivocation"): the verified
    /// head and its code, for members to compare out of band.
    pub async fn membership_code(&mut self, gid: &GroupId) -> Result<MembershipCode> {
        let state = self.membership(gid).await?.ok_or_else(|| {
            Error::refused(
                "this terminal has not verified the group's membership yet; run `duokey sync`",
            )
        })?;
        Ok(MembershipCode {
            group_id: *gid,
            seq: state.seq,
            head: hex::encode(state.head),
            code: state.verification_code(),
            histories_differ: self.store.forked(gid).await?,
        })
    }

    /// Signs `intent` on top of the verified state, after checking it still holds.
    async fn sign_intent(&mut self, gid: &GroupId, intent: &Intent) -> Result<SignedChange> {
        let state = self.membership(gid).await?.ok_or_else(|| {
            Error::refused(
                "this terminal has not verified the group's membership yet; run `duokey sync` and try again",
            )
        })?;
        let me = self.me.clone();
        let (action, subject, rights, body) = match intent {
            Intent::Add {
                subject,
                rights,
                key,
            } => {
                if state.members.contains_key(subject) {
                    return Err(Error::refused(format!("{subject} is already a member")));
                }
                (
                    Action::Add,
                    subject.clone(),
                    *rights,
                    key.to_bytes().to_vec(),
                )
            }
            Intent::Remove { subject } => {
                if !state.members.contains_key(subject) {
                    return Err(Error::refused(format!("{subject} is not a member")));
                }
                (Action::Remove, subject.clone(), Rights::NONE, Vec::new())
            }
            Intent::Leave => (Action::Leave, me.clone(), Rights::NONE, Vec::new()),
            Intent::RotateRn1 => (Action::RotateRn1, me.clone(), Rights::NONE, Vec::new()),
            Intent::ReplaceMissingRn1(v) => {
                if state.rn1_version != *v {
                    return Err(Error::Superseded);
                }
                (Action::RotateRn1, me.clone(), Rights::NONE, Vec::new())
            }
            Intent::Delete => (Action::Delete, me.clone(), Rights::NONE, Vec::new()),
            Intent::Policy(p) => (Action::Policy, me.clone(), Rights::NONE, p.encode()),
            Intent::Transfer { subject } => {
                if !state.members.contains_key(subject) {
                    return Err(Error::refused(format!("{subject} is not a member")));
                }
                (Action::Transfer, subject.clone(), Rights::NONE, Vec::new())
            }
        };
        let signed = state
            .next_change(action, &me, &subject, rights, body, self.now_ms())
            .sign(&self.identity)?;
        // Checked here too, so a refused change is explained before it is sent.
        state
            .apply(&signed)
            .map_err(|e| Error::refused(e.to_string()))?;
        Ok(signed)
    }

    /// Signs `intent` and sends it to the GMS; on `ABORTED` (the chain moved
    /// on) fetches and verifies the new changes, re-checks the intent and
    /// signs again. Returns the grant the change caused, if the call has one,
    /// and the change.
    pub(crate) async fn submit(
        &mut self,
        gid: &GroupId,
        intent: Intent,
        report_id: &ItemId,
    ) -> Result<(Option<Grant>, SignedChange)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let change = self.sign_intent(gid, &intent).await?;
            let bytes = change.as_bytes().to_vec();
            let group_id = gid.to_vec();
            let answer = match &intent {
                Intent::Add { .. } | Intent::Remove { .. } => self
                    .gms
                    .report_member(ReportMemberRequest {
                        group_id,
                        report_id: report_id.0.to_vec(),
                        change: bytes,
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
                Intent::RotateRn1
                | Intent::ReplaceMissingRn1(_)
                | Intent::Policy(_)
                | Intent::Transfer { .. } => self
                    .gms
                    .rotate(RotateRequest {
                        group_id,
                        report_id: report_id.0.to_vec(),
                        change: bytes,
                    })
                    .await
                    .map(|r| Some(r.into_inner())),
                Intent::Leave => self
                    .gms
                    .leave(LeaveRequest {
                        group_id,
                        change: bytes,
                    })
                    .await
                    .map(|_| None),
                Intent::Delete => self
                    .gms
                    .delete(DeleteRequest {
                        group_id,
                        change: bytes,
                    })
                    .await
                    .map(|_| None),
            };
            match answer {
                Ok(grant) => return Ok((grant, change)),
                Err(s) if s.code() == tonic::Code::Aborted && attempt < SIGN_ATTEMPTS => {
                    self.catch_up_membership(gid, None, &[]).await?;
                }
                Err(s) => {
                    return Err(Error::from_status(
                        "the group server refused the change",
                        &s,
                    ));
                }
            }
        }
    }
}
