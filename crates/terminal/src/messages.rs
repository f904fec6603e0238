//! Sending and receiving envelopes (SPEC §3.3, §4.5): every receiver check,
//! the grace window, stale notices, and the history.

use crate::error::{Error, Result};
use crate::live::Backoff;
use crate::store::GroupState;
use crate::store::StoredGrant;
use crate::store::{NewMessage, Stored};
use crate::terminal::{SendOutcome, Terminal, Waiting};
use duokey_crypto::envelope::{self, Header, Limits};
use duokey_crypto::*;
use duokey_proto::{FetchRequest, LoggedEnvelope, PostRequest};
use std::collections::HashMap;

/// A decrypted message (SPEC §8 `read --json` shape).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Message {
    /// 32 hex digits.
    pub group_id: String,
    /// Sender's user id.
    pub sender: String,
    /// The text.
    pub text: String,
    /// Sender's clock.
    pub sent_at_ms: u64,
    /// Epoch.
    pub rn1_version: u32,
    /// Epoch.
    pub rn2_version: u64,
    /// Sender's counter in the epoch.
    pub seq: u64,
    /// 32 hex digits.
    pub msg_id: String,
}

/// A group event shown between messages.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Notice {
    /// 32 hex digits.
    pub group_id: String,
    /// What happened.
    pub notice: String,
    /// When.
    pub at_ms: u64,
}

/// An epoch's grant and the one after it, if stored.
type EpochGrants = (Option<StoredGrant>, Option<StoredGrant>);

/// What opening a page of envelopes looks up once per epoch rather than
/// once per envelope: group keys, and each epoch's grant with the next one.
#[derive(Default)]
pub struct OpenCache {
    keys: HashMap<Epoch, GroupKey>,
    grants: HashMap<u64, std::sync::Arc<EpochGrants>>,
}

impl std::fmt::Debug for OpenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenCache({} epochs)", self.keys.len())
    }
}

/// An envelope that passed every check, not yet stored.
struct Opened {
    logged: LoggedEnvelope,
    header: Header,
    content_type: ContentType,
    body: String,
    sealed_body: Vec<u8>,
}

impl Opened {
    /// The message shown to the user (text only).
    fn message(&self, gid: &[u8; 16]) -> Option<Message> {
        let h = &self.header;
        (self.content_type == ContentType::Text).then(|| Message {
            group_id: hex::encode(gid),
            sender: h.sender.to_string(),
            text: self.body.clone(),
            sent_at_ms: h.sent_at_ms,
            rn1_version: h.epoch.rn1_version,
            rn2_version: h.epoch.rn2_version,
            seq: h.seq,
            msg_id: h.msg_id.to_hex(),
        })
    }
}

/// The start of a notice marking a message that could not be opened.
pub const UNREADABLE: &str = "⚠ unreadable";

impl Notice {
    /// Whether this notice marks a message that could not be opened.
    pub fn is_unreadable(&self) -> bool {
        self.notice.starts_with(UNREADABLE)
    }

    /// Whether this notice warns the user (it starts with `⚠`): a message
    /// that could not be opened, a refused group key, diverging histories.
    pub fn is_warning(&self) -> bool {
        self.notice.starts_with('⚠')
    }
}

/// One line of a group's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A message.
    Message(Message),
    /// A notice.
    Notice(Notice),
}

impl Line {
    /// What the line is, as `duokey read --json` names it: `"message"`,
    /// `"notice"`, `"unreadable"` (a message that could not be opened) or
    /// `"warning"` (something the user must know: a refused group key,
    /// diverging membership histories).
    pub fn kind(&self) -> &'static str {
        match self {
            Line::Message(_) => "message",
            Line::Notice(n) if n.is_unreadable() => "unreadable",
            Line::Notice(n) if n.is_warning() => "warning",
            Line::Notice(_) => "notice",
        }
    }
}

/// JSON: the message's or notice's fields and a `"kind"` (see [`Line::kind`]).
impl serde::Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Tagged<'a, T> {
            kind: &'static str,
            #[serde(flatten)]
            line: &'a T,
        }
        let kind = self.kind();
        match self {
            Line::Message(line) => Tagged { kind, line }.serialize(serializer),
            Line::Notice(line) => Tagged { kind, line }.serialize(serializer),
        }
    }
}

