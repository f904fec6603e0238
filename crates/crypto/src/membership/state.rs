//! The group's state as the chain of signed changes gives it, and the rules a
//! change must satisfy (SPEC §4.7). One pure function, [`State::apply`], used
//! by the GMS before it stores a change and by every terminal before it acts
//! on one: the rules live here and nowhere else.

use super::Rule;
use super::change::{Action, Change, FLAG_ROTATES_RN1, Hash, RekeyBody, SignedChange};
use super::policy::Policy;
use crate::codec::Reader;
use crate::error::Result;
use crate::identity::PublicIdentity;
use crate::ids::{GroupId, GroupName, UserId};
use crate::rights::Rights;
use std::collections::BTreeMap;

/// A member in the state: its rights and the key the history recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its rights.
    pub rights: Rights,
    /// The key that speaks for it in this group (from `create`, `add` or `rekey`).
    pub key: PublicIdentity,
}

/// Who rotates RN1 to a version, and which change made that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rn1Rotation {
    /// The RN1 version.
    pub rn1_version: u32,
    /// The member who makes and sends that RN1.
    pub rotator: UserId,
    /// The seq of the change that created the version.
    pub seq: u64,
    /// That change's signed `created_at_ms`: when the wait for the new RN1
    /// began (SPEC §4.3 step 4, `rn1_wait`).
    pub created_at_ms: u64,
}

/// The state after a chain of valid changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The group.
    pub group_id: GroupId,
    /// Its name (from `create`).
    pub name: GroupName,
    /// The owner: the creator, or the member a `transfer` made owner.
    pub owner: UserId,
    /// Members with rights and keys.
    pub members: BTreeMap<UserId, Member>,
    /// The policy (from `create`, then `policy` changes).
    pub policy: Policy,
    /// The current RN1 version.
    pub rn1_version: u32,
    /// Every RN1 version's rotator, oldest first.
    pub rn1_rotations: Vec<Rn1Rotation>,
    /// Whether a `delete` was applied.
    pub deleted: bool,
    /// The seq of the last change.
    pub seq: u64,
    /// The hash of the last change.
    pub head: Hash,
    /// The last change's `created_at_ms`.
    pub last_created_at_ms: u64,
}

/// `create`'s body: `lp16(name) || owner_key[32] || policy`.
struct CreateBody {
    name: GroupName,
    owner_key: PublicIdentity,
    policy: Policy,
}

impl CreateBody {
    fn decode(body: &[u8]) -> Result<CreateBody> {
        let mut r = Reader::new(body, "create body");
        let name = GroupName::from_bytes(r.lp16()?).map_err(|_| Rule::Name)?;
        let owner_key = PublicIdentity::from_bytes(&r.array()?)?;
        let policy = Policy::decode(r.take(r.remaining())?)?;
        Ok(CreateBody {
            name,
            owner_key,
            policy,
        })
    }
}

/// Encodes a `create` body.
pub fn create_body(
    name: &GroupName,
    owner_key: &PublicIdentity,
    policy: &Policy,
) -> Result<Vec<u8>> {
    let mut w = crate::codec::Writer::with_capacity(2 + name.as_bytes().len() + 32 + 37);
    w.lp16(name.as_bytes())?;
    w.bytes(&owner_key.to_bytes()).bytes(&policy.encode());
    Ok(w.into_vec())
}

/// Fails with `rule` unless `ok`.
fn require(ok: bool, rule: Rule) -> Result<()> {
    if ok { Ok(()) } else { Err(rule.into()) }
}

/// After how many `rn1_wait`s every qualifying member rotates RN1 itself
/// (see [`State::rn1_fallback_at`]).
pub const RN1_FALLBACK_STEPS: u64 = 4;

/// What a checked change does to the state.
enum Effect {
    Add(UserId, Member),
    /// A member goes (remove, leave) and/or RN1 rotates (`rotate_rn1`).
    End {
        subject: Option<UserId>,
        rotator: Option<Rn1Rotation>,
    },
    Policy(Policy),
    Delete,
    Rekey(UserId, PublicIdentity),
    /// The owner (first) hands ownership to a member (second).
    Transfer(UserId, UserId),
}

