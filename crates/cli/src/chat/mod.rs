//! `duokey chat [GROUP]`: the interactive terminal UI.
//!
//! One task owns the [`Terminal`]; it draws, then waits for whichever comes
//! first: a key (read on a thread of its own), an event of the live
//! streams, or the next reconnection attempt (back-off 1 s doubling to
//! 30 s). The cached history is on screen before the first connection.
//! ratatui restores the terminal on exit and on panic.

pub mod app;
pub mod command;
pub mod ui;

use crate::actions::{self, Action as Ask, Done};
use app::{Action, App, Connection, GroupView, InviteView, MemberView, Tone};
use command::Command;
use duokey_crypto::GroupId;
use duokey_crypto::UserId;
use duokey_terminal::{
    Backoff, Error, GroupPolicy, GroupState, Live, LiveEvent, Result, SendOutcome, Terminal,
    Waiting,
};
use ratatui::crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste, Event};
use ratatui::crossterm::execute;
use std::ops::ControlFlow;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the status line starts while a message waits for the server.
const NOT_SENT: &str = "not sent yet";
/// Longest wait for the streams to open and the first sync.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether colours are allowed (<https://no-color.org>).
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs the chat until the user quits.
pub async fn run(mut t: Terminal, group: Option<String>) -> Result<()> {
    t.keep_warnings();
    let mut app = App::new(t.user().as_str(), color_allowed());
    refresh(&t, &mut app).await?;
    if let Some(spec) = group {
        // A group joined since the last sync is not in the profile yet:
        // sync once before saying it does not exist.
        let gid = match t.resolve_group(&spec).await {
            Err(duokey_terminal::Error::NotFound(_)) => {
                t.sync().await?;
                refresh(&t, &mut app).await?;
                t.resolve_group(&spec).await?
            }
            other => other?,
        };
        app.select(&hex::encode(gid));
    }
    refresh_members(&t, &mut app).await;
    let mut screen = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableBracketedPaste);
    if let Ok(size) = screen.size() {
        app.screen_width = size.width;
    }
    let result = event_loop(&mut screen, &mut t, &mut app).await;
    let _ = execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    result
}

/// Fetches every active group's new messages (after a reconnection); a
/// failure here is retried by the next event or reconnection.
async fn catch_up_messages(t: &mut Terminal) {
    let Ok(groups) = t.list_groups().await else {
        return;
    };
    for g in groups.into_iter().filter(|g| g.state == GroupState::Active) {
        let _ = t.sync_messages(&g.group_id).await;
    }
}