/// Sending in a group whose server showed members different histories
/// (SPEC §4.7 "Equivocation").
fn forked(name: &str) -> Error {
    Error::refused(format!(
        "sending in {name} is stopped: the group server showed members different membership \
         histories. Compare `duokey group verify {name}` codes with the other members out of band \
         and tell the group server's operator; nothing was sent"
    ))
}

/// Meta key: the latest CS time (`stored_at_ms`) of the envelopes of a
/// group this terminal has read; superseded R1s are erased against it.
pub(crate) fn read_upto_key(gid: &[u8; 16]) -> String {
    format!("read_upto:{}", hex::encode(gid))
}

impl Terminal {
    /// The group key of an epoch, if this terminal can derive it.
    pub(crate) async fn group_key(&self, gid: &[u8; 16], epoch: Epoch) -> Result<Option<GroupKey>> {
        let Some(g) = self.store.grant(gid, epoch.rn2_version).await? else {
            return Ok(None);
        };
        if g.rn1_version != epoch.rn1_version {
            return Ok(None);
        }
        let Some(r1) = self
            .r1_at(gid, epoch.rn1_version, epoch.rn2_version)
            .await?
        else {
            return Ok(None);
        };
        let name = self
            .store
            .group(gid)
            .await?
            .map(|g| g.name)
            .ok_or(Error::Corrupt("group"))?;
        let rn2 = Rn2::from_bytes(*self.vault.open32("rn2", &g.rn2_sealed)?);
        let gk = GroupKey::derive(&r1, &rn2, &GroupId(*gid), &GroupName::new(name)?, epoch)?;
        self.keylog.gk(&GroupId(*gid), epoch, &gk);
        Ok(Some(gk))
    }

