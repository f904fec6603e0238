//! Scenario `rekey`: a member is
//! removed from a group of N members who are all online over real TLS;
//! measured from the remover's `ReportMember` until every remaining member
//! holds the new group key — it verified the signed change and the grant
//! against its own membership state, with RN1 rotation (the secure default)
//! it opened RN1' from the verified rotator, and it wrote what its terminal
//! writes to its own SQLite profile ([`crate::profile`]) — with the
//! server's CPU time (its own process) and the members' CPU time. Measured
//! in three modes (RN1 rotation with delivery keys cached or fetched, RN2
//! only), and, for the comparison with OpenMLS (whose provider keeps state
//! in memory), with members that keep theirs in memory too.

use crate::net::{Member, ServerProc, cpu_ms, perf_ctl, random16};
use crate::profile::Profile;
use crate::{BenchResult, Row};
use duokey_crypto::membership::{self, Action, SignedChange, State};
use duokey_crypto::rn1_delivery::{open_rn1, seal_rn1};
use duokey_crypto::{
    DeliveryKeyRecord, DeliveryPublic, DeliverySecret, Epoch, GroupId, GroupKey, GroupName, Item,
    ItemBody, ItemId, PublicIdentity, R1, Rights, Rn1, Rn1Context, Rn1Payload, Rn2, SignedItem,
    UserId,
};
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Concurrent connection set-ups.
const CONNECT_WINDOW: usize = 256;

/// The largest group whose members each keep a profile on disk: every
/// profile holds three files open beside the member's two connections, in
/// one process whose limit is 20,000 descriptors here. Above it members keep
/// their state in memory, and the rows say `members=memory`.
const PROFILES_MAX: usize = 2_000;

/// Runs the scenario for every group size, each measurement `repeat` times
/// (the median of each figure, with the range of the main ones).
pub async fn run(
    quick: bool,
    chosen: &[usize],
    repeat: usize,
    in_memory: bool,
) -> BenchResult<Vec<Row>> {
    let sizes: &[usize] = match (chosen, quick) {
        ([_, ..], _) => chosen,
        ([], true) => &[10, 100],
        ([], false) => &[10, 100, 1_000, 10_000],
    };
    let mut rows = Vec::new();
    const SECURE: Mode = Mode::Rn1 { cached_keys: true };
    for &n in sizes {
        let persist = !in_memory && n <= PROFILES_MAX;
        let m = if persist { "sqlite" } else { "memory" };
        let d = measure(n, Mode::Rn2Only, repeat, persist).await?;
        let secure = measure(n, SECURE, repeat, persist).await?;
        let cold = measure(n, Mode::Rn1 { cached_keys: false }, repeat, persist).await?;
        rows.extend(duokey_rows(&format!("N={n} rn1=on members={m}"), &secure));
        rows.extend(duokey_rows(
            &format!("N={n} rn1=on keys=fetched members={m}"),
            &cold,
        ));
        rows.extend(duokey_rows(&format!("N={n} members={m}"), &d));
        rows.extend(floor_rows(n, &secure.median)?);
        // OpenMLS's provider keeps its state in memory: the ratios compare
        // it with members that do too, and the persisted figures beside.
        let like = match persist {
            true => {
                let d = measure(n, Mode::Rn2Only, repeat, false).await?;
                let secure = measure(n, SECURE, repeat, false).await?;
                rows.extend(duokey_rows(
                    &format!("N={n} rn1=on members=memory"),
                    &secure,
                ));
                rows.extend(duokey_rows(&format!("N={n} members=memory"), &d));
                Some((d.median, secure.median))
            }
            false => None,
        };
        let (d_mem, secure_mem) = like
            .as_ref()
            .map_or((&d.median, &secure.median), |(a, b)| (a, b));
        let duokey = Compared {
            rn2_only: d_mem,
            secure: secure_mem,
            secure_persisted: persist.then_some(&secure.median),
        };
        rows.extend(mls_rows(n, quick, repeat, &duokey).await?);
    }
    Ok(rows)
}

