//! Drawing `duokey chat`: group list with unread counts,
//! invitations, the message pane with notices and unreadable-message
//! markers, members with their verification state, the input line and a
//! status line with the connection state. Works in 80×24; no colour when
//! `NO_COLOR` is set (bold and reverse still mark what matters).

use super::app::{App, Connection, Focus, Tone};
use super::command::HELP;
use duokey_terminal::GroupState;
use duokey_terminal::Line as HistoryLine;
use duokey_terminal::contacts::Trust;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use unicode_width::UnicodeWidthChar;

/// Width of the group list.
const GROUPS_WIDTH: u16 = 20;
/// Width of the member panel.
const MEMBERS_WIDTH: u16 = 22;
/// Tallest input box, borders included.
const INPUT_MAX_HEIGHT: u16 = 7;
/// Indent of a message's continuation lines.
const INDENT: usize = 6;

fn fg(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

/// A stable colour per sender.
fn sender_color(name: &str) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Cyan,
        Color::Green,
        Color::Yellow,
        Color::Magenta,
        Color::LightBlue,
        Color::LightRed,
    ];
    let h = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    PALETTE[h % PALETTE.len()]
}

/// `HH:MM` (UTC) of a Unix time in milliseconds.
pub fn clock(ms: u64) -> String {
    let m = ms / 60_000;
    format!("{:02}:{:02}", (m / 60) % 24, m % 60)
}

/// Draws the whole screen.
/// The smallest screen the chat draws itself on.
pub const MIN_SIZE: (u16, u16) = (40, 10);

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "Window too small ({}×{}): make it at least {}×{}, or Ctrl+C to quit.",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(
            Paragraph::new(text).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let input_lines = cells(app.input.text.split('\n').count());
    let input_h = (input_lines + 2).min(INPUT_MAX_HEIGHT);
    let [main, input, status] = Layout::vertical([
        Constraint::Min(5),
        Constraint::Length(input_h),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let members_shown = app.members_visible(f.area().width);
    let mut cols = vec![Constraint::Length(GROUPS_WIDTH), Constraint::Min(20)];
    if members_shown {
        cols.push(Constraint::Length(MEMBERS_WIDTH));
    }
    let areas = Layout::horizontal(cols).split(main);
    draw_sidebar(f, app, areas[0]);
    draw_messages(f, app, areas[1]);
    if members_shown {
        draw_members(f, app, areas[2]);
    }
    draw_input(f, app, input);
    draw_status(f, app, status);
    if app.show_help {
        draw_help(f, app);
    }
    if let Some((title, lines)) = &app.panel {
        draw_panel(f, title, lines);
    }
}

/// A centred box of wrapped lines over the screen (the verify panel).
fn draw_panel(f: &mut Frame, title: &str, lines: &[String]) {
    let area = f.area();
    let w = 72.min(area.width);
    let inner = usize::from(w.saturating_sub(2)).max(1);
    let rows: usize = lines
        .iter()
        .map(|l| text_width(l).div_ceil(inner).max(1))
        .sum();
    let h = cells(rows).saturating_add(2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let text: Vec<Line> = lines.iter().map(|l| Line::raw(l.clone())).collect();
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(text)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::bordered().title(title.to_owned())),
        rect,
    );
}

fn draw_sidebar(f: &mut Frame, app: &App, area: Rect) {
    let inv_h = if app.invitations.is_empty() {
        0
    } else {
        (cells(app.invitations.len())
            .saturating_mul(2)
            .saturating_add(2))
        .min(area.height / 2)
    };
    let [groups, invites] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(inv_h)]).areas(area);
    let inner = GROUPS_WIDTH.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let badge = match g.state {
                GroupState::Active if g.unread > 0 => format!(" {}", g.unread.min(999)),
                GroupState::Active => String::new(),
                state => format!(" ({state})"),
            };
            let name = fit(&g.name, inner.saturating_sub(badge.len()));
            let pad = inner.saturating_sub(text_width(&name) + badge.len());
            let mut style = Style::default();
            if i == app.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            if g.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            Line::from(vec![
                Span::styled(format!("{name}{}", " ".repeat(pad)), style),
                Span::styled(badge, style.patch(fg(app, Color::Yellow))),
            ])
        })
        .collect();
    let body = if lines.is_empty() {
        vec![
            Line::styled("no group yet:", fg(app, Color::DarkGray)),
            Line::raw("/create NAME"),
        ]
    } else {
        lines
    };
    f.render_widget(
        Paragraph::new(body).block(Block::bordered().title(" Groups ")),
        groups,
    );
    if inv_h > 0 {
        let focused = app.focus == Focus::Invitations;
        let lines: Vec<Line> = app
            .invitations
            .iter()
            .enumerate()
            .flat_map(|(i, inv)| {
                let style = if focused && i == app.invite_selected {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                };
                [
                    Line::styled(fit(&inv.group, inner), style.add_modifier(Modifier::BOLD)),
                    Line::styled(fit(&format!(" from {}", inv.from), inner), style),
                ]
            })
            .collect();
        let title = if focused {
            " Invitations ◀ "
        } else {
            " Invitations F2 "
        };
        f.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(title)
                    .border_style(fg(app, Color::Yellow)),
            ),
            invites,
        );
    }
}