    /// Sends `text` to a group now, or queues it until the group's new RN1
    /// arrives (SPEC §4.3 step 4).
    pub(crate) async fn send_text(&mut self, gid: &[u8; 16], text: &str) -> Result<SendOutcome> {
        let g =
            self.store.group(gid).await?.ok_or_else(|| {
                Error::not_found("unknown group; `duokey group list` shows yours")
            })?;
        if g.state != GroupState::Active {
            return Err(Error::refused(format!(
                "you are no longer a member of {} ({})",
                g.name, g.state
            )));
        }
        self.check_not_forked(gid, &g.name).await?;
        if self.store.r1(gid, g.rn1_version).await?.is_none() || self.held_by_refusal(gid).await? {
            self.queue(gid, text).await?;
            return Ok(SendOutcome::Queued(Waiting::Key));
        }
        match self.post_now(gid, text).await {
            Ok(seq) => Ok(SendOutcome::Posted(seq)),
            // Not acknowledged for a transient reason: kept, sent later.
            // (If the CS stored it and only its answer was lost, the
            // message arrives twice: at least once, never lost.)
            Err(e) if e.kind() == crate::ErrorKind::Network => {
                self.queue(gid, text).await?;
                Ok(SendOutcome::Queued(Waiting::Server))
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps `text` (sealed) in the outbox for a later sync.
    async fn queue(&self, gid: &[u8; 16], text: &str) -> Result<()> {
        let sealed = self.vault.seal("outbox", text.as_bytes())?;
        self.store.queue(gid, &sealed, crate::now_ms()).await
    }

    /// SPEC §4.7 "Equivocation": nothing is sent in a group whose server
    /// showed members different histories (checked before queuing and again
    /// before posting).
    async fn check_not_forked(&self, gid: &[u8; 16], name: &str) -> Result<()> {
        if self.store.forked(gid).await? {
            return Err(forked(name));
        }
        Ok(())
    }

    pub(crate) async fn post_now(&mut self, gid: &[u8; 16], text: &str) -> Result<u64> {
        let g =
            self.store.group(gid).await?.ok_or_else(|| {
                Error::not_found("unknown group; `duokey group list` shows yours")
            })?;
        self.check_not_forked(gid, &g.name).await?;
        let epoch = Epoch::new(g.rn1_version, g.rn2_version);
        let gk = self.group_key(gid, epoch).await?.ok_or_else(|| {
            Error::user("the group key is not complete yet; try again after a sync")
        })?;
        let seq = self.store.next_seq(gid, &epoch.to_string()).await?;
        let header = Header {
            group_id: GroupId(*gid),
            epoch,
            sender: self.me.clone(),
            seq,
            sent_at_ms: crate::now_ms(),
            msg_id: MsgId::random()?,
        };
        let sk = SenderKey::derive(&gk, &self.me)?;
        let envelope = envelope::seal(
            &self.identity,
            &sk,
            &header,
            ContentType::Text,
            text.as_bytes(),
        )?;
        let resp = self
            .cs
            .post(PostRequest {
                group_id: gid.to_vec(),
                envelope,
            })
            .await
            .map_err(Error::server(format!("posting to {}", g.name)))?;
        Ok(resp.into_inner().log_seq)
    }

    /// Fetches and opens every new envelope of a group. Returns the messages
    /// accepted now; an envelope that fails a check is dropped, kept as an
    /// `⚠ unreadable` notice in the history and reported as a warning
    /// (SPEC §3.3).
    pub async fn sync_messages(&mut self, gid: &[u8; 16]) -> Result<Vec<Message>> {
        self.fetch_messages(gid, false).await
    }

    /// The log positions of `gid` the CS serves this terminal's certificate
    /// after `after_seq`, whatever the profile says about the group — what
    /// an attacker's program holding it would get (the demo and the
    /// security tests use it to attack for real).
    pub async fn served_positions(
        &mut self,
        gid: &[u8; 16],
        mut after_seq: u64,
    ) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        loop {
            let resp = self
                .cs
                .fetch(FetchRequest {
                    group_id: gid.to_vec(),
                    after_seq,
                    limit: 1000,
                })
                .await
                .map_err(Error::server("fetching"))?
                .into_inner();
            out.extend(resp.envelopes.iter().map(|e| e.log_seq));
            match (resp.more, out.last()) {
                (true, Some(&last)) => after_seq = last,
                _ => return Ok(out),
            }
        }
    }

    /// Before this terminal's membership ends (removed, left, deleted):
    /// fetches what was posted while it was a member — the CS serves a
    /// departed member up to its departure — and opens it with the keys
    /// still held, so that history stays. A transient failure is
    /// returned: the caller erases nothing and retries.
    pub(crate) async fn last_fetch(&mut self, gid: &[u8; 16]) -> Result<()> {
        match self.fetch_messages(gid, true).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == crate::ErrorKind::Network => Err(e),
            Err(e) => {
                self.warn(format!(
                    "the group's last messages could not be fetched before leaving it: {e}"
                ));
                Ok(())
            }
        }
    }

    /// [`Terminal::sync_messages`]; with `departing`, also for a group this
    /// terminal is leaving, where envelopes of epochs it was never granted
    /// (sent after its departure) are passed over silently.
    async fn fetch_messages(&mut self, gid: &[u8; 16], departing: bool) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        loop {
            let Some(g) = self.store.group(gid).await? else {
                return Ok(out);
            };
            if g.state != GroupState::Active && !departing {
                return Ok(out);
            }
            let resp = self
                .cs
                .fetch(FetchRequest {
                    group_id: gid.to_vec(),
                    after_seq: g.log_cursor,
                    limit: 1000,
                })
                .await
                .map_err(Error::server(format!("fetching {}", g.name)))?
                .into_inner();
            let mut cache = OpenCache::default();
            let mut before_joining = 0;
            let mut opened = Vec::new();
            let mut last = g.log_cursor;
            let mut read_upto = 0;
            let mut waiting = false;
            for e in &resp.envelopes {
                match self.open_envelope(gid, e, &mut cache).await {
                    Ok(o) => opened.push(o),
                    // The GMS gives no grant of an epoch before we joined: by design.
                    Err(Error::Crypto(duokey_crypto::Error::UnknownEpoch { .. })) => {
                        before_joining += usize::from(!departing)
                    }
                    // Its key has not arrived yet: stop before it, so the
                    // next sync opens it (nothing lost).
                    Err(Error::Pending(_)) => {
                        waiting = true;
                        break;
                    }
                    Err(err) if err.kind() == crate::ErrorKind::Network => return Err(err),
                    Err(err) => self.mark_unreadable(gid, e, &err).await?,
                }
                last = e.log_seq;
                read_upto = read_upto.max(e.stored_at_ms);
            }
            // One transaction per page: the messages and the cursor move
            // together (a crash re-fetches the page; nothing is lost).
            let stored = self.store_opened(gid, &opened, last).await?;
            if read_upto > self.store.meta_u64(&read_upto_key(gid)).await? {
                self.store
                    .set_meta_u64(&read_upto_key(gid), read_upto)
                    .await?;
            }
            for (o, stored) in opened.into_iter().zip(stored) {
                match stored {
                    Stored::Replay => {
                        let err = Error::from(duokey_crypto::Error::ReplayedMsgId);
                        self.mark_unreadable(gid, &o.logged, &err).await?;
                    }
                    Stored::AlreadyHeld => {}
                    Stored::New => out.extend(o.message(gid)),
                }
            }
            if before_joining > 0 {
                let text = format!(
                    "{before_joining} earlier message(s) were sent before you joined and cannot be opened (by design)"
                );
                self.store.notice(gid, &text, crate::now_ms()).await?;
            }
            if !resp.more || waiting {
                return Ok(out);
            }
        }
    }