/// Several runs of one Duokey measurement.
struct Repeated {
    /// The median of each figure.
    median: Measured,
    runs: Vec<Measured>,
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `repeat` removals from fresh groups of `n` members in `mode`.
async fn measure(n: usize, mode: Mode, repeat: usize, persist: bool) -> BenchResult<Repeated> {
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(duokey(n, mode, persist).await?);
    }
    let of = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    let median = Measured {
        wall_ms: of(|m| m.wall_ms),
        gms_cpu_ms: of(|m| m.gms_cpu_ms),
        members_cpu_ms: of(|m| m.members_cpu_ms),
        setup_s: of(|m| m.setup_s),
    };
    Ok(Repeated { median, runs })
}

/// What one member costs in cryptography alone when RN1 rotates, measured
/// in this run (µs): the lower bound of the secure default's CPU.
struct Floor {
    seal_us: f64,
    open_us: f64,
    sign_us: f64,
    verify_us: f64,
}

impl Floor {
    /// Per remaining member (SPEC §4.7): the remover seals RN1' and signs two
    /// items (anchor, `rn1`); the CS checks both signatures; the member
    /// verifies the signed change, both items, and opens RN1'.
    fn per_member_us(&self) -> f64 {
        self.seal_us + self.open_us + 2.0 * self.sign_us + 5.0 * self.verify_us
    }
}

