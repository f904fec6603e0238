//! Scenario `relay`: G groups × M members, every member on
//! its own TLS connection with a `Subscribe` stream, 1 KiB envelopes posted
//! to the CS (durable in SQLite before the answer). Measured: deliveries per
//! second in a closed loop (at most [`WINDOW`] posts in flight, a post being
//! in flight until all M − 1 other members got it) and post-to-delivery
//! latency at fixed loads. Beside it, NATS core pub/sub on 127.0.0.1:4222
//! with the same shape, window and loads.

use crate::net::{Member, ServerProc};
use crate::rekey::{add, create};
use crate::{BenchResult, Row};
use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;
use duokey_proto::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Posts in flight in the closed loop.
pub const WINDOW: usize = 1_000;
/// Body of every message.
const BODY: usize = 1_024;

/// Shape and duration of a run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Groups.
    pub groups: usize,
    /// Members per group.
    pub members: usize,
    /// Length of each measurement.
    pub seconds: f64,
}

impl Shape {
    fn params(&self) -> String {
        format!("G={} M={} body=1KiB", self.groups, self.members)
    }
}

/// Posts not yet delivered to every other member: id → (sent, remaining).
#[derive(Default)]
pub struct Ledger {
    open: Mutex<HashMap<u64, (Instant, usize)>>,
    latencies_us: Mutex<Vec<u32>>,
    delivered: std::sync::atomic::AtomicU64,
}

impl Ledger {
    /// Records a post about to be sent.
    pub fn sent(&self, id: u64, receivers: usize) {
        self.lock().insert(id, (Instant::now(), receivers));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, usize)>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one delivery; `true` when the post reached everybody.
    pub fn delivered(&self, id: u64) -> bool {
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut open = self.lock();
        let Some((at, left)) = open.get_mut(&id) else {
            return false;
        };
        let us = u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX);
        *left -= 1;
        let done = *left == 0;
        if done {
            open.remove(&id);
        }
        drop(open);
        self.latencies_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(us);
        done
    }

    /// Deliveries so far.
    pub fn count(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the latencies recorded so far, sorted.
    pub fn take_latencies(&self) -> Vec<u32> {
        let mut l = std::mem::take(
            &mut *self
                .latencies_us
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        l.sort_unstable();
        l
    }
}

/// The `q` quantile of sorted latencies, in ms.
pub fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "q is in [0, 1]: the rank is an index of `sorted`"
    )]
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).map_or(f64::NAN, |v| f64::from(*v) / 1e3)
}

/// Sends posts through `post` in a closed loop for `seconds`; returns
/// deliveries per second.
pub async fn closed_loop<F, Fut>(
    ledger: Arc<Ledger>,
    window: Arc<Semaphore>,
    seconds: f64,
    mut post: F,
) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let before = ledger.count();
    let mut id = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let Ok(permit) =
            tokio::time::timeout(Duration::from_secs(5), window.clone().acquire_owned()).await
        else {
            break;
        };
        let Ok(permit) = permit else { break };
        permit.forget();
        id += 1;
        tokio::spawn(post(id));
    }
    (ledger.count() - before) as f64 / start.elapsed().as_secs_f64()
}

/// Sends `rate` posts per second through `post` for `seconds` (open loop);
/// returns the sorted latencies recorded meanwhile.
pub async fn fixed_load<F, Fut>(
    ledger: &Ledger,
    rate: f64,
    seconds: f64,
    first_id: u64,
    mut post: F,
) -> Vec<u32>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = ledger.take_latencies();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed().as_secs_f64() < seconds {
        tick.tick().await;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a count of posts due: positive, far below 2^64"
        )]
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            tokio::spawn(post(first_id + sent));
        }
    }
    // Let the last posts arrive (bounded).
    tokio::time::sleep(Duration::from_millis(500)).await;
    ledger.take_latencies()
}

/// Post-to-delivery latency rows of `system` at each fixed load (total
/// deliveries per second), after 1 s for earlier posts to drain; `make`
/// gives the posting function.
pub async fn latency_rows<F, Fut>(
    system: &str,
    params: &str,
    shape: Shape,
    loads: &[f64],
    ledger: &Ledger,
    make: impl Fn() -> F,
) -> Vec<Row>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let receivers = (shape.members - 1) as f64;
    let mut rows = Vec::new();
    for (i, load) in loads.iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = 1_000_000_000 * (i as u64 + 1);
        let lat = fixed_load(ledger, load / receivers, shape.seconds, first, make()).await;
        let lp = format!("{params} load={load}/s");
        let share = lat.len() as f64 / (load * shape.seconds);
        for (metric, value, unit) in [
            ("latency_p50_ms", quantile_ms(&lat, 0.5), "ms"),
            ("latency_p99_ms", quantile_ms(&lat, 0.99), "ms"),
            ("delivered_share", share, "ratio"),
        ] {
            let metric = format!("{system}_{metric}");
            rows.push(Row::new("relay", &lp, &metric, value, unit));
        }
    }
    rows
}