    /// Leaves a marker in the history where an envelope could not be opened,
    /// saying who sent it (if the header parses) and why (SPEC §3.3).
    async fn mark_unreadable(&self, gid: &[u8; 16], e: &LoggedEnvelope, err: &Error) -> Result<()> {
        let sender = EnvelopeRef::parse(&e.envelope, &Limits::default())
            .map(|p| p.header.sender.to_string())
            .unwrap_or_else(|_| "an unknown sender".into());
        let text = format!("{UNREADABLE} message from {sender} (#{}): {err}", e.log_seq);
        self.warn(text.clone());
        self.store.notice(gid, &text, e.stored_at_ms).await
    }

    /// Checks and stores one envelope: SPEC §3.3 in order, with the epoch and
    /// membership rules of §4.5 deciding V4 and V5. A `msg_id` already stored
    /// is refused as a replay (V7).
    pub async fn receive(
        &mut self,
        gid: &[u8; 16],
        e: &LoggedEnvelope,
        cache: &mut OpenCache,
    ) -> Result<Option<Message>> {
        let o = self.open_envelope(gid, e, cache).await?;
        let cursor = self.store.group(gid).await?.map_or(0, |g| g.log_cursor);
        match self
            .store_opened(gid, std::slice::from_ref(&o), cursor)
            .await?
            .as_slice()
        {
            [Stored::New] => Ok(o.message(gid)),
            // Another process on this profile stored it first: one message.
            [Stored::AlreadyHeld] => Ok(None),
            _ => Err(duokey_crypto::Error::ReplayedMsgId.into()),
        }
    }

    /// Checks and opens one envelope (SPEC §3.3, §4.5) without storing it.
    async fn open_envelope(
        &mut self,
        gid: &[u8; 16],
        e: &LoggedEnvelope,
        cache: &mut OpenCache,
    ) -> Result<Opened> {
        let limits = Limits::default();
        let parsed = EnvelopeRef::parse(&e.envelope, &limits)?;
        let h = parsed.header.clone();
        if h.group_id.0 != *gid {
            return Err(Error::user("envelope of another group"));
        }
        let mut table = EpochTable::default();
        let key = match cache.keys.get(&h.epoch) {
            Some(k) => k.clone(),
            None => {
                let grant = self.fetch_grant(gid, h.epoch.rn2_version).await?;
                // A grant fetched now may be the "next" of a cached epoch.
                cache.grants.clear();
                let k = match (self.group_key(gid, h.epoch).await?, grant) {
                    (Some(k), _) => k,
                    // A member at that version whose RN1 has not arrived
                    // yet: not yet, not never (nothing lost).
                    (None, Some(g)) if g.rn1_version == h.epoch.rn1_version => {
                        return Err(Error::Pending(format!(
                            "the group key of epoch {} has not arrived yet",
                            h.epoch
                        )));
                    }
                    _ => {
                        return Err(duokey_crypto::Error::UnknownEpoch {
                            group: h.group_id,
                            epoch: h.epoch,
                        }
                        .into());
                    }
                };
                cache.keys.insert(h.epoch, k.clone());
                k
            }
        };
        self.check_epoch_rules(gid, &h, e.stored_at_ms, cache)
            .await?;
        let sender_key = self.contact_key(&h.sender).await?;
        table.insert(
            h.group_id,
            h.epoch,
            OpenEpoch {
                key,
                senders: HashMap::from([(h.sender.clone(), sender_key)]),
            },
        );
        let opened = envelope::open(&e.envelope, &limits, &table, &mut ReplayGuard::new(1))?;
        Ok(Opened {
            sealed_body: self.vault.seal("msg", opened.body.as_bytes())?,
            body: opened.body,
            content_type: opened.content_type,
            header: h,
            logged: e.clone(),
        })
    }

