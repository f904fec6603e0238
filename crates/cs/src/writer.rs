//! The log writer: one task appends posted envelopes in batches, one
//! transaction per batch (group commit), the database giving each its
//! position (D48) and checking its sender's membership at that moment (a
//! removal made through another CS node counts at once, D49). `Post`
//! answers only after its batch is committed, so nothing acknowledged is
//! lost (SPEC §5), and concurrent posts share one disk sync. Then the post
//! goes to this node's subscribers and, in a cluster, to the other nodes'.

use crate::state::CsState;
use duokey_proto::{BusEnvelope, Delivery, LoggedEnvelope, bus_frame, delivery};
use duokey_storage::cs::{Append, Appended};
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
    /// The envelope's message id (a post sent again is found by it).
    pub(crate) msg_id: [u8; 16],
    /// The RN2 version its sender claimed (the envelope's epoch).
    pub(crate) rn2_version: u64,
    pub(crate) reply: oneshot::Sender<Result<u64, Status>>,
    /// When the post was accepted (for `duokey_cs_post_seconds`).
    pub(crate) accepted: std::time::Instant,
}

/// Runs until every sender of `rx` is gone.
pub(crate) async fn run(state: Arc<CsState>, mut rx: mpsc::Receiver<PostJob>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        metrics::gauge!("duokey_cs_post_queue").set(rx.len() as f64);
        commit_batch(&state, std::mem::take(&mut jobs)).await;
    }
}

/// Stores a batch in one transaction (the database gives the positions),
/// then answers each post and fans it out.
async fn commit_batch(state: &CsState, jobs: Vec<PostJob>) {
    let now = state.now_ms();
    let rows: Vec<Append> = jobs
        .iter()
        .map(|j| Append {
            group_id: &j.group_id,
            sender: &j.sender,
            msg_id: &j.msg_id,
            envelope: &j.envelope,
            at_ms: now,
        })
        .collect();
    let started = std::time::Instant::now();
    let appended = state.db.append_envelopes(&rows).await;
    drop(rows);
    let committed = std::time::Instant::now();
    metrics::histogram!("duokey_db_seconds", "op" => "cs_append_batch")
        .record((committed - started).as_secs_f64());
    let positions = match appended {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot append envelopes");
            return fail(jobs, "storage unavailable, retry");
        }
    };
    metrics::counter!("duokey_cs_posts_total").increment(jobs.len() as u64);
    metrics::histogram!("duokey_cs_post_batch").record(jobs.len() as f64);
    for (job, appended) in jobs.into_iter().zip(positions) {
        metrics::histogram!("duokey_cs_post_seconds")
            .record((committed - job.accepted).as_secs_f64());
        let refusal = match appended {
            Appended::At(seq) => {
                let _ = job.reply.send(Ok(seq));
                deliver(
                    state,
                    job.group_id,
                    job.envelope,
                    seq,
                    now,
                    job.rn2_version,
                    committed,
                );
                continue;
            }
            // Sent again after a lost answer: stored and delivered already.
            Appended::Duplicate(seq) => Ok(seq),
            Appended::NotMember => Err(crate::state::not_a_member()),
            Appended::Deleted => Err(Status::failed_precondition("the group was deleted")),
        };
        let _ = job.reply.send(refusal);
    }
}

/// Fans a stored post out to this node's subscribers and, in a cluster,
/// to the other nodes'.
fn deliver(
    state: &CsState,
    group_id: Vec<u8>,
    envelope: Vec<u8>,
    seq: u64,
    at_ms: i64,
    rn2_version: u64,
    committed: std::time::Instant,
) {
    let logged = LoggedEnvelope {
        group_id,
        log_seq: seq,
        envelope,
        stored_at_ms: u64::try_from(at_ms).unwrap_or(0),
    };
    if state.clustered() {
        state.tell_others(bus_frame::Body::Envelope(BusEnvelope {
            envelope: Some(logged.clone()),
            rn2_version,
        }));
    }
    let delivery = Delivery {
        event: Some(delivery::Event::Envelope(logged)),
    };
    state.fan_out(delivery, committed);
}

fn fail(jobs: Vec<PostJob>, why: &'static str) {
    for job in jobs {
        let _ = job.reply.send(Err(Status::unavailable(why)));
    }
}
