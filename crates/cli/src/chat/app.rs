//! The state of `duokey chat` and what keys do to it. No I/O
//! here: the loop in `mod.rs` carries out the [`Action`]s and feeds the
//! results back, and `ui.rs` draws the state.

use super::command::{self, Command};
use duokey_crypto::GroupId;
use duokey_terminal::contacts::Trust;
use duokey_terminal::{GroupState, Line};
use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Narrowest screen that shows the member panel unless `/members` asks.
pub const MEMBERS_AUTO_WIDTH: u16 = 100;
/// Most input lines kept for Up/Down.
const HISTORY: usize = 100;

/// One group in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// The group id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Where this terminal stands in it.
    pub state: GroupState,
    /// Current epoch (RN1 version, RN2 version).
    pub epoch: (u32, u64),
    /// Lines arrived while another group was shown.
    pub unread: usize,
    /// The stored history, oldest first.
    pub lines: Vec<Line>,
}

/// A member in the member panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// User id.
    pub user: String,
    /// "owner,invite,remove", "member"…
    pub rights: duokey_crypto::Rights,
    /// Whether their key was verified (`None` for oneself).
    pub trust: Option<Trust>,
}

/// A pending invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteView {
    /// Invite id (hex).
    pub id: String,
    /// Group name.
    pub group: String,
    /// Inviter.
    pub from: String,
    /// It was sent with a code, which the person types to accept.
    pub needs_code: bool,
}

/// The connection to the servers' live streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// First connection under way.
    Connecting,
    /// Streams open.
    Online,
    /// Streams lost; the next attempt is in `retry_secs`.
    Offline {
        /// Why.
        reason: String,
        /// Seconds until the next attempt.
        retry_secs: u64,
    },
}

/// The kind of the status-line message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something done.
    Info,
    /// Something refused or failed.
    Error,
}

/// Where keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The input line.
    Input,
    /// The invitations panel (Up/Down, `a` accept, `d` decline).
    Invitations,
}

/// What the loop should do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Post text to the shown group.
    Send(String),
    /// Carry out a command.
    Run(Command),
    /// Another group is shown: reload its members.
    Switched,
    /// Leave the chat.
    Quit,
}

/// The input line: a text with a cursor, and the lines sent before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The text (may hold newlines from a paste or Alt+Enter).
    pub text: String,
    /// Cursor position, in characters.
    pub cursor: usize,
    history: Vec<String>,
    recalled: Option<usize>,
}