    /// Stores opened envelopes and moves the log cursor to `cursor`, in one
    /// transaction. Says per envelope whether it was new (`false`: its
    /// `msg_id` was stored before — a replay).
    async fn store_opened(
        &self,
        gid: &[u8; 16],
        opened: &[Opened],
        cursor: u64,
    ) -> Result<Vec<Stored>> {
        let rows: Vec<NewMessage<'_>> = opened
            .iter()
            .map(|o| NewMessage {
                log_seq: o.logged.log_seq,
                sender: o.header.sender.as_str(),
                sealed_body: &o.sealed_body,
                content_type: o.content_type as u8,
                sent_at_ms: o.header.sent_at_ms,
                rn1_version: o.header.epoch.rn1_version,
                rn2_version: o.header.epoch.rn2_version,
                seq: o.header.seq,
                msg_id: o.header.msg_id.as_bytes(),
            })
            .collect();
        self.store.put_messages(gid, &rows, cursor).await
    }

    /// V4/V5 by SPEC §4.5: the sender is a member of the envelope's epoch; an
    /// epoch that was superseded is accepted only for envelopes the CS stored
    /// within the grace window after the new grant, and then only from
    /// senders still members. Older posts get the sender a `stale` item.
    async fn check_epoch_rules(
        &mut self,
        gid: &[u8; 16],
        h: &Header,
        stored_at_ms: u64,
        cache: &mut OpenCache,
    ) -> Result<()> {
        let epoch_grants = match cache.grants.get(&h.epoch.rn2_version) {
            Some(g) => g.clone(),
            None => {
                let grant = self.store.grant(gid, h.epoch.rn2_version).await?;
                let next = self.store.next_grant(gid, h.epoch.rn2_version).await?;
                let pair = std::sync::Arc::new((grant, next));
                cache.grants.insert(h.epoch.rn2_version, pair.clone());
                pair
            }
        };
        let (Some(grant), next) = &*epoch_grants else {
            return Err(duokey_crypto::Error::UnknownEpoch {
                group: h.group_id,
                epoch: h.epoch,
            }
            .into());
        };
        let not_member = || duokey_crypto::Error::NotAMember {
            user: h.sender.clone(),
            group: h.group_id,
            epoch: h.epoch,
        };
        if !grant.members.iter().any(|(u, _)| u == h.sender.as_str()) {
            return Err(not_member().into());
        }
        let Some(next) = next else {
            return Ok(());
        };
        if stored_at_ms <= next.issued_at_ms {
            return Ok(());
        }
        if !next.members.iter().any(|(u, _)| u == h.sender.as_str()) {
            return Err(not_member().into());
        }
        if stored_at_ms > next.issued_at_ms + next.grace_secs.saturating_mul(1000) {
            self.tell_stale(gid, &h.sender, next.rn2_version).await;
            return Err(duokey_crypto::Error::EpochClosed {
                group: h.group_id,
                epoch: h.epoch,
            }
            .into());
        }
        Ok(())
    }

    async fn tell_stale(&mut self, gid: &[u8; 16], sender: &UserId, current: u64) {
        let first = self
            .store
            .first_stale_notice(gid, sender.as_str(), current)
            .await
            .unwrap_or(false);
        if first && sender != &self.me {
            let body = ItemBody::Stale {
                group_id: GroupId(*gid),
                current_rn2_version: current,
            };
            if let Ok(id) = ItemId::random() {
                let _ = self.send_item(id, sender, body).await;
            }
        }
    }

