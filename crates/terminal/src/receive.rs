//! Receiving envelopes (SPEC §3.3, §4.5): every receiver check in one
//! pipeline, in the spec's order, then the history.

use crate::error::{Error, Result};
use crate::history::read_upto_key;
use crate::store::GroupState;
use crate::store::StoredGrant;
use crate::store::{NewMessage, Seen, Stored};
use crate::{Message, Terminal, UNREADABLE};
use duokey_crypto::envelope::{Header, Limits};
use duokey_crypto::*;
use duokey_proto::{FetchRequest, LoggedEnvelope};
use std::collections::HashMap;

/// An epoch's grant and the one after it (SPEC §4.5 grace rules).
type EpochGrants = (Option<StoredGrant>, Option<StoredGrant>);

/// What opening a page of envelopes looks up once rather than once per
/// envelope: group keys and each epoch's grant with the next one per epoch,
/// and, for V7/V8 before decryption, the ids and (sender, epoch, seq) of the
/// stored messages that match the page (one query, [`OpenCache::preload`])
/// together with those of the envelopes opened in it and not stored yet.
#[derive(Default)]
pub struct OpenCache {
    keys: HashMap<Epoch, GroupKey>,
    grants: HashMap<u64, std::sync::Arc<EpochGrants>>,
    opened: HashMap<MsgId, u64>,
    seqs: HashMap<(UserId, Epoch, u64), u64>,
}

impl OpenCache {
    /// V7/V8 against the envelopes of this page (SPEC §3.3), keyed by log
    /// position so that the same envelope seen twice is not a replay.
    fn seen(&self, h: &Header, log_seq: u64) -> Seen {
        let stream = (h.sender.clone(), h.epoch, h.seq);
        match (self.opened.get(&h.msg_id), self.seqs.get(&stream)) {
            (Some(at), _) if *at == log_seq => Seen::ThisEnvelope,
            (Some(_), _) => Seen::ReplayedId,
            (None, Some(_)) => Seen::ReplayedSeq,
            (None, None) => Seen::Fresh,
        }
    }

    /// Loads, in one query, the stored messages that could make an envelope
    /// of `page` a replay (V7/V8 before decryption, for a whole page).
    async fn preload(
        &mut self,
        store: &crate::store::Store,
        gid: &GroupId,
        page: &[LoggedEnvelope],
    ) -> Result<()> {
        let headers: Vec<Header> = page
            .iter()
            .filter_map(|e| EnvelopeRef::parse(&e.envelope, &Limits::default()).ok())
            .map(|env| env.header)
            .collect();
        for (log_seq, h) in store.stored_like(gid, &headers).await? {
            self.remember(&h, log_seq);
        }
        Ok(())
    }

    fn remember(&mut self, h: &Header, log_seq: u64) {
        self.opened.insert(h.msg_id, log_seq);
        self.seqs
            .insert((h.sender.clone(), h.epoch, h.seq), log_seq);
    }
}

impl std::fmt::Debug for OpenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenCache({} epochs)", self.keys.len())
    }
}

/// One page of the group's log, opened ([`Terminal::fetch_messages`]).
#[derive(Default)]
struct Page {
    /// The envelopes that opened.
    opened: Vec<Opened>,
    /// Envelopes of epochs before this member joined.
    before_joining: usize,
    /// When the last of those was stored.
    joined_after_ms: u64,
    /// The log position read up to.
    last: u64,
    /// When the last envelope read was stored.
    read_upto: u64,
    /// Stopped before an envelope whose key has not arrived yet.
    waiting: bool,
}

/// An envelope that passed every check, not yet stored.
struct Opened {
    logged: LoggedEnvelope,
    header: Header,
    content_type: ContentType,
    body: String,
    sealed_body: Vec<u8>,
}

/// V4/V5 (SPEC §4.5, PROTOCOL §3.7) for one envelope, decided from the grants alone: the
/// sender must be a member of the envelope's epoch; once a newer grant
/// exists, the old epoch is accepted only for envelopes the CS stored
/// within the grace window after it, and only from senders still members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochRule {
    /// Accepted.
    Open,
    /// No grant of that epoch is held (V4).
    Unknown,
    /// The sender is not a member of the epoch, or no longer one (V5).
    NotMember,
    /// Stored after the grace window of the grant of version `current`
    /// (V4, closed): the sender gets a `stale` item.
    Closed {
        /// The version that superseded the epoch.
        current: u64,
    },
}