/// Terminal events, read on a thread (crossterm's reads block).
fn key_events() -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if tx.blocking_send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next live event, or never when offline.
async fn next_live(live: &mut Option<Live>) -> Result<LiveEvent> {
    match live {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

async fn event_loop(
    screen: &mut ratatui::DefaultTerminal,
    t: &mut Terminal,
    app: &mut App,
) -> Result<()> {
    let mut keys = key_events();
    let mut link = Link {
        live: None,
        backoff: Backoff::default(),
        retry_at: Instant::now(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some(w) = t.take_warnings().pop() {
            app.say(Tone::Error, w);
        }
        screen.draw(|f| ui::draw(f, app))?;
        tokio::select! {
            ev = keys.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                if on_key(t, app, ev).await.is_break() {
                    return Ok(());
                }
            }
            ev = next_live(&mut link.live) => match ev {
                Ok(ev) => on_live(t, app, ev).await,
                Err(e) => link.lost(app, e.to_string()),
            },
            () = tokio::time::sleep_until(link.retry_at), if link.live.is_none() => {
                link.reconnect(t, app).await;
            }
            _ = tick.tick(), if link.live.is_none() => link.count_down(app),
        }
    }
}

/// A key or paste: what the user asked for; `Break` to quit.
async fn on_key(t: &mut Terminal, app: &mut App, ev: Event) -> ControlFlow<()> {
    match app.on_event(ev) {
        Action::Quit => return ControlFlow::Break(()),
        Action::None => {}
        Action::Switched => refresh_members(t, app).await,
        Action::Send(text) => send(t, app, &text).await,
        Action::Run(c) => {
            if let Err(e) = run_command(t, app, c).await {
                app.say(Tone::Error, e.to_string());
            }
            let _ = refresh(t, app).await;
            refresh_members(t, app).await;
        }
    }
    ControlFlow::Continue(())
}

/// A live event: applied, then only the group it names is re-read (an
/// inbox item may touch any group, so then all are).
async fn on_live(t: &mut Terminal, app: &mut App, ev: LiveEvent) {
    match t.on_live(ev).await {
        Ok(update) => {
            let _ = match update.group {
                Some(gid) => refresh_list(t, app)
                    .await
                    .and(refresh_history(t, app, &gid).await),
                None => refresh(t, app).await,
            };
            if update.group.is_some() {
                refresh_members(t, app).await;
            }
        }
        Err(e) => app.say(Tone::Error, e.to_string()),
    }
}

/// The live streams and, while they are down, when to open them again.
struct Link {
    live: Option<Live>,
    backoff: Backoff,
    retry_at: Instant,
}

impl Link {
    /// The streams ended: offline, first pause.
    fn lost(&mut self, app: &mut App, reason: String) {
        self.live = None;
        self.backoff.reset();
        self.offline(app, reason);
    }

    /// Offline until the next pause of the back-off is over.
    fn offline(&mut self, app: &mut App, reason: String) {
        let pause = self.backoff.next_pause();
        self.retry_at = Instant::now() + pause;
        app.connection = Connection::Offline {
            reason,
            retry_secs: whole_secs(pause),
        };
    }

    /// The status line's countdown to the next try.
    fn count_down(&self, app: &mut App) {
        if let Connection::Offline { retry_secs, .. } = &mut app.connection {
            *retry_secs = whole_secs(self.retry_at.saturating_duration_since(Instant::now()));
        }
    }

    /// Tries to open the streams; online and caught up, or offline again.
    async fn reconnect(&mut self, t: &mut Terminal, app: &mut App) {
        match tokio::time::timeout(CONNECT_TIMEOUT, t.live()).await {
            Ok(Ok(l)) => {
                self.live = Some(l);
                self.backoff.reset();
                app.connection = Connection::Online;
                back_online(t, app).await;
            }
            Ok(Err(e)) => self.offline(app, e.to_string()),
            Err(_) => self.offline(app, "the servers did not answer in time".into()),
        }
    }
}

/// The streams are open again: what was missed is fetched and shown.
async fn back_online(t: &mut Terminal, app: &mut App) {
    // Messages posted while the streams were down reach no stream: fetch
    // them now, not at the next event.
    catch_up_messages(t).await;
    // Opening the streams synced, which sent the outbox: a "not sent yet"
    // note is no longer true.
    let waiting = app
        .status
        .as_ref()
        .is_some_and(|(_, s)| s.starts_with(NOT_SENT));
    if waiting && matches!(t.queued().await, Ok(0)) {
        app.say(Tone::Info, "back online: the queued messages were sent");
    }
    let _ = refresh(t, app).await;
    refresh_members(t, app).await;
}

/// Groups, histories and invitations from the profile (no server call).
async fn refresh(t: &Terminal, app: &mut App) -> Result<()> {
    refresh_list(t, app).await?;
    let ids: Vec<GroupId> = app.groups.iter().map(|g| g.id).collect();
    for id in ids {
        refresh_history(t, app, &id).await?;
    }
    Ok(())
}

/// One group's history from the profile.
async fn refresh_history(t: &Terminal, app: &mut App, id: &GroupId) -> Result<()> {
    let lines = t.history(id).await?;
    app.set_history(id, lines);
    Ok(())
}

/// The group list (with epochs and states) and the invitations.
async fn refresh_list(t: &Terminal, app: &mut App) -> Result<()> {
    let mut groups = Vec::new();
    for g in t.list_groups().await? {
        groups.push(GroupView {
            id: g.group_id,
            name: g.name,
            state: g.state,
            epoch: (g.rn1_version, g.rn2_version),
            unread: 0,
            lines: Vec::new(),
        });
    }
    app.set_groups(groups);
    app.invitations = t
        .invitations()
        .await?
        .into_iter()
        .map(|i| InviteView {
            id: i.invite_id.to_hex(),
            group: i.group_name,
            from: i.from,
            needs_code: i.needs_code,
        })
        .collect();
    app.invite_selected = app
        .invite_selected
        .min(app.invitations.len().saturating_sub(1));
    if app.invitations.is_empty() {
        app.focus = app::Focus::Input;
    }
    Ok(())
}

/// The member panel of the shown group, with each contact's trust.
async fn refresh_members(t: &Terminal, app: &mut App) {
    let Some(g) = app.current().filter(|g| g.state == GroupState::Active) else {
        app.members.clear();
        return;
    };
    let Ok(members) = t.members(&g.id).await else {
        app.members.clear();
        return;
    };
    let mut out = Vec::new();
    for m in members {
        let trust = if m.user == app.me {
            None
        } else {
            t.trust(&m.user).await.ok()
        };
        out.push(MemberView {
            user: m.user,
            rights: m.rights,
            trust,
        });
    }
    app.members = out;
}

fn shown_group(app: &App) -> Result<GroupId> {
    app.current().map(|g| g.id).ok_or_else(|| {
        Error::User("no group yet: /create NAME, or accept an invitation (F2)".into())
    })
}

async fn send(t: &mut Terminal, app: &mut App, text: &str) {
    let outcome = match shown_group(app) {
        Ok(gid) => t.send(&gid, text).await.map(|o| (gid, o)),
        Err(e) => Err(e),
    };
    match outcome {
        Ok((gid, SendOutcome::Posted(_))) => {
            if let Err(e) = t.sync_messages(&gid).await {
                app.say(Tone::Error, e.to_string());
            }
        }
        Ok((gid, SendOutcome::Queued(Waiting::Key))) => {
            let why = t.key_wait(&gid).await.ok().flatten();
            let why = why.unwrap_or_else(|| "the group's new key has not arrived yet".to_owned());
            app.say(
                Tone::Info,
                format!("queued: {why}; sent as soon as it arrives"),
            )
        }
        Ok((_, SendOutcome::Queued(Waiting::Server))) => app.say(
            Tone::Error,
            format!("{NOT_SENT}: the server is unreachable; queued and sent as soon as it is back"),
        ),
        Err(e) => app.say(Tone::Error, e.to_string()),
    }
    let _ = refresh(t, app).await;
}

async fn run_command(t: &mut Terminal, app: &mut App, c: Command) -> Result<()> {
    let Some(action) = ask_of(c, app)? else {
        return Ok(());
    };
    let group = app.current().map(|g| g.id);
    match actions::perform(t, group, action).await? {
        Done::Created(g) => {
            refresh(t, app).await?;
            app.select(&g.group_id.to_hex());
            app.say(
                Tone::Info,
                format!("created {}; /invite USER to add people", g.name),
            );
        }
        Done::Verified(v) => verify_panel(app, &v),
        Done::InvitedCode(c, user, _) => code_panel(app, &c, &user),
        done => app.say(Tone::Info, done.to_string()),
    }
    Ok(())
}

/// Seconds shown for a wait, rounded up: a jittered 0.7 s back-off reads
/// "retry in 1s", not "retry in 0s".
fn whole_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// The shared action a slash command asks for; `None` for the commands the
/// chat handles itself.
fn ask_of(c: Command, app: &App) -> Result<Option<Ask>> {
    let chosen = |spec: Option<String>| {
        spec.or_else(|| {
            app.invitations
                .get(app.invite_selected)
                .map(|i| i.id.clone())
        })
        .ok_or_else(|| Error::User("no pending invitation".into()))
    };
    Ok(Some(match c {
        Command::Create(name) => Ask::Create(name, GroupPolicy::default()),
        Command::Invite {
            user,
            can_invite,
            can_remove,
            code,
        } => {
            let (user, rights) = (UserId::new(user)?, actions::rights(can_invite, can_remove));
            if code {
                Ask::InviteCode(user, rights, duokey_terminal::DEFAULT_CODE_TTL_MS)
            } else {
                Ask::Invite(user, rights)
            }
        }
        Command::Remove(user) => Ask::Remove(UserId::new(user)?),
        Command::Leave => Ask::Leave,
        Command::Transfer(user) => Ask::Transfer(UserId::new(user)?),
        Command::Rotate { rn1 } => Ask::Rotate(rn1),
        Command::Verify { user, confirm } => Ask::Verify(UserId::new(user)?, confirm),
        Command::Accept(spec) => Ask::Accept(chosen(spec)?),
        Command::AcceptCode(spec, code) => Ask::AcceptCode(
            chosen(spec)?,
            duokey_crypto::invite_code::InviteCode::parse(&code)?,
        ),
        Command::Decline(spec) => Ask::Decline(chosen(spec)?),
        Command::Members | Command::Help | Command::Quit => return Ok(None),
    }))
}

/// `/verify`: the safety number, the fingerprint and how the key was
/// confirmed, in a panel.
fn verify_panel(app: &mut App, v: &duokey_terminal::contacts::Verification) {
    let (tone, state) = match (v.key_changed, v.verified) {
        (true, _) => (
            Tone::Error,
            "KEY CHANGED — compare, then /verify USER --confirm",
        ),
        (false, true) => (Tone::Info, "verified"),
        (false, false) => (
            Tone::Info,
            "compare out of band, then /verify USER --confirm",
        ),
    };
    app.say(tone, format!("{}: {state}", v.user));
    app.panel = Some((
        format!(" Verify {} · any key closes ", v.user),
        vec![
            "Safety number (compare it with theirs, in person or by a call):".into(),
            String::new(),
            v.safety_number.clone(),
            String::new(),
            format!("Their certificate's fingerprint: {}", v.fingerprint),
            format!("Key confirmed by: {}", v.confirmed_by),
            String::new(),
            state.to_owned(),
        ],
    ));
}

/// `/invite USER --code`: the code to tell, in a panel.
fn code_panel(app: &mut App, c: &duokey_terminal::CodeInvitation, user: &UserId) {
    app.say(Tone::Info, format!("invited {user} with a code"));
    app.panel = Some((
        format!(" Code for {user} · any key closes "),
        vec![
            format!("Tell {user} this code yourself (in person or by a call, not in this chat):"),
            String::new(),
            format!("    {}", c.code),
            String::new(),
            format!(
                "It works once, until {}. They accept with F2 in their chat, or with",
                crate::when::when(c.expires_at_ms, duokey_terminal::now_ms())
            ),
            "`duokey accept GROUP --code`, which asks for it; your terminal checks".into(),
            "it and then adds them.".into(),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn waits_are_shown_in_whole_seconds_rounded_up() {
        let ms = Duration::from_millis;
        assert_eq!(super::whole_secs(ms(700)), 1);
        assert_eq!(super::whole_secs(ms(1000)), 1);
        assert_eq!(super::whole_secs(ms(1001)), 2);
        assert_eq!(super::whole_secs(ms(0)), 0);
    }
}
