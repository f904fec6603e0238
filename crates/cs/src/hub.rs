//! Live subscriptions (SPEC §5.3 `Subscribe`): one queue per subscriber,
//! bounded in deliveries and in bytes. A subscriber whose queue is full is
//! disconnected with a clear status (it re-fetches with `Fetch` and `Items`),
//! so it never slows the others down nor holds more than its bound. A
//! delivery is shared (`Arc`) by every queue it is in, not copied per
//! subscriber; each stream copies it only to encode it.

use duokey_proto::Delivery;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::Status;

type Kick = Arc<Mutex<Option<Status>>>;

/// A delivery shared by every queue it is in, with its encoded size.
/// A delivery shared by every subscriber it goes to, its encoded size, and
/// when its post was committed (for `duokey_cs_delivery_seconds`).
pub(crate) type Shared = (Arc<Delivery>, usize, std::time::Instant);

struct Sub {
    id: u64,
    tx: mpsc::Sender<Shared>,
    kick: Kick,
    /// Bytes queued and not yet taken by the stream.
    queued: Arc<AtomicUsize>,
}

/// How one subscriber's queue is bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Deliveries queued at most.
    pub(crate) deliveries: usize,
    /// Encoded bytes queued at most.
    pub(crate) bytes: usize,
    /// Open subscriptions one user may hold.
    pub(crate) per_user: usize,
}

/// Every live subscriber, by user id.
pub(crate) struct Hub {
    subs: Mutex<HashMap<String, Vec<Sub>>>,
    next_id: AtomicU64,
    bounds: Bounds,
}