impl EpochRule {
    /// Judges an envelope stored at `stored_at_ms` (the CS's clock, D19).
    fn of(
        grant: Option<&StoredGrant>,
        next: Option<&StoredGrant>,
        sender: &str,
        stored_at_ms: u64,
    ) -> EpochRule {
        let member = |g: &StoredGrant| g.members.iter().any(|(u, _)| u == sender);
        let Some(grant) = grant else {
            return EpochRule::Unknown;
        };
        if !member(grant) {
            return EpochRule::NotMember;
        }
        let Some(next) = next else {
            return EpochRule::Open;
        };
        if stored_at_ms <= next.issued_at_ms {
            EpochRule::Open
        } else if !member(next) {
            EpochRule::NotMember
        } else if stored_at_ms > next.issued_at_ms + next.grace_secs.saturating_mul(1000) {
            EpochRule::Closed {
                current: next.rn2_version,
            }
        } else {
            EpochRule::Open
        }
    }

    /// The receiver error of a refusal (a closed epoch is handled by the
    /// caller, which also tells the sender).
    fn check(self, h: &Header) -> Result<()> {
        let err = match self {
            EpochRule::Open | EpochRule::Closed { .. } => return Ok(()),
            EpochRule::Unknown => duokey_crypto::Error::UnknownEpoch {
                group: h.group_id,
                epoch: h.epoch,
            },
            EpochRule::NotMember => duokey_crypto::Error::NotAMember {
                user: h.sender.clone(),
                group: h.group_id,
                epoch: h.epoch,
            },
        };
        Err(err.into())
    }
}

impl Opened {
    /// The message shown to the user (text only).
    fn message(&self, gid: &GroupId) -> Option<Message> {
        let h = &self.header;
        (self.content_type == ContentType::Text).then(|| Message {
            group_id: *gid,
            sender: h.sender.to_string(),
            text: self.body.clone(),
            sent_at_ms: h.sent_at_ms,
            rn1_version: h.epoch.rn1_version,
            rn2_version: h.epoch.rn2_version,
            seq: h.seq,
            msg_id: h.msg_id,
        })
    }
}

impl Terminal {
    /// The group key of an epoch, if this terminal can derive it.
    pub(crate) async fn group_key(&self, gid: &GroupId, epoch: Epoch) -> Result<Option<GroupKey>> {
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
        let gk = GroupKey::derive(&r1, &rn2, gid, &GroupName::new(name)?, epoch)?;
        self.keylog.gk(gid, epoch, &gk);
        Ok(Some(gk))
    }

    /// Fetches and opens every new envelope of a group. Returns the messages
    /// accepted now; an envelope that fails a check is dropped, kept as an
    /// `⚠ unreadable` notice in the history and reported as a warning
    /// (SPEC §3.3).
    pub async fn sync_messages(&mut self, gid: &GroupId) -> Result<Vec<Message>> {
        self.fetch_messages(gid, false).await
    }