impl Input {
    fn byte_at(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    /// Inserts text at the cursor.
    pub fn insert(&mut self, s: &str) {
        let at = self.byte_at(self.cursor);
        self.text.insert_str(at, s);
        self.cursor += s.chars().count();
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    fn recall(&mut self, older: bool) {
        let n = self.history.len();
        let next = match (self.recalled, older) {
            (None, true) if n > 0 => Some(n - 1),
            (Some(i), true) => Some(i.saturating_sub(1)),
            (Some(i), false) if i + 1 < n => Some(i + 1),
            (Some(_), false) => None,
            _ => return,
        };
        self.recalled = next;
        self.text = next.map(|i| self.history[i].clone()).unwrap_or_default();
        self.cursor = self.text.chars().count();
    }

    /// Takes the text out, remembering it for Up/Down.
    fn submit(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.recalled = None;
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        text
    }
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct App {
    /// Who is chatting.
    pub me: String,
    /// Groups, in list order.
    pub groups: Vec<GroupView>,
    /// Index of the shown group in `groups`.
    pub selected: usize,
    /// Members of the shown group.
    pub members: Vec<MemberView>,
    /// Whether the member panel is shown: chosen by `/members`, else only
    /// on screens at least [`MEMBERS_AUTO_WIDTH`] wide.
    pub show_members: Option<bool>,
    /// Screen width, for `/members`.
    pub screen_width: u16,
    /// Pending invitations.
    pub invitations: Vec<InviteView>,
    /// Selected invitation.
    pub invite_selected: usize,
    /// Where keys go.
    pub focus: Focus,
    /// The input line.
    pub input: Input,
    /// Lines scrolled back from the newest.
    pub scroll: usize,
    /// The most `scroll` can be in the last frame drawn (the oldest line at
    /// the top), set by the drawing.
    pub scroll_max: std::cell::Cell<usize>,
    /// Live connection state.
    pub connection: Connection,
    /// Last message of the status line.
    pub status: Option<(Tone, String)>,
    /// Whether the help overlay is shown.
    pub show_help: bool,
    /// The verify panel (`/verify USER`): title and lines, until a key.
    pub panel: Option<(String, Vec<String>)>,
    /// Colours allowed (`NO_COLOR` unset).
    pub color: bool,
}

impl App {
    /// An empty screen for `me`.
    pub fn new(me: &str, color: bool) -> App {
        App {
            me: me.to_owned(),
            groups: Vec::new(),
            selected: 0,
            members: Vec::new(),
            show_members: None,
            screen_width: 80,
            invitations: Vec::new(),
            invite_selected: 0,
            focus: Focus::Input,
            input: Input::default(),
            scroll: 0,
            scroll_max: std::cell::Cell::new(0),
            connection: Connection::Connecting,
            status: None,
            show_help: false,
            panel: None,
            color,
        }
    }

    /// Whether the member panel is drawn on a screen `width` wide.
    pub fn members_visible(&self, width: u16) -> bool {
        self.show_members.unwrap_or(width >= MEMBERS_AUTO_WIDTH)
    }

    /// The shown group.
    pub fn current(&self) -> Option<&GroupView> {
        self.groups.get(self.selected)
    }

    /// Shows the group named or identified by `spec` (id hex prefix or name).
    pub fn select(&mut self, spec: &str) -> bool {
        let found = self
            .groups
            .iter()
            .position(|g| g.name == spec || hex::encode(g.id).starts_with(spec));
        if let Some(i) = found {
            self.show(i);
        }
        found.is_some()
    }

    fn show(&mut self, i: usize) {
        self.selected = i;
        self.scroll = 0;
        if let Some(g) = self.groups.get_mut(i) {
            g.unread = 0;
        }
    }

    /// Replaces the group list, keeping the shown group and the histories
    /// already loaded.
    pub fn set_groups(&mut self, mut fresh: Vec<GroupView>) {
        let shown = self.current().map(|g| g.id);
        for g in &mut fresh {
            if let Some(old) = self.groups.iter().find(|o| o.id == g.id) {
                g.unread = old.unread;
                if g.lines.is_empty() {
                    g.lines = old.lines.clone();
                }
            }
        }
        self.groups = fresh;
        self.selected = shown
            .and_then(|id| self.groups.iter().position(|g| g.id == id))
            .unwrap_or(0)
            .min(self.groups.len().saturating_sub(1));
    }

    /// Replaces a group's history; lines beyond the old ones count as unread
    /// unless the group is shown.
    pub fn set_history(&mut self, id: &GroupId, lines: Vec<Line>) {
        let shown = self.current().map(|g| g.id) == Some(*id);
        if let Some(g) = self.groups.iter_mut().find(|g| &g.id == id) {
            let new = lines.len().saturating_sub(g.lines.len());
            if !shown {
                g.unread += new;
            } else if self.scroll > 0 {
                self.scroll += new;
            }
            g.lines = lines;
        }
    }

    /// Sets the status line.
    pub fn say(&mut self, tone: Tone, text: impl Into<String>) {
        self.status = Some((tone, text.into()));
    }

    /// What a terminal event does.
    pub fn on_event(&mut self, event: Event) -> Action {
        match event {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.on_key(k),
            Event::Resize(w, _) => {
                self.screen_width = w;
                Action::None
            }
            Event::Paste(text) => {
                self.input
                    .insert(&text.replace("\r\n", "\n").replace('\r', "\n"));
                Action::None
            }
            _ => Action::None,
        }
    }

    fn on_key(&mut self, k: KeyEvent) -> Action {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if self.show_help || self.panel.is_some() {
            self.show_help = false;
            self.panel = None;
            return Action::None;
        }
        match k.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('d') if ctrl && self.input.text.is_empty() => return Action::Quit,
            KeyCode::F(1) => {
                self.show_help = true;
                return Action::None;
            }
            KeyCode::F(2) => {
                self.focus = match self.focus {
                    Focus::Input if !self.invitations.is_empty() => Focus::Invitations,
                    _ => Focus::Input,
                };
                return Action::None;
            }
            KeyCode::Tab => return self.cycle(false),
            KeyCode::BackTab => return self.cycle(true),
            KeyCode::Char('n') if ctrl => return self.cycle(false),
            KeyCode::Char('p') if ctrl => return self.cycle(true),
            KeyCode::PageUp => {
                self.scroll = self.scroll.saturating_add(10);
                return Action::None;
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                return Action::None;
            }
            // The newest and the oldest message: always with Ctrl, and
            // without it while nothing is typed (Home/End move the cursor
            // in a message being written).
            KeyCode::End if ctrl || self.input.text.is_empty() => {
                self.scroll = 0;
                return Action::None;
            }
            KeyCode::Home if ctrl || self.input.text.is_empty() => {
                self.scroll = self.scroll_max.get();
                return Action::None;
            }
            _ => {}
        }
        match self.focus {
            Focus::Invitations => self.on_invitation_key(k),
            Focus::Input => self.on_input_key(k),
        }
    }

    /// Shows the next (or previous) group.
    fn cycle(&mut self, back: bool) -> Action {
        let n = self.groups.len();
        if n == 0 {
            return Action::None;
        }
        self.show(if back {
            (self.selected + n - 1) % n
        } else {
            (self.selected + 1) % n
        });
        Action::Switched
    }

    fn on_invitation_key(&mut self, k: KeyEvent) -> Action {
        let n = self.invitations.len();
        let chosen = self
            .invitations
            .get(self.invite_selected)
            .map(|i| i.id.clone());
        let needs_code = self
            .invitations
            .get(self.invite_selected)
            .is_some_and(|i| i.needs_code);
        match k.code {
            // A code invitation: the code is typed in the input line.
            KeyCode::Char('a') | KeyCode::Enter if needs_code => {
                self.input.text.clear();
                self.input.cursor = 0;
                self.input
                    .insert(&format!("/accept {} --code ", chosen.unwrap_or_default()));
                self.focus = Focus::Input;
            }
            KeyCode::Up => self.invite_selected = self.invite_selected.saturating_sub(1),
            KeyCode::Down => {
                self.invite_selected = (self.invite_selected + 1).min(n.saturating_sub(1))
            }
            KeyCode::Char('a') | KeyCode::Enter => return Action::Run(Command::Accept(chosen)),
            KeyCode::Char('d') => return Action::Run(Command::Decline(chosen)),
            KeyCode::Esc => self.focus = Focus::Input,
            _ => {}
        }
        Action::None
    }

    fn on_input_key(&mut self, k: KeyEvent) -> Action {
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let len = self.input.text.chars().count();
        match k.code {
            KeyCode::Enter if alt || k.modifiers.contains(KeyModifiers::SHIFT) => {
                self.input.insert("\n");
            }
            KeyCode::Char('j') if ctrl => self.input.insert("\n"),
            KeyCode::Enter => return self.submit(),
            KeyCode::Char('a') if ctrl => self.input.cursor = 0,
            KeyCode::Char('e') if ctrl => self.input.cursor = len,
            KeyCode::Char('u') if ctrl => {
                self.input.text.clear();
                self.input.cursor = 0;
            }
            KeyCode::Char(c) if !ctrl => self.input.insert(c.encode_utf8(&mut [0; 4])),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.cursor = self.input.cursor.saturating_sub(1),
            KeyCode::Right => self.input.cursor = (self.input.cursor + 1).min(len),
            KeyCode::Home => self.input.cursor = 0,
            KeyCode::End => self.input.cursor = len,
            KeyCode::Up => self.input.recall(true),
            KeyCode::Down => self.input.recall(false),
            KeyCode::Esc => self.status = None,
            _ => {}
        }
        Action::None
    }

    fn submit(&mut self) -> Action {
        let text = self.input.submit();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Action::None;
        }
        if trimmed.starts_with('/') && !trimmed.starts_with("//") {
            return match command::parse(trimmed) {
                Ok(Command::Help) => {
                    self.show_help = true;
                    Action::None
                }
                Ok(Command::Members) => {
                    self.show_members = Some(!self.members_visible(self.screen_width));
                    Action::None
                }
                Ok(Command::Quit) => Action::Quit,
                Ok(c) => Action::Run(c),
                Err(e) => {
                    self.say(Tone::Error, e);
                    Action::None
                }
            };
        }
        // "//text" sends "/text".
        let text = text
            .strip_prefix('/')
            .filter(|t| t.starts_with('/'))
            .map_or(text.clone(), str::to_owned);
        self.scroll = 0;
        Action::Send(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn typed(app: &mut App, s: &str) {
        for c in s.chars() {
            app.on_event(key(KeyCode::Char(c)));
        }
    }

    fn group(name: &str, n: u8) -> GroupView {
        GroupView {
            id: GroupId([n; 16]),
            name: name.into(),
            state: GroupState::Active,
            epoch: (1, 1),
            unread: 0,
            lines: Vec::new(),
        }
    }

    #[test]
    fn enter_sends_text_and_runs_commands() {
        let mut app = App::new("alice", true);
        typed(&mut app, "hello");
        assert_eq!(
            app.on_event(key(KeyCode::Enter)),
            Action::Send("hello".into())
        );
        typed(&mut app, "/remove bob");
        assert_eq!(
            app.on_event(key(KeyCode::Enter)),
            Action::Run(Command::Remove("bob".into()))
        );
        typed(&mut app, "//slash");
        assert_eq!(
            app.on_event(key(KeyCode::Enter)),
            Action::Send("/slash".into())
        );
        typed(&mut app, "/nope");
        assert_eq!(app.on_event(key(KeyCode::Enter)), Action::None);
        assert!(matches!(app.status, Some((Tone::Error, _))));
    }

    #[test]
    fn history_recalls_earlier_lines_and_paste_keeps_newlines() {
        let mut app = App::new("alice", true);
        typed(&mut app, "one");
        app.on_event(key(KeyCode::Enter));
        typed(&mut app, "two");
        app.on_event(key(KeyCode::Enter));
        app.on_event(key(KeyCode::Up));
        assert_eq!(app.input.text, "two");
        app.on_event(key(KeyCode::Up));
        assert_eq!(app.input.text, "one");
        app.on_event(key(KeyCode::Down));
        app.on_event(key(KeyCode::Down));
        assert_eq!(app.input.text, "");
        app.on_event(Event::Paste("a\r\nb".into()));
        app.on_event(Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
        typed(&mut app, "é");
        assert_eq!(app.input.text, "a\nb\né");
        app.on_event(key(KeyCode::Left));
        app.on_event(key(KeyCode::Backspace));
        assert_eq!(app.input.text, "a\nbé");
        assert_eq!(
            app.on_event(key(KeyCode::Enter)),
            Action::Send("a\nbé".into())
        );
    }

    #[test]
    fn unread_counts_grow_only_for_hidden_groups() {
        let mut app = App::new("alice", true);
        app.set_groups(vec![group("a", 1), group("b", 2)]);
        let notice = |t: &str| {
            Line::Notice(duokey_terminal::Notice {
                group_id: duokey_crypto::GroupId([0; 16]),
                notice: t.into(),
                at_ms: 0,
            })
        };
        app.set_history(&GroupId([2; 16]), vec![notice("x"), notice("y")]);
        app.set_history(&GroupId([1; 16]), vec![notice("z")]);
        assert_eq!(app.groups[1].unread, 2);
        assert_eq!(app.groups[0].unread, 0);
        let tab = Event::Key(KeyEvent {
            code: KeyCode::Tab,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        });
        assert_eq!(app.on_event(tab), Action::Switched);
        assert_eq!(app.current().unwrap().name, "b");
        assert_eq!(app.groups[1].unread, 0);
        assert!(app.select("a"));
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn invitations_panel_accepts_and_declines() {
        let mut app = App::new("bob", true);
        app.invitations = vec![
            InviteView {
                id: "aa".into(),
                group: "g".into(),
                from: "alice".into(),
                needs_code: false,
            },
            InviteView {
                id: "bb".into(),
                group: "h".into(),
                from: "carol".into(),
                needs_code: false,
            },
        ];
        app.on_event(key(KeyCode::F(2)));
        assert_eq!(app.focus, Focus::Invitations);
        app.on_event(key(KeyCode::Down));
        assert_eq!(
            app.on_event(key(KeyCode::Char('d'))),
            Action::Run(Command::Decline(Some("bb".into())))
        );
        assert_eq!(
            app.on_event(key(KeyCode::Char('a'))),
            Action::Run(Command::Accept(Some("bb".into())))
        );
        // A code invitation: `a` leaves the code to type in the input line.
        app.invitations[1].needs_code = true;
        assert_eq!(app.focus, Focus::Invitations);
        assert_eq!(app.on_event(key(KeyCode::Char('a'))), Action::None);
        assert_eq!(app.focus, Focus::Input);
        assert_eq!(app.input.text, "/accept bb --code ");
    }

    #[test]
    fn end_and_home_jump_to_the_newest_and_oldest_unless_typing() {
        let mut app = App::new("bob", false);
        app.scroll_max.set(40);
        app.on_event(key(KeyCode::PageUp));
        assert_eq!(app.scroll, 10);
        app.on_event(key(KeyCode::End));
        assert_eq!(app.scroll, 0, "End: the newest message");
        app.on_event(key(KeyCode::Home));
        assert_eq!(app.scroll, 40, "Home: the oldest message");
        app.on_event(key(KeyCode::End));
        typed(&mut app, "hi");
        app.on_event(key(KeyCode::PageUp));
        app.on_event(key(KeyCode::End));
        assert_eq!(app.scroll, 10, "while typing, End moves the cursor");
        assert_eq!(app.input.cursor, 2);
        let ctrl_end = Event::Key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL));
        app.on_event(ctrl_end);
        assert_eq!(app.scroll, 0);
    }
}
