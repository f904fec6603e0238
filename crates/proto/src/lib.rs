//! Duokey gRPC protocol (SPEC §5): the Account Server, Group Management Server
//! and Communication Server services, generated at build time from the
//! `.proto` files in the workspace's `proto/` folder (every field is documented
//! there).
#![forbid(unsafe_code)]

/// Package `duokey.v1`: every message and service of SPEC §5.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("duokey.v1");
}

/// The encoded `FileDescriptorSet` of all services, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/duokey_descriptor.bin"));

pub use v1::*;

/// The policy members signed (SPEC §4.7) as grants and the GMS carry it.
impl From<&duokey_crypto::membership::Policy> for Policy {
    fn from(p: &duokey_crypto::membership::Policy) -> Policy {
        Policy {
            rotate_every_secs: p.rotate_every_secs,
            grace_secs: p.grace_secs,
            no_rotate_rn1_on_remove: !p.rotate_rn1_on_remove,
            retention_secs: p.retention_secs,
            max_members: p.max_members,
            rn1_wait_secs: p.rn1_wait_secs,
        }
    }
}

/// The members of a verified membership state as grants list them (SPEC
/// §4.4): what a terminal compares a grant's list with, and what a test
/// playing the GMS writes.
pub fn members_of(state: &duokey_crypto::membership::State) -> Vec<Member> {
    state
        .members
        .iter()
        .map(|(u, m)| Member {
            user_id: u.to_string(),
            rights: u32::from(m.rights.bits()),
        })
        .collect()
}

/// Bytes of rows (envelopes, items, changes) in one paged answer, framing
/// aside: well under the 4 MiB an answer may carry, so that no run of large
/// rows can make a page impossible to send (and a terminal's sync stuck for
/// good); the answer says `more` and the client asks again.
pub const PAGE_BYTES: usize = 3 * 1024 * 1024;

/// One page of a paged answer (`Fetch`, `Items`, `GetChanges`): the first
/// rows of `rows` that fit in `n` rows and [`PAGE_BYTES`] (always at least
/// one: a single row is at most the largest envelope or item), and whether
/// more remain. Callers fetch `n + 1` rows so that `more` is known.
pub fn page<T>(mut rows: Vec<T>, n: usize, size: impl Fn(&T) -> usize) -> (Vec<T>, bool) {
    let (mut keep, mut bytes) = (0, 0);
    for row in &rows {
        let b = size(row) + 64;
        if keep == n || (keep > 0 && bytes + b > PAGE_BYTES) {
            break;
        }
        (keep, bytes) = (keep + 1, bytes + b);
    }
    let more = rows.len() > keep;
    rows.truncate(keep);
    (rows, more)
}

/// The member list after a grant's change (D27), one rule for the GMS,
/// which issues the grant, and the terminal, which rebuilds the list of a
/// grant `Watch` pushed without it: a [`GrantCause::MemberAdded`] grant puts
/// `subject` in (replacing any earlier entry) as `entered`; a
/// [`GrantCause::MemberRemoved`] or [`GrantCause::MemberLeft`] grant takes it
/// out; any other cause leaves the list as it was. The list stays sorted by
/// user id.
pub fn members_after<M>(
    members: &mut Vec<M>,
    user: impl Fn(&M) -> &str,
    cause: GrantCause,
    subject: &str,
    entered: Option<M>,
) {
    match cause {
        GrantCause::MemberAdded | GrantCause::MemberRemoved | GrantCause::MemberLeft => {
            members.retain(|m| user(m) != subject);
        }
        _ => return,
    }
    if let (GrantCause::MemberAdded, Some(m)) = (cause, entered) {
        members.push(m);
        members.sort_by(|a, b| user(a).cmp(user(b)));
    }
}

/// A request's `group_id` field (SPEC §5: raw 16 bytes), for the servers:
/// any other length is `INVALID_ARGUMENT`.
pub fn group_id_arg(bytes: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    match bytes.len() {
        16 => Ok(bytes.to_vec()),
        _ => Err(tonic::Status::invalid_argument("group_id must be 16 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_bounded_by_rows_and_bytes_and_never_empty() {
        let rows = |n: usize, size: usize| vec![vec![0u8; size]; n];
        // 1,000 rows asked: the count decides for small rows.
        let (got, more) = page(rows(1001, 100), 1000, Vec::len);
        assert_eq!((got.len(), more), (1000, true));
        let (got, more) = page(rows(5, 100), 1000, Vec::len);
        assert_eq!((got.len(), more), (5, false));
        // Large rows: the bytes decide, and the answer says there is more.
        let (got, more) = page(rows(40, 256 * 1024), 1000, Vec::len);
        assert_eq!((got.len(), more), (11, true));
        assert!(got.iter().map(Vec::len).sum::<usize>() <= PAGE_BYTES);
        // A single row above the budget still goes alone.
        let (got, more) = page(rows(2, PAGE_BYTES + 1), 1000, Vec::len);
        assert_eq!((got.len(), more), (1, true));
    }

    #[test]
    fn a_grants_change_rebuilds_the_member_list() {
        let list = |v: &[(&str, u8)]| -> Vec<(String, u8)> {
            v.iter().map(|(u, r)| ((*u).to_owned(), *r)).collect()
        };
        let after = |cause, subject: &str, entered: Option<(String, u8)>| {
            let mut m = list(&[("alice", 7), ("carol", 0)]);
            members_after(&mut m, |(u, _)| u, cause, subject, entered);
            m
        };
        let bob = Some(("bob".to_owned(), 1));
        assert_eq!(
            after(GrantCause::MemberAdded, "bob", bob.clone()),
            list(&[("alice", 7), ("bob", 1), ("carol", 0)])
        );
        // Added again with other rights: one entry, the new rights.
        let carol = Some(("carol".to_owned(), 3));
        assert_eq!(
            after(GrantCause::MemberAdded, "carol", carol),
            list(&[("alice", 7), ("carol", 3)])
        );
        for gone in [GrantCause::MemberRemoved, GrantCause::MemberLeft] {
            assert_eq!(after(gone, "carol", None), list(&[("alice", 7)]));
        }
        for same in [
            GrantCause::Periodic,
            GrantCause::Forced,
            GrantCause::PolicyChanged,
            GrantCause::OwnerChanged,
        ] {
            assert_eq!(
                after(same, "alice", bob.clone()),
                list(&[("alice", 7), ("carol", 0)])
            );
        }
    }

    #[test]
    fn a_group_id_argument_is_sixteen_bytes() {
        assert_eq!(group_id_arg(&[7; 16]).unwrap(), vec![7; 16]);
        for bad in [&[][..], &[1; 15][..], &[1; 17][..]] {
            let err = group_id_arg(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
    }
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        for service in [
            "Accounts",
            "GroupManagement",
            "Communication",
            "MembershipSync",
        ] {
            assert!(
                text.contains(service),
                "{service} missing from descriptor set"
            );
        }
    }

    #[test]
    fn grant_round_trips() {
        let grant = Grant {
            group_id: vec![7; 16],
            group_name: "proj".into(),
            rn2_version: 3,
            rn1_version: 2,
            members: vec![Member {
                user_id: "alice".into(),
                rights: 7,
            }],
            cause: GrantCause::MemberAdded as i32,
            ..Default::default()
        };
        let bytes = grant.encode_to_vec();
        assert_eq!(Grant::decode(bytes.as_slice()).ok(), Some(grant));
    }
}