impl State {
    /// The state a valid `create` starts (the change must be the first).
    pub fn create(change: &SignedChange) -> Result<State> {
        let c = change.change();
        require(c.action == Action::Create, Rule::FirstChange)?;
        require(c.seq == 1 && c.prev == [0; 32], Rule::FirstChange)?;
        require(
            c.actor == c.subject && c.rights == Rights::ALL && c.flags == 0,
            Rule::Fields,
        )?;
        let body = CreateBody::decode(&c.body)?;
        change.verify(&body.owner_key)?;
        let owner = Member {
            rights: Rights::ALL,
            key: body.owner_key,
        };
        Ok(State {
            group_id: c.group_id,
            name: body.name,
            owner: c.actor.clone(),
            members: BTreeMap::from([(c.actor.clone(), owner)]),
            policy: body.policy,
            rn1_version: 1,
            rn1_rotations: vec![Rn1Rotation {
                rn1_version: 1,
                rotator: c.actor.clone(),
                seq: 1,
                created_at_ms: c.created_at_ms,
            }],
            deleted: false,
            seq: 1,
            head: change.hash(),
            last_created_at_ms: c.created_at_ms,
        })
    }

    /// The state after `change`, if it extends this state validly; this
    /// state is left as it was either way.
    pub fn apply(&self, change: &SignedChange) -> Result<State> {
        let mut next = self.clone();
        next.advance(change)?;
        Ok(next)
    }

    /// Applies `change` in place, if it extends this state validly: the
    /// same rules as [`State::apply`] without copying the member list, so
    /// that verifying a chain of N changes costs O(N log N), not O(N²). On
    /// an error the state is unchanged: every check runs before any effect.
    pub fn advance(&mut self, change: &SignedChange) -> Result<()> {
        let c = change.change();
        require(!self.deleted, Rule::Deleted)?;
        require(c.action != Action::Create, Rule::CreateOnce)?;
        require(c.group_id == self.group_id, Rule::GroupId)?;
        require(c.seq == self.seq.wrapping_add(1), Rule::Seq)?;
        require(c.prev == self.head, Rule::Prev)?;
        require(c.created_at_ms >= self.last_created_at_ms, Rule::CreatedAt)?;
        let actor = self.members.get(&c.actor).ok_or(Rule::ActorNotMember)?;
        change.verify(&actor.key)?;
        let effect = self.effect(change, actor)?;
        self.commit(effect);
        self.seq = c.seq;
        self.head = change.hash();
        self.last_created_at_ms = c.created_at_ms;
        Ok(())
    }

    /// The action's own rule (SPEC §4.7 table), checked without changing
    /// anything; its effect is applied by [`State::commit`].
    fn effect(&self, change: &SignedChange, actor: &Member) -> Result<Effect> {
        let c = change.change();
        let plain = c.rights == Rights::NONE && c.body.is_empty();
        match c.action {
            Action::Create => Err(Rule::CreateOnce.into()),
            Action::Add => self.add(change, actor),
            Action::Remove => {
                require(actor.rights.contains(Rights::REMOVE), Rule::LacksRemove)?;
                require(c.subject != c.actor, Rule::RemoveSelf)?;
                require(
                    self.members.contains_key(&c.subject),
                    Rule::SubjectNotMember,
                )?;
                require(c.subject != self.owner, Rule::OwnerCannotBeRemoved)?;
                require(plain, Rule::Fields)?;
                self.end_membership(change, &c.actor)
            }
            Action::Leave => {
                require(c.subject == c.actor, Rule::ActorMustBeSubject)?;
                require(c.actor != self.owner, Rule::OwnerCannotLeave)?;
                require(plain, Rule::Fields)?;
                self.end_membership(change, &self.owner)
            }
            Action::RotateRn1 => {
                require(c.subject == c.actor, Rule::ActorMustBeSubject)?;
                require(plain && c.flags == FLAG_ROTATES_RN1, Rule::Fields)?;
                Ok(Effect::End {
                    subject: None,
                    rotator: Some(self.next_rotation(&c.actor, c)?),
                })
            }
            Action::Policy => {
                require(c.actor == self.owner, Rule::OnlyOwner)?;
                require(c.subject == c.actor, Rule::ActorMustBeSubject)?;
                require(c.rights == Rights::NONE && c.flags == 0, Rule::Fields)?;
                Ok(Effect::Policy(Policy::decode(&c.body)?))
            }
            Action::Delete => {
                require(c.actor == self.owner, Rule::OnlyOwner)?;
                require(c.subject == c.actor, Rule::ActorMustBeSubject)?;
                require(plain && c.flags == 0, Rule::Fields)?;
                Ok(Effect::Delete)
            }
            Action::Transfer => {
                require(c.actor == self.owner, Rule::OnlyOwner)?;
                require(c.subject != c.actor, Rule::TransferToSelf)?;
                require(
                    self.members.contains_key(&c.subject),
                    Rule::SubjectNotMember,
                )?;
                require(plain && c.flags == 0, Rule::Fields)?;
                Ok(Effect::Transfer(c.actor.clone(), c.subject.clone()))
            }
            Action::Rekey => {
                require(c.subject == c.actor, Rule::ActorMustBeSubject)?;
                require(c.rights == Rights::NONE && c.flags == 0, Rule::Fields)?;
                let rekey = RekeyBody::open(&c.body, &c.group_id, &c.actor)?;
                Ok(Effect::Rekey(c.actor.clone(), rekey.new_key))
            }
        }
    }

