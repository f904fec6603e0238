//! OpenMLS baseline: the cost of re-keying a group when one member is removed.
//!
//! [`rekey`] builds an MLS group of `n` members with OpenMLS (ciphersuite
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`, in-memory
//! `OpenMlsRustCrypto` provider per member, basic credentials), then lets
//! member 0 remove the last member and times:
//!
//! * the committer: `remove_members` + serialising the commit +
//!   `merge_pending_commit`;
//! * each measured receiver: parsing the commit from its wire bytes,
//!   `process_message` and `merge_staged_commit`.
//!
//! Every measured receiver is checked to end in the committer's epoch with the
//! same exporter secret, so the numbers are for a re-key that really happened.
//!
//! Tree shape matters a lot for MLS: after one big add the ratchet tree is
//! mostly blank and a commit must carry one HPKE ciphertext per remaining
//! member; after every member has committed once ("steady" state) it encrypts
//! to about `log2(n)` copath nodes. [`MlsRekey::tree`] records which shape was used.
//!
//! Groups use OpenMLS defaults otherwise: commits travel as encrypted
//! `PrivateMessage`s, and every merge persists the group state to the
//! provider's in-memory (JSON-encoded) storage, which is part of the timings.
//! Setup (group creation, joins, optional steady-state updates) is not timed.
//!
//! Times are the CPU time of the thread that runs them (`/proc/thread-self/
//! schedstat`, nanoseconds): the same clock as Duokey's side, which is the
//! CPU time of its processes, so the two are compared like for like.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, KeyPackage, LeafNodeParameters, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut,
    OpenMlsProvider as _, ProcessedMessageContent, RatchetTreeIn, StagedWelcome, Welcome,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;

/// The ciphersuite used for every group.
const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Exporter label used to check that receivers hold the committer's new key.
const EXPORT_LABEL: &str = "bench";
/// Length in bytes of the exported check secret.
const EXPORT_LEN: usize = 32;

/// One OpenMLS measurement for a group of `n` members (n >= 2).
#[derive(Debug, Clone)]
pub struct MlsRekey {
    /// Group size before the removal.
    pub n: usize,
    /// Wall-clock ms to create the remove commit (committer side: remove_members, wire encoding, merge_pending_commit).
    pub commit_ms: f64,
    /// Mean ms for one remaining member to process the commit (wire parse + process_message + merge_staged_commit).
    pub process_ms_mean: f64,
    /// Receivers actually measured.
    pub receivers_measured: usize,
    /// commit_ms + process_ms_mean * (n - 2)  (all remaining members except the committer; the removed member excluded).
    pub total_ms: f64,
    /// True when total_ms is extrapolated from a sample.
    pub extrapolated: bool,
    /// How the tree was built: "steady" or "one big add".
    pub tree: &'static str,
    /// Size in bytes of the serialised remove commit (what is broadcast).
    pub commit_bytes: usize,
}

