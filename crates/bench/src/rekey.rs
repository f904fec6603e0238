//! Scenario `rekey` (issue 7 point 2): a member is removed from a group of
//! N members who are all online over real TLS; measured from the remover's
//! `ReportMember` until every remaining member holds the new group key (its
//! grant arrived on its `Watch` stream and it derived GK), with the GMS's
//! CPU time (its own process) and the members' CPU time. The group's policy
//! re-keys with RN2 alone (`no_rotate_rn1_on_remove`), the cost the issue
//! compares with MLS: a grant and one ratchet step plus one HKDF per member.
//! Beside it, OpenMLS removes a member of a group of the same size.

use crate::net::{Member, ServerProc, cpu_ms, random16};
use crate::{BenchResult, Row};
use duokey_crypto::membership::{self, Action, SignedChange, State};
use duokey_crypto::{Epoch, GroupId, GroupKey, GroupName, R1, Rights, Rn1, Rn2};
use duokey_proto::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Concurrent connection set-ups.
const CONNECT_WINDOW: usize = 256;

/// Runs the scenario for every group size.
pub async fn run(quick: bool, chosen: &[usize]) -> BenchResult<Vec<Row>> {
    let sizes: &[usize] = match (chosen, quick) {
        ([_, ..], _) => chosen,
        ([], true) => &[10, 100],
        ([], false) => &[10, 100, 1_000, 10_000],
    };
    let mut rows = Vec::new();
    for &n in sizes {
        let d = duokey(n).await?;
        let p = format!("N={n}");
        rows.push(Row::new(
            "rekey",
            &p,
            "rekey_all_members_ms",
            d.wall_ms,
            "ms",
        ));
        rows.push(Row::new("rekey", &p, "gms_cpu_ms", d.gms_cpu_ms, "ms"));
        rows.push(Row::new(
            "rekey",
            &p,
            "members_cpu_ms",
            d.members_cpu_ms,
            "ms",
        ));
        rows.push(Row::new(
            "rekey",
            &p,
            "total_cpu_ms",
            d.gms_cpu_ms + d.members_cpu_ms,
            "ms",
        ));
        rows.push(Row::new("rekey", &p, "setup_s", d.setup_s, "s"));
        rows.extend(mls_rows(n, quick, &d).await?);
    }
    Ok(rows)
}

/// How OpenMLS is measured for `n` members: a steady-state tree (every
/// member committed once) where that is affordable, else one big add; every
/// remaining member processes the commit up to N = 1,000, a sample above.
fn mls_plan(n: usize, quick: bool) -> (Option<usize>, bool) {
    match n {
        _ if quick => (if n > 10 { Some(10) } else { None }, n <= 10),
        0..=100 => (None, true),
        101..=1_000 => (None, false),
        _ => (Some(30), false),
    }
}

/// OpenMLS removing a member of a group of the same size, and the ratios.
async fn mls_rows(n: usize, quick: bool, d: &Measured) -> BenchResult<Vec<Row>> {
    let (sample, steady) = mls_plan(n, quick);
    let m = tokio::task::spawn_blocking(move || crate::mls::rekey(n, sample, steady))
        .await
        .map_err(|e| e.to_string())??;
    let p = format!(
        "N={} tree={} receivers={}{}",
        m.n,
        m.tree,
        m.receivers_measured,
        if m.extrapolated {
            " (extrapolated)"
        } else {
            ""
        }
    );
    let duokey_cpu = d.gms_cpu_ms + d.members_cpu_ms;
    Ok(vec![
        Row::new(
            "rekey",
            &p,
            "openmls_rekey_all_members_ms",
            m.total_ms,
            "ms",
        ),
        Row::new("rekey", &p, "openmls_commit_ms", m.commit_ms, "ms"),
        Row::new(
            "rekey",
            &p,
            "openmls_process_ms_per_member",
            m.process_ms_mean,
            "ms",
        ),
        Row::new(
            "rekey",
            &p,
            "openmls_commit_bytes",
            m.commit_bytes as f64,
            "B",
        ),
        Row::new(
            "rekey",
            &p,
            "openmls_over_duokey_total_cpu",
            m.total_ms / duokey_cpu,
            "ratio",
        ),
        Row::new(
            "rekey",
            &p,
            "openmls_over_duokey_wall",
            m.total_ms / d.wall_ms,
            "ratio",
        ),
    ])
}

/// What one Duokey removal cost.
struct Measured {
    wall_ms: f64,
    gms_cpu_ms: f64,
    members_cpu_ms: f64,
    setup_s: f64,
}