/// Mean µs of `op` over `rounds` runs.
fn mean_us(rounds: u32, mut op: impl FnMut() -> BenchResult<()>) -> BenchResult<f64> {
    let start = Instant::now();
    for _ in 0..rounds {
        op()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}

/// Measures the primitives of one member's share of an RN1 rotation.
fn measure_floor() -> BenchResult<Floor> {
    const ROUNDS: u32 = 300;
    let err = |e: duokey_crypto::Error| e.to_string();
    let key = duokey_crypto::IdentityKey::from_seed([3; 32]);
    let (a, b) = (
        UserId::new("a").map_err(err)?,
        UserId::new("b").map_err(err)?,
    );
    let (gid, id) = (GroupId([1; 16]), ItemId([2; 16]));
    let secret = DeliverySecret::generate();
    let ctx = Rn1Context {
        group_id: &gid,
        sender: &a,
        recipient: &b,
        ref_id: &id,
    };
    let r1 = R1::from_rn1(&Rn1::random().map_err(err)?, 1);
    let (enc, ct) = seal_rn1(&secret.public(), &ctx, 1, &r1).map_err(err)?;
    let item = Item {
        item_id: id,
        sender: a.clone(),
        recipient: b.clone(),
        created_at_ms: 0,
        body: ItemBody::Rn1(Rn1Payload {
            ref_id: id,
            group_id: gid,
            rn1_version: 1,
            at_rn2_version: 1,
            enc,
            ct: ct.clone(),
        }),
    };
    let signed = item.sign(&key).map_err(err)?;
    let public = key.public();
    Ok(Floor {
        seal_us: mean_us(ROUNDS, || {
            seal_rn1(&secret.public(), &ctx, 1, &r1)
                .map(drop)
                .map_err(err)
        })?,
        open_us: mean_us(ROUNDS, || {
            open_rn1(&secret, &ctx, 1, 1, &enc, &ct)
                .map(drop)
                .map_err(err)
        })?,
        sign_us: mean_us(ROUNDS, || item.sign(&key).map(drop).map_err(err))?,
        verify_us: mean_us(ROUNDS, || {
            SignedItem::parse(&signed)
                .and_then(|s| s.verify_signature(&public))
                .map_err(err)
        })?,
    })
}

/// The crypto floor of the secure default for `n` members beside what it
/// cost in all (`secure`).
fn floor_rows(n: usize, secure: &Measured) -> BenchResult<Vec<Row>> {
    let f = measure_floor()?;
    let p = format!("N={n} rn1=on floor");
    let floor_ms = f.per_member_us() * (n as f64 - 1.0) / 1e3;
    Ok(vec![
        Row::new("rekey", &p, "hpke_seal_us", f.seal_us, "us"),
        Row::new("rekey", &p, "hpke_open_us", f.open_us, "us"),
        Row::new("rekey", &p, "item_sign_us", f.sign_us, "us"),
        Row::new("rekey", &p, "item_verify_us", f.verify_us, "us"),
        Row::new("rekey", &p, "crypto_floor_cpu_ms", floor_ms, "ms"),
        Row::new(
            "rekey",
            &p,
            "crypto_share_of_total_cpu",
            floor_ms / (secure.gms_cpu_ms + secure.members_cpu_ms),
            "ratio",
        ),
    ])
}

/// The rows of one Duokey measurement under `p`: medians, and the range of
/// the wall time and the total CPU over the runs.
fn duokey_rows(p: &str, r: &Repeated) -> Vec<Row> {
    let d = &r.median;
    let total = |m: &Measured| m.gms_cpu_ms + m.members_cpu_ms;
    let range = |f: &dyn Fn(&Measured) -> f64| {
        let v: Vec<f64> = r.runs.iter().map(f).collect();
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (wall_min, wall_max) = range(&|m| m.wall_ms);
    let (cpu_min, cpu_max) = range(&total);
    let p = format!("{p} runs={}", r.runs.len());
    vec![
        Row::new("rekey", &p, "rekey_all_members_ms", d.wall_ms, "ms"),
        Row::new("rekey", &p, "rekey_all_members_ms_min", wall_min, "ms"),
        Row::new("rekey", &p, "rekey_all_members_ms_max", wall_max, "ms"),
        Row::new("rekey", &p, "gms_cpu_ms", d.gms_cpu_ms, "ms"),
        Row::new("rekey", &p, "members_cpu_ms", d.members_cpu_ms, "ms"),
        Row::new(
            "rekey",
            &p,
            "total_cpu_ms",
            median(r.runs.iter().map(total).collect()),
            "ms",
        ),
        Row::new("rekey", &p, "total_cpu_ms_min", cpu_min, "ms"),
        Row::new("rekey", &p, "total_cpu_ms_max", cpu_max, "ms"),
        Row::new("rekey", &p, "setup_s", d.setup_s, "s"),
    ]
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

/// The Duokey figures OpenMLS is compared with.
struct Compared<'a> {
    /// RN2 only, members in memory (as OpenMLS's provider).
    rn2_only: &'a Measured,
    /// The secure default, members in memory.
    secure: &'a Measured,
    /// The secure default, members writing their profiles, when measured.
    secure_persisted: Option<&'a Measured>,
}

/// OpenMLS removing a member of a group of the same size, and the ratios.
async fn mls_rows(
    n: usize,
    quick: bool,
    repeat: usize,
    duokey: &Compared<'_>,
) -> BenchResult<Vec<Row>> {
    let (sample, steady) = mls_plan(n, quick);
    let mut runs = Vec::new();
    for _ in 0..repeat.max(1) {
        runs.push(
            tokio::task::spawn_blocking(move || crate::mls::rekey(n, sample, steady))
                .await
                .map_err(|e| e.to_string())??,
        );
    }
    // The run whose total is the median (the lower middle for an even count).
    runs.sort_by(|a, b| a.total_ms.total_cmp(&b.total_ms));
    let (mls_min, mls_max) = (
        runs.first().map_or(f64::NAN, |m| m.total_ms),
        runs.last().map_or(f64::NAN, |m| m.total_ms),
    );
    let m = runs.swap_remove((runs.len() - 1) / 2);
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
    let cpu = |m: &Measured| m.gms_cpu_ms + m.members_cpu_ms;
    let d = duokey.rn2_only;
    let mut rows = vec![
        Row::new(
            "rekey",
            &p,
            "openmls_rekey_all_members_ms",
            m.total_ms,
            "ms",
        ),
        Row::new("rekey", &p, "openmls_total_ms_min", mls_min, "ms"),
        Row::new("rekey", &p, "openmls_total_ms_max", mls_max, "ms"),
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
            m.total_ms / cpu(d),
            "ratio",
        ),
        Row::new(
            "rekey",
            &p,
            "openmls_over_duokey_wall",
            m.total_ms / d.wall_ms,
            "ratio",
        ),
        Row::new(
            "rekey",
            &p,
            "openmls_over_duokey_rn1_on_total_cpu",
            m.total_ms / cpu(duokey.secure),
            "ratio",
        ),
    ];
    if let Some(p_) = duokey.secure_persisted {
        rows.push(Row::new(
            "rekey",
            &p,
            "openmls_over_duokey_rn1_on_persisted_total_cpu",
            m.total_ms / cpu(p_),
            "ratio",
        ));
    }
    Ok(rows)
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

/// How the group re-keys on the removal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `no_rotate_rn1_on_remove`: the grant alone.
    Rn2Only,
    /// The secure default: RN1 rotates. With `cached_keys` the remover
    /// checked every member's delivery key within the last day (D29, the
    /// usual case: at the previous rotation); without, it asks the
    /// directory for each and checks it first.
    Rn1 { cached_keys: bool },
}

/// One removal from a group of `n` online members, the remover and every
/// member over real TLS. With `rotate_rn1` (the secure default) the signed
/// removal rotates RN1: the remover, as a terminal does, has (or fetches and
/// checks) each remaining member's delivery key, seals RN1' to it and sends
/// an anchor and an `rn1` item. Every member, as its terminal does, verifies
/// the signed change against its own copy of the membership state, checks
/// the grant against it, and checks the signatures of both items from the
/// verified rotator; it holds the new key once it has the grant (Watch) and
/// its RN1' (Subscribe), and with `persist` once it wrote them to its
/// profile as its terminal does.
async fn duokey(n: usize, mode: Mode, persist: bool) -> BenchResult<Measured> {
    let rotate_rn1 = mode != Mode::Rn2Only;
    let setup = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let srv = ServerProc::start(|_| {})?;
    let mut owner = srv.member("m00000")?;
    let members: Vec<Member> = (1..n)
        .map(|i| srv.member(&format!("m{i:05}")))
        .collect::<BenchResult<_>>()?;
    let policy = membership::Policy {
        rotate_every_secs: 30 * 86_400,
        retention_secs: 30 * 86_400,
        rotate_rn1_on_remove: rotate_rn1,
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
    let (secrets, cached) = if rotate_rn1 {
        let secrets = publish_delivery_keys(watchers).await?;
        let cached = match mode {
            Mode::Rn1 { cached_keys: true } => Some(check_delivery_keys(&owner, watchers).await?),
            _ => None,
        };
        (Some(secrets), cached)
    } else {
        (None, None)
    };
    let rotator = Verifier {
        id: owner.id.clone(),
        key: owner.key.public(),
        state: Arc::new(group.state.clone()),
    };
    let profiles = match persist {
        true => create_profiles(watchers, &group, version, dir.path()).await?,
        false => Vec::new(),
    };
    watch_all(
        watchers,
        secrets.as_deref(),
        profiles,
        &rotator,
        version + 1,
        &ctx,
        tx.clone(),
    )
    .await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let (gms0, me0) = (cpu_ms(srv.pid()), cpu_ms(std::process::id()));
    if mode == (Mode::Rn1 { cached_keys: true }) {
        perf_ctl("enable");
    }
    let t0 = Instant::now();
    let grant = report(&owner, &mut group, Action::Remove, removed, Vec::new()).await?;
    if rotate_rn1 {
        let rn1 = Rn1::random().map_err(|e| e.to_string())?;
        let r1 = R1::from_rn1(&rn1, grant.rn2_version);
        send_rn1_to_all(&owner, &group, &grant, &r1, watchers, cached.as_ref()).await?;
    } else {
        ctx.derive(&grant)?;
    }
    let _ = tx.send((Ok(Instant::now()), None));
    let mut last = t0;
    // The members' states live on after the measurement, as in terminals
    // (freeing a thousand copies would otherwise be counted).
    let mut states = Vec::with_capacity(n);
    for _ in 0..n - 1 {
        let (at, state) = tokio::time::timeout(Duration::from_secs(300), done.recv())
            .await
            .map_err(|_| "members did not all get the new key within 300 s")?
            .ok_or("watchers ended")?;
        last = last.max(at?);
        states.push(state);
    }
    let wall_ms = (last - t0).as_secs_f64() * 1e3;
    perf_ctl("disable");
    let measured = Measured {
        wall_ms,
        gms_cpu_ms: cpu_ms(srv.pid()) - gms0,
        members_cpu_ms: cpu_ms(std::process::id()) - me0,
        setup_s,
    };
    drop(states);
    Ok(measured)
}

/// Every member's profile, holding the group at `version` as its terminal
/// would (set-up, not measured).
async fn create_profiles(
    members: &[Member],
    group: &OwnedGroup,
    version: u64,
    dir: &std::path::Path,
) -> BenchResult<Vec<Option<Profile>>> {
    let list: Arc<Vec<(String, duokey_crypto::Rights)>> = Arc::new(
        group
            .state
            .members
            .iter()
            .map(|(u, m)| (u.as_str().to_owned(), m.rights))
            .collect(),
    );
    let gid = group.id;
    let mut profiles = Vec::with_capacity(members.len());
    for chunk in members.chunks(CONNECT_WINDOW) {
        let mut opening = JoinSet::new();
        for (i, m) in chunk.iter().enumerate() {
            let (name, dir, list) = (m.id.as_str().to_owned(), dir.to_owned(), list.clone());
            opening.spawn(async move {
                let p = Profile::create(&dir, &name, gid, version, &list).await;
                (i, p)
            });
        }
        let mut got: Vec<Option<Profile>> = (0..chunk.len()).map(|_| None).collect();
        while let Some(r) = opening.join_next().await {
            let (i, p) = r.map_err(|e| e.to_string())?;
            got[i] = Some(p?);
        }
        profiles.extend(got);
    }
    Ok(profiles)
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
    let db = duokey_storage::GmsStore::open_sqlite(&srv.dir.path().join("gms.db"))
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

/// Every member's delivery key, published in the CS directory as a terminal
/// does at enrolment (setup, not measured).
async fn publish_delivery_keys(members: &[Member]) -> BenchResult<Vec<Arc<DeliverySecret>>> {
    let mut secrets = Vec::with_capacity(members.len());
    for m in members {
        let secret = DeliverySecret::generate();
        let record = DeliveryKeyRecord {
            user: m.id.clone(),
            key: secret.public(),
            created_at_ms: duokey_terminal::now_ms(),
        }
        .sign(&m.key)
        .map_err(|e| e.to_string())?;
        m.cs.clone()
            .publish_delivery_key(PublishDeliveryKeyRequest { record })
            .await
            .map_err(|e| format!("publish delivery key: {e}"))?;
        secrets.push(Arc::new(secret));
    }
    Ok(secrets)
}

/// A member's delivery key as a terminal checks it: its certificate from
/// the directory (the CA's chain, as the terminal's pinning does) and the
/// record's signature by the key in it.
async fn fetch_delivery_key(
    cs: &mut CommunicationClient<Channel>,
    user: &UserId,
) -> BenchResult<DeliveryPublic> {
    let found = cs
        .get_user(GetUserRequest {
            user_id: user.to_string(),
        })
        .await
        .map_err(|e| format!("get user: {e}"))?
        .into_inner();
    let leaf = found.cert_chain_der.first().ok_or("no certificate")?;
    let their_key = duokey_pki::peer_identity(leaf)
        .ok()
        .and_then(|p| p.ed25519_public)
        .and_then(|k| PublicIdentity::from_bytes(&k).ok())
        .ok_or("no Ed25519 key")?;
    let record = DeliveryKeyRecord::verify(&found.delivery_key_record, &their_key)
        .map_err(|e| e.to_string())?;
    Ok(record.key)
}

/// What the remover's terminal holds after an earlier rotation (D29): every
/// member's checked delivery key (setup, not measured).
async fn check_delivery_keys(
    owner: &Member,
    members: &[Member],
) -> BenchResult<HashMap<UserId, DeliveryPublic>> {
    let mut keys = HashMap::with_capacity(members.len());
    let mut cs = owner.cs.clone();
    for m in members {
        keys.insert(m.id.clone(), fetch_delivery_key(&mut cs, &m.id).await?);
    }
    Ok(keys)
}

/// The remover's RN1 duty (SPEC §4.3 step 4, §4.7), as the terminal does
/// it: per remaining member, its delivery key (`cached`, or fetched and
/// checked), seal R1, sign an anchor and the `rn1` item (64 members at a
/// time); then send them in `SendItems` batches (one durable write each).
async fn send_rn1_to_all(
    owner: &Member,
    group: &OwnedGroup,
    grant: &Grant,
    r1: &R1,
    members: &[Member],
    cached: Option<&HashMap<UserId, DeliveryPublic>>,
) -> BenchResult<()> {
    let window = Arc::new(Semaphore::new(64));
    let mut sending = JoinSet::new();
    let (seq, head) = (group.state.seq, group.state.head);
    for m in members {
        let (window, to) = (window.clone(), m.id.clone());
        let (mut cs, key, me) = (owner.cs.clone(), owner.key.clone(), owner.id.clone());
        let (gid, r1, rn1_version, v) =
            (group.id, r1.clone(), grant.rn1_version, grant.rn2_version);
        let known = cached.and_then(|c| c.get(&to)).copied();
        sending.spawn(async move {
            let _permit = window.acquire_owned().await.map_err(|e| e.to_string())?;
            let delivery_key = match known {
                Some(k) => k,
                None => fetch_delivery_key(&mut cs, &to).await?,
            };
            let item = |item_id: ItemId, body: ItemBody| Item {
                item_id,
                sender: me.clone(),
                recipient: to.clone(),
                created_at_ms: duokey_terminal::now_ms(),
                body,
            };
            let anchor = item(
                ItemId::random().map_err(|e| e.to_string())?,
                ItemBody::Anchor {
                    group_id: gid,
                    membership_seq: seq,
                    head,
                    at_rn2_version: v,
                },
            );
            let id = ItemId::random().map_err(|e| e.to_string())?;
            let ctx = Rn1Context {
                group_id: &gid,
                sender: &me,
                recipient: &to,
                ref_id: &id,
            };
            let (enc, ct) =
                seal_rn1(&delivery_key, &ctx, rn1_version, &r1).map_err(|e| e.to_string())?;
            let rn1 = item(
                id,
                ItemBody::Rn1(Rn1Payload {
                    ref_id: id,
                    group_id: gid,
                    rn1_version,
                    at_rn2_version: v,
                    enc,
                    ct,
                }),
            );
            [anchor, rn1]
                .iter()
                .map(|it| it.sign(&key).map_err(|e| e.to_string()))
                .collect::<BenchResult<Vec<Vec<u8>>>>()
        });
    }
    let mut items = Vec::with_capacity(2 * members.len());
    while let Some(r) = sending.join_next().await {
        items.extend(r.map_err(|e| e.to_string())??);
    }
    for batch in items.chunks(1000) {
        owner
            .cs
            .clone()
            .send_items(SendItemsRequest {
                items: batch.to_vec(),
            })
            .await
            .map_err(|e| format!("send items: {e}"))?;
    }
    Ok(())
}

/// What a member's task leaves behind: its state and profile, freed after
/// the measurement (as a terminal keeps them).
type Kept = (State, Option<Profile>);

/// What every member verifies the removal against: the rotator the
/// verified history names (the remover), its key, and the membership state
/// before the removal (each member holds its own copy, as its terminal does).
struct Verifier {
    id: UserId,
    key: PublicIdentity,
    state: Arc<State>,
}

/// Opens every member's `Watch` stream (and, when RN1 rotates, its CS
/// `Subscribe` stream) with bounded concurrency, and leaves a task per
/// member that derives the key of version `target` once it holds what it
/// needs — a grant it verified, and with `secrets` its RN1' from the
/// verified rotator — and reports the instant.
async fn watch_all(
    members: &[Member],
    secrets: Option<&[Arc<DeliverySecret>]>,
    mut profiles: Vec<Option<Profile>>,
    verifier: &Verifier,
    target: u64,
    ctx: &KeyContext,
    tx: mpsc::UnboundedSender<(BenchResult<Instant>, Option<Kept>)>,
) -> BenchResult<()> {
    let window = Arc::new(Semaphore::new(CONNECT_WINDOW));
    let mut opening = JoinSet::new();
    for (i, m) in members.iter().enumerate() {
        let (mut gms, mut cs) = (m.gms.clone(), m.cs.clone());
        let (window, ctx, tx) = (window.clone(), ctx.clone(), tx.clone());
        let secret = secrets.and_then(|s| s.get(i)).cloned();
        let profile = profiles.get_mut(i).and_then(Option::take);
        let me = m.id.clone();
        let (rotator, rotator_key) = (verifier.id.clone(), verifier.key);
        let mut state = (*verifier.state).clone();
        opening.spawn(async move {
            let permit = window.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut grants = gms
                .watch(WatchRequest {})
                .await
                .map_err(|e| format!("watch: {e}"))?
                .into_inner();
            let mut items = match secret {
                Some(_) => Some(
                    cs.subscribe(SubscribeRequest {})
                        .await
                        .map_err(|e| format!("subscribe: {e}"))?
                        .into_inner(),
                ),
                None => None,
            };
            drop(permit);
            tokio::spawn(async move {
                let mut member = MemberSide {
                    me: &me,
                    rotator: &rotator,
                    rotator_key: &rotator_key,
                    secret: secret.as_deref(),
                    state: &mut state,
                    profile: profile.as_ref(),
                };
                let got = member
                    .rekey(&mut grants, items.as_mut(), target, &ctx)
                    .await;
                let _ = tx.send((got, Some((state, profile))));
            });
            Ok::<(), String>(())
        });
    }
    while let Some(r) = opening.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One member's terminal, as far as the re-key goes.
struct MemberSide<'a> {
    me: &'a UserId,
    rotator: &'a UserId,
    rotator_key: &'a PublicIdentity,
    /// Its delivery key, when RN1 rotates.
    secret: Option<&'a DeliverySecret>,
    /// Its verified membership state.
    state: &'a mut State,
    /// Its profile, written as its terminal writes it (`None`: in memory).
    profile: Option<&'a Profile>,
}

impl MemberSide<'_> {
    /// The grant of `target` from `grants`, checked against the member's
    /// own state after the signed change it carries, and, when RN1 rotates,
    /// its RN1' and the anchor from `items`, both signed by the verified
    /// rotator; then the group key.
    async fn rekey(
        &mut self,
        grants: &mut tonic::Streaming<WatchEvent>,
        mut items: Option<&mut tonic::Streaming<Delivery>>,
        target: u64,
        ctx: &KeyContext,
    ) -> BenchResult<Instant> {
        let mut grant: Option<Grant> = None;
        let mut anchor: Option<(u64, [u8; 32])> = None;
        let mut r1: Option<R1> = match self.secret {
            None => Some(ctx.r1_before.clone()),
            Some(_) => None,
        };
        loop {
            if let (Some(g), Some(r1)) = (&grant, &r1)
                && (self.secret.is_none() || anchor.is_some())
            {
                if anchor.is_some_and(|a| a != (self.state.seq, self.state.head)) {
                    return Err("the anchor names another membership head".to_owned());
                }
                let key = KeyContext {
                    r1_before: r1.clone(),
                    ..ctx.clone()
                };
                return key.derive(g).map(|_| Instant::now());
            }
            tokio::select! {
                event = grants.message(), if grant.is_none() => match event {
                    Ok(Some(WatchEvent { event: Some(watch_event::Event::Grant(g)) })) if g.rn2_version >= target => {
                        let changes = self.verify_grant(&g)?;
                        if let Some(p) = self.profile {
                            p.grant(&g, &changes).await?;
                        }
                        grant = Some(g);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("watch ended".to_owned()),
                    Err(e) => return Err(format!("watch failed: {e}")),
                },
                delivery = next_item(&mut items) => {
                    let Some(bytes) = delivery? else { continue };
                    let (id, opened) = self.open_item(&bytes)?;
                    match opened {
                        Opened::Rn1(version, got) => {
                            if let Some(p) = self.profile {
                                p.rn1(&id, version, &got).await?;
                            }
                            r1 = Some(got);
                        }
                        Opened::Anchor(seq, head, at) => {
                            if let Some(p) = self.profile {
                                p.anchor(&id, self.rotator.as_str(), (seq, head), at).await?;
                            }
                            anchor = Some((seq, head));
                        }
                    }
                },
            }
        }
    }

    /// SPEC §4.7 "Grants": the grant's changes extend the member's own
    /// state (signature by the actor's recorded key, every rule), and the
    /// grant names the resulting head and RN1 version.
    fn verify_grant(&mut self, g: &Grant) -> BenchResult<Vec<SignedChange>> {
        let mut changes = Vec::with_capacity(g.changes.len());
        for bytes in &g.changes {
            let change = SignedChange::parse(bytes).map_err(|e| e.to_string())?;
            self.state.advance(&change).map_err(|e| e.to_string())?;
            changes.push(change);
        }
        if g.membership_head != self.state.head || g.membership_seq != self.state.seq {
            return Err("the grant names another membership head".to_owned());
        }
        if g.rn1_version != self.state.rn1_version {
            return Err("the grant names another RN1 version".to_owned());
        }
        Ok(changes)
    }

    /// An item from the rotator: signature checked with its recorded key;
    /// an `rn1` item opened, an anchor read. With the item's id.
    fn open_item(&self, bytes: &[u8]) -> BenchResult<(ItemId, Opened)> {
        let signed = SignedItem::parse(bytes).map_err(|e| e.to_string())?;
        if &signed.item.sender != self.rotator {
            return Err("an item from another sender than the rotator".to_owned());
        }
        let item = signed
            .open(self.me, self.rotator_key)
            .map_err(|e| e.to_string())?;
        let id = item.item_id;
        let opened = match (&item.body, self.secret) {
            (ItemBody::Rn1(p), Some(secret)) => {
                let ctx = Rn1Context {
                    group_id: &p.group_id,
                    sender: self.rotator,
                    recipient: self.me,
                    ref_id: &p.ref_id,
                };
                let r1 = open_rn1(secret, &ctx, p.rn1_version, p.at_rn2_version, &p.enc, &p.ct)
                    .map_err(|e| e.to_string())?;
                Opened::Rn1(p.rn1_version, r1)
            }
            (
                ItemBody::Anchor {
                    membership_seq,
                    head,
                    at_rn2_version,
                    ..
                },
                _,
            ) => Opened::Anchor(*membership_seq, *head, *at_rn2_version),
            _ => return Err("an unexpected item".to_owned()),
        };
        Ok((id, opened))
    }
}

/// What an item from the rotator gave.
enum Opened {
    /// RN1 version, R1.
    Rn1(u32, R1),
    /// Membership seq, head, at RN2 version.
    Anchor(u64, [u8; 32], u64),
}

/// The next inbox item's bytes from a `Subscribe` stream, if there is one.
async fn next_item(
    items: &mut Option<&mut tonic::Streaming<Delivery>>,
) -> BenchResult<Option<Vec<u8>>> {
    let Some(stream) = items.as_mut() else {
        return std::future::pending().await;
    };
    match stream.message().await {
        Ok(Some(Delivery {
            event: Some(delivery::Event::Item(item)),
        })) => Ok(Some(item.item)),
        Ok(Some(_)) => Ok(None),
        Ok(None) => Err("subscribe ended".to_owned()),
        Err(e) => Err(format!("subscribe failed: {e}")),
    }
}