/// One simulated client: its own provider (crypto + storage), keys and,
/// once joined, its group state.
struct Member {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

/// Measures OpenMLS re-keying when member 0 removes the last of `n` members.
///
/// * `sample = None`: every member joins and all `n - 2` remaining receivers
///   are measured.
/// * `sample = Some(k)`: only member 0 and `k` receivers (spread evenly over
///   the leaves) join; the receiver total is extrapolated from their mean.
/// * `steady = true`: before measuring, every member commits one self-update
///   that all others process (O(n^2); only allowed with `sample = None`).
///
/// Returns an error if any OpenMLS step fails or if a receiver's epoch or
/// exporter secret differs from the committer's afterwards.
pub fn rekey(n: usize, sample: Option<usize>, steady: bool) -> Result<MlsRekey, String> {
    if n < 2 {
        return Err(format!("group size must be >= 2, got {n}"));
    }
    if steady && sample.is_some() {
        return Err("steady-state tree requires sample = None".to_string());
    }
    let receivers = pick_receivers(n, sample)?;
    // Without sampling everybody holds state, the removed member included.
    let joiners: Vec<usize> = match sample {
        None => (1..n).collect(),
        Some(_) => receivers.clone(),
    };
    let mut members = (0..n).map(new_member).collect::<Result<Vec<_>, _>>()?;
    build_group(&mut members, &joiners)?;
    if steady {
        steady_state(&mut members)?;
    }
    measure_removal(&mut members, &receivers, steady)
}

/// Indices of the receivers to measure: all of `1..=n-2`, or `k` of them
/// spread evenly.
fn pick_receivers(n: usize, sample: Option<usize>) -> Result<Vec<usize>, String> {
    let candidates = n - 2;
    let k = match sample {
        None => candidates,
        Some(k) if k == 0 && candidates > 0 => {
            return Err("sample must measure at least one receiver".to_string());
        }
        Some(k) => k.min(candidates),
    };
    Ok((0..k).map(|j| 1 + j * candidates / k).collect())
}

/// Creates client `i` with a fresh provider, signature key and credential.
fn new_member(i: usize) -> Result<Member, String> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
        .map_err(|e| format!("signature key for member {i}: {e:?}"))?;
    let credential = CredentialWithKey {
        credential: BasicCredential::new(format!("member-{i}").into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    Ok(Member {
        provider,
        signer,
        credential,
        group: None,
    })
}

/// Member 0 creates the group and adds everyone else in one commit; the
/// members listed in `joiners` then join from the Welcome.
fn build_group(members: &mut [Member], joiners: &[usize]) -> Result<(), String> {
    let key_packages = members
        .iter()
        .skip(1)
        .map(key_package)
        .collect::<Result<Vec<_>, _>>()?;
    let creator = member_mut(members, 0)?;
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .build();
    let mut group = MlsGroup::new(
        &creator.provider,
        &creator.signer,
        &config,
        creator.credential.clone(),
    )
    .map_err(|e| format!("create group: {e:?}"))?;
    let (_commit, welcome, _info) = group
        .add_members(&creator.provider, &creator.signer, &key_packages)
        .map_err(|e| format!("add {} members: {e:?}", key_packages.len()))?;
    group
        .merge_pending_commit(&creator.provider)
        .map_err(|e| format!("merge add commit: {e:?}"))?;
    let tree: RatchetTreeIn = group.export_ratchet_tree().into();
    creator.group = Some(group);
    let welcome = parse_welcome(&welcome)?;
    for &i in joiners {
        join(member_mut(members, i)?, &welcome, &tree).map_err(|e| format!("member {i}: {e}"))?;
    }
    Ok(())
}

/// Builds the key package a member publishes so it can be added.
fn key_package(member: &Member) -> Result<KeyPackage, String> {
    let bundle = KeyPackage::builder()
        .build(
            CIPHERSUITE,
            &member.provider,
            &member.signer,
            member.credential.clone(),
        )
        .map_err(|e| format!("key package: {e:?}"))?;
    Ok(bundle.key_package().clone())
}

/// Round-trips the Welcome through its wire encoding, as a joiner would get it.
fn parse_welcome(message: &MlsMessageOut) -> Result<Welcome, String> {
    let bytes = message
        .to_bytes()
        .map_err(|e| format!("serialise welcome: {e:?}"))?;
    let parsed =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| format!("parse welcome: {e:?}"))?;
    match parsed.extract() {
        MlsMessageBodyIn::Welcome(welcome) => Ok(welcome),
        _ => Err("expected a Welcome message".to_string()),
    }
}

/// Joins `member` to the group from the Welcome and the exported ratchet tree.
fn join(member: &mut Member, welcome: &Welcome, tree: &RatchetTreeIn) -> Result<(), String> {
    let staged = StagedWelcome::new_from_welcome(
        &member.provider,
        &MlsGroupJoinConfig::default(),
        welcome.clone(),
        Some(tree.clone()),
    )
    .map_err(|e| format!("stage welcome: {e:?}"))?;
    let group = staged
        .into_group(&member.provider)
        .map_err(|e| format!("join from welcome: {e:?}"))?;
    member.group = Some(group);
    Ok(())
}

/// Brings the tree to a populated state: every member in turn commits a
/// self-update that all other members process and merge.
fn steady_state(members: &mut [Member]) -> Result<(), String> {
    for i in 0..members.len() {
        let wire = self_update(member_mut(members, i)?).map_err(|e| format!("member {i}: {e}"))?;
        for (j, other) in members.iter_mut().enumerate() {
            if j != i {
                receive(other, &wire).map_err(|e| format!("member {j} <- update {i}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Commits an empty self-update for `member`, merges it and returns its wire bytes.
fn self_update(member: &mut Member) -> Result<Vec<u8>, String> {
    let group = state(&mut member.group)?;
    let bundle = group
        .self_update(
            &member.provider,
            &member.signer,
            LeafNodeParameters::default(),
        )
        .map_err(|e| format!("self update: {e:?}"))?;
    group
        .merge_pending_commit(&member.provider)
        .map_err(|e| format!("merge self update: {e:?}"))?;
    bundle
        .commit()
        .to_bytes()
        .map_err(|e| format!("serialise self update: {e:?}"))
}

/// Timed: member 0 removes the last member, then each receiver applies it.
fn measure_removal(
    members: &mut [Member],
    receivers: &[usize],
    steady: bool,
) -> Result<MlsRekey, String> {
    let n = members.len();
    let removed = member(members, n - 1)?.credential.credential.clone();
    let (wire, commit_ms) = remove_commit(member_mut(members, 0)?, &removed)?;
    let mut process_total = 0.0;
    for &i in receivers {
        process_total +=
            receive(member_mut(members, i)?, &wire).map_err(|e| format!("receiver {i}: {e}"))?;
    }
    check_agreement(members, receivers)?;
    if commit_ms <= 0.0 {
        return Err(
            "no thread CPU clock (/proc/thread-self/schedstat) to time OpenMLS with".into(),
        );
    }
    let measured = receivers.len();
    let process_ms_mean = if measured == 0 {
        0.0
    } else {
        process_total / measured as f64
    };
    Ok(MlsRekey {
        n,
        commit_ms,
        process_ms_mean,
        receivers_measured: measured,
        total_ms: commit_ms + process_ms_mean * (n - 2) as f64,
        extrapolated: measured < n - 2,
        tree: if steady { "steady" } else { "one big add" },
        commit_bytes: wire.len(),
    })
}

/// Timed committer side: remove commit, wire encoding and merge.
/// Returns the commit's wire bytes and the elapsed ms.
fn remove_commit(
    committer: &mut Member,
    removed: &openmls::prelude::Credential,
) -> Result<(Vec<u8>, f64), String> {
    let group = state(&mut committer.group)?;
    let leaf = group
        .member_leaf_index(removed)
        .ok_or("removed member not found in committer's group")?;
    let start = ThreadCpu::now();
    let (commit, _welcome, _info) = group
        .remove_members(&committer.provider, &committer.signer, &[leaf])
        .map_err(|e| format!("remove commit: {e:?}"))?;
    let wire = commit
        .to_bytes()
        .map_err(|e| format!("serialise remove commit: {e:?}"))?;
    group
        .merge_pending_commit(&committer.provider)
        .map_err(|e| format!("merge remove commit: {e:?}"))?;
    Ok((wire, elapsed_ms(start)))
}

/// Timed receiver side: parse the commit from bytes, process and merge it.
/// Returns the elapsed ms.
fn receive(member: &mut Member, wire: &[u8]) -> Result<f64, String> {
    let group = state(&mut member.group)?;
    let start = ThreadCpu::now();
    let message =
        MlsMessageIn::tls_deserialize_exact(wire).map_err(|e| format!("parse commit: {e:?}"))?;
    let protocol = message
        .try_into_protocol_message()
        .map_err(|e| format!("not a protocol message: {e:?}"))?;
    let processed = group
        .process_message(&member.provider, protocol)
        .map_err(|e| format!("process commit: {e:?}"))?;
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err("expected a commit".to_string());
    };
    group
        .merge_staged_commit(&member.provider, *staged)
        .map_err(|e| format!("merge commit: {e:?}"))?;
    Ok(elapsed_ms(start))
}

/// Checks that every receiver has the committer's epoch and exporter secret,
/// and that the committer's group shrank to `n - 1` members.
fn check_agreement(members: &[Member], receivers: &[usize]) -> Result<(), String> {
    let committer = member(members, 0)?;
    let (epoch, secret) = epoch_and_secret(committer)?;
    let size = committer.group.as_ref().map_or(0, |g| g.members().count());
    if size != members.len() - 1 {
        return Err(format!("committer sees {size} members after removal"));
    }
    for &i in receivers {
        let (e, s) = epoch_and_secret(member(members, i)?)?;
        if e != epoch {
            return Err(format!("receiver {i} at epoch {e}, committer at {epoch}"));
        }
        if s != secret {
            return Err(format!(
                "receiver {i} exporter secret differs from committer's"
            ));
        }
    }
    Ok(())
}

/// The member's current epoch and its exported check secret.
fn epoch_and_secret(member: &Member) -> Result<(u64, Vec<u8>), String> {
    let group = member.group.as_ref().ok_or("member has no group state")?;
    let secret = group
        .export_secret(member.provider.crypto(), EXPORT_LABEL, &[], EXPORT_LEN)
        .map_err(|e| format!("export secret: {e:?}"))?;
    Ok((group.epoch().as_u64(), secret))
}

/// Member `i`, or an error if there is none.
fn member(members: &[Member], i: usize) -> Result<&Member, String> {
    members.get(i).ok_or_else(|| format!("no member {i}"))
}

/// Member `i` for mutation, or an error if there is none.
fn member_mut(members: &mut [Member], i: usize) -> Result<&mut Member, String> {
    members.get_mut(i).ok_or_else(|| format!("no member {i}"))
}

/// The member's group state, or an error if it never joined.
fn state(group: &mut Option<MlsGroup>) -> Result<&mut MlsGroup, String> {
    group
        .as_mut()
        .ok_or_else(|| "member has no group state".to_string())
}

/// A reading of this thread's CPU time.
struct ThreadCpu(u64);

impl ThreadCpu {
    /// Nanoseconds this thread has run so far (0 where the kernel does not
    /// say, which makes every measurement fail loudly as 0 ms below).
    fn now() -> ThreadCpu {
        let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        ThreadCpu(ns)
    }
}

/// CPU milliseconds this thread spent since `start`.
fn elapsed_ms(start: ThreadCpu) -> f64 {
    ThreadCpu::now().0.saturating_sub(start.0) as f64 / 1e6
}
