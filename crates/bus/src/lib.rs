//! # duokey-bus — how the nodes of a cluster tell each other what committed
//!
//! DESIGN D49, PROTOCOL §6.6a. Several CS and GMS processes share one
//! PostgreSQL database; the database is the truth. After a change commits,
//! the node that made it publishes a [`BusFrame`] on its role's NATS subject
//! (`<prefix>.cs` or `<prefix>.gms`) so that the other nodes can push it to
//! the terminals connected to them: a post to their subscribers, an inbox
//! item to its recipient, a membership change into their view, a grant to
//! `Watch` streams.
//!
//! A frame is only a hint. Every frame carries its publisher's random node
//! id and a counter per subject; a receiver that sees a counter jump (a
//! frame lost), or whose own connection to NATS drops, reconnects or is too
//! slow, gets [`Incoming::Gap`]. The roles answer a gap by ending their live
//! streams (terminals reconnect and catch up from the database by cursor)
//! and reloading what they cache, so nothing is lost. A heartbeat every
//! [`HEARTBEAT`] carries the last counter, so that a lost last frame is
//! noticed too.
#![forbid(unsafe_code)]

use duokey_proto::{BusFrame, bus_frame::Body};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// How often a node says which frame it sent last.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Frames waiting to be handed to NATS; more are dropped (and counted, so
/// that receivers see the gap).
const OUTGOING: usize = 65_536;
/// Frames waiting for the role that subscribed.
const INCOMING: usize = 16_384;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS cannot be reached at start.
    #[error("cannot reach NATS at {url}: {why}; start it or correct nats_url")]
    Connect {
        /// The URL configured.
        url: String,
        /// NATS's reason.
        why: String,
    },
    /// The subject cannot be subscribed.
    #[error("cannot subscribe to {subject} on NATS: {why}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// NATS's reason.
        why: String,
    },
}

/// The subjects: one per role, so that a publisher's frames keep their
/// order and each role receives only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Posts, items and membership changes, between CS nodes.
    Cs,
    /// `Watch` events, between GMS nodes.
    Gms,
}

