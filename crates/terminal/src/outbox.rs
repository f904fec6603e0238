//! Sending (SPEC §3.3, §4.5): a message is sealed and posted at once, or
//! kept sealed in the outbox until what it waits for is there (nothing
//! lost), then flushed in order.

use crate::Terminal;
use crate::error::{Error, Result};
use crate::group::gid16;
use crate::store::GroupState;
use duokey_crypto::envelope::{self, Header};
use duokey_crypto::*;
use duokey_proto::PostRequest;

/// What happened to a message given to [`Terminal::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Posted and durable at the CS, at this log position.
    Posted(u64),
    /// Kept in the outbox (sealed) and sent by a later sync, or on
    /// reconnect, once what it waits for is there; never lost.
    Queued(Waiting),
}

/// What a queued message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The group's new RN1 (SPEC §4.3 step 4), or a valid grant after a
    /// refused one.
    Key,
    /// The CS: it could not be reached (a transient fault).
    Server,
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

/// Refuses, before anything is stored or sent, a message that is empty or
/// larger than receivers accept (SPEC §3.3 V3: 256 KiB of body).
pub(crate) fn check_sendable(text: &str) -> Result<()> {
    let max = duokey_crypto::envelope::DEFAULT_MAX_BODY;
    if text.trim().is_empty() {
        return Err(Error::user("the message is empty: nothing was sent"));
    }
    if text.len() > max {
        return Err(Error::user(format!(
            "the message is {}; the limit is {} KiB: nothing was sent. Send a shorter message, \
             or split it, or send a link to a file",
            size(text.len()),
            max / 1024
        )));
    }
    Ok(())
}

/// "1.0 MB", "300 KiB".
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{}.{} MB", b / 1_000_000, (b % 1_000_000) / 100_000),
        b => format!("{} KiB", b.div_ceil(1024)),
    }
}

impl Terminal {
    /// `duokey send GROUP TEXT`.
    pub async fn send(&mut self, gid: &GroupId, text: &str) -> Result<SendOutcome> {
        check_sendable(text)?;
        self.send_text(gid, text).await
    }

    /// Sends `text` to a group now, or queues it until the group's new RN1
    /// arrives (SPEC §4.3 step 4).
    pub(crate) async fn send_text(&mut self, gid: &GroupId, text: &str) -> Result<SendOutcome> {
        let g = self.active(gid).await?;
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
    async fn queue(&self, gid: &GroupId, text: &str) -> Result<()> {
        let sealed = self.vault.seal("outbox", text.as_bytes())?;
        self.store.queue(gid, &sealed, self.now_ms()).await
    }

    /// SPEC §4.7 "Equivocation": nothing is sent in a group whose server
    /// showed members different histories (checked before queuing and again
    /// before posting).
    async fn check_not_forked(&self, gid: &GroupId, name: &str) -> Result<()> {
        if self.store.forked(gid).await? {
            return Err(forked(name));
        }
        Ok(())
    }

    pub(crate) async fn post_now(&mut self, gid: &GroupId, text: &str) -> Result<u64> {
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
            group_id: *gid,
            epoch,
            sender: self.me.clone(),
            seq,
            sent_at_ms: self.now_ms(),
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

    /// Sends queued messages whose group key is now complete.
    pub async fn flush_outbox(&mut self) -> Result<()> {
        for q in self.store.queued().await? {
            let gid = gid16(&q.group_id)?;
            let Some(g) = self.store.group(&gid).await? else {
                continue;
            };
            if g.state != GroupState::Active
                || self.store.r1(&gid, g.rn1_version).await?.is_none()
                || self.held_by_refusal(&gid).await?
                || self.store.forked(&gid).await?
            {
                continue;
            }
            let text = String::from_utf8(self.vault.open("outbox", &q.sealed)?.to_vec())
                .map_err(|_| Error::Corrupt("outbox"))?;
            self.post_now(&gid, &text).await?;
            self.store.sent(q.id).await?;
        }
        Ok(())
    }

    /// How many messages wait in the outbox.
    pub async fn queued(&self) -> Result<u64> {
        self.store.queued_count().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_messages_are_refused_with_what_to_do() {
        let max = duokey_crypto::envelope::DEFAULT_MAX_BODY;
        assert!(check_sendable("hello").is_ok());
        assert!(check_sendable(&"a".repeat(max)).is_ok());
        for empty in ["", " ", "\n\t"] {
            let e = check_sendable(empty).unwrap_err().to_string();
            assert!(e.contains("empty"), "{e}");
        }
        let e = check_sendable(&"a".repeat(max + 1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("257 KiB") && e.contains("256 KiB") && e.contains("shorter"),
            "{e}"
        );
        let e = check_sendable(&"a".repeat(1_048_791))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the message is 1.0 MB; the limit is 256 KiB"),
            "{e}"
        );
    }
}
