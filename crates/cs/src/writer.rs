//! The log writer: one task appends posted envelopes in batches, one
//! transaction per batch (group commit). `Post` answers only after its batch
//! is committed, so nothing acknowledged is lost (SPEC §5), and concurrent
//! posts share one disk sync.

use crate::state::CsState;
use duokey_proto::{Delivery, LoggedEnvelope, delivery};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Most envelopes committed in one transaction.
const MAX_BATCH: usize = 512;

/// One accepted post waiting for durability.
pub(crate) struct PostJob {
    pub(crate) group_id: Vec<u8>,
    pub(crate) sender: String,
    pub(crate) envelope: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<u64, Status>>,
    /// When the post was accepted (for `duokey_cs_post_seconds`).
    pub(crate) accepted: std::time::Instant,
}

/// Runs until every sender of `rx` is gone.
pub(crate) async fn run(state: Arc<CsState>, mut rx: mpsc::Receiver<PostJob>) {
    let mut next_seq: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        metrics::gauge!("duokey_cs_post_queue").set(rx.len() as f64);
        commit_batch(&state, &mut next_seq, std::mem::take(&mut jobs)).await;
    }
}

async fn commit_batch(state: &CsState, next_seq: &mut HashMap<Vec<u8>, u64>, jobs: Vec<PostJob>) {
    let now = state.now_ms();
    let mut rows = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let seq = match next_seq.get(&job.group_id) {
            Some(s) => *s,
            None => match state.db.max_log_seq(&job.group_id).await {
                Ok(max) => max + 1,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read log position");
                    return fail(jobs, "storage unavailable, retry");
                }
            },
        };
        next_seq.insert(job.group_id.clone(), seq + 1);
        rows.push((
            job.group_id.clone(),
            seq,
            job.sender.clone(),
            job.envelope.clone(),
            now,
        ));
    }
    let started = std::time::Instant::now();
    let appended = state.db.append_envelopes(&rows).await;
    let committed = std::time::Instant::now();
    metrics::histogram!("duokey_db_seconds", "op" => "cs_append_batch")
        .record((committed - started).as_secs_f64());
    if let Err(e) = appended {
        tracing::error!(error = %e, "cannot append envelopes");
        next_seq.clear();
        return fail(jobs, "storage unavailable, retry");
    }
    metrics::counter!("duokey_cs_posts_total").increment(jobs.len() as u64);
    metrics::histogram!("duokey_cs_post_batch").record(jobs.len() as f64);
    for (job, (group_id, seq, _, envelope, at)) in jobs.into_iter().zip(rows) {
        metrics::histogram!("duokey_cs_post_seconds")
            .record((committed - job.accepted).as_secs_f64());
        let _ = job.reply.send(Ok(seq));
        let logged = LoggedEnvelope {
            group_id,
            log_seq: seq,
            envelope,
            stored_at_ms: u64::try_from(at).unwrap_or(0),
        };
        let delivery = Delivery {
            event: Some(delivery::Event::Envelope(logged)),
        };
        state.fan_out(delivery, committed);
    }
}

fn fail(jobs: Vec<PostJob>, why: &'static str) {
    for job in jobs {
        let _ = job.reply.send(Err(Status::unavailable(why)));
    }
}