fn draw_messages(f: &mut Frame, app: &App, area: Rect) {
    let Some(g) = app.current() else {
        let text = vec![
            Line::raw("Welcome to Duokey."),
            Line::raw(""),
            Line::raw("Create a group with /create NAME,"),
            Line::raw("or accept an invitation (F2)."),
            Line::raw("F1 shows every command."),
        ];
        f.render_widget(
            Paragraph::new(text).block(Block::bordered().title(" Duokey ")),
            area,
        );
        return;
    };
    let width = area.width.saturating_sub(2) as usize;
    let mut rows: Vec<Line> = Vec::new();
    for line in &g.lines {
        rows.extend(render_line(app, line, width));
    }
    let height = area.height.saturating_sub(2) as usize;
    app.scroll_max.set(rows.len().saturating_sub(height));
    let scroll = app.scroll.min(app.scroll_max.get());
    let end = rows.len() - scroll;
    let start = end.saturating_sub(height);
    let shown: Vec<Line> = rows[start..end].to_vec();
    let mut title = vec![Span::styled(
        format!(" {} ", crate::display::inline(&g.name)),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if g.state == GroupState::Active {
        title.push(Span::styled("· end-to-end ", fg(app, Color::Green)));
    } else {
        title.push(Span::styled(format!("· {} ", g.state), fg(app, Color::Red)));
    }
    if scroll > 0 {
        title.push(Span::styled(
            format!("· ↑{scroll} "),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    // Last: the least needed, the first cut on a narrow screen.
    title.push(Span::raw(format!(
        "· {} ",
        crate::display::keys(g.epoch.0, g.epoch.1)
    )));
    f.render_widget(
        Paragraph::new(shown).block(Block::bordered().title(Line::from(title))),
        area,
    );
}

/// One history line as screen rows of at most `width` columns.
fn render_line(app: &App, line: &HistoryLine, width: usize) -> Vec<Line<'static>> {
    match line {
        HistoryLine::Message(m) => {
            let me = m.sender == app.me;
            let mut name_style = fg(app, sender_color(&m.sender)).add_modifier(Modifier::BOLD);
            if me {
                name_style = Style::default().add_modifier(Modifier::BOLD);
            }
            let head = vec![
                Span::styled(
                    format!("{} ", clock(m.sent_at_ms)),
                    fg(app, Color::DarkGray),
                ),
                Span::styled(format!("{}: ", m.sender), name_style),
            ];
            wrap(head, &m.text, Style::default(), width)
        }
        HistoryLine::Notice(n) if n.is_warning() => {
            let style = fg(app, Color::Red).add_modifier(Modifier::BOLD);
            let head = vec![Span::styled(
                format!("{} ", clock(n.at_ms)),
                fg(app, Color::DarkGray),
            )];
            wrap(head, &n.notice, style, width)
        }
        HistoryLine::Notice(n) => {
            let style = fg(app, Color::DarkGray).add_modifier(Modifier::ITALIC);
            let head = vec![
                Span::styled(format!("{} ", clock(n.at_ms)), fg(app, Color::DarkGray)),
                Span::styled("-- ", style),
            ];
            wrap(head, &n.notice, style, width)
        }
    }
}

fn text_width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// `s` made safe to show (`crate::display`) and cut to `max` columns, with
/// `…` when cut.
fn fit(s: &str, max: usize) -> String {
    let s = &*crate::display::inline(s);
    if text_width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// Screen rows being filled by [`wrap`].
struct Rows {
    rows: Vec<Line<'static>>,
    current: Vec<Span<'static>>,
    used: usize,
    width: usize,
    style: Style,
}

impl Rows {
    fn break_line(&mut self) {
        self.rows
            .push(Line::from(std::mem::take(&mut self.current)));
        self.current.push(Span::raw(" ".repeat(INDENT)));
        self.used = INDENT;
    }

    fn push_char(&mut self, c: char) {
        let cw = c.width().unwrap_or(0);
        if self.used + cw > self.width {
            self.break_line();
        }
        match self.current.last_mut() {
            Some(last) if last.style == self.style => last.content.to_mut().push(c),
            _ => self.current.push(Span::styled(c.to_string(), self.style)),
        }
        self.used += cw;
    }

    fn push_word(&mut self, word: &str) {
        if self.used + text_width(word) > self.width && self.used > INDENT {
            self.break_line();
        }
        word.chars().for_each(|c| self.push_char(c));
    }
}

/// Word-wraps `text` after the spans of `head`; continuation rows are
/// indented. Control characters and direction marks are shown as `�`
/// (`crate::display`) so that a message cannot move the cursor, change the
/// terminal or reorder what is shown.
fn wrap(head: Vec<Span<'static>>, text: &str, style: Style, width: usize) -> Vec<Line<'static>> {
    let used = head.iter().map(width_of_span).sum();
    let mut rows = Rows {
        rows: Vec::new(),
        current: head,
        used,
        width: width.max(INDENT + 8),
        style,
    };
    for (i, clean) in crate::display::lines(text).enumerate() {
        if i > 0 {
            rows.break_line();
        }
        for word in clean.split_inclusive(' ') {
            rows.push_word(word);
        }
    }
    rows.rows.push(Line::from(rows.current));
    rows.rows
}

fn width_of_span(s: &Span) -> usize {
    text_width(&s.content)
}

fn draw_members(f: &mut Frame, app: &App, area: Rect) {
    let inner = MEMBERS_WIDTH.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    for m in &app.members {
        let (mark, style) = match m.trust {
            None => ("•", Style::default()),
            Some(Trust::Verified) => ("✓", fg(app, Color::Green)),
            Some(Trust::Code) => ("#", fg(app, Color::Green)),
            Some(Trust::KeyChanged) => ("!", fg(app, Color::Red).add_modifier(Modifier::BOLD)),
            Some(Trust::Unverified | Trust::Unknown) => ("?", fg(app, Color::DarkGray)),
        };
        let name = if m.trust.is_none() {
            format!("{} (you)", m.user)
        } else {
            m.user.clone()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark} "), style),
            Span::raw(fit(&name, inner - 2)),
        ]));
        lines.push(Line::styled(
            fit(&format!("  {}", crate::display::rights(m.rights)), inner),
            fg(app, Color::DarkGray),
        ));
    }
    lines.push(Line::raw(""));
    // How each contact's key was confirmed (PROTOCOL §4.10, DESIGN D50):
    // by safety number, by invite code, or only by the CA's certificate.
    for legend in [
        "✓ safety number",
        "# invite code",
        "? certificate only",
        "! key changed",
    ] {
        lines.push(Line::styled(legend, fg(app, Color::DarkGray)));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Members ")),
        area,
    );
}

fn draw_input(f: &mut Frame, app: &App, area: Rect) {
    let title = match app.current() {
        Some(g) if g.state == GroupState::Active => {
            format!(" Message {} ", crate::display::inline(&g.name))
        }
        Some(_) => " This group is closed ".to_owned(),
        None => " Command ".to_owned(),
    };
    let inner_w = area.width.saturating_sub(2) as usize;
    let before: String = app.input.text.chars().take(app.input.cursor).collect();
    let row = before.matches('\n').count();
    let col = text_width(before.rsplit('\n').next().unwrap_or(""));
    let visible_rows = area.height.saturating_sub(2) as usize;
    let dy = (row + 1).saturating_sub(visible_rows);
    let dx = (col + 1).saturating_sub(inner_w);
    let text: Vec<Line> = app
        .input
        .text
        .split('\n')
        .map(|l| Line::raw(crate::display::inline(l).into_owned()))
        .collect();
    let focused = app.focus == Focus::Input && !app.show_help;
    let block = Block::bordered().title(title).title_bottom(Line::styled(
        " Enter send · Alt+Enter new line · /help ",
        fg(app, Color::DarkGray),
    ));
    f.render_widget(
        Paragraph::new(text)
            .scroll((cells(dy), cells(dx)))
            .block(block),
        area,
    );
    if focused {
        f.set_cursor_position((area.x + 1 + cells(col - dx), area.y + 1 + cells(row - dy)));
    }
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let conn = match &app.connection {
        Connection::Connecting => Span::styled("… connecting", fg(app, Color::Yellow)),
        Connection::Online => Span::styled("● online", fg(app, Color::Green)),
        Connection::Offline { retry_secs, .. } => Span::styled(
            format!("○ offline, retry in {retry_secs}s"),
            fg(app, Color::Red).add_modifier(Modifier::BOLD),
        ),
    };
    let mut spans = vec![
        Span::styled(
            format!(" {} ", app.me),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        conn,
    ];
    let status = match (&app.status, &app.connection) {
        (Some(s), _) => Some(s.clone()),
        (None, Connection::Offline { reason, .. }) => Some((Tone::Error, reason.clone())),
        (None, _) if app.focus == Focus::Invitations => Some((
            Tone::Info,
            "a accept · d decline · Up/Down choose · Esc back".to_owned(),
        )),
        (None, _) => Some((
            Tone::Info,
            "F1 help · Tab next group · Ctrl+C quit".to_owned(),
        )),
    };
    if let Some((tone, text)) = status {
        let style = match tone {
            Tone::Info => Style::default(),
            Tone::Error => fg(app, Color::Red).add_modifier(Modifier::BOLD),
        };
        let used: usize = spans.iter().map(width_of_span).sum();
        let room = (area.width as usize).saturating_sub(used + 3);
        spans.push(Span::styled(
            format!(" · {}", fit(&text.replace('\n', " "), room)),
            style,
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(f: &mut Frame, app: &App) {
    let keys = [
        ("Tab, Shift+Tab", "next / previous group"),
        ("PgUp, PgDn", "scroll the messages"),
        ("Home, End", "oldest / newest message"),
        ("Up, Down", "earlier lines you typed"),
        ("F2", "invitations (a accept, d decline)"),
        ("Ctrl+C", "quit"),
    ];
    let mut lines = vec![Line::styled(
        "Commands",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (c, what) in HELP.iter().chain(keys.iter()) {
        if c.starts_with("Tab") {
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "Keys",
                Style::default().add_modifier(Modifier::BOLD),
            ));
        }
        let name = Span::styled(format!("{c:<26}"), fg(app, Color::Cyan));
        if c.len() > 26 {
            lines.push(Line::from(name));
            lines.push(Line::raw(format!("{:27}{what}", "")));
        } else {
            lines.push(Line::from(vec![name, Span::raw(format!(" {what}"))]));
        }
    }
    let area = f.area();
    let w = 72.min(area.width);
    let h = cells(lines.len()).saturating_add(2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help · any key closes ")),
        rect,
    );
}

/// A count of lines or columns as terminal cells (a screen is far smaller
/// than `u16::MAX`; larger counts are clipped, not wrapped).
fn cells(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    //! Snapshot tests: each screen is drawn on ratatui's `TestBackend` and
    //! compared, cell by cell as text, with `snapshots/NAME.txt`. Run with
    //! `DUOKEY_UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate change
    //! (then read the diff).
    use super::*;
    use crate::chat::app::{GroupView, InviteView, MemberView};
    use duokey_terminal::{Message, Notice};
    use ratatui::Terminal as Screen;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    const T0: u64 = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000 + 9 * 3_600_000;

    fn msg(sender: &str, text: &str, min: u64) -> HistoryLine {
        HistoryLine::Message(Message {
            group_id: duokey_crypto::GroupId([0; 16]),
            sender: sender.into(),
            text: text.into(),
            sent_at_ms: T0 + min * 60_000,
            rn1_version: 1,
            rn2_version: 2,
            seq: 0,
            msg_id: duokey_crypto::MsgId([0; 16]),
        })
    }

    fn notice(text: &str, min: u64) -> HistoryLine {
        HistoryLine::Notice(Notice {
            group_id: duokey_crypto::GroupId([0; 16]),
            notice: text.into(),
            at_ms: T0 + min * 60_000,
        })
    }

    fn group(name: &str, n: u8, unread: usize, lines: Vec<HistoryLine>) -> GroupView {
        GroupView {
            id: duokey_crypto::GroupId([n; 16]),
            name: name.into(),
            state: GroupState::Active,
            epoch: (2, 5),
            unread,
            lines,
        }
    }

    /// bob's screen in a busy group.
    fn chatting() -> App {
        let mut app = App::new("bob", true);
        app.groups = vec![
            group(
                "project-x",
                1,
                0,
                vec![
                    notice("alice created the group", 0),
                    notice("bob joined", 1),
                    msg("alice", "Welcome bob! The draft is in the usual place.", 2),
                    msg("bob", "Thanks. Reading it now.", 3),
                    notice("carol joined", 4),
                    msg(
                        "carol",
                        "Hi all. A longer message to show how lines wrap inside the message pane without breaking words.",
                        5,
                    ),
                    notice("key rotated (member key #2, server key #4)", 6),
                    notice(
                        "⚠ unreadable message from mallory (#9): not a member of the group at this epoch (V5)",
                        7,
                    ),
                    notice("dave was removed", 8),
                    notice("erin left", 9),
                    notice("frank declined the invitation", 9),
                    msg("alice", "Line one\nline two", 10),
                ],
            ),
            group("ops", 2, 3, vec![]),
            GroupView {
                state: GroupState::Removed,
                ..group(
                    "old-team",
                    3,
                    0,
                    vec![notice("you were removed by alice", 1)],
                )
            },
            GroupView {
                state: GroupState::Deleted,
                ..group(
                    "launch",
                    4,
                    0,
                    vec![notice("the group was deleted by alice", 1)],
                )
            },
        ];
        app.members = vec![
            MemberView {
                user: "alice".into(),
                rights: duokey_crypto::Rights::ALL,
                trust: Some(Trust::Verified),
            },
            MemberView {
                user: "bob".into(),
                rights: duokey_crypto::Rights::FORMER_OWNER,
                trust: None,
            },
            MemberView {
                user: "carol".into(),
                rights: duokey_crypto::Rights::NONE,
                trust: Some(Trust::Unverified),
            },
            MemberView {
                user: "dave".into(),
                rights: duokey_crypto::Rights::NONE,
                trust: Some(Trust::Code),
            },
            MemberView {
                user: "mallory".into(),
                rights: duokey_crypto::Rights::NONE,
                trust: Some(Trust::KeyChanged),
            },
        ];
        app.connection = Connection::Online;
        app.input.insert("see you at 10");
        app
    }

    fn render(app: &App, w: u16, h: u16) -> Buffer {
        let mut screen = Screen::new(TestBackend::new(w, h)).unwrap();
        screen.draw(|f| draw(f, app)).unwrap();
        screen.backend().buffer().clone()
    }

    fn text(buf: &Buffer) -> String {
        let area = buf.area;
        let mut out = String::new();
        for y in 0..area.height {
            let mut row = String::new();
            for x in 0..area.width {
                row.push_str(buf[(x, y)].symbol());
            }
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out
    }

    fn snapshot(name: &str, app: &App, w: u16, h: u16) {
        let got = text(&render(app, w, h));
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/chat/snapshots")
            .join(format!("{name}.txt"));
        if std::env::var_os("DUOKEY_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing {}; run with DUOKEY_UPDATE_SNAPSHOTS=1",
                path.display()
            )
        });
        assert_eq!(got, want, "screen {name} differs from {}", path.display());
    }

    #[test]
    fn chat_80x24_with_every_notice_kind() {
        snapshot("chat_80x24", &chatting(), 80, 24);
    }

    #[test]
    fn wide_screen_shows_members_with_trust_and_invitations() {
        let mut app = chatting();
        app.invitations = vec![InviteView {
            id: "ab".into(),
            group: "board".into(),
            from: "carol".into(),
            needs_code: false,
        }];
        snapshot("wide_120x30", &app, 120, 30);
        app.focus = Focus::Invitations;
        let t = text(&render(&app, 120, 30));
        assert!(t.contains("Invitations ◀"));
        assert!(t.lines().nth(29).unwrap().contains("a accept · d decline"));
    }

    #[test]
    fn members_panel_on_request_at_80_columns() {
        let mut app = chatting();
        app.show_members = Some(true);
        snapshot("members_80x24", &app, 80, 24);
    }

    #[test]
    fn closed_group_notices() {
        let mut app = chatting();
        app.select("old-team");
        app.members.clear();
        snapshot("removed_80x24", &app, 80, 24);
        app.select("launch");
        let t = text(&render(&app, 80, 24));
        assert!(t.contains("-- the group was deleted by alice"), "{t}");
        assert!(t.contains("launch · deleted · member key #2"), "{t}");
    }

    #[test]
    fn offline_state_is_visible() {
        let mut app = chatting();
        app.connection = Connection::Offline {
            reason: "CS unreachable: connection refused".into(),
            retry_secs: 8,
        };
        let t = text(&render(&app, 80, 24));
        let status = t.lines().nth(23).unwrap();
        assert!(status.contains("○ offline, retry in 8s"), "{status}");
        assert!(status.contains("connection refused"), "{status}");
    }

    #[test]
    fn welcome_screen_and_help() {
        let mut app = App::new("carol", true);
        app.connection = Connection::Connecting;
        snapshot("welcome_80x24", &app, 80, 24);
        app.show_help = true;
        snapshot("help_80x24", &app, 80, 24);
    }

    #[test]
    fn scrollback_and_multiline_input() {
        let mut app = chatting();
        app.groups[0].lines = (0..40)
            .map(|i| msg("alice", &format!("message {i}"), i))
            .collect();
        app.scroll = 10;
        app.input = Default::default();
        app.input.insert("first line\nsecond line");
        snapshot("scrolled_80x24", &app, 80, 24);
    }

    #[test]
    fn no_color_draws_without_colours_and_escapes_are_neutralised() {
        let mut app = chatting();
        app.groups[0]
            .lines
            .push(msg("mallory", "\u{1b}[2Jgotcha", 11));
        let coloured = render(&app, 80, 24);
        assert!(coloured.content.iter().any(|c| c.fg != Color::Reset));
        app.color = false;
        let plain = render(&app, 80, 24);
        assert!(
            plain
                .content
                .iter()
                .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
        );
        let t = text(&plain);
        assert!(t.contains("mallory: �[2Jgotcha"), "{t}");
        assert!(!t.contains('\u{1b}'));
    }

    #[test]
    fn a_window_too_small_says_so_instead_of_a_broken_screen() {
        let t = text(&render(&chatting(), 30, 8));
        assert!(t.contains("Window too small (30×8)"), "{t}");
        assert!(t.contains("at least 40×10"), "{t}");
        let t = text(&render(&chatting(), 40, 10));
        assert!(!t.contains("too small"), "{t}");
        assert!(
            t.contains("Message"),
            "the input box at the minimum size: {t}"
        );
    }

    #[test]
    fn the_verify_panel_shows_the_whole_safety_number_and_fingerprint() {
        let mut app = chatting();
        let number = "12345 67890 ".repeat(6).trim_end().to_owned();
        let fingerprint = "ab".repeat(32);
        app.panel = Some((
            " Verify bob · any key closes ".into(),
            vec![
                number.clone(),
                format!("Their certificate's fingerprint: {fingerprint}"),
            ],
        ));
        let t = text(&render(&app, 80, 24));
        assert!(
            t.contains(&number[..35]) && t.contains(&number[36..]),
            "{t}"
        );
        let flat: String = t.split_whitespace().collect::<Vec<_>>().join("");
        assert!(flat.contains(&fingerprint), "{t}");
    }
}
