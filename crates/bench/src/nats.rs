//! The NATS anchor of scenario `relay`: core pub/sub on 127.0.0.1:4222 (or
//! `DUOKEY_BENCH_NATS_URL`, else `DUOKEY_TEST_NATS_URL`) with the shape, window and loads of the Duokey
//! run: one subject per group, every member its own connection subscribed
//! to its group's subject, 1 KiB messages. Core NATS keeps nothing on disk
//! and does no authentication per message: it is the ceiling of a broker.

use crate::Row;
use crate::relay::{Ledger, Shape, WINDOW, closed_loop, latency_rows};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

const BODY: usize = 1_024;

/// Runs NATS with `shape`; a "skipped" row if NATS is not running.
pub async fn run(shape: Shape, loads: &[f64]) -> Vec<Row> {
    let url = std::env::var("DUOKEY_BENCH_NATS_URL")
        .or_else(|_| std::env::var("DUOKEY_TEST_NATS_URL"))
        .unwrap_or_else(|_| "127.0.0.1:4222".into());
    match measure(&url, shape, loads).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("skipped: NATS not running at {url} ({e})");
            vec![Row::new(
                "relay",
                format!("skipped: NATS not running at {url}"),
                "nats_deliveries_per_s",
                f64::NAN,
                "1/s",
            )]
        }
    }
}

async fn measure(url: &str, shape: Shape, loads: &[f64]) -> Result<Vec<Row>, String> {
    let ledger = Arc::new(Ledger::default());
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut publishers = Vec::new();
    for g in 0..shape.groups {
        let subject = format!("duokey.bench.g{g}");
        for m in 0..shape.members {
            let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            let mut sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| e.to_string())?;
            let (ledger, window) = (ledger.clone(), window.clone());
            let me = u32::try_from(g * shape.members + m).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let p = &msg.payload;
                    let (Some(id), Some(from)) = (p.get(..8), p.get(8..12)) else {
                        continue;
                    };
                    let from = u32::from_be_bytes(from.try_into().unwrap_or_default());
                    if from == me {
                        continue;
                    }
                    if ledger.delivered(u64::from_be_bytes(id.try_into().unwrap_or_default())) {
                        window.add_permits(1);
                    }
                }
            });
            publishers.push((client, subject.clone(), me));
        }
        if let Some((c, _, _)) = publishers.last() {
            c.flush().await.map_err(|e| e.to_string())?;
        }
    }
    let publishers = Arc::new(publishers);
    let receivers = shape.members - 1;
    let publish = |publishers: Arc<Vec<(async_nats::Client, String, u32)>>, ledger: Arc<Ledger>| {
        move |id: u64| {
            let (publishers, ledger) = (publishers.clone(), ledger.clone());
            async move {
                let Some((client, subject, me)) =
                    publishers.get(usize::try_from(id).unwrap_or(usize::MAX) % publishers.len())
                else {
                    return;
                };
                let mut body = vec![b'x'; BODY];
                body[..8].copy_from_slice(&id.to_be_bytes());
                body[8..12].copy_from_slice(&me.to_be_bytes());
                ledger.sent(id, receivers);
                let _ = client.publish(subject.clone(), body.into()).await;
            }
        }
    };
    let p = format!("G={} M={} body=1KiB", shape.groups, shape.members);
    let rate = closed_loop(
        ledger.clone(),
        window,
        shape.seconds,
        publish(publishers.clone(), ledger.clone()),
    )
    .await;
    let mut rows = vec![Row::new(
        "relay",
        format!("{p} window={WINDOW}"),
        "nats_deliveries_per_s",
        rate,
        "1/s",
    )];
    rows.extend(
        latency_rows("nats", &p, shape, loads, &ledger, || {
            publish(publishers.clone(), ledger.clone())
        })
        .await,
    );
    Ok(rows)
}
