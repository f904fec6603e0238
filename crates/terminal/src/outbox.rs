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
        let (name, envelope) = self.seal_now(gid, text).await?;
        match self.post_sealed(gid, &name, envelope.clone()).await {
            Ok(seq) => Ok(SendOutcome::Posted(seq)),
            // Not acknowledged for a transient reason: kept, sent later —
            // the same envelope while its epoch is current, so that a CS
            // that stored it and only lost its answer (a node that died,
            // a broken connection) answers with its first position and
            // nobody sees it twice.
            Err(e) if e.kind() == crate::ErrorKind::Network => {
                self.queue_attempted(gid, text, Some(&envelope)).await?;
                Ok(SendOutcome::Queued(Waiting::Server))
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps `text` (sealed) in the outbox for a later sync.
    async fn queue(&self, gid: &GroupId, text: &str) -> Result<()> {
        self.queue_attempted(gid, text, None).await
    }

    /// [`Self::queue`], with the envelope already posted for it.
    async fn queue_attempted(
        &self,
        gid: &GroupId,
        text: &str,
        attempt: Option<&[u8]>,
    ) -> Result<()> {
        let sealed = self.vault.seal("outbox", text.as_bytes())?;
        self.store.queue(gid, &sealed, self.now_ms(), attempt).await
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

    /// `text` sealed in the group's current epoch, with the group's name.
    async fn seal_now(&mut self, gid: &GroupId, text: &str) -> Result<(String, Vec<u8>)> {
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
        Ok((g.name, envelope))
    }

    /// Posts a sealed envelope; its position.
    async fn post_sealed(&mut self, gid: &GroupId, name: &str, envelope: Vec<u8>) -> Result<u64> {
        let resp = self
            .cs
            .post(PostRequest {
                group_id: gid.to_vec(),
                envelope,
            })
            .await
            .map_err(Error::server(format!("posting to {name}")))?;
        Ok(resp.into_inner().log_seq)
    }

    /// The envelope of an earlier attempt, if it was sealed in the group's
    /// current epoch (else it is sealed again: receivers judge an old epoch
    /// by its grace window, D19).
    fn still_current(attempt: Option<&[u8]>, rn1_version: u32, rn2_version: u64) -> Option<&[u8]> {
        let envelope = attempt?;
        let parsed = EnvelopeRef::parse(envelope, &duokey_crypto::Limits::default()).ok()?;
        (parsed.header.epoch == Epoch::new(rn1_version, rn2_version)).then_some(envelope)
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
            let envelope =
                match Self::still_current(q.attempt.as_deref(), g.rn1_version, g.rn2_version) {
                    Some(envelope) => envelope.to_vec(),
                    None => {
                        let text =
                            String::from_utf8(self.vault.open("outbox", &q.sealed)?.to_vec())
                                .map_err(|_| Error::Corrupt("outbox"))?;
                        let (_, envelope) = self.seal_now(&gid, &text).await?;
                        // Kept before it leaves: if its answer is lost,
                        // the next flush posts these bytes again.
                        self.store.set_attempt(q.id, &envelope).await?;
                        envelope
                    }
                };
            self.post_sealed(&gid, &g.name, envelope).await?;
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