impl Hub {
    pub(crate) fn new(bounds: Bounds) -> Arc<Hub> {
        Arc::new(Hub {
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            bounds: Bounds {
                deliveries: bounds.deliveries.max(1),
                bytes: bounds.bytes.max(1),
                per_user: bounds.per_user.max(1),
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Sub>>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends every subscription (the server is stopping): each stream
    /// yields `UNAVAILABLE` and ends, so a graceful shutdown need not wait
    /// for streams that never end on their own. Clients reconnect and catch
    /// up by cursor, so nothing is lost.
    pub(crate) fn close_all(&self, why: &str) {
        for sub in self.lock().drain().flat_map(|(_, subs)| subs) {
            *sub.kick.lock().unwrap_or_else(PoisonError::into_inner) = Some(Status::unavailable(
                format!("{why}; reconnect and catch up"),
            ));
        }
    }

    /// A new subscription of `user`; it ends when the stream is dropped.
    pub(crate) fn subscribe(self: &Arc<Self>, user: &str) -> Result<Subscription, Status> {
        let (tx, rx) = mpsc::channel(self.bounds.deliveries);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick: Kick = Arc::default();
        let queued: Arc<AtomicUsize> = Arc::default();
        let mut subs = self.lock();
        let list = subs.entry(user.to_owned()).or_default();
        if list.len() >= self.bounds.per_user {
            metrics::counter!("duokey_refusals_total", "reason" => "too_many_streams").increment(1);
            return Err(Status::resource_exhausted(format!(
                "{user} already has {} open live streams, the most this server allows; \
                 close another `duokey chat` or `read --follow` first",
                list.len()
            )));
        }
        list.push(Sub {
            id,
            tx,
            kick: kick.clone(),
            queued: queued.clone(),
        });
        drop(subs);
        metrics::gauge!("duokey_cs_subscribers").increment(1.0);
        Ok(Subscription {
            rx,
            kick,
            queued,
            hub: self.clone(),
            user: user.to_owned(),
            id,
        })
    }

    /// Queues `delivery` for every subscription of `user`; disconnects those
    /// whose queue is full (in deliveries or bytes). Returns how many
    /// subscriptions got it.
    pub(crate) fn send_to(&self, user: &str, delivery: &Shared) -> usize {
        let mut subs = self.lock();
        let Some(list) = subs.get_mut(user) else {
            return 0;
        };
        let mut sent = 0;
        list.retain(|s| {
            let size = delivery.1;
            let fits = s.queued.load(Ordering::Acquire).saturating_add(size) <= self.bounds.bytes;
            let queued = match fits {
                true => s.tx.try_send(delivery.clone()),
                false => Err(mpsc::error::TrySendError::Full(delivery.clone())),
            };
            match queued {
                Ok(()) => {
                    s.queued.fetch_add(size, Ordering::AcqRel);
                    metrics::gauge!("duokey_cs_queued_bytes").increment(size as f64);
                    sent += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    kick_slow(user, &s.kick);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if list.is_empty() {
            subs.remove(user);
        }
        sent
    }

    fn unsubscribe(&self, user: &str, id: u64) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(user) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.remove(user);
            }
        }
        metrics::gauge!("duokey_cs_subscribers").decrement(1.0);
    }
}

/// Ends a subscriber's stream with the reason, once its queue is dropped.
fn kick_slow(user: &str, kick: &Kick) {
    *kick.lock().unwrap_or_else(PoisonError::into_inner) = Some(Status::resource_exhausted(
        "subscriber too slow: its queue is full; reconnect and catch up with Fetch and Items",
    ));
    metrics::counter!("duokey_refusals_total", "reason" => "slow_subscriber").increment(1);
    tracing::warn!(user, "disconnected a slow subscriber");
}

/// The response stream of one `Subscribe` call.
pub struct Subscription {
    rx: mpsc::Receiver<Shared>,
    kick: Kick,
    queued: Arc<AtomicUsize>,
    hub: Arc<Hub>,
    user: String,
    id: u64,
}

impl tokio_stream::Stream for Subscription {
    type Item = Result<Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((d, size, committed))) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                metrics::gauge!("duokey_cs_queued_bytes").decrement(size as f64);
                metrics::histogram!("duokey_cs_delivery_seconds")
                    .record(committed.elapsed().as_secs_f64());
                Poll::Ready(Some(Ok(Arc::unwrap_or_clone(d))))
            }
            Poll::Ready(None) => {
                let kicked = self
                    .kick
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                Poll::Ready(kicked.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.user, self.id);
        let left = self.queued.swap(0, Ordering::AcqRel);
        metrics::gauge!("duokey_cs_queued_bytes").decrement(left as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn hub(deliveries: usize, bytes: usize) -> Arc<Hub> {
        Hub::new(Bounds {
            deliveries,
            bytes,
            per_user: 8,
        })
    }

    fn delivery(size: usize) -> Shared {
        (
            Arc::new(Delivery::default()),
            size,
            std::time::Instant::now(),
        )
    }

    #[tokio::test]
    async fn a_full_queue_disconnects_only_that_subscriber_with_a_status() {
        let hub = hub(2, 1 << 20);
        let mut slow = hub.subscribe("slow").unwrap();
        let mut fast = hub.subscribe("fast").unwrap();
        for _ in 0..3 {
            hub.send_to("slow", &delivery(1));
            assert_eq!(hub.send_to("fast", &delivery(1)), 1);
            assert!(fast.next().await.unwrap().is_ok());
        }
        assert!(slow.next().await.unwrap().is_ok());
        assert!(slow.next().await.unwrap().is_ok());
        let end = slow.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::ResourceExhausted);
        assert!(slow.next().await.is_none());
        assert_eq!(hub.send_to("slow", &delivery(1)), 0);
        drop(fast);
        assert!(hub.lock().is_empty());
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_and_one_delivery_is_shared() {
        let hub = hub(1000, 100);
        let mut a = hub.subscribe("a").unwrap();
        let b = hub.subscribe("b").unwrap();
        let d = delivery(40);
        assert_eq!(hub.send_to("a", &d) + hub.send_to("b", &d), 2);
        assert_eq!(
            Arc::strong_count(&d.0),
            3,
            "queued by reference, not copied"
        );
        assert_eq!(hub.send_to("a", &delivery(60)), 1, "100 bytes fit exactly");
        // Taking one frees its bytes.
        assert!(a.next().await.unwrap().is_ok());
        assert_eq!(a.queued.load(Ordering::Acquire), 60);
        assert_eq!(hub.send_to("a", &delivery(40)), 1);
        assert_eq!(hub.send_to("a", &delivery(1)), 0, "101 bytes do not");
        let mut rest = 0;
        while let Some(r) = a.next().await {
            match r {
                Ok(_) => rest += 1,
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    break;
                }
            }
        }
        assert_eq!(rest, 2);
        drop(b);
        drop(d);
    }
}