/// Runs the scenario: Duokey, then NATS.
pub async fn run(quick: bool) -> BenchResult<Vec<Row>> {
    let (shape, loads) = shape(quick);
    let mut rows = duokey(shape, loads).await?;
    rows.extend(crate::nats::run(shape, loads).await);
    Ok(rows)
}

/// The relay's shape and fixed loads, quick or full.
fn shape(quick: bool) -> (Shape, &'static [f64]) {
    let shape = if quick {
        Shape {
            groups: 5,
            members: 4,
            seconds: 1.5,
        }
    } else {
        Shape {
            groups: 100,
            members: 20,
            seconds: 10.0,
        }
    };
    let loads: &[f64] = if quick {
        &[1_000.0]
    } else {
        &[10_000.0, 50_000.0]
    };
    (shape, loads)
}

struct Poster {
    member: Arc<Member>,
    group: GroupId,
    sender_key: SenderKey,
    epoch: Epoch,
}

impl Poster {
    fn envelope(&self, id: u64) -> BenchResult<Vec<u8>> {
        let mut msg_id = [0u8; 16];
        msg_id[..8].copy_from_slice(&id.to_be_bytes());
        let header = Header {
            group_id: self.group,
            epoch: self.epoch,
            sender: self.member.id.clone(),
            seq: id,
            sent_at_ms: 0,
            msg_id: MsgId(msg_id),
        };
        envelope::seal(
            &self.member.key,
            &self.sender_key,
            &header,
            ContentType::Text,
            &[b'x'; BODY],
        )
        .map_err(|e| e.to_string())
    }
}