    fn add(&self, change: &SignedChange, actor: &Member) -> Result<Effect> {
        let c = change.change();
        require(actor.rights.contains(Rights::INVITE), Rule::LacksInvite)?;
        require(!self.members.contains_key(&c.subject), Rule::AlreadyMember)?;
        require(!c.rights.contains(Rights::OWNER), Rule::OwnerRight)?;
        require(actor.rights.contains(c.rights), Rule::RightsNotHeld)?;
        require(c.flags == 0, Rule::Fields)?;
        let key = <[u8; 32]>::try_from(c.body.as_slice()).map_err(|_| Rule::Fields)?;
        let key = PublicIdentity::from_bytes(&key)?;
        let count = u32::try_from(self.members.len()).unwrap_or(u32::MAX);
        require(count < self.policy.max_members, Rule::GroupFull)?;
        Ok(Effect::Add(
            c.subject.clone(),
            Member {
                rights: c.rights,
                key,
            },
        ))
    }

    /// Removal and leave: the subject goes; RN1 rotates (by `rotator`)
    /// exactly when the policy says so.
    fn end_membership(&self, change: &SignedChange, rotator: &UserId) -> Result<Effect> {
        let c = change.change();
        require(
            change.rotates_rn1() == self.policy.rotate_rn1_on_remove,
            Rule::Rn1Flag,
        )?;
        let rotator = match change.rotates_rn1() {
            true => Some(self.next_rotation(rotator, c)?),
            false => None,
        };
        Ok(Effect::End {
            subject: Some(c.subject.clone()),
            rotator,
        })
    }

    /// The RN1 rotation `change` starts, made by `rotator`.
    fn next_rotation(&self, rotator: &UserId, change: &Change) -> Result<Rn1Rotation> {
        Ok(Rn1Rotation {
            rn1_version: self.rn1_version.checked_add(1).ok_or(Rule::Fields)?,
            rotator: rotator.clone(),
            seq: change.seq,
            created_at_ms: change.created_at_ms,
        })
    }

    /// Applies a checked effect; cannot fail.
    fn commit(&mut self, effect: Effect) {
        match effect {
            Effect::Add(user, member) => {
                self.members.insert(user, member);
            }
            Effect::End { subject, rotator } => {
                if let Some(subject) = subject {
                    self.members.remove(&subject);
                }
                if let Some(rotation) = rotator {
                    self.rn1_version = rotation.rn1_version;
                    self.rn1_rotations.push(rotation);
                }
            }
            Effect::Policy(policy) => self.policy = policy,
            Effect::Delete => self.deleted = true,
            Effect::Rekey(user, key) => {
                if let Some(m) = self.members.get_mut(&user) {
                    m.key = key;
                }
            }
            Effect::Transfer(from, to) => {
                if let Some(m) = self.members.get_mut(&from) {
                    m.rights = Rights::FORMER_OWNER;
                }
                if let Some(m) = self.members.get_mut(&to) {
                    m.rights = Rights::ALL;
                }
                self.owner = to;
            }
        }
    }