    /// The stored history of a group: messages and notices, oldest first.
    pub async fn history(&self, gid: &[u8; 16]) -> Result<Vec<Line>> {
        let mut lines: Vec<(u64, Line)> = Vec::new();
        for r in self.store.messages(gid).await? {
            let body = self.vault.open("msg", &r.sealed_body)?;
            let m = Message {
                group_id: hex::encode(gid),
                sender: r.sender,
                text: String::from_utf8(body.to_vec()).map_err(|_| Error::Corrupt("message"))?,
                sent_at_ms: r.sent_at_ms,
                rn1_version: r.rn1_version,
                rn2_version: r.rn2_version,
                seq: r.seq,
                msg_id: hex::encode(r.msg_id),
            };
            lines.push((m.sent_at_ms, Line::Message(m)));
        }
        for (_, text, at) in self.store.notices(gid, 0).await? {
            lines.push((
                at,
                Line::Notice(Notice {
                    group_id: hex::encode(gid),
                    notice: text,
                    at_ms: at,
                }),
            ));
        }
        lines.sort_by_key(|(t, _)| *t);
        Ok(lines.into_iter().map(|(_, l)| l).collect())
    }
}

impl Terminal {
    /// `read --follow` (SPEC §8): prints new messages and notices of one
    /// group as they arrive, until the caller stops it. When the servers go
    /// away it says so, reconnects with back-off ([`Backoff`]) and fetches
    /// what was posted meanwhile (nothing lost, nothing twice); it ends only
    /// on a definitive refusal or a local failure.
    pub async fn follow(&mut self, gid: &[u8; 16], mut on_line: impl FnMut(Line)) -> Result<()> {
        let mut last_notice = self
            .store
            .notices(gid, 0)
            .await?
            .last()
            .map(|n| n.0)
            .unwrap_or(0);
        let mut backoff = Backoff::default();
        loop {
            let e = match self
                .follow_connected(gid, &mut last_notice, &mut on_line, &mut backoff)
                .await
            {
                Err(e) if e.kind() == crate::ErrorKind::Network => e,
                Err(e) => return Err(e),
                Ok(never) => match never {},
            };
            let pause = backoff.next_pause();
            self.warn(format!(
                "offline: {e}; reconnecting in {} s (messages posted meanwhile are fetched then)",
                pause.as_secs()
            ));
            tokio::time::sleep(pause).await;
        }
    }

    /// One connection of [`Terminal::follow`]: returns only with an error
    /// (a lost stream counts as the network's).
    async fn follow_connected(
        &mut self,
        gid: &[u8; 16],
        last_notice: &mut i64,
        on_line: &mut impl FnMut(Line),
        backoff: &mut Backoff,
    ) -> Result<std::convert::Infallible> {
        // Opening the streams syncs: catch up with what arrived meanwhile.
        let mut live = self.live().await?;
        backoff.reset();
        loop {
            for m in self.sync_messages(gid).await? {
                on_line(Line::Message(m));
            }
            for (id, text, at) in self.store.notices(gid, *last_notice).await? {
                *last_notice = id;
                on_line(Line::Notice(Notice {
                    group_id: hex::encode(gid),
                    notice: text,
                    at_ms: at,
                }));
            }
            let event = live.next().await.map_err(Error::stream_lost)?;
            let update = self.on_live(event).await?;
            if update.group.as_ref() == Some(gid) {
                update
                    .messages
                    .into_iter()
                    .for_each(|m| on_line(Line::Message(m)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn notice(text: &str) -> Line {
        Line::Notice(Notice {
            group_id: "00".repeat(16),
            notice: text.into(),
            at_ms: 5,
        })
    }

    #[test]
    fn every_history_line_says_in_json_what_kind_it_is() {
        let message = Line::Message(Message {
            group_id: "00".repeat(16),
            sender: "alice".into(),
            text: "hi".into(),
            sent_at_ms: 1,
            rn1_version: 1,
            rn2_version: 2,
            seq: 0,
            msg_id: "11".repeat(16),
        });
        let v = serde_json::to_value(&message).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["text"].as_str()),
            (Some("message"), Some("hi"))
        );
        let v = serde_json::to_value(notice("bob joined")).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["at_ms"].as_u64()),
            (Some("notice"), Some(5))
        );
        let text = format!("{UNREADABLE} message from mallory (#9): not a member");
        let v = serde_json::to_value(notice(&text)).unwrap();
        assert_eq!(v["kind"], "unreadable");
        assert_eq!(v["notice"], text.as_str());
        let v = serde_json::to_value(notice("⚠ refused group key version 4: …")).unwrap();
        assert_eq!(v["kind"], "warning");
    }
}
