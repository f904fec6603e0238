//! `Watch` streams (SPEC §4.5): grants, removals and deletions pushed to
//! each user's connected terminals.

use duokey_proto::WatchEvent;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Events buffered per user before a slow watcher is told to resync.
const BUFFER: usize = 256;

/// The response stream of `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

/// Per-user broadcast channels. An event is shared (`Arc`) by every
/// member's channel until each stream takes its copy to encode: a grant
/// names every member, so copying it per member on the way in would cost
/// O(N²) allocations per re-key of an N-member group.
#[derive(Default)]
pub(crate) struct Watchers {
    users: Mutex<HashMap<String, broadcast::Sender<Arc<WatchEvent>>>>,
}

impl Watchers {
    pub(crate) fn subscribe(&self, user: &str) -> WatchStream {
        let rx = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            users
                .entry(user.to_owned())
                .or_insert_with(|| broadcast::channel(BUFFER).0)
                .subscribe()
        };
        let stream = BroadcastStream::new(rx).map(|r| {
            r.map(Arc::unwrap_or_clone)
                .map_err(|BroadcastStreamRecvError::Lagged(n)| {
                    Status::data_loss(format!(
                        "watch fell {n} events behind; call GetGrants to resync"
                    ))
                })
        });
        // End the stream after a lag error: the terminal resyncs and re-watches.
        let mut failed = false;
        Box::pin(stream.take_while(move |r| {
            let go = !failed;
            failed |= r.is_err();
            go
        }))
    }

    pub(crate) fn push(&self, user: &str, event: Arc<WatchEvent>) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = users.get(user)
            && tx.send(event).is_err()
        {
            users.remove(user);
        }
    }
}
