//! Live updates (SPEC §4.5): the CS's delivery stream and the GMS's watch
//! stream, processed as they arrive, for `read --follow` and `duokey chat`.

use crate::error::{Error, Result};
use crate::group::gid16;
use crate::history::Message;
use crate::terminal::Terminal;
use duokey_crypto::GroupId;
use duokey_proto::{Delivery, SubscribeRequest, WatchEvent, WatchRequest, delivery, watch_event};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Streaming;

/// Pauses between reconnection attempts (`duokey chat`, `read --follow`):
/// 1 s, doubling up to 30 s; back to 1 s once connected.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first pause.
    pub const MIN: Duration = Duration::from_secs(1);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(30);

    /// The pause before the next attempt: between half the current step
    /// and the whole of it, at random, so that the terminals a node dropped
    /// all at once do not come back all at once (each call doubles the
    /// step, up to [`Backoff::MAX`]).
    pub fn next_pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        step / 2 + step.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Connected again: the next pause is the shortest.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn pauses_double_within_their_jitter_and_reset() {
        let mut b = Backoff::default();
        for step in [1, 2, 4, 8, 16, 30, 30] {
            let p = b.next_pause();
            let step = Duration::from_secs(step);
            assert!(p >= step / 2 && p <= step, "{p:?} for a step of {step:?}");
        }
        // Spread: 200 first pauses are not all the same.
        let firsts: std::collections::BTreeSet<Duration> =
            (0..200).map(|_| Backoff::default().next_pause()).collect();
        assert!(firsts.len() > 100, "{} distinct pauses", firsts.len());
        b.reset();
        assert!(b.next_pause() <= Backoff::MIN);
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { next: Self::MIN }
    }
}

/// How often a live terminal does the duties that depend only on time
/// (see [`LiveEvent::Timer`]), unless [`Terminal::set_timed_duties`] says.
pub const TIMED_DUTIES: Duration = Duration::from_secs(30);

/// The two open server streams of a terminal.
pub struct Live {
    deliveries: Streaming<Delivery>,
    watch: Streaming<WatchEvent>,
    timer: tokio::time::Interval,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// One event from either stream.
#[derive(Debug)]
pub enum LiveEvent {
    /// From the CS: an envelope or an inbox item.
    Delivery(Delivery),
    /// From the GMS: a grant or a removal.
    Watch(Box<WatchEvent>),
    /// Every [`TIMED_DUTIES`]: what a sync does when time passes with no
    /// event (items waiting for `rn1_wait`, the `rn1_wait` fallback, key
    /// erasure and the delivery key's rotation), so that a terminal left
    /// open does them without a command.
    Timer,
}

/// What one event changed.
#[derive(Debug, Default)]
pub struct LiveUpdate {
    /// The group whose history may have changed, if the event names one
    /// (an inbox item may change any group's).
    pub group: Option<GroupId>,
    /// Messages of `group` accepted now.
    pub messages: Vec<Message>,
}

impl Live {
    /// The next event; `Err` when a stream failed or ended (reconnect then).
    pub async fn next(&mut self) -> Result<LiveEvent> {
        let lost = |what: &str, status: Option<tonic::Status>| {
            let status = status.unwrap_or_else(|| tonic::Status::unavailable("stream closed"));
            Error::from_status(what, &status)
        };
        tokio::select! {
            d = self.deliveries.next() => match d {
                Some(Ok(d)) => Ok(LiveEvent::Delivery(d)),
                Some(Err(s)) => Err(lost("live messages", Some(s))),
                None => Err(lost("live messages", None)),
            },
            w = self.watch.next() => match w {
                Some(Ok(w)) => Ok(LiveEvent::Watch(Box::new(w))),
                Some(Err(s)) => Err(lost("group updates", Some(s))),
                None => Err(lost("group updates", None)),
            },
            _ = self.timer.tick() => Ok(LiveEvent::Timer),
        }
    }
}

impl Terminal {
    /// Opens both streams, then syncs so that nothing sent before they were
    /// open is missed.
    pub async fn live(&mut self) -> Result<Live> {
        let deliveries = self
            .cs
            .subscribe(SubscribeRequest {})
            .await
            .map_err(Error::server("subscribing"))?
            .into_inner();
        let watch = self
            .gms
            .watch(WatchRequest {})
            .await
            .map_err(Error::server("watching"))?
            .into_inner();
        self.sync().await?;
        let every = self.timed_duties.max(Duration::from_millis(10));
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Live {
            deliveries,
            watch,
            timer,
        })
    }

    /// How often the live streams opened from now on yield
    /// [`LiveEvent::Timer`] (default [`TIMED_DUTIES`]; at least 10 ms).
    pub fn set_timed_duties(&mut self, every: Duration) {
        self.timed_duties = every;
    }

    /// Processes one event as a sync would.
    pub async fn on_live(&mut self, event: LiveEvent) -> Result<LiveUpdate> {
        let mut messages = Vec::new();
        let group = match event {
            LiveEvent::Delivery(d) => match d.event {
                Some(delivery::Event::Envelope(e)) => {
                    let gid = gid16(&e.group_id)?;
                    messages = self.sync_messages(&gid).await?;
                    Some(gid)
                }
                Some(delivery::Event::Item(i)) => {
                    if let Err(e) = self.process_item(&i.item).await {
                        self.warn(format!("note: an inbox item was dropped: {e}"));
                    }
                    // An RN1 that arrived may be the one a hand-over waits for.
                    self.finish_invitations().await?;
                    None
                }
                None => None,
            },
            LiveEvent::Watch(w) => match w.event {
                Some(watch_event::Event::Grant(g)) => {
                    let gid = gid16(&g.group_id)?;
                    self.apply_grant(g).await?;
                    Some(gid)
                }
                Some(watch_event::Event::Removal(r)) => {
                    self.sync_grants().await?;
                    Some(gid16(&r.group_id)?)
                }
                None => None,
            },
            LiveEvent::Timer => {
                self.retry_pending_items().await?;
                self.replace_missing_rn1().await?;
                self.finish_invitations().await?;
                self.erase_expired().await?;
                None
            }
        };
        self.flush_outbox().await?;
        Ok(LiveUpdate { group, messages })
    }
}