    /// The log positions of `gid` the CS serves this terminal's certificate
    /// after `after_seq`, whatever the profile says about the group — what
    /// an attacker's program holding it would get (the demo and the
    /// security tests use it to attack for real).
    pub async fn served_positions(
        &mut self,
        gid: &GroupId,
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
    pub(crate) async fn last_fetch(&mut self, gid: &GroupId) -> Result<()> {
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
    async fn fetch_messages(&mut self, gid: &GroupId, departing: bool) -> Result<Vec<Message>> {
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
            let page = self
                .open_page(gid, &resp.envelopes, g.log_cursor, departing)
                .await?;
            let waiting = page.waiting;
            self.keep_page(gid, page, &mut out).await?;
            if !resp.more || waiting {
                return Ok(out);
            }
        }
    }

    /// Opens a page of the group's log read after `cursor`, up to the
    /// first envelope whose key has not arrived yet.
    async fn open_page(
        &mut self,
        gid: &GroupId,
        envelopes: &[LoggedEnvelope],
        cursor: u64,
        departing: bool,
    ) -> Result<Page> {
        let mut cache = OpenCache::default();
        cache.preload(&self.store, gid, envelopes).await?;
        let mut page = Page {
            last: cursor,
            ..Page::default()
        };
        for e in envelopes {
            match self.open_envelope(gid, e, &mut cache).await {
                Ok(Some(o)) => page.opened.push(o),
                Ok(None) => {}
                // The GMS gives no grant of an epoch before we joined: by design.
                Err(Error::Crypto(duokey_crypto::Error::UnknownEpoch { .. })) => {
                    page.before_joining += usize::from(!departing);
                    page.joined_after_ms = page.joined_after_ms.max(e.stored_at_ms);
                }
                // Its key has not arrived yet: stop before it, so the
                // next sync opens it (nothing lost).
                Err(Error::Pending(_)) => {
                    page.waiting = true;
                    break;
                }
                Err(err) if err.kind() == crate::ErrorKind::Network => return Err(err),
                Err(err) => self.mark_unreadable(gid, e, &err).await?,
            }
            page.last = e.log_seq;
            page.read_upto = page.read_upto.max(e.stored_at_ms);
        }
        Ok(page)
    }

    /// Stores an opened page: its new messages (added to `out`), the
    /// cursor, how far the log was read, and a notice for what was sent
    /// before this member joined.
    async fn keep_page(&mut self, gid: &GroupId, page: Page, out: &mut Vec<Message>) -> Result<()> {
        // One transaction per page: the messages and the cursor move
        // together (a crash re-fetches the page; nothing is lost).
        let stored = self.store_opened(gid, &page.opened, page.last).await?;
        if page.read_upto > self.store.meta_u64(&read_upto_key(gid)).await? {
            self.store
                .set_meta_u64(&read_upto_key(gid), page.read_upto)
                .await?;
        }
        for (o, stored) in page.opened.into_iter().zip(stored) {
            match stored {
                Stored::Replay => {
                    let err = Error::from(duokey_crypto::Error::ReplayedMsgId);
                    self.mark_unreadable(gid, &o.logged, &err).await?;
                }
                Stored::AlreadyHeld => {}
                Stored::New => out.extend(o.message(gid)),
            }
        }
        if page.before_joining > 0 {
            let text = format!(
                "{} earlier message(s) were sent before you joined and cannot be opened (by design)",
                page.before_joining
            );
            // Dated where those messages are, so that it reads before
            // the ones this member can open.
            self.store.notice(gid, &text, page.joined_after_ms).await?;
        }
        Ok(())
    }

    /// Leaves a marker in the history where an envelope could not be opened,
    /// saying who sent it (if the header parses) and why (SPEC §3.3).
    async fn mark_unreadable(&self, gid: &GroupId, e: &LoggedEnvelope, err: &Error) -> Result<()> {
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
        gid: &GroupId,
        e: &LoggedEnvelope,
        cache: &mut OpenCache,
    ) -> Result<Option<Message>> {
        cache
            .preload(&self.store, gid, std::slice::from_ref(e))
            .await?;
        let Some(o) = self.open_envelope(gid, e, cache).await? else {
            return Ok(None);
        };
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

    /// Checks and opens one envelope without storing it: every receiver
    /// check of SPEC §3.3 in the spec's order (ids as in PROTOCOL §3.7), with
    /// the epoch and membership rules of §4.5 deciding V4/V5, and the replay
    /// checks (V7/V8) made
    /// against the profile before decryption. `None`: this very envelope
    /// (same log position, same id) is stored already — by an earlier run
    /// or another process on this profile — and is not opened again.
    async fn open_envelope(
        &mut self,
        gid: &GroupId,
        e: &LoggedEnvelope,
        cache: &mut OpenCache,
    ) -> Result<Option<Opened>> {
        // V1–V3: magic, suite, sizes and structure.
        let env = EnvelopeRef::parse(&e.envelope, &Limits::default())?;
        let h = &env.header;
        if h.group_id != *gid {
            return Err(Error::user("envelope of another group"));
        }
        // V4: the epoch is known (§4.5: or its key is on its way).
        let key = self.epoch_key(gid, h, cache).await?;
        // V4/V5: a member of that epoch, within its grace window.
        let rule = self.epoch_rule(gid, h, e.stored_at_ms, cache).await?;
        rule.check(h)?;
        // V6: signed with the sender's certified key.
        env.verify(&self.contact_key(&h.sender).await?)?;
        if let EpochRule::Closed { current } = rule {
            // Only a genuine late post earns its sender a `stale` item.
            self.tell_stale(gid, &h.sender, current).await;
            return Err(duokey_crypto::Error::EpochClosed {
                group: h.group_id,
                epoch: h.epoch,
            }
            .into());
        }
        // V7/V8: neither the id nor (sender, epoch, seq) seen before.
        let seen = cache.seen(h, e.log_seq);
        match seen {
            Seen::Fresh => {}
            Seen::ThisEnvelope => return Ok(None),
            Seen::ReplayedId => return Err(duokey_crypto::Error::ReplayedMsgId.into()),
            Seen::ReplayedSeq => {
                return Err(duokey_crypto::Error::ReplayedSeq { seq: h.seq }.into());
            }
        }
        // V9–V13: decrypt, then length and padding.
        let (content_type, body) = env.decrypt(&key)?;
        cache.remember(h, e.log_seq);
        Ok(Some(Opened {
            sealed_body: self.vault.seal("msg", body.as_bytes())?,
            body,
            content_type,
            header: env.header,
            logged: e.clone(),
        }))
    }

    /// V4 (SPEC §3.3, §4.5): the group key of the envelope's epoch; not yet
    /// ([`Error::Pending`]) when this terminal is a member at that version
    /// whose RN1 has not arrived, never when it was not a member.
    async fn epoch_key(
        &mut self,
        gid: &GroupId,
        h: &Header,
        cache: &mut OpenCache,
    ) -> Result<GroupKey> {
        if let Some(k) = cache.keys.get(&h.epoch) {
            return Ok(k.clone());
        }
        let grant = self.fetch_grant(gid, h.epoch.rn2_version).await?;
        // A grant fetched now may be the "next" of a cached epoch.
        cache.grants.clear();
        let k = match (self.group_key(gid, h.epoch).await?, grant) {
            (Some(k), _) => k,
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
        Ok(k)
    }

    /// Stores opened envelopes and moves the log cursor to `cursor`, in one
    /// transaction. Says per envelope what became of it ([`Stored`]): new,
    /// already held (this log position), or a replay (its `msg_id` stored
    /// at another position).
    async fn store_opened(
        &self,
        gid: &GroupId,
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
                msg_id: &o.header.msg_id,
            })
            .collect();
        self.store.put_messages(gid, &rows, cursor).await
    }

    /// The grants that decide V4/V5 for an envelope's epoch (SPEC §4.5),
    /// judged by the pure [`EpochRule::of`].
    async fn epoch_rule(
        &mut self,
        gid: &GroupId,
        h: &Header,
        stored_at_ms: u64,
        cache: &mut OpenCache,
    ) -> Result<EpochRule> {
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
        let (grant, next) = &*epoch_grants;
        Ok(EpochRule::of(
            grant.as_ref(),
            next.as_ref(),
            h.sender.as_str(),
            stored_at_ms,
        ))
    }

    async fn tell_stale(&mut self, gid: &GroupId, sender: &UserId, current: u64) {
        let first = self
            .store
            .first_stale_notice(gid, sender.as_str(), current)
            .await
            .unwrap_or(false);
        if first && sender != &self.me {
            let body = ItemBody::Stale {
                group_id: *gid,
                current_rn2_version: current,
            };
            if let Ok(id) = ItemId::random() {
                let _ = self.send_item(id, sender, body).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(version: u64, members: &[&str], issued_at_ms: u64) -> StoredGrant {
        StoredGrant {
            rn2_version: version,
            rn1_version: 1,
            rn2_sealed: Vec::new(),
            members: members
                .iter()
                .map(|m| ((*m).to_owned(), Rights::NONE))
                .collect(),
            issued_at_ms,
            rn1_rotator: String::new(),
            cause: 0,
            subject: String::new(),
            grace_secs: 5,
            retention_secs: 0,
        }
    }

    #[test]
    fn the_epoch_rule_follows_membership_and_the_grace_window() {
        let old = grant(1, &["alice", "bob"], 1_000);
        let next = grant(2, &["alice"], 10_000);
        let rule = |g: Option<&StoredGrant>, n: Option<&StoredGrant>, who: &str, at: u64| {
            EpochRule::of(g, n, who, at)
        };
        assert_eq!(rule(None, None, "alice", 0), EpochRule::Unknown);
        assert_eq!(rule(Some(&old), None, "mallory", 0), EpochRule::NotMember);
        assert_eq!(rule(Some(&old), None, "bob", u64::MAX), EpochRule::Open);
        // Before the next grant, every member of the epoch.
        assert_eq!(
            rule(Some(&old), Some(&next), "bob", 10_000),
            EpochRule::Open
        );
        // After it, only members still in, and only within the grace window.
        assert_eq!(
            rule(Some(&old), Some(&next), "bob", 10_001),
            EpochRule::NotMember
        );
        assert_eq!(
            rule(Some(&old), Some(&next), "alice", 15_000),
            EpochRule::Open
        );
        assert_eq!(
            rule(Some(&old), Some(&next), "alice", 15_001),
            EpochRule::Closed { current: 2 }
        );
    }

    #[test]
    fn a_replay_inside_one_page_is_seen_before_decryption() {
        let mut h = Header {
            group_id: GroupId([7; 16]),
            epoch: Epoch {
                rn1_version: 1,
                rn2_version: 1,
            },
            sender: UserId::new("alice").unwrap(),
            seq: 0,
            sent_at_ms: 0,
            msg_id: MsgId([1; 16]),
        };
        let mut page = OpenCache::default();
        assert_eq!(page.seen(&h, 10), Seen::Fresh);
        page.remember(&h, 10);
        assert_eq!(page.seen(&h, 10), Seen::ThisEnvelope);
        assert_eq!(page.seen(&h, 11), Seen::ReplayedId);
        h.msg_id = MsgId([2; 16]);
        assert_eq!(page.seen(&h, 11), Seen::ReplayedSeq);
        h.seq = 1;
        assert_eq!(page.seen(&h, 11), Seen::Fresh);
    }
}
