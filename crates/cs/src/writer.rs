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
}

/// Runs until every sender of `rx` is gone.
pub(crate) async fn run(state: Arc<CsState>, mut rx: mpsc::Receiver<PostJob>) {
    let mut next_seq: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
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
    if let Err(e) = state.db.append_envelopes(&rows).await {
        tracing::error!(error = %e, "cannot append envelopes");
        next_seq.clear();
        return fail(jobs, "storage unavailable, retry");
    }
    metrics::counter!("duokey_cs_posts_total").increment(jobs.len() as u64);
    for (job, (group_id, seq, _, envelope, at)) in jobs.into_iter().zip(rows) {
        let _ = job.reply.send(Ok(seq));
        let logged = LoggedEnvelope {
            group_id,
            log_seq: seq,
            envelope,
            stored_at_ms: u64::try_from(at).unwrap_or(0),
        };
        state.fan_out(Delivery {
            event: Some(delivery::Event::Envelope(logged)),
        });
    }
}

fn fail(jobs: Vec<PostJob>, why: &'static str) {
    for job in jobs {
        let _ = job.reply.send(Err(Status::unavailable(why)));
    }
}
