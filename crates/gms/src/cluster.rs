//! A GMS node among several (DESIGN D49, PROTOCOL §6.6a): the grants and
//! removals the other nodes commit reach the `Watch` streams open on this
//! node, and wake its CS sync. A gap (frames missed) ends this node's
//! `Watch` streams: terminals watch again and resync with `GetGrants`, from
//! the database.

use crate::Gms;
use duokey_bus::Incoming;
use duokey_proto::bus_frame::Body;
use duokey_proto::{WatchEvent, watch_event};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Applies the other nodes' frames until the bus ends.
pub(crate) async fn run(gms: Gms, mut frames: mpsc::Receiver<Incoming>) {
    while let Some(frame) = frames.recv().await {
        match frame {
            Incoming::Frame(body) => match *body {
                Body::Grant(g) => gms.push_stored_grant(&g.group_id, g.rn2_version).await,
                Body::Removals(r) => {
                    let Some(removal) = r.removal else { continue };
                    let event = Arc::new(WatchEvent {
                        event: Some(watch_event::Event::Removal(removal)),
                    });
                    for user in &r.users {
                        gms.inner.watchers.push(user, event.clone());
                    }
                }
                _ => continue,
            },
            Incoming::Gap(why) => {
                tracing::warn!(%why, "GMS: frames from other nodes missed; watch streams end and resync");
                gms.inner.watchers.close_all();
            }
        }
        // Whatever another node changed, the CS may not have it yet if that
        // node died before telling it.
        gms.inner.cs_changed.notify_one();
    }
}
