//! # duokey-cs — the Communication Server (SPEC §5.3, §5.4)
//!
//! Relays and stores only what it cannot read: signed ciphertext envelopes
//! in per-group logs, and signed key-management items in per-user inboxes.
//! It keeps a directory of users (certificate chains recorded from their mTLS
//! handshakes, signed delivery keys) and learns group membership from the GMS
//! only, through `MembershipSync.SetMembers`.
//!
//! Several CS processes may share one PostgreSQL database (DESIGN D49): each
//! tells the others what it committed over [`duokey_bus`] (see
//! `cluster.rs`), and checks membership in the database where its own view
//! could be behind.
//!
//! The CS checks what it can without keys: the structure of every envelope
//! and item (receiver checks V1–V3 of SPEC §3.3), that the sender named in it
//! is the caller, and the caller's signature on it.
#![forbid(unsafe_code)]

mod cluster;
mod hub;
mod state;
mod writer;

pub use hub::Subscription;

use duokey_crypto::{DeliveryKeyRecord, EnvelopeRef, Limits, SignedItem};
use duokey_pki::Role;
use duokey_pki::grpc::Caller;
use duokey_proto::communication_server::{Communication, CommunicationServer};
use duokey_proto::membership_sync_server::{MembershipSync, MembershipSyncServer};
use duokey_proto::*;
use duokey_storage::CsStore;
use duokey_storage::cs::NewItem;
use state::CsState;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Largest `limit` of `Items` and `Fetch`.
pub const MAX_LIMIT: u32 = 1000;
/// `limit` used when a request gives 0.
pub const DEFAULT_LIMIT: u32 = 100;
pub use duokey_proto::{PAGE_BYTES, page};

/// CS settings; `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct CsConfig {
    /// Largest envelope body and item (SPEC §3.3 default 256 KiB).
    pub limits: Limits,
    /// Sustained requests per second per user.
    pub rate_per_sec: u32,
    /// Burst of requests per user.
    pub rate_burst: u32,
    /// Deliveries queued per subscriber before it is disconnected.
    pub subscriber_queue: usize,
    /// Encoded bytes queued per subscriber before it is disconnected.
    pub subscriber_queue_bytes: usize,
    /// The servers' revocation list, served to terminals (`GetRevocations`).
    pub revocations: Arc<duokey_pki::RevocationList>,
    /// Most items one inbox holds.
    pub inbox_max_items: u64,
    /// Most bytes one inbox holds.
    pub inbox_max_bytes: u64,
    /// Inbox items older than this are erased.
    pub inbox_retention_secs: u64,
    /// Open `Subscribe` streams one user may hold.
    pub streams_per_user: usize,
    /// The clock that stamps posts and items (D19: grace windows are
    /// judged on it).
    pub clock: duokey_pki::clock::Clock,
}

impl Default for CsConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            rate_per_sec: 200,
            rate_burst: 400,
            subscriber_queue: 1024,
            subscriber_queue_bytes: 8 << 20,
            revocations: Arc::new(duokey_pki::RevocationList::empty()),
            inbox_max_items: 10_000,
            inbox_max_bytes: 64 * 1024 * 1024,
            inbox_retention_secs: 30 * 86_400,
            streams_per_user: 8,
            clock: duokey_pki::clock::Clock::system(),
        }
    }
}

impl CsConfig {
    /// Largest item accepted by `SendItem`.
    pub fn max_item(&self) -> usize {
        self.limits.max_body
    }
}

/// Why a CS cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its database.
    #[error(transparent)]
    Storage(#[from] duokey_storage::Error),
    /// The cluster's bus.
    #[error(transparent)]
    Bus(#[from] duokey_bus::Error),
}

/// A running CS: its gRPC services and background work.
#[derive(Clone)]
pub struct Cs {
    state: Arc<CsState>,
}

impl std::fmt::Debug for Cs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cs")
    }
}

fn limit(requested: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(DEFAULT_LIMIT),
        n if n <= MAX_LIMIT => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "limit {n} is above the maximum {MAX_LIMIT}"
        ))),
    }
}