/// The post id carried in the first 8 bytes of a header's `msg_id`.
fn post_id(header: &Header) -> Option<u64> {
    let b = header.msg_id.as_bytes();
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

async fn duokey(shape: Shape, loads: &[f64]) -> BenchResult<Vec<Row>> {
    let srv = ServerProc::start(|_| {})?;
    measure("duokey", &srv, shape, loads, "relay").await
}

/// Scenario `cluster` (DESIGN D49, docs/PERFORMANCE.md §7): the relay on
/// one SQLite node, on a cluster of 1 and of 2 CS nodes on PostgreSQL +
/// NATS (member *i* of a group on CS node *i* mod n, so most deliveries
/// cross nodes), and core NATS alone, in one run, with the CPU each costs
/// per delivery. Needs `DUOKEY_BENCH_POSTGRES_URL` (or
/// `DUOKEY_TEST_POSTGRES_URL`) and a NATS on 127.0.0.1:4222; says so in a
/// row when they are missing.
pub async fn cluster(quick: bool) -> BenchResult<Vec<Row>> {
    let (shape, loads) = shape(quick);
    let single = ServerProc::start(|_| {})?;
    let mut rows = measure("sqlite_1node", &single, shape, loads, "cluster").await?;
    drop(single);
    let postgres = std::env::var("DUOKEY_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("DUOKEY_TEST_POSTGRES_URL"));
    let nats = std::env::var("DUOKEY_BENCH_NATS_URL")
        .or_else(|_| std::env::var("DUOKEY_TEST_NATS_URL"))
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let Ok(postgres) = postgres else {
        rows.push(Row::new(
            "cluster",
            "skipped: set DUOKEY_BENCH_POSTGRES_URL (a PostgreSQL database URL)",
            "skipped",
            0.0,
            "",
        ));
        return Ok(rows);
    };
    for nodes in [1, 2] {
        let schema = crate::net::fresh_schema(&postgres).await?;
        let srv = ServerProc::cluster(nodes, &schema.url, &nats)?;
        let system = format!("pg_nats_{nodes}cs");
        rows.extend(measure(&system, &srv, shape, loads, "cluster").await?);
        drop(srv);
        schema.drop().await;
    }
    let mut core = crate::nats::run(shape, loads).await;
    for r in &mut core {
        r.scenario = "cluster".into();
    }
    rows.extend(core);
    Ok(rows)
}

/// The relay measured on the servers of `srv`: deliveries per second in a
/// closed loop, what each delivery cost the CS nodes (and PostgreSQL and
/// NATS, whose processes on this machine are summed), then latency at
/// fixed loads. Rows are named after `system`.
async fn measure(
    system: &str,
    srv: &ServerProc,
    shape: Shape,
    loads: &[f64],
    scenario: &str,
) -> BenchResult<Vec<Row>> {
    let mut posters = Vec::new();
    let mut everyone = Vec::new();
    for g in 0..shape.groups {
        let (group, members, grant) = make_group(srv, g, shape.members).await?;
        let rn1 = Rn1::random().map_err(|e| e.to_string())?;
        let r1 = R1::from_rn1(&rn1, grant.rn2_version);
        let epoch = Epoch::new(grant.rn1_version, grant.rn2_version);
        let rn2 = Rn2::from_slice(&grant.rn2).map_err(|e| e.to_string())?;
        let name = GroupName::new("relay").map_err(|e| e.to_string())?;
        let gk = GroupKey::derive(&r1, &rn2, &group, &name, epoch).map_err(|e| e.to_string())?;
        for m in members {
            let m = Arc::new(m);
            posters.push(Poster {
                sender_key: SenderKey::derive(&gk, &m.id).map_err(|e| e.to_string())?,
                member: m.clone(),
                group,
                epoch,
            });
            everyone.push(m);
        }
    }
    wait_for_cs(&posters).await?;
    let ledger = Arc::new(Ledger::default());
    let window = Arc::new(Semaphore::new(WINDOW));
    subscribe_all(&everyone, &ledger, &window).await?;
    let posters = Arc::new(posters);
    let receivers = shape.members - 1;
    let post = |posters: Arc<Vec<Poster>>, ledger: Arc<Ledger>| {
        move |id: u64| {
            let (posters, ledger) = (posters.clone(), ledger.clone());
            async move {
                let Some(p) =
                    posters.get(usize::try_from(id).unwrap_or(usize::MAX) % posters.len())
                else {
                    return;
                };
                let Ok(envelope) = p.envelope(id) else { return };
                ledger.sent(id, receivers);
                let mut cs = p.member.cs.clone();
                let _ = cs
                    .post(PostRequest {
                        group_id: p.group.0.to_vec(),
                        envelope,
                    })
                    .await;
            }
        }
    };
    let p = format!("{} nodes={}", shape.params(), srv.cs_pids().len());
    let cpu = crate::net::CpuMeter::start(srv);
    let delivered = ledger.count();
    let rate = closed_loop(
        ledger.clone(),
        window.clone(),
        shape.seconds,
        post(posters.clone(), ledger.clone()),
    )
    .await;
    let deliveries = ledger.count() - delivered;
    let mut rows = vec![Row::new(
        scenario,
        format!("{p} window={WINDOW}"),
        &format!("{system}_deliveries_per_s"),
        rate,
        "1/s",
    )];
    rows.extend(cpu.rows(scenario, &p, system, deliveries));
    let mut latency = latency_rows(system, &p, shape, loads, &ledger, || {
        post(posters.clone(), ledger.clone())
    })
    .await;
    for r in &mut latency {
        r.scenario = scenario.into();
    }
    rows.extend(latency);
    Ok(rows)
}

/// Group `g` with `m` members (member 0 creates it), and its last grant.
async fn make_group(
    srv: &ServerProc,
    g: usize,
    m: usize,
) -> BenchResult<(GroupId, Vec<Member>, Grant)> {
    let members: Vec<Member> = (0..m)
        .map(|i| srv.member_on(&format!("g{g:03}m{i:02}"), i))
        .collect::<BenchResult<_>>()?;
    let owner = members.first().ok_or("no member")?;
    let policy = duokey_crypto::membership::Policy {
        rotate_every_secs: 30 * 86_400,
        retention_secs: 30 * 86_400,
        ..Default::default()
    };
    let (mut group, mut grant) = create(owner, "relay", policy).await?;
    for other in members.iter().skip(1) {
        grant = add(owner, &mut group, other).await?;
    }
    Ok((group.id, members, grant))
}

/// Waits (bounded) until the CS knows every group's last member.
async fn wait_for_cs(posters: &[Poster]) -> BenchResult<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in posters {
        loop {
            let mut cs = p.member.cs.clone();
            let r = cs
                .fetch(FetchRequest {
                    group_id: p.group.0.to_vec(),
                    after_seq: 0,
                    limit: 1,
                })
                .await;
            if r.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err("the CS did not learn the memberships within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Opens every member's `Subscribe` stream; each delivery from someone else
/// is entered in the ledger, and a post delivered to everybody frees a slot.
async fn subscribe_all(
    members: &[Arc<Member>],
    ledger: &Arc<Ledger>,
    window: &Arc<Semaphore>,
) -> BenchResult<()> {
    let mut opening = JoinSet::new();
    for m in members {
        let (m, ledger, window) = (m.clone(), ledger.clone(), window.clone());
        opening.spawn(async move {
            let mut cs = m.cs.clone();
            let mut stream = cs
                .subscribe(SubscribeRequest {})
                .await
                .map_err(|e| format!("subscribe: {e}"))?
                .into_inner();
            tokio::spawn(async move {
                while let Ok(Some(d)) = stream.message().await {
                    let Some(delivery::Event::Envelope(e)) = d.event else {
                        continue;
                    };
                    let Ok(parsed) = EnvelopeRef::parse(&e.envelope, &Limits::default()) else {
                        continue;
                    };
                    if parsed.header.sender == m.id {
                        continue;
                    }
                    if let Some(id) = post_id(&parsed.header)
                        && ledger.delivered(id)
                    {
                        window.add_permits(1);
                    }
                }
            });
            Ok::<(), String>(())
        });
    }
    while let Some(r) = opening.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}
