//! The history (SPEC §8 `read`): messages and notices as stored, shown in
//! time order, and followed live with `read --follow`.

use crate::Terminal;
use crate::error::{Error, Result};
use crate::live::Backoff;
use duokey_crypto::{GroupId, MsgId};

/// A decrypted message (SPEC §8 `read --json` shape).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Message {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
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
    /// The message's id; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub msg_id: MsgId,
}

/// A group event shown between messages.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Notice {
    /// The group; in JSON 32 hex digits.
    #[serde(serialize_with = "crate::group::as_text")]
    pub group_id: GroupId,
    /// What happened.
    pub notice: String,
    /// When.
    pub at_ms: u64,
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

/// Meta key: the latest CS time (`stored_at_ms`) of the envelopes of a
/// group this terminal has read; superseded R1s are erased against it.
pub(crate) fn read_upto_key(gid: &GroupId) -> String {
    format!("read_upto:{}", hex::encode(gid))
}

impl Terminal {
    /// The stored history of a group: messages and notices, oldest first
    /// (a notice before a message of the same millisecond).
    pub async fn history(&self, gid: &GroupId) -> Result<Vec<Line>> {
        let mut lines: Vec<(u64, Line)> = Vec::new();
        for (_, text, at) in self.store.notices(gid, 0).await? {
            lines.push((
                at,
                Line::Notice(Notice {
                    group_id: *gid,
                    notice: text,
                    at_ms: at,
                }),
            ));
        }
        for r in self.store.messages(gid).await? {
            let body = self.vault.open("msg", &r.sealed_body)?;
            let m = Message {
                group_id: *gid,
                sender: r.sender,
                text: String::from_utf8(body.to_vec()).map_err(|_| Error::Corrupt("message"))?,
                sent_at_ms: r.sent_at_ms,
                rn1_version: r.rn1_version,
                rn2_version: r.rn2_version,
                seq: r.seq,
                msg_id: MsgId::from_slice(&r.msg_id).map_err(|_| Error::Corrupt("msg_id"))?,
            };
            lines.push((m.sent_at_ms, Line::Message(m)));
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
    pub async fn follow(&mut self, gid: &GroupId, mut on_line: impl FnMut(Line)) -> Result<()> {
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
        gid: &GroupId,
        last_notice: &mut i64,
        on_line: &mut impl FnMut(Line),
        backoff: &mut Backoff,
    ) -> Result<std::convert::Infallible> {
        // Opening the streams syncs: catch up with what arrived meanwhile.
        let mut live = self.live().await?;
        backoff.reset();
        loop {
            // What the sync brought, notices and messages in time order.
            let messages = self.sync_messages(gid).await?;
            let mut lines: Vec<(u64, Line)> = Vec::new();
            for (id, text, at) in self.store.notices(gid, *last_notice).await? {
                *last_notice = id;
                let notice = Notice {
                    group_id: *gid,
                    notice: text,
                    at_ms: at,
                };
                lines.push((at, Line::Notice(notice)));
            }
            lines.extend(
                messages
                    .into_iter()
                    .map(|m| (m.sent_at_ms, Line::Message(m))),
            );
            lines.sort_by_key(|(t, _)| *t);
            lines.into_iter().for_each(|(_, l)| on_line(l));
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
            group_id: GroupId([0; 16]),
            notice: text.into(),
            at_ms: 5,
        })
    }

    #[test]
    fn every_history_line_says_in_json_what_kind_it_is() {
        let message = Line::Message(Message {
            group_id: GroupId([0; 16]),
            sender: "alice".into(),
            text: "hi".into(),
            sent_at_ms: 1,
            rn1_version: 1,
            rn2_version: 2,
            seq: 0,
            msg_id: MsgId([0x11; 16]),
        });
        let v = serde_json::to_value(&message).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["text"].as_str()),
            (Some("message"), Some("hi"))
        );
        // Ids are hex in JSON, as scripts read them (SPEC §8).
        assert_eq!(v["group_id"], "00".repeat(16));
        assert_eq!(v["msg_id"], "11".repeat(16));
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