/// A log or inbox position: stored as a signed 64-bit integer.
fn position(v: u64) -> Result<u64, Status> {
    if i64::try_from(v).is_ok() {
        Ok(v)
    } else {
        Err(Status::invalid_argument(format!(
            "position {v} is out of range"
        )))
    }
}

use duokey_proto::group_id_arg as group_id;

fn bad_input(what: &str, e: duokey_crypto::Error) -> Status {
    metrics::counter!("duokey_refusals_total", "reason" => "bad_input").increment(1);
    Status::invalid_argument(format!("{what} rejected: {e}"))
}

impl Cs {
    /// Ends every open `Subscribe` stream (at shutdown; see `Hub::close_all`).
    pub fn close_streams(&self) {
        self.state.hub.close_all("the server is shutting down");
    }

    /// Loads the CS's state from `db` and starts its log writer: a single
    /// CS, the only one on its database.
    pub async fn start(db: CsStore, config: CsConfig) -> Result<Cs, StartError> {
        Self::start_with_bus(db, config, None).await
    }

    /// [`Cs::start`] for one node of a cluster when `bus` is given: the
    /// other CS nodes share `db` and the bus (DESIGN D49).
    pub async fn start_with_bus(
        db: CsStore,
        config: CsConfig,
        bus: Option<Arc<duokey_bus::Bus>>,
    ) -> Result<Cs, StartError> {
        // Frames first, then the view: nothing falls in between.
        let frames = match &bus {
            Some(bus) => Some(bus.subscribe(duokey_bus::Topic::Cs).await?),
            None => None,
        };
        let (tx, rx) = mpsc::channel(4096);
        let state = Arc::new(CsState::load(db, config, tx, bus).await?);
        tokio::spawn(writer::run(state.clone(), rx));
        if let Some(frames) = frames {
            tokio::spawn(cluster::run(state.clone(), frames));
        }
        Ok(Cs { state })
    }

