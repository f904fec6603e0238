//! The decrypted history (SPEC §3.3, PROTOCOL §5.11): messages stored
//! sealed, each with its log position and id, and the group's log cursor.

use super::{Store, advance_cursor, i as int, rn1, u as uint};
use crate::error::{Error, Result};
use duokey_crypto::envelope::Header;
use duokey_crypto::{GroupId, MsgId};
use sqlx::Row;

/// A message to store, its body already sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// Its position in the group's log.
    pub log_seq: u64,
    /// The sender.
    pub sender: &'a str,
    /// The body, sealed.
    pub sealed_body: &'a [u8],
    /// The content type (1 text, 2 notice).
    pub content_type: u8,
    /// The sender's time.
    pub sent_at_ms: u64,
    /// Its epoch.
    pub rn1_version: u32,
    /// Its epoch.
    pub rn2_version: u64,
    /// The sender's sequence number.
    pub seq: u64,
    /// Its id.
    pub msg_id: &'a MsgId,
}

/// A text message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The sender.
    pub sender: String,
    /// The body, sealed.
    pub sealed_body: Vec<u8>,
    /// The sender's time.
    pub sent_at_ms: u64,
    /// Its epoch.
    pub rn1_version: u32,
    /// Its epoch.
    pub rn2_version: u64,
    /// The sender's sequence number.
    pub seq: u64,
    /// Its id.
    pub msg_id: Vec<u8>,
}

/// What storing a message found (V7 without false alarms when two
/// processes share a profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// This very envelope (log position and id) was stored already.
    AlreadyHeld,
    /// Its id was stored at another log position: a replay.
    Replay,
}

/// What the profile already holds of an envelope about to be decrypted
/// (SPEC §3.3 V7/V8, checked before decryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Neither its id nor its (sender, epoch, seq).
    Fresh,
    /// This very envelope: same log position, same id.
    ThisEnvelope,
    /// Its id, at another log position: a replay (V7).
    ReplayedId,
    /// Another message with its (sender, epoch, seq): a replay (V8).
    ReplayedSeq,
}

impl Store {
    /// The stored messages of `gid` that share an id, or a (sender, epoch,
    /// seq), with one of `headers`, as `(log position, header)`: what could
    /// make an envelope of a fetched page a replay (V7/V8), in one query per
    /// 200 envelopes rather than one per envelope.
    pub async fn stored_like(
        &self,
        gid: &GroupId,
        headers: &[Header],
    ) -> Result<Vec<(u64, Header)>> {
        let mut out = Vec::new();
        for chunk in headers.chunks(200) {
            let ids = vec!["?"; chunk.len()].join(", ");
            let streams = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT log_seq, msg_id, sender, rn1_version, rn2_version, seq, sent_at_ms FROM messages \
                 WHERE group_id = ? AND (msg_id IN ({ids}) \
                 OR (sender, rn1_version, rn2_version, seq) IN (VALUES {streams}))"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(gid.as_slice());
            for h in chunk {
                q = q.bind(h.msg_id.as_bytes().as_slice());
            }
            for h in chunk {
                q = q
                    .bind(h.sender.as_str())
                    .bind(i64::from(h.epoch.rn1_version))
                    .bind(int(h.epoch.rn2_version)?)
                    .bind(int(h.seq)?);
            }
            for r in q.fetch_all(&self.pool).await? {
                let header = Header {
                    group_id: *gid,
                    epoch: duokey_crypto::Epoch::new(
                        rn1(r.try_get("rn1_version")?)?,
                        uint(r.try_get("rn2_version")?)?,
                    ),
                    sender: duokey_crypto::UserId::new(r.try_get::<String, _>("sender")?)
                        .map_err(|_| Error::Corrupt("sender"))?,
                    seq: uint(r.try_get("seq")?)?,
                    sent_at_ms: uint(r.try_get("sent_at_ms")?)?,
                    msg_id: duokey_crypto::MsgId::from_slice(&r.try_get::<Vec<u8>, _>("msg_id")?)
                        .map_err(|_| Error::Corrupt("message id"))?,
                };
                out.push((uint(r.try_get("log_seq")?)?, header));
            }
        }
        Ok(out)
    }

    /// Stores `messages` of `gid` and moves its log cursor to `cursor`, in
    /// one transaction. Says per message whether it was new.
    pub async fn put_messages(
        &self,
        gid: &GroupId,
        messages: &[NewMessage<'_>],
        cursor: u64,
    ) -> Result<Vec<Stored>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let stored = sqlx::query(
                "INSERT INTO messages (group_id, log_seq, sender, body, content_type, sent_at_ms, rn1_version, rn2_version, seq, msg_id) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(gid.as_slice())
            .bind(int(m.log_seq)?)
            .bind(m.sender)
            .bind(m.sealed_body)
            .bind(i64::from(m.content_type))
            .bind(int(m.sent_at_ms)?)
            .bind(i64::from(m.rn1_version))
            .bind(int(m.rn2_version)?)
            .bind(int(m.seq)?)
            .bind(m.msg_id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Not stored: the same envelope (same log position, same id),
            // stored by another process on this profile or an earlier run,
            // or a replay of its id at another position (V7).
            let outcome = if stored == 1 {
                Stored::New
            } else {
                let same = sqlx::query(
                    "SELECT 1 FROM messages WHERE group_id = ? AND log_seq = ? AND msg_id = ?",
                )
                .bind(gid.as_slice())
                .bind(int(m.log_seq)?)
                .bind(m.msg_id.as_bytes().as_slice())
                .fetch_optional(&mut *tx)
                .await?;
                match same {
                    Some(_) => Stored::AlreadyHeld,
                    None => Stored::Replay,
                }
            };
            out.push(outcome);
        }
        advance_cursor(gid, cursor)?.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The text messages of `gid`, in log order.
    pub async fn messages(&self, gid: &GroupId) -> Result<Vec<StoredMessage>> {
        let rows = sqlx::query(
            "SELECT sender, body, sent_at_ms, rn1_version, rn2_version, seq, msg_id FROM messages \
             WHERE group_id = ? AND content_type = 1 ORDER BY log_seq",
        )
        .bind(gid.as_slice())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredMessage {
                    sender: r.get(0),
                    sealed_body: r.get(1),
                    sent_at_ms: uint(r.get(2))?,
                    rn1_version: rn1(r.get(3))?,
                    rn2_version: uint(r.get(4))?,
                    seq: uint(r.get(5))?,
                    msg_id: r.get(6),
                })
            })
            .collect()
    }

    /// Records that `user` was told its key of `gid` was stale at
    /// `rn2_version`; `true` the first time.
    pub async fn first_stale_notice(
        &self,
        gid: &GroupId,
        user: &str,
        rn2_version: u64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO stale_sent (group_id, user_id, rn2_version) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(gid.as_slice())
        .bind(user)
        .bind(int(rn2_version)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