impl Topic {
    fn index(self) -> usize {
        match self {
            Topic::Cs => 0,
            Topic::Gms => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Topic::Cs => "cs",
            Topic::Gms => "gms",
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A frame another node published.
    Frame(Box<Body>),
    /// Frames may have been missed since the last one; the reason says how.
    Gap(String),
}

/// Counters of what this node published, per topic, and the queue to NATS.
struct Outgoing {
    seqs: [u64; 2],
    queue: mpsc::Sender<(Topic, Vec<u8>)>,
}

/// One node's connection to the cluster's bus.
pub struct Bus {
    client: async_nats::Client,
    prefix: String,
    node: [u8; 16],
    out: Mutex<Outgoing>,
    /// Events of this node's own connection that may have lost frames.
    trouble: broadcast::Sender<String>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("prefix", &self.prefix).finish()
    }
}

impl Bus {
    /// Connects to NATS at `url`; subjects start with `prefix` (the nodes of
    /// one cluster share it). Starts the publisher and the heartbeat.
    pub async fn connect(url: &str, prefix: &str) -> Result<Arc<Bus>, Error> {
        let (trouble, _) = broadcast::channel(64);
        let events = trouble.clone();
        // The first `Connected` is the connection being made, not a return.
        let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let client = async_nats::ConnectOptions::new()
            .no_echo()
            .name("duokey-server")
            .event_callback(move |event| {
                let (events, first) = (events.clone(), first.clone());
                async move {
                    let initial = matches!(event, async_nats::Event::Connected)
                        && first.swap(false, std::sync::atomic::Ordering::SeqCst);
                    if !initial {
                        on_event(&events, &event);
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| Error::Connect {
                url: url.to_owned(),
                why: e.to_string(),
            })?;
        let (queue, rx) = mpsc::channel(OUTGOING);
        let bus = Arc::new(Bus {
            client,
            prefix: prefix.to_owned(),
            node: rand::random(),
            out: Mutex::new(Outgoing {
                seqs: [0; 2],
                queue,
            }),
            trouble,
        });
        tokio::spawn(publisher(bus.client.clone(), bus.prefix.clone(), rx));
        tokio::spawn(heartbeat(Arc::downgrade(&bus)));
        Ok(bus)
    }

    /// The largest frame the NATS server takes (its `max_payload`).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    fn subject(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.name())
    }

    /// Queues `body` for the other nodes; never waits. A frame that does not
    /// fit in the queue is dropped, and its number is skipped, so that the
    /// other nodes see the gap.
    pub fn publish(&self, topic: Topic, body: Body) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.seqs[topic.index()] += 1;
        let frame = BusFrame {
            node: self.node.to_vec(),
            seq: out.seqs[topic.index()],
            body: Some(body),
        };
        if out.queue.try_send((topic, frame.encode_to_vec())).is_err() {
            metrics::counter!("duokey_bus_dropped_total").increment(1);
            tracing::warn!(topic = topic.name(), "bus queue full: a frame was dropped");
        }
    }

    /// Sends a heartbeat on each topic: the last number this node used.
    fn beat(&self) {
        let out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        for topic in [Topic::Cs, Topic::Gms] {
            let frame = BusFrame {
                node: self.node.to_vec(),
                seq: out.seqs[topic.index()],
                body: Some(Body::Heartbeat(true)),
            };
            let _ = out.queue.try_send((topic, frame.encode_to_vec()));
        }
    }

    /// The frames other nodes publish on `topic`, and the gaps in them.
    /// Subscribe before loading what the frames update, so that nothing
    /// falls in between.
    pub async fn subscribe(&self, topic: Topic) -> Result<mpsc::Receiver<Incoming>, Error> {
        let subject = self.subject(topic);
        let sub = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| Error::Subscribe {
                subject: subject.clone(),
                why: e.to_string(),
            })?;
        // The subscription is in force once the server has answered
        // something sent after it (`flush` only writes): a request nobody
        // serves comes back at once as "no responders".
        let probe = format!("{}.probe.{:016x}", self.prefix, rand::random::<u64>());
        match self.client.request(probe, Vec::new().into()).await {
            Err(e) if e.kind() != async_nats::RequestErrorKind::NoResponders => {
                return Err(Error::Subscribe {
                    subject,
                    why: e.to_string(),
                });
            }
            _ => {}
        }
        let (tx, rx) = mpsc::channel(INCOMING);
        tokio::spawn(receive(sub, self.trouble.subscribe(), tx));
        Ok(rx)
    }
}

/// Reports the connection events after which frames may be missing.
fn on_event(trouble: &broadcast::Sender<String>, event: &async_nats::Event) {
    let lost = match event {
        async_nats::Event::Disconnected => "the connection to NATS was lost",
        // (The initial `Connected` is filtered out by the caller.)
        async_nats::Event::Connected => "reconnected to NATS",
        async_nats::Event::SlowConsumer(_) => "NATS dropped frames for this slow node",
        _ => return,
    };
    tracing::warn!(%event, "bus: frames may have been missed");
    let _ = trouble.send(lost.to_owned());
}

/// Hands queued frames to NATS in order.
async fn publisher(
    client: async_nats::Client,
    prefix: String,
    mut rx: mpsc::Receiver<(Topic, Vec<u8>)>,
) {
    while let Some((topic, bytes)) = rx.recv().await {
        let subject = format!("{prefix}.{}", topic.name());
        match client.publish(subject, bytes.into()).await {
            Ok(()) => metrics::counter!("duokey_bus_published_total").increment(1),
            Err(e) => {
                metrics::counter!("duokey_bus_dropped_total").increment(1);
                tracing::warn!(error = %e, "bus: a frame was not published");
            }
        }
    }
}

/// Beats every [`HEARTBEAT`] while the bus lives.
async fn heartbeat(bus: std::sync::Weak<Bus>) {
    let mut every = tokio::time::interval(HEARTBEAT);
    loop {
        every.tick().await;
        match bus.upgrade() {
            Some(bus) => bus.beat(),
            None => return,
        }
    }
}

/// The last number seen from each node, and what a new frame means.
#[derive(Default)]
struct Sequences(HashMap<Vec<u8>, u64>);

impl Sequences {
    /// Whether frames of `node` were missed before this one (`seq`; a
    /// heartbeat repeats the last number). A node first heard of starts
    /// where it is: what it published before this node subscribed is
    /// already in the database this node loaded afterwards.
    fn missed(&mut self, node: &[u8], seq: u64, heartbeat: bool) -> bool {
        let missed = match self.0.get(node) {
            Some(&last) if heartbeat => seq > last,
            Some(&last) => seq > last + 1,
            None => false,
        };
        let last = self.0.entry(node.to_vec()).or_insert(0);
        *last = (*last).max(seq);
        missed
    }
}

/// Decodes frames and reports gaps until the role drops its receiver.
async fn receive(
    mut sub: async_nats::Subscriber,
    mut trouble: broadcast::Receiver<String>,
    tx: mpsc::Sender<Incoming>,
) {
    use tokio_stream::StreamExt;
    let mut seen = Sequences::default();
    loop {
        let incoming = tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => decode(&mut seen, &msg.payload),
                None => return,
            },
            why = trouble.recv() => match why {
                Ok(why) => Some(Incoming::Gap(why)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some(Incoming::Gap("NATS connection trouble".into()))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(incoming) = incoming else { continue };
        if matches!(incoming, Incoming::Gap(_)) {
            metrics::counter!("duokey_bus_gaps_total").increment(1);
        }
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

/// A frame as the role sees it: `None` for a heartbeat that shows nothing
/// was missed, a gap when something was.
fn decode(seen: &mut Sequences, payload: &[u8]) -> Option<Incoming> {
    let Ok(frame) = BusFrame::decode(payload) else {
        tracing::warn!("bus: an undecodable frame was ignored");
        return None;
    };
    let heartbeat = matches!(frame.body, Some(Body::Heartbeat(_)));
    if seen.missed(&frame.node, frame.seq, heartbeat) {
        return Some(Incoming::Gap(format!(
            "frames from another node were lost (now at {})",
            frame.seq
        )));
    }
    match frame.body {
        Some(Body::Heartbeat(_)) | None => None,
        Some(body) => Some(Incoming::Frame(Box::new(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_a_nodes_numbers_is_a_gap_and_a_late_heartbeat_too() {
        let mut seen = Sequences::default();
        // A node first heard of at 7 starts there.
        assert!(!seen.missed(b"a", 7, false));
        assert!(!seen.missed(b"a", 8, false));
        assert!(!seen.missed(b"a", 8, true));
        assert!(seen.missed(b"a", 10, false));
        assert!(!seen.missed(b"a", 11, false));
        // The last frame lost: the heartbeat says 12.
        assert!(seen.missed(b"a", 12, true));
        assert!(!seen.missed(b"a", 12, true));
        // Another node counts apart.
        assert!(!seen.missed(b"b", 1, false));
        assert!(seen.missed(b"b", 3, false));
    }

    #[test]
    fn heartbeats_are_not_frames_and_garbage_is_ignored() {
        let mut seen = Sequences::default();
        let beat = BusFrame {
            node: vec![1],
            seq: 0,
            body: Some(Body::Heartbeat(true)),
        };
        assert_eq!(decode(&mut seen, &beat.encode_to_vec()), None);
        assert_eq!(decode(&mut seen, b"\xff\xff\xff"), None);
        let frame = BusFrame {
            node: vec![1],
            seq: 1,
            body: Some(Body::Members(duokey_proto::BusMembers {
                group_id: vec![9; 16],
                rn2_version: 4,
            })),
        };
        let decoded = decode(&mut seen, &frame.encode_to_vec());
        assert!(matches!(decoded, Some(Incoming::Frame(b)) if matches!(*b, Body::Members(_))));
    }
}