    /// The terminals' service.
    pub fn communication(&self) -> CommunicationServer<Cs> {
        let max = self.state.config.limits.max_envelope() + 1024;
        CommunicationServer::new(self.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(4 * 1024 * 1024)
    }

    /// The GMS's service.
    pub fn membership_sync(&self) -> MembershipSyncServer<Cs> {
        MembershipSyncServer::new(self.clone()).max_decoding_message_size(16 * 1024 * 1024)
    }

    /// Deletes envelopes older than each group's retention (SPEC §4.5).
    /// Returns how many were deleted.
    pub async fn purge_expired(&self, now_ms: i64) -> duokey_storage::Result<u64> {
        let groups: Vec<(Vec<u8>, u64)> = {
            let g = self
                .state
                .groups
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            g.iter()
                .map(|(id, v)| (id.clone(), v.retention_secs))
                .collect()
        };
        let mut total = 0;
        for (gid, retention) in groups {
            let keep_ms = i64::try_from(retention.saturating_mul(1000)).unwrap_or(i64::MAX);
            total += self
                .state
                .db
                .purge_log(&gid, now_ms.saturating_sub(keep_ms))
                .await?;
        }
        let keep_ms = i64::try_from(self.state.config.inbox_retention_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        total += self
            .state
            .db
            .purge_inbox(now_ms.saturating_sub(keep_ms))
            .await?;
        Ok(total)
    }

    /// Records the caller's certificate chain in the directory when it changed.
    async fn record_user(&self, user: &str, c: &Caller) -> Result<(), Status> {
        let fp = c.peer.fingerprint_sha256;
        let known = self
            .state
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(user)
            == Some(&fp);
        if !known {
            self.state
                .db
                .upsert_user(user, &c.chain, self.state.now_ms())
                .await?;
            self.state
                .recorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(user.to_owned(), fp);
        }
        Ok(())
    }

    /// Authenticates a terminal, applies its rate limit and records it.
    async fn terminal<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(duokey_crypto::UserId, duokey_crypto::PublicIdentity), Status> {
        let c = Caller::of(req)?;
        let (user, key) = c.terminal()?;
        self.state.rate_limit(user.as_str())?;
        self.record_user(user.as_str(), &c).await?;
        Ok((user, key))
    }
}

/// Most items one `SendItems` call carries.
const MAX_ITEMS_PER_CALL: usize = 1000;

/// An item that passed the CS's checks (D7, D10), with its bytes.
struct CheckedItem<'a> {
    signed: SignedItem<'a>,
    bytes: &'a [u8],
}

impl Cs {
    /// SPEC §4, D10: size, strict decoding, the caller as sender, and the
    /// caller's signature.
    fn check_item<'a>(
        &self,
        user: &duokey_crypto::UserId,
        key: &duokey_crypto::PublicIdentity,
        bytes: &'a [u8],
    ) -> Result<CheckedItem<'a>, Status> {
        if bytes.len() > self.state.config.max_item() {
            return Err(Status::invalid_argument(format!(
                "item of {} bytes is above the limit",
                bytes.len()
            )));
        }
        let signed = SignedItem::parse(bytes).map_err(|e| bad_input("item", e))?;
        if &signed.item.sender != user {
            return Err(Status::permission_denied("the item's sender must be you"));
        }
        signed
            .verify_signature(key)
            .map_err(|e| bad_input("item", e))?;
        Ok(CheckedItem { signed, bytes })
    }

    /// D35: items go only to users in the directory, and no inbox
    /// holds more than [`CsConfig::inbox_max_items`] items or
    /// [`CsConfig::inbox_max_bytes`] bytes (`RESOURCE_EXHAUSTED`: the sender
    /// retries once the recipient's terminal has synced).
    async fn check_inboxes(&self, rows: &[NewItem<'_>]) -> Result<(), Status> {
        let mut adding: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for r in rows {
            let e = adding.entry(r.recipient).or_default();
            *e = (e.0 + 1, e.1 + r.item.len() as u64);
        }
        let users: Vec<&str> = adding.keys().copied().collect();
        let known = self.state.db.known_users(&users).await?;
        if let Some(u) = users.iter().find(|u| !known.iter().any(|k| k == *u)) {
            return Err(Status::not_found(format!(
                "{u} is not an enrolled user (no terminal of theirs has connected yet)"
            )));
        }
        let usage = self.state.db.inbox_usage(&users).await?;
        let cfg = &self.state.config;
        for (user, (n, bytes)) in adding {
            let (held, held_bytes) = usage
                .iter()
                .find(|(u, ..)| u == user)
                .map_or((0, 0), |(_, n, b)| (*n, *b));
            if held + n > cfg.inbox_max_items || held_bytes + bytes > cfg.inbox_max_bytes {
                metrics::counter!("duokey_refusals_total", "reason" => "inbox_full").increment(1);
                return Err(Status::resource_exhausted(format!(
                    "{user}'s inbox is full ({held} items); it empties as their terminal syncs: retry later"
                )));
            }
        }
        Ok(())
    }

    /// Stores checked items in one durable write, then delivers the new ones
    /// to their recipients' live streams. Returns their cursors.
    async fn store_items(
        &self,
        user: &duokey_crypto::UserId,
        items: &[CheckedItem<'_>],
    ) -> Result<Vec<u64>, Status> {
        let rows: Vec<NewItem> = items
            .iter()
            .map(|c| NewItem {
                recipient: c.signed.item.recipient.as_str(),
                item_id: c.signed.item.item_id.as_bytes(),
                sender: user.as_str(),
                kind: c.signed.item.body.kind() as u8,
                item: c.bytes,
            })
            .collect();
        self.check_inboxes(&rows).await?;
        let stored = self
            .state
            .db
            .inbox_insert_many(&rows, self.state.now_ms())
            .await?;
        for (c, (cursor, new)) in items.iter().zip(&stored) {
            if *new {
                let item = InboxItem {
                    cursor: *cursor,
                    item: c.bytes.to_vec(),
                    received_at_ms: self.state.config.clock.now_ms(),
                };
                let d = Delivery {
                    event: Some(delivery::Event::Item(item)),
                };
                let recipient = c.signed.item.recipient.as_str();
                if self.state.clustered()
                    && let Some(delivery::Event::Item(item)) = &d.event
                {
                    self.state.tell_others(bus_frame::Body::Item(BusItem {
                        recipient: recipient.to_owned(),
                        item: Some(item.clone()),
                    }));
                }
                let size = prost::Message::encoded_len(&d);
                let shared = (Arc::new(d), size, std::time::Instant::now());
                self.state.hub.send_to(recipient, &shared);
            }
        }
        Ok(stored.into_iter().map(|(cursor, _)| cursor).collect())
    }
}

#[tonic::async_trait]
impl Communication for Cs {
    async fn publish_delivery_key(
        &self,
        req: Request<PublishDeliveryKeyRequest>,
    ) -> Result<Response<PublishDeliveryKeyResponse>, Status> {
        let (user, key) = self.terminal(&req).await?;
        let record = &req.get_ref().record;
        let parsed = DeliveryKeyRecord::verify(record, &key)
            .map_err(|e| bad_input("delivery key record", e))?;
        if parsed.user != user {
            return Err(Status::permission_denied("the record names another user"));
        }
        self.state
            .db
            .set_delivery_key(user.as_str(), record)
            .await?;
        Ok(Response::new(PublishDeliveryKeyResponse {}))
    }

    async fn get_revocations(
        &self,
        req: Request<GetRevocationsRequest>,
    ) -> Result<Response<GetRevocationsResponse>, Status> {
        self.terminal(&req).await?;
        Ok(Response::new(GetRevocationsResponse {
            serials: self.state.config.revocations.serials(),
        }))
    }

    async fn get_user(
        &self,
        req: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        self.terminal(&req).await?;
        let wanted = duokey_crypto::UserId::new(req.get_ref().user_id.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (chain, dk) = self.state.db.user(wanted.as_str()).await?.ok_or_else(|| {
            Status::not_found(format!("{wanted} has never connected to this server"))
        })?;
        Ok(Response::new(GetUserResponse {
            cert_chain_der: chain,
            delivery_key_record: dk.unwrap_or_default(),
        }))
    }

    async fn send_item(
        &self,
        req: Request<SendItemRequest>,
    ) -> Result<Response<SendItemResponse>, Status> {
        let (user, key) = self.terminal(&req).await?;
        let item = self.check_item(&user, &key, &req.get_ref().item)?;
        let cursors = self.store_items(&user, &[item]).await?;
        Ok(Response::new(SendItemResponse {
            cursor: cursors.first().copied().unwrap_or_default(),
        }))
    }

    async fn send_items(
        &self,
        req: Request<SendItemsRequest>,
    ) -> Result<Response<SendItemsResponse>, Status> {
        let (user, key) = self.terminal(&req).await?;
        let items = &req.get_ref().items;
        if items.len() > MAX_ITEMS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ITEMS_PER_CALL} items per call"
            )));
        }
        let checked = items
            .iter()
            .map(|bytes| self.check_item(&user, &key, bytes))
            .collect::<Result<Vec<_>, Status>>()?;
        let cursors = self.store_items(&user, &checked).await?;
        Ok(Response::new(SendItemsResponse { cursors }))
    }

    async fn items(&self, req: Request<ItemsRequest>) -> Result<Response<ItemsResponse>, Status> {
        let (user, _) = self.terminal(&req).await?;
        let n = limit(req.get_ref().limit)?;
        let rows = self
            .state
            .db
            .inbox_after(user.as_str(), position(req.get_ref().after_cursor)?, n + 1)
            .await?;
        let (rows, more) = page(rows, n as usize, |r| r.item.len());
        let items = rows
            .into_iter()
            .map(|r| InboxItem {
                cursor: r.cursor,
                item: r.item,
                received_at_ms: r.received_at_ms,
            })
            .collect();
        Ok(Response::new(ItemsResponse { items, more }))
    }

    async fn ack_items(
        &self,
        req: Request<AckItemsRequest>,
    ) -> Result<Response<AckItemsResponse>, Status> {
        let (user, _) = self.terminal(&req).await?;
        let deleted = self
            .state
            .db
            .inbox_ack(user.as_str(), position(req.get_ref().up_to_cursor)?)
            .await?;
        Ok(Response::new(AckItemsResponse { deleted }))
    }

    async fn post(&self, req: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        let (user, key) = self.terminal(&req).await?;
        let PostRequest {
            group_id: gid,
            envelope,
        } = req.into_inner();
        let gid = group_id(&gid)?;
        let env = EnvelopeRef::parse(&envelope, &self.state.config.limits)
            .map_err(|e| bad_input("envelope", e))?;
        if env.header.group_id.as_bytes()[..] != gid[..] {
            return Err(Status::invalid_argument(
                "the envelope belongs to another group",
            ));
        }
        if env.header.sender != user {
            return Err(Status::permission_denied(
                "the envelope's sender must be you",
            ));
        }
        let claimed = env.header.epoch.rn2_version;
        let mut member = self.state.require_member(&gid, user.as_str(), claimed);
        if member.is_err() && self.state.clustered() {
            // Another node may have learned the change first.
            self.state.refresh_group(&gid).await?;
            member = self.state.require_member(&gid, user.as_str(), claimed);
        }
        // "Not yet" is said only of an envelope its sender really signed.
        match member {
            Err(s) if s.code() != tonic::Code::Unavailable => return Err(s),
            member => {
                env.verify(&key).map_err(|e| bad_input("envelope", e))?;
                member?;
            }
        }
        let (reply, answer) = oneshot::channel();
        let job = writer::PostJob {
            group_id: gid,
            sender: user.to_string(),
            msg_id: *env.header.msg_id.as_bytes(),
            envelope,
            rn2_version: claimed,
            reply,
            accepted: std::time::Instant::now(),
        };
        self.state
            .writer
            .send(job)
            .await
            .map_err(|_| Status::unavailable("server shutting down"))?;
        let log_seq = answer
            .await
            .map_err(|_| Status::unavailable("server shutting down"))??;
        Ok(Response::new(PostResponse { log_seq }))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let (user, _) = self.terminal(&req).await?;
        let r = req.get_ref();
        let gid = group_id(&r.group_id)?;
        let n = limit(r.limit)?;
        if self.state.clustered() {
            // A change made through another node counts at once.
            self.state.refresh_group(&gid).await?;
        }
        let upto = self.state.readable_upto(&gid, user.as_str())?;
        let rows = self
            .state
            .db
            .fetch_log_upto(
                &gid,
                position(r.after_seq)?,
                upto.unwrap_or(u64::MAX),
                n + 1,
            )
            .await?;
        let (rows, more) = page(rows, n as usize, |e| e.envelope.len());
        let envelopes = rows
            .into_iter()
            .map(|e| LoggedEnvelope {
                group_id: gid.clone(),
                log_seq: e.log_seq,
                envelope: e.envelope,
                stored_at_ms: e.stored_at_ms,
            })
            .collect();
        Ok(Response::new(FetchResponse { envelopes, more }))
    }

    type SubscribeStream = Subscription;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let (user, _) = self.terminal(&req).await?;
        Ok(Response::new(self.state.hub.subscribe(user.as_str())?))
    }
}

