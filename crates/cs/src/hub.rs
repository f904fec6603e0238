//! Live subscriptions (SPEC §5.3 `Subscribe`): one bounded queue per
//! subscriber. A subscriber whose queue is full is disconnected with a clear
//! status, so it never slows the others down.

use duokey_proto::Delivery;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::Status;

type Kick = Arc<Mutex<Option<Status>>>;

struct Sub {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    kick: Kick,
}

/// Every live subscriber, by user id.
pub(crate) struct Hub {
    subs: Mutex<HashMap<String, Vec<Sub>>>,
    next_id: AtomicU64,
    queue: usize,
    /// Open subscriptions one user may hold (issue 14).
    per_user: usize,
}

impl Hub {
    pub(crate) fn new(queue: usize, per_user: usize) -> Arc<Hub> {
        Arc::new(Hub {
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            per_user: per_user.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Sub>>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscription of `user`; it ends when the stream is dropped.
    pub(crate) fn subscribe(self: &Arc<Self>, user: &str) -> Result<Subscription, Status> {
        let (tx, rx) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick: Kick = Arc::default();
        let mut subs = self.lock();
        let list = subs.entry(user.to_owned()).or_default();
        if list.len() >= self.per_user {
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
        });
        drop(subs);
        metrics::gauge!("duokey_cs_subscribers").increment(1.0);
        Ok(Subscription {
            rx,
            kick,
            hub: self.clone(),
            user: user.to_owned(),
            id,
        })
    }

    /// Queues `delivery` for every subscription of `user`; disconnects those
    /// whose queue is full. Returns how many subscriptions got it.
    pub(crate) fn send_to(&self, user: &str, delivery: &Delivery) -> usize {
        let mut subs = self.lock();
        let Some(list) = subs.get_mut(user) else {
            return 0;
        };
        let mut sent = 0;
        list.retain(|s| match s.tx.try_send(delivery.clone()) {
            Ok(()) => {
                sent += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                *s.kick.lock().unwrap_or_else(PoisonError::into_inner) = Some(Status::resource_exhausted(
                    "subscriber too slow: its queue is full; reconnect and catch up with Fetch and Items",
                ));
                metrics::counter!("duokey_refusals_total", "reason" => "slow_subscriber").increment(1);
                tracing::warn!(user, "disconnected a slow subscriber");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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

/// The response stream of one `Subscribe` call.
pub struct Subscription {
    rx: mpsc::Receiver<Delivery>,
    kick: Kick,
    hub: Arc<Hub>,
    user: String,
    id: u64,
}

impl tokio_stream::Stream for Subscription {
    type Item = Result<Delivery, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(d)) => Poll::Ready(Some(Ok(d))),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn a_full_queue_disconnects_only_that_subscriber_with_a_status() {
        let hub = Hub::new(2, 8);
        let mut slow = hub.subscribe("slow").unwrap();
        let mut fast = hub.subscribe("fast").unwrap();
        for _ in 0..3 {
            hub.send_to("slow", &Delivery::default());
            assert_eq!(hub.send_to("fast", &Delivery::default()), 1);
            assert!(fast.next().await.unwrap().is_ok());
        }
        assert!(slow.next().await.unwrap().is_ok());
        assert!(slow.next().await.unwrap().is_ok());
        let end = slow.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::ResourceExhausted);
        assert!(slow.next().await.is_none());
        assert_eq!(hub.send_to("slow", &Delivery::default()), 0);
        drop(fast);
        assert!(hub.lock().is_empty());
    }
}
