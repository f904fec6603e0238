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

/// Counts one open `Watch` stream in `duokey_gms_watchers` while it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> OpenStream {
        metrics::gauge!("duokey_gms_watchers").increment(1.0);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("duokey_gms_watchers").decrement(1.0);
    }
}

/// Per-user broadcast channels. An event is shared (`Arc`) by every
/// member's channel until each stream takes its copy to encode: a grant
/// names every member, so copying it per member on the way in would cost
/// O(N²) allocations per re-key of an N-member group.
pub(crate) struct Watchers {
    users: Mutex<HashMap<String, broadcast::Sender<Arc<WatchEvent>>>>,
    /// Open streams one user may hold.
    per_user: usize,
}

impl Watchers {
    pub(crate) fn new(per_user: usize) -> Watchers {
        Watchers {
            users: Mutex::default(),
            per_user: per_user.max(1),
        }
    }

    /// A new `Watch` stream of `user`, unless it holds `per_user` already.
    pub(crate) fn subscribe(&self, user: &str) -> Result<WatchStream, Status> {
        let rx = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = users
                .entry(user.to_owned())
                .or_insert_with(|| broadcast::channel(BUFFER).0);
            let open = tx.receiver_count();
            if open >= self.per_user {
                metrics::counter!("duokey_refusals_total", "reason" => "too_many_streams")
                    .increment(1);
                return Err(Status::resource_exhausted(format!(
                    "{user} already has {open} open watch streams, the most this server allows; \
                     close another `duokey chat` or `read --follow` first"
                )));
            }
            tx.subscribe()
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
        let open = OpenStream::new();
        Ok(Box::pin(stream.take_while(move |r| {
            let _counted = &open;
            let go = !failed;
            failed |= r.is_err();
            go
        })))
    }

    /// Ends every `Watch` stream (the server is stopping): dropping the
    /// senders ends the streams; terminals re-watch and resync with
    /// `GetGrants`.
    pub(crate) fn close_all(&self) {
        self.users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
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