#[tonic::async_trait]
impl MembershipSync for Cs {
    async fn set_members(
        &self,
        req: Request<SetMembersRequest>,
    ) -> Result<Response<SetMembersResponse>, Status> {
        Caller::of(&req)?.require_role(Role::Gms)?;
        let r = req.into_inner();
        let gid = group_id(&r.group_id)?;
        for m in &r.members {
            duokey_crypto::UserId::new(m.clone())
                .map_err(|_| Status::invalid_argument("invalid member user id"))?;
        }
        let stored = self
            .state
            .db
            .set_members(&gid, r.rn2_version, &r.members, r.deleted, r.retention_secs)
            .await?;
        if stored == r.rn2_version {
            let departed = self.state.db.cs_departed(&gid).await?;
            let view = state::GroupView {
                departed: departed.into_iter().collect(),
                rn2_version: stored,
                deleted: r.deleted,
                retention_secs: r.retention_secs,
                members: if r.deleted {
                    Default::default()
                } else {
                    r.members.into_iter().collect()
                },
            };
            self.state.install(&gid, view);
            self.state.tell_others(bus_frame::Body::Members(BusMembers {
                group_id: gid,
                rn2_version: stored,
            }));
        }
        Ok(Response::new(SetMembersResponse {
            stored_rn2_version: stored,
        }))
    }
}