/// What every member needs to derive a group key.
#[derive(Clone)]
struct KeyContext {
    group_id: GroupId,
    name: GroupName,
    r1_before: R1,
}

impl KeyContext {
    fn derive(&self, g: &Grant) -> BenchResult<GroupKey> {
        let r1 = self
            .r1_before
            .ratchet_to(g.rn2_version)
            .map_err(|e| e.to_string())?;
        let rn2 = Rn2::from_slice(&g.rn2).map_err(|e| e.to_string())?;
        let epoch = Epoch::new(g.rn1_version, g.rn2_version);
        GroupKey::derive(&r1, &rn2, &self.group_id, &self.name, epoch).map_err(|e| e.to_string())
    }
}

async fn duokey(n: usize) -> BenchResult<Measured> {
    let setup = Instant::now();
    let srv = ServerProc::start(|_| {})?;
    let mut owner = srv.member("m00000")?;
    let members: Vec<Member> = (1..n)
        .map(|i| srv.member(&format!("m{i:05}")))
        .collect::<BenchResult<_>>()?;
    let policy = membership::Policy {
        rotate_every_secs: 30 * 86_400,
        retention_secs: 30 * 86_400,
        rotate_rn1_on_remove: false,
        ..membership::Policy::default()
    };
    let (mut group, created) = create(&owner, "bench", policy).await?;
    let group_id = group.id;
    let version = import(&srv, &mut owner, &mut group, &members).await?;
    let rn1 = Rn1::random().map_err(|e| e.to_string())?;
    let ctx = KeyContext {
        group_id,
        name: GroupName::new("bench").map_err(|e| e.to_string())?,
        r1_before: R1::from_rn1(&rn1, created.rn2_version)
            .ratchet_to(version)
            .map_err(|e| e.to_string())?,
    };
    // Everybody but the removed member (the last) watches.
    let (removed, watchers) = members.split_last().ok_or("N must be at least 2")?;
    let (tx, mut done) = mpsc::unbounded_channel();
    watch_all(watchers, version + 1, &ctx, tx.clone()).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let (gms0, me0) = (cpu_ms(srv.pid()), cpu_ms(std::process::id()));
    let t0 = Instant::now();
    let grant = report(&owner, &mut group, Action::Remove, removed, Vec::new()).await?;
    ctx.derive(&grant)?;
    let _ = tx.send(Ok(Instant::now()));
    let mut last = t0;
    for _ in 0..n - 1 {
        let at = tokio::time::timeout(Duration::from_secs(300), done.recv())
            .await
            .map_err(|_| "members did not all get the new key within 300 s")?
            .ok_or("watchers ended")??;
        last = last.max(at);
    }
    let wall_ms = (last - t0).as_secs_f64() * 1e3;
    Ok(Measured {
        wall_ms,
        gms_cpu_ms: cpu_ms(srv.pid()) - gms0,
        members_cpu_ms: cpu_ms(std::process::id()) - me0,
        setup_s,
    })
}

/// Brings `members` into the group. Adding them one `ReportMember` at a
/// time costs O(N) each (every grant names every member), so large groups
/// are imported into the GMS database in one transaction — the members and
/// the owner's signed `add` of each (SPEC §4.7) — and a forced rotation then
/// issues the grant naming them all. Returns its version.
async fn import(
    srv: &ServerProc,
    owner: &mut Member,
    group: &mut OwnedGroup,
    members: &[Member],
) -> BenchResult<u64> {
    let now = duokey_terminal::now_ms();
    let mut changes = Vec::with_capacity(members.len());
    for m in members {
        let key = m.key.public().to_bytes().to_vec();
        let change = group
            .state
            .next_change(Action::Add, &owner.id, &m.id, Rights::NONE, key, now)
            .sign(&owner.key)
            .map_err(|e| e.to_string())?;
        group.state = group.state.apply(&change).map_err(|e| e.to_string())?;
        changes.push(change);
    }
    let chain: Vec<Vec<u8>> = Vec::new();
    let rows: Vec<duokey_storage::gms::MembershipRow> = changes
        .iter()
        .map(|c| duokey_storage::gms::MembershipRow {
            seq: c.change().seq,
            change: c.as_bytes(),
            actor_chain: &chain,
        })
        .collect();
    let db = duokey_storage::Db::open_sqlite(&srv.dir.path().join("gms.db"))
        .await
        .map_err(|e| e.to_string())?;
    let members_rows: Vec<duokey_storage::gms::MemberRow> = members
        .iter()
        .map(|m| duokey_storage::gms::MemberRow {
            user_id: m.id.to_string(),
            rights: 0,
        })
        .collect();
    db.import_members(&group.id.0, &members_rows, 2)
        .await
        .map_err(|e| e.to_string())?;
    db.import_changes(&group.id.0, &rows)
        .await
        .map_err(|e| e.to_string())?;
    db.close().await;
    let grant = owner
        .gms
        .rotate(RotateRequest {
            group_id: group.id.0.to_vec(),
            report_id: random16(),
            change: Vec::new(),
        })
        .await
        .map_err(|e| format!("rotate: {e}"))?
        .into_inner();
    if grant.members.len() != members.len() + 1 {
        return Err(format!(
            "the grant names {} members, not {}",
            grant.members.len(),
            members.len() + 1
        ));
    }
    Ok(grant.rn2_version)
}

