//! Scenarios `rotation` and `memory`: how many forced
//! rotations per second the GMS issues and pushes to online members, and
//! how much server memory an idle connection costs.

use crate::net::{Member, ServerProc, random16, rss_kib};
use crate::rekey::{add, create};
use crate::{BenchResult, Row};
use duokey_proto::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Concurrent rotation requests.
const IN_FLIGHT: usize = 64;

/// G groups of M members, all watching; owners rotate round-robin as fast
/// as the GMS answers.
pub async fn rotation(quick: bool) -> BenchResult<Vec<Row>> {
    let (groups, members, seconds) = if quick { (5, 4, 1.5) } else { (100, 10, 10.0) };
    let srv = ServerProc::start(|_| {})?;
    let pushes = Arc::new(AtomicU64::new(0));
    let mut owners = Vec::new();
    for g in 0..groups {
        let ms: Vec<Member> = (0..members)
            .map(|i| srv.member(&format!("r{g:03}m{i:02}")))
            .collect::<BenchResult<_>>()?;
        let first = ms.first().ok_or("no member")?;
        let (mut group, _) = create(first, "rot", Default::default()).await?;
        for m in ms.iter().skip(1) {
            add(first, &mut group, m).await?;
        }
        let gid = group.id;
        let owner = first.gms.clone();
        for m in &ms {
            let mut stream = m
                .gms
                .clone()
                .watch(WatchRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let pushes = pushes.clone();
            tokio::spawn(async move {
                while let Ok(Some(_)) = stream.message().await {
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        owners.push((owner, gid));
    }
    let done = Arc::new(AtomicU64::new(0));
    let owners = Arc::new(owners);
    let start = Instant::now();
    let pushed0 = pushes.load(Ordering::Relaxed);
    let mut workers = JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (owners, done) = (owners.clone(), done.clone());
        workers.spawn(async move {
            let mut i = w;
            while start.elapsed().as_secs_f64() < seconds {
                let Some((owner, gid)) = owners.get(i % owners.len()) else {
                    return;
                };
                let mut owner = owner.clone();
                let req = RotateRequest {
                    group_id: gid.0.to_vec(),
                    report_id: random16(),
                    change: Vec::new(),
                };
                if owner.rotate(req).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += IN_FLIGHT;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let p = format!("G={groups} M={members} in_flight={IN_FLIGHT}");
    Ok(vec![
        Row::new(
            "rotation",
            &p,
            "rotations_per_s",
            done.load(Ordering::Relaxed) as f64 / secs,
            "1/s",
        ),
        Row::new(
            "rotation",
            &p,
            "grant_pushes_per_s",
            (pushes.load(Ordering::Relaxed) - pushed0) as f64 / secs,
            "1/s",
        ),
    ])
}

/// Server memory per idle connection: C members each hold one TLS
/// connection to the CS with an open `Subscribe` stream.
pub async fn memory(quick: bool) -> BenchResult<Vec<Row>> {
    let connections = if quick { 200 } else { 5_000 };
    let srv = ServerProc::start(|_| {})?;
    let warm = srv.member("warmup")?;
    let _s = warm
        .cs
        .clone()
        .subscribe(SubscribeRequest {})
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(srv.pid());
    let mut streams = Vec::with_capacity(connections);
    for i in 0..connections {
        let m = srv.member(&format!("idle{i:05}"))?;
        let s =
            m.cs.clone()
                .subscribe(SubscribeRequest {})
                .await
                .map_err(|e| format!("subscribe {i}: {e}"))?;
        streams.push((m, s));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(srv.pid());
    let p = format!("connections={connections}");
    Ok(vec![
        Row::new(
            "memory",
            &p,
            "server_rss_per_idle_connection",
            (after - before) / connections as f64,
            "KiB",
        ),
        Row::new("memory", &p, "server_rss_total", after / 1024.0, "MiB"),
    ])
}
