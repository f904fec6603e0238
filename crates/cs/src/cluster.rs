//! A CS node among several (DESIGN D49, PROTOCOL §6.6a): what the other nodes
//! committed reaches this node's subscribers, and their membership changes
//! reach its view. Every frame is a hint after a commit; a gap (frames
//! missed) ends this node's live streams, so that their terminals catch up
//! from the database by cursor, and reloads the view. The view is also
//! compared with the database every [`RECONCILE`].

use crate::state::CsState;
use duokey_bus::Incoming;
use duokey_proto::bus_frame::Body;
use duokey_proto::{BusEnvelope, Delivery, delivery};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the view is compared with the database, frames or not.
const RECONCILE: Duration = Duration::from_secs(30);

/// Applies the other nodes' frames until the bus ends.
pub(crate) async fn run(state: Arc<CsState>, mut frames: mpsc::Receiver<Incoming>) {
    let mut reconcile = tokio::time::interval(RECONCILE);
    reconcile.tick().await;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Incoming::Frame(body)) => apply(&state, *body).await,
                Some(Incoming::Gap(why)) => {
                    tracing::warn!(%why, "CS: frames from other nodes missed; streams end and catch up");
                    state.hub.close_all("this server missed live updates from the other nodes");
                    reconcile_view(&state).await;
                }
                None => return,
            },
            _ = reconcile.tick() => reconcile_view(&state).await,
        }
    }
}

/// One frame from another node.
async fn apply(state: &CsState, body: Body) {
    match body {
        Body::Envelope(BusEnvelope {
            envelope: Some(logged),
            rn2_version,
        }) => {
            // A post under a membership this view has not learned yet: its
            // new members must get it too.
            if rn2_version > state.version_of(&logged.group_id) {
                refresh(state, &logged.group_id).await;
            }
            let d = Delivery {
                event: Some(delivery::Event::Envelope(logged)),
            };
            state.fan_out(d, std::time::Instant::now());
        }
        Body::Item(item) => {
            let Some(inbox_item) = item.item else { return };
            let d = Delivery {
                event: Some(delivery::Event::Item(inbox_item)),
            };
            let size = prost::Message::encoded_len(&d);
            let shared = (Arc::new(d), size, std::time::Instant::now());
            state.hub.send_to(&item.recipient, &shared);
        }
        Body::Members(m) if m.rn2_version > state.version_of(&m.group_id) => {
            refresh(state, &m.group_id).await;
        }
        _ => {}
    }
}

async fn refresh(state: &CsState, gid: &[u8]) {
    if let Err(status) = state.refresh_group(gid).await {
        tracing::warn!(%status, "CS: cannot refresh a group's membership");
    }
}

/// Reloads every group whose view differs from the database.
async fn reconcile_view(state: &CsState) {
    let versions = match state.db.cs_versions().await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "CS: cannot compare the membership view");
            return;
        }
    };
    for (gid, version) in versions {
        if version > state.version_of(&gid) {
            refresh(state, &gid).await;
        }
    }
}