/// A group as its owner signs its membership (SPEC §4.7): in the
/// benchmarks the owner makes every change, so it keeps the state itself.
pub(crate) struct OwnedGroup {
    /// The group.
    pub(crate) id: GroupId,
    state: State,
}

/// `owner` creates a group named `name` with its signed `create`.
pub(crate) async fn create(
    owner: &Member,
    name: &str,
    policy: membership::Policy,
) -> BenchResult<(OwnedGroup, Grant)> {
    let id = GroupId::random().map_err(|e| e.to_string())?;
    let name = GroupName::new(name).map_err(|e| e.to_string())?;
    let change = membership::create_change(
        id,
        &owner.id,
        &owner.key.public(),
        &name,
        &policy,
        duokey_terminal::now_ms(),
    )
    .and_then(|c| c.sign(&owner.key))
    .map_err(|e| e.to_string())?;
    let state = State::create(&change).map_err(|e| e.to_string())?;
    let grant = owner
        .gms
        .clone()
        .create_group(CreateGroupRequest {
            change: change.as_bytes().to_vec(),
        })
        .await
        .map_err(|e| format!("create group: {e}"))?
        .into_inner();
    Ok((OwnedGroup { id, state }, grant))
}

/// Sends the owner's signed `action` on `member` (add or remove).
async fn report(
    owner: &Member,
    group: &mut OwnedGroup,
    action: Action,
    member: &Member,
    body: Vec<u8>,
) -> BenchResult<Grant> {
    let change: SignedChange = group
        .state
        .next_change(
            action,
            &owner.id,
            &member.id,
            Rights::NONE,
            body,
            duokey_terminal::now_ms(),
        )
        .sign(&owner.key)
        .map_err(|e| e.to_string())?;
    let next = group.state.apply(&change).map_err(|e| e.to_string())?;
    let grant = owner
        .gms
        .clone()
        .report_member(ReportMemberRequest {
            group_id: group.id.0.to_vec(),
            report_id: random16(),
            change: change.as_bytes().to_vec(),
        })
        .await
        .map_err(|e| format!("{} {}: {e}", action.name(), member.id))?
        .into_inner();
    group.state = next;
    Ok(grant)
}

/// Adds `member` as a plain member.
pub(crate) async fn add(
    owner: &Member,
    group: &mut OwnedGroup,
    member: &Member,
) -> BenchResult<Grant> {
    let key = member.key.public().to_bytes().to_vec();
    report(owner, group, Action::Add, member, key).await
}

/// Opens every member's `Watch` stream (bounded concurrency) and leaves a
/// task per member that derives the key of version `target` when its grant
/// arrives and reports the instant.
async fn watch_all(
    members: &[Member],
    target: u64,
    ctx: &KeyContext,
    tx: mpsc::UnboundedSender<BenchResult<Instant>>,
) -> BenchResult<()> {
    let window = Arc::new(Semaphore::new(CONNECT_WINDOW));
    let mut opening = JoinSet::new();
    for m in members {
        let mut gms = m.gms.clone();
        let (window, ctx, tx) = (window.clone(), ctx.clone(), tx.clone());
        opening.spawn(async move {
            let permit = window.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut stream = gms
                .watch(WatchRequest {})
                .await
                .map_err(|e| format!("watch: {e}"))?
                .into_inner();
            drop(permit);
            tokio::spawn(async move {
                let got = loop {
                    match stream.message().await {
                        Ok(Some(WatchEvent {
                            event: Some(watch_event::Event::Grant(g)),
                        })) if g.rn2_version >= target => {
                            break ctx.derive(&g).map(|_| Instant::now());
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => break Err("watch ended".to_owned()),
                        Err(e) => break Err(format!("watch failed: {e}")),
                    }
                };
                let _ = tx.send(got);
            });
            Ok::<(), String>(())
        });
    }
    while let Some(r) = opening.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}