    /// The rotator the verified history names for `rn1_version`.
    pub fn rotator(&self, rn1_version: u32) -> Option<&UserId> {
        self.rn1_rotations
            .iter()
            .find(|r| r.rn1_version == rn1_version)
            .map(|r| &r.rotator)
    }

    /// A short code over (group id, seq, head) that members compare out of
    /// band (`duokey group verify`, SPEC §4.7 "Equivocation"): equal codes at
    /// the same seq mean the GMS showed them the same history. Four groups of
    /// five digits from `SHA-256("duokey/v1 group verify" || group_id ||
    /// u64 seq || head)`.
    pub fn verification_code(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::new()
            .chain_update(b"duokey/v1 group verify")
            .chain_update(self.group_id.as_bytes())
            .chain_update(self.seq.to_be_bytes())
            .chain_update(self.head)
            .finalize()
            .into();
        digest
            .chunks_exact(4)
            .take(4)
            .map(|c| {
                let n = <[u8; 4]>::try_from(c).map_or(0, u32::from_be_bytes);
                format!("{:05}", n % 100_000)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// SPEC §4.3 step 4, `rn1_wait` fallback: when `me` should rotate RN1
    /// itself (a signed `rotate_rn1`) because the current version's rotator
    /// has not delivered it. `None` if `me` is the rotator, or was not a
    /// member before the rotation (`before`, the state one change earlier:
    /// a newcomer waits for its inviter's hand-over, not for the rotator).
    ///
    /// Not every member at once: the members who qualify are ordered by
    /// `SHA-256("duokey/v1 rn1 fallback" || group_id || u32 rn1_version ||
    /// user_id)`; the first acts `rn1_wait` after the rotation's
    /// `created_at_ms`, the next one `rn1_wait` later, and so on up to
    /// [`RN1_FALLBACK_STEPS`] waits, where everyone left acts (the GMS takes
    /// one `rotate_rn1` at a given seq, so the others' fail and they follow
    /// the new rotator).
    pub fn rn1_fallback_at(&self, me: &UserId, before: &State) -> Option<u64> {
        let rotation = self.rn1_rotations.last()?;
        if rotation.rn1_version != self.rn1_version || &rotation.rotator == me {
            return None;
        }
        let rank_key = |u: &UserId| -> [u8; 32] {
            use sha2::{Digest, Sha256};
            Sha256::new()
                .chain_update(b"duokey/v1 rn1 fallback")
                .chain_update(self.group_id.as_bytes())
                .chain_update(rotation.rn1_version.to_be_bytes())
                .chain_update(u.as_str().as_bytes())
                .finalize()
                .into()
        };
        let mut order: Vec<([u8; 32], &UserId)> = self
            .members
            .keys()
            .filter(|u| **u != rotation.rotator && before.members.contains_key(*u))
            .map(|u| (rank_key(u), u))
            .collect();
        order.sort();
        let rank = order.iter().position(|(_, u)| *u == me)?;
        let steps = u64::try_from(rank)
            .unwrap_or(u64::MAX)
            .min(RN1_FALLBACK_STEPS - 1)
            + 1;
        let wait_ms = self.policy.rn1_wait_secs.saturating_mul(1000);
        Some(
            rotation
                .created_at_ms
                .saturating_add(wait_ms.saturating_mul(steps)),
        )
    }

    /// The key the history recorded for `user`, if a member.
    pub fn key_of(&self, user: &UserId) -> Option<&PublicIdentity> {
        self.members.get(user).map(|m| &m.key)
    }
}

impl State {
    /// The next change on top of this state, unsigned: `seq`, `prev` and the
    /// group filled in, the RN1 flag as the rules demand (removals and leaves
    /// follow the policy; `rotate_rn1` always rotates), and the time never
    /// below the head's.
    pub fn next_change(
        &self,
        action: Action,
        actor: &UserId,
        subject: &UserId,
        rights: Rights,
        body: Vec<u8>,
        now_ms: u64,
    ) -> Change {
        let flags = match action {
            Action::Remove | Action::Leave if self.policy.rotate_rn1_on_remove => FLAG_ROTATES_RN1,
            Action::RotateRn1 => FLAG_ROTATES_RN1,
            _ => 0,
        };
        Change {
            group_id: self.group_id,
            seq: self.seq.saturating_add(1),
            prev: self.head,
            action,
            actor: actor.clone(),
            subject: subject.clone(),
            rights,
            flags,
            body,
            created_at_ms: now_ms.max(self.last_created_at_ms),
        }
    }
}

/// The first change of a new group, unsigned: `owner` creates it with its
/// key, the name and the whole policy.
pub fn create_change(
    group_id: GroupId,
    owner: &UserId,
    owner_key: &PublicIdentity,
    name: &GroupName,
    policy: &Policy,
    now_ms: u64,
) -> Result<Change> {
    Ok(Change {
        group_id,
        seq: 1,
        prev: [0; 32],
        action: Action::Create,
        actor: owner.clone(),
        subject: owner.clone(),
        rights: Rights::ALL,
        flags: 0,
        body: create_body(name, owner_key, policy)?,
        created_at_ms: now_ms,
    })
}

/// Advances `state` by `change` in place (see [`State::advance`]), or
/// starts it from a `create`.
pub fn extend(state: &mut Option<State>, change: &SignedChange) -> Result<()> {
    match state {
        None => *state = Some(State::create(change)?),
        Some(s) => s.advance(change)?,
    }
    Ok(())
}

/// Applies `change` to `state`, or starts the state from a `create`.
pub fn apply(state: Option<&State>, change: &SignedChange) -> Result<State> {
    match state {
        None => State::create(change),
        Some(s) => s.apply(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;

    struct Group {
        state: State,
        keys: BTreeMap<String, IdentityKey>,
    }

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    impl Group {
        fn new(owner: &str, rn1_wait_secs: u64) -> Group {
            let key = IdentityKey::generate();
            let policy = Policy {
                rn1_wait_secs,
                ..Policy::default()
            };
            let name = GroupName::new("g").unwrap();
            let c = create_change(
                GroupId([7; 16]),
                &user(owner),
                &key.public(),
                &name,
                &policy,
                1_000,
            )
            .unwrap();
            let state = State::create(&c.sign(&key).unwrap()).unwrap();
            Group {
                state,
                keys: BTreeMap::from([(owner.to_owned(), key)]),
            }
        }

        fn change(&mut self, action: Action, actor: &str, subject: &str, at: u64) {
            let (rights, body) = match action {
                Action::Add => {
                    let key = IdentityKey::generate();
                    let body = key.public().to_bytes().to_vec();
                    self.keys.insert(subject.to_owned(), key);
                    (Rights::NONE, body)
                }
                _ => (Rights::NONE, Vec::new()),
            };
            let c = self
                .state
                .next_change(action, &user(actor), &user(subject), rights, body, at);
            self.state
                .advance(&c.sign(&self.keys[actor]).unwrap())
                .unwrap();
        }
    }

    /// alice owns; bob, carol, dave and erin were members; erin leaves at
    /// t = 10 s, so alice must rotate RN1 (wait 60 s).
    fn after_leave() -> (State, State) {
        let mut g = Group::new("alice", 60);
        for u in ["bob", "carol", "dave", "erin"] {
            g.change(Action::Add, "alice", u, 2_000);
        }
        let before = g.state.clone();
        g.change(Action::Leave, "erin", "erin", 10_000);
        (g.state, before)
    }

    #[test]
    fn one_member_acts_first_then_the_others_in_turn() {
        let (state, before) = after_leave();
        let mut times: Vec<u64> = ["bob", "carol", "dave"]
            .iter()
            .map(|u| state.rn1_fallback_at(&user(u), &before).unwrap())
            .collect();
        times.sort();
        assert_eq!(times, vec![70_000, 130_000, 190_000]);
    }

    #[test]
    fn never_the_rotator_nor_a_newcomer_nor_the_departed() {
        let (mut state, before) = after_leave();
        assert_eq!(state.rn1_fallback_at(&user("alice"), &before), None);
        assert_eq!(state.rn1_fallback_at(&user("erin"), &before), None);
        // frank joined after the rotation: he waits for his hand-over.
        let frank = Member {
            rights: Rights::NONE,
            key: IdentityKey::generate().public(),
        };
        state.members.insert(user("frank"), frank);
        assert_eq!(state.rn1_fallback_at(&user("frank"), &before), None);
    }

    #[test]
    fn everyone_acts_after_the_last_step() {
        let mut g = Group::new("alice", 1);
        let names: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
        for u in &names {
            g.change(Action::Add, "alice", u, 2_000);
        }
        let before = g.state.clone();
        g.change(Action::RotateRn1, "u0", "u0", 5_000);
        let latest = names[1..]
            .iter()
            .map(|u| g.state.rn1_fallback_at(&user(u), &before).unwrap())
            .max()
            .unwrap();
        assert_eq!(latest, 5_000 + RN1_FALLBACK_STEPS * 1_000);
        assert_eq!(g.state.rn1_fallback_at(&user("u0"), &before), None);
    }

    /// A signed change of `action` by `actor` on `subject`, not applied.
    fn signed(g: &Group, action: Action, actor: &str, subject: &str) -> SignedChange {
        g.state
            .next_change(
                action,
                &user(actor),
                &user(subject),
                Rights::NONE,
                Vec::new(),
                3_000,
            )
            .sign(&g.keys[actor])
            .unwrap()
    }

    fn refused(g: &Group, action: Action, actor: &str, subject: &str) -> Rule {
        match g.state.apply(&signed(g, action, actor, subject)) {
            Err(crate::Error::Membership(rule)) => rule,
            other => panic!("{action:?} by {actor} on {subject}: {other:?}"),
        }
    }

    #[test]
    fn a_transfer_makes_a_member_the_owner_and_frees_the_former_one() {
        let mut g = Group::new("alice", 60);
        g.change(Action::Add, "alice", "bob", 2_000);
        g.change(Action::Add, "alice", "carol", 2_000);
        let refusals = |g: &Group, cases: &[(Action, &str, &str, Rule)]| {
            for (action, actor, subject, rule) in cases {
                assert_eq!(
                    refused(g, *action, actor, subject),
                    *rule,
                    "{action:?} by {actor}"
                );
            }
        };
        // Only the owner, only to another member; the owner cannot leave.
        refusals(
            &g,
            &[
                (Action::Transfer, "bob", "carol", Rule::OnlyOwner),
                (Action::Transfer, "alice", "alice", Rule::TransferToSelf),
                (Action::Transfer, "alice", "dave", Rule::SubjectNotMember),
                (Action::Leave, "alice", "alice", Rule::OwnerCannotLeave),
            ],
        );
        let version = g.state.rn1_version;
        g.change(Action::Transfer, "alice", "bob", 3_000);
        assert_eq!(g.state.owner, user("bob"));
        assert_eq!(g.state.members[&user("bob")].rights, Rights::ALL);
        assert_eq!(g.state.members[&user("alice")].rights, Rights::FORMER_OWNER);
        assert_eq!(g.state.rn1_version, version, "no member changed: RN1 stays");
        // The owner's powers moved with it.
        refusals(
            &g,
            &[
                (Action::Delete, "alice", "alice", Rule::OnlyOwner),
                (Action::Policy, "alice", "alice", Rule::OnlyOwner),
                (Action::Remove, "alice", "bob", Rule::OwnerCannotBeRemoved),
                (Action::Leave, "bob", "bob", Rule::OwnerCannotLeave),
            ],
        );
        g.change(Action::Leave, "alice", "alice", 4_000);
        assert!(!g.state.members.contains_key(&user("alice")));
        g.change(Action::Delete, "bob", "bob", 5_000);
        assert!(g.state.deleted);
    }
}
