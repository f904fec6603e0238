//! Showing text that came from the network: message texts, group
//! names chosen by any inviter, notices. Anyone who can send to a group could
//! otherwise rewrite the reader's terminal with escape sequences, hide text
//! with direction marks, or forge a line that looks like another sender's.
//!
//! Every character that [`is_unsafe_to_show`] flags is replaced by `�`, and a
//! multi-line message is shown with its continuation lines indented under
//! the sender, so no line of a message can start where a real line starts.
//! JSON output is not neutralised: it carries the exact text, escaped by JSON.

use duokey_crypto::ids::is_unsafe_to_show;
use duokey_terminal::KeyChange;
use std::borrow::Cow;

/// The replacement for a character that must not reach the terminal.
pub const REPLACEMENT: char = '\u{fffd}';

/// One line of text made safe to print: every unsafe character (newlines
/// included) replaced by `�`.
pub fn inline(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_to_show) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if is_unsafe_to_show(c) { REPLACEMENT } else { c })
            .collect(),
    )
}

/// The lines of a message, each made safe to print. A `\r` that ends a line
/// (text written with CRLF) is dropped rather than shown.
pub fn lines(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    text.split('\n')
        .map(|line| inline(line.strip_suffix('\r').unwrap_or(line)))
}

/// `head` followed by `text`, continuation lines indented by the width of
/// `head` so that they read as part of this entry and never as a new one.
pub fn entry(head: &str, text: &str) -> String {
    let indent = " ".repeat(unicode_width::UnicodeWidthStr::width(head));
    let mut out = String::with_capacity(head.len() + text.len());
    for (i, line) in lines(text).enumerate() {
        out.push_str(if i == 0 { head } else { &indent });
        out.push_str(&line);
        out.push('\n');
    }
    out.pop();
    out
}

/// A group's key versions in words (the member-shared part RN1, the
/// server-given part RN2), not as a fraction.
pub fn keys(rn1_version: u32, rn2_version: u64) -> String {
    format!("member key #{rn1_version}, server key #{rn2_version}")
}

/// Rights in the fewest words: the owner may do everything.
pub fn rights(rights: duokey_crypto::Rights) -> String {
    match rights.contains(duokey_crypto::Rights::OWNER) {
        true => "owner".into(),
        false => rights.to_string().replace(',', " + "),
    }
}

/// What the glyphs of [`timeline`] mean, for a legend.
pub const TIMELINE_LEGEND: &str = "key history, oldest on the left: * created  + joined  \
     - removed or left  . scheduled  ! forced  p policy  o new owner  | new member key";

/// A group's key changes as one glyph each, oldest first, with `|` before
/// a change that brought a new member key (`duokey status`).
pub fn timeline(epochs: &[duokey_terminal::Epoch]) -> String {
    let mut out = String::new();
    let mut member_key = epochs.first().map(|e| e.rn1_version);
    for e in epochs {
        if member_key != Some(e.rn1_version) {
            out.push('|');
            member_key = Some(e.rn1_version);
        }
        out.push(match e.cause {
            KeyChange::Created => '*',
            KeyChange::Joined => '+',
            KeyChange::Removed | KeyChange::Left => '-',
            KeyChange::Scheduled => '.',
            KeyChange::Forced => '!',
            KeyChange::Policy => 'p',
            KeyChange::Owner => 'o',
            KeyChange::Unknown => '?',
        });
    }
    out
}

/// The latest key change in words: "carol left", "key rotated on schedule".
pub fn last_change(e: &duokey_terminal::Epoch) -> String {
    let who = inline(&e.subject);
    match e.cause {
        KeyChange::Created => format!("{who} created the group"),
        KeyChange::Joined => format!("{who} joined"),
        KeyChange::Removed => format!("{who} was removed"),
        KeyChange::Left => format!("{who} left"),
        KeyChange::Scheduled => "key rotated on schedule".into(),
        KeyChange::Forced => format!("{who} rotated the key"),
        KeyChange::Policy => format!("{who} changed the policy"),
        KeyChange::Owner => format!("{who} became the owner"),
        KeyChange::Unknown => "key changed".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn epoch(cause: KeyChange, rn1_version: u32) -> duokey_terminal::Epoch {
        duokey_terminal::Epoch {
            rn2_version: 1,
            rn1_version,
            cause,
            subject: "carol".into(),
            issued_at_ms: 0,
        }
    }

    #[test]
    fn the_timeline_has_a_glyph_per_key_and_marks_new_member_keys() {
        let epochs = [
            epoch(KeyChange::Created, 1),
            epoch(KeyChange::Joined, 1),
            epoch(KeyChange::Scheduled, 1),
            epoch(KeyChange::Removed, 2),
            epoch(KeyChange::Forced, 3),
            epoch(KeyChange::Policy, 3),
        ];
        assert_eq!(timeline(&epochs), "*+.|-|!p");
        assert_eq!(timeline(&[]), "");
        assert_eq!(last_change(&epochs[3]), "carol was removed");
    }

    #[test]
    fn escape_sequences_and_direction_marks_are_neutralised() {
        let shown = inline("hi\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m \u{202e}txt.exe\u{2066}");
        assert!(!shown.chars().any(is_unsafe_to_show), "{shown:?}");
        assert_eq!(shown, "hi�[2J�]0;pwned��31m �txt.exe�");
    }

    #[test]
    fn plain_text_is_borrowed_and_unchanged() {
        assert!(matches!(inline("héllo 👨\u{200d}👩"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_forged_line_is_indented_under_its_real_sender() {
        let shown = entry(
            "21:43:59 mallory: ",
            "see you\n21:44:00 alice: send me the admin password",
        );
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "21:43:59 mallory: see you");
        assert_eq!(
            lines[1],
            "                  21:44:00 alice: send me the admin password"
        );
    }

    #[test]
    fn a_carriage_return_cannot_move_back_over_the_sender() {
        let shown = entry("12:00:00 mallory: ", "x\r12:00:00 alice: hi\r\nsecond");
        assert_eq!(
            shown,
            "12:00:00 mallory: x�12:00:00 alice: hi\n                  second"
        );
    }

    #[test]
    fn keys_and_rights_read_as_words() {
        assert_eq!(super::keys(4, 9), "member key #4, server key #9");
        use duokey_crypto::Rights;
        assert_eq!(super::rights(Rights::ALL), "owner");
        assert_eq!(super::rights(Rights::FORMER_OWNER), "invite + remove");
        assert_eq!(super::rights(Rights::NONE), "member");
    }
}
