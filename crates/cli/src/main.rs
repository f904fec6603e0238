//! `duokey`: the Duokey terminal (SPEC §8). Every command first syncs
//! (inbox, grants, pending invitations and RN1 deliveries) and then acts.

mod actions;
mod chat;
mod demo;
mod display;
mod session;
mod when;

use actions::Action;
use clap::{Parser, Subcommand};
use duokey_crypto::GroupId;
use duokey_crypto::UserId;
use duokey_terminal::{
    ClientConfig, Error, ErrorKind, GroupState, Line, SendOutcome, Terminal, Waiting,
};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use zeroize::Zeroizing;

/// Duokey: group chat whose group keys are made of two random values that
/// travel by two routes, so no server operator can read the messages and no
/// member who left can read what is said afterwards.
#[derive(Parser, Debug)]
#[command(name = "duokey", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Profile directory (default: $DUOKEY_HOME, else ~/.duokey).
    #[arg(long, global = true, env = "DUOKEY_HOME")]
    home: Option<PathBuf>,
    /// Print JSON: one object (or array) per command, one object per line
    /// for streams; errors as {"error": CODE, "message": TEXT} on stderr.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrol this terminal: a new identity key and a certificate for USER.
    Init {
        /// Your user id (as enrolled by the administrator).
        #[arg(long)]
        user: String,
        /// The one-time token from `duokey-server enroll`; `-` reads it from
        /// standard input, and `DUOKEY_TOKEN` may hold it, so that it does
        /// not show in the process list.
        #[arg(long, env = "DUOKEY_TOKEN", hide_env_values = true)]
        token: String,
        /// The client.toml written by the server.
        #[arg(long)]
        config: PathBuf,
        /// Store secrets without a passphrase (anyone who can read the profile
        /// can read your messages).
        #[arg(long)]
        no_passphrase: bool,
        /// Keep decrypted messages on this terminal for ever. By default
        /// they are erased once older than their group's retention (30 days
        /// unless the group chose otherwise), like the keys that opened them.
        #[arg(long)]
        keep_history: bool,
        /// A password account (the token came from `duokey-server enroll
        /// USER --password-setup`): choose a password (asked twice, or
        /// `DUOKEY_PASSWORD`). It never leaves this terminal (OPAQUE); the
        /// server gives a 30-day certificate for each login.
        #[arg(long)]
        password: bool,
    },
    /// Groups: create, list, members, invite, remove, leave, transfer,
    /// delete, rotate, policy, verify.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Invitations waiting for your answer; with --sent, those you sent.
    Invites {
        /// The invitations you sent, and where each stands.
        #[arg(long)]
        sent: bool,
    },
    /// Accept an invitation (by invite id, group id or group name).
    Accept {
        /// Invite id, group id or group name.
        invite: String,
        /// The code the inviter told you (an invitation sent with
        /// `--code`): it proves to both of you that nobody else answered.
        /// Given alone (`--code`), it is asked for, or read from standard
        /// input, so that it stays out of your shell history.
        #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "CODE")]
        code: Option<String>,
    },
    /// Decline an invitation.
    Decline {
        /// Invite id, group id or group name.
        invite: String,
    },
    /// Send TEXT (or standard input) to GROUP.
    Send {
        /// Group id, unique id prefix or unique name.
        group: String,
        /// The message; read from standard input if absent (one trailing
        /// newline is dropped, inner newlines are kept).
        text: Option<String>,
    },
    /// Show GROUP's history; with --follow, then live messages and notices.
    Read {
        /// Group id, unique id prefix or unique name.
        group: String,
        /// Keep running and print new messages until interrupted.
        #[arg(long)]
        follow: bool,
        /// Show only the last N lines of the history.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Show only what came after a date (2026-11-30, UTC) or within a
        /// time back from now (90m, 2h, 3d).
        #[arg(long, value_name = "DATE|DURATION")]
        since: Option<String>,
    },
    /// Fetch everything new now: invitations, key changes, messages, and
    /// send what is queued.
    Sync,
    /// Show a contact's certificate fingerprint and your safety number.
    Verify {
        /// The contact.
        user: String,
        /// Record that the safety numbers matched (also accepts a changed key).
        #[arg(long)]
        confirm: bool,
    },
    /// You, your groups and their key versions, and what waits to be sent.
    Status,
    /// Renew this terminal's certificate now. It also renews by itself at a
    /// sync once two thirds of its lifetime (365 days) have passed. The
    /// identity key stays, so contacts see no change.
    Renew {
        /// A password account logs in again with its password (asked, or
        /// `DUOKEY_PASSWORD`): also once the certificate has expired.
        #[arg(long)]
        password: bool,
    },
    /// Interactive terminal UI: groups, messages, members, invitations
    /// (F1 inside shows the keys and commands). No --json: use `read
    /// --follow --json` in programs.
    Chat {
        /// Group to open.
        group: Option<String>,
    },
    /// A self-contained, self-checking walkthrough on in-process servers.
    Demo {
        /// Run it on a cluster instead: two GMS+AS and two CS nodes in this
        /// process, on PostgreSQL and NATS (a schema of its own, dropped at
        /// the end), each terminal failing over between the nodes.
        #[arg(long)]
        cluster: bool,
        /// The PostgreSQL database of `--cluster`.
        #[arg(
            long,
            requires = "cluster",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        postgres: String,
        /// The NATS server of `--cluster`.
        #[arg(long, requires = "cluster", default_value = "nats://127.0.0.1:4222")]
        nats: String,
    },
    /// Keep the profile unlocked: asks the passphrase once, then commands
    /// stop asking for it until `duokey lock`, the time given, or the end of
    /// this login session. The key stays in memory only, in a background
    /// process that answers this user alone.
    Unlock {
        /// How long, e.g. 30m, 8h or 1d.
        #[arg(long = "for", value_parser = parse_duration, default_value = "8h")]
        duration: u64,
    },
    /// Lock the profile now: the unlocked session's key is erased from memory.
    Lock,
    /// This profile's settings.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Who this terminal is: user, profile, certificate, servers, and
    /// whether the profile is unlocked. Contacts no server.
    Whoami,
    /// The unlocked session's background process (started by `unlock`).
    #[command(hide = true)]
    Agent {
        /// Seconds to hold the key.
        #[arg(long)]
        seconds: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// Use the servers of another client.toml (same organisation: the
    /// servers moved, or another node of them).
    SetServers {
        /// The client.toml the administrator gave.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a group; prints its id.
    Create {
        /// Group name (1–128 bytes).
        name: String,
        /// How often the server part of the group key is replaced, e.g. 1h,
        /// 30m, 90s (default 1h).
        #[arg(long, value_parser = parse_duration)]
        rotate_every: Option<u64>,
        /// How long the previous key stays accepted after a rotation, e.g. 5m
        /// (default 5 minutes).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<u64>,
        /// Do not replace the members' part of the key when a member is
        /// removed or leaves (weaker: a removed member helped by the group
        /// server's operator could then read on).
        #[arg(long)]
        no_rotate_rn1_on_remove: bool,
    },
    /// Your groups: those you are a member of; with --all also those you
    /// left, were removed from, or that were deleted.
    List {
        /// Also groups you are no longer a member of.
        #[arg(long)]
        all: bool,
    },
    /// Remove a group you are no longer a member of from this terminal,
    /// with its history and keys (frees its name).
    Forget {
        /// Group.
        group: String,
    },
    /// Members and rights.
    Members {
        /// Group.
        group: String,
    },
    /// Invite USER.
    Invite {
        /// Group.
        group: String,
        /// The invitee.
        user: String,
        /// Let them invite others.
        #[arg(long)]
        can_invite: bool,
        /// Let them remove members and rotate keys.
        #[arg(long)]
        can_remove: bool,
        /// Show a one-time code to tell them yourself (in person, by
        /// phone): only someone who types it can accept, so neither the
        /// servers nor the organisation's CA can answer in their name.
        #[arg(long)]
        code: bool,
        /// How long the code stays usable.
        #[arg(long, value_parser = parse_duration, default_value = "24h", requires = "code")]
        code_ttl: u64,
    },
    /// Cancel your invitation to USER (if they accept it later, they are
    /// not added).
    Uninvite {
        /// Group.
        group: String,
        /// The invitee.
        user: String,
    },
    /// Remove USER: the group key is replaced (both parts, unless the group
    /// opted out), so they cannot read what is said afterwards.
    Remove {
        /// Group.
        group: String,
        /// The member.
        user: String,
    },
    /// Leave the group.
    Leave {
        /// Group.
        group: String,
    },
    /// Replace the group key now (the server part; with --rn1 also the
    /// members' part).
    Rotate {
        /// Group.
        group: String,
        /// Also replace the members' part of the key (any member may).
        #[arg(long)]
        rn1: bool,
    },
    /// Make another member the group's owner (owner only). You keep the
    /// invite and remove rights, and may then leave. Asks for confirmation
    /// on a terminal.
    Transfer {
        /// Group.
        group: String,
        /// The member who becomes the owner.
        user: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Delete the group for every member (owner only). Asks for
    /// confirmation on a terminal.
    Delete {
        /// Group.
        group: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Show the code of the group's signed membership history, to compare
    /// with the other members out of band: different codes at the same change
    /// mean the group server shows members different histories.
    Verify {
        /// Group.
        group: String,
    },
    /// Show the group's policy; with options, change it (the owner only).
    /// Every member's terminal checks the owner's signature and follows the
    /// new policy from the next key version on.
    Policy {
        /// Group.
        group: String,
        /// Period of the key rotation, e.g. 1h, 30m (at least 60s).
        #[arg(long, value_parser = parse_duration)]
        rotate_every: Option<u64>,
        /// How long the previous key stays accepted after a rotation, e.g. 5m.
        #[arg(long, value_parser = parse_duration)]
        grace: Option<u64>,
        /// How long history and keys are kept, e.g. 30d (at least the rotation period).
        #[arg(long, value_parser = parse_duration)]
        retention: Option<u64>,
        /// How long members wait for a new member key before one of them makes another (the next member one wait later), e.g. 2m.
        #[arg(long, value_parser = parse_duration)]
        rn1_wait: Option<u64>,
        /// Whether removals and leaves also replace the members' shared key
        /// (on: a removed member colluding with the GMS operator cannot read).
        #[arg(long, value_parser = parse_on_off, value_name = "on|off")]
        rotate_rn1_on_remove: Option<bool>,
    },
}

/// `on` or `off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

/// Exit codes and JSON, shown by `duokey --help` (docs/PROTOCOL.md §9).
const AFTER_HELP: &str = "\
Exit codes:
  0  done
  1  failed: the profile, the disk, or a bug (the message says which)
  2  usage: malformed or ambiguous arguments; fix the command
  3  not found: no such profile, group, invitation or contact
  4  refused: a rule or a server refused (rights, membership, a changed key)
  5  network: a server is unreachable, unavailable or rate-limiting; nothing
     was lost, retry later
  6  passphrase: wrong, or none could be read (run `duokey unlock` in a
     terminal, or set DUOKEY_PASSPHRASE)

With --json, every command prints JSON on stdout (streams: one object per
line; `read` objects carry \"kind\": \"message\", \"notice\",
\"unreadable\" or \"warning\") and errors print {\"error\": CODE, \"message\": TEXT} on
stderr, CODE being usage, not_found, refused, network, passphrase or failed.
JSON carries texts exactly as sent; human output shows control characters
and direction marks from the network as \u{fffd}.

The passphrase comes from an unlocked session (`duokey unlock`), else
DUOKEY_PASSPHRASE, else a prompt.";

/// The exit code of an error class (`duokey --help`).
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Failed => 1,
        ErrorKind::Usage => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::Refused => 4,
        ErrorKind::Network => 5,
        ErrorKind::Passphrase => 6,
    }
}

/// A duration on the command line (`90s`, `30m`, `1h`, `2d`), in seconds.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    duokey_pki::clock::parse_duration(s)
}

fn home(cli: &Cli) -> PathBuf {
    cli.home.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".duokey")
    })
}

fn passphrase(confirm: bool) -> duokey_terminal::Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("DUOKEY_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    let p = prompt("Passphrase: ")?;
    if confirm {
        let again = prompt("Passphrase again: ")?;
        if *again != *p {
            return Err(Error::User("the passphrases differ".into()));
        }
    }
    if p.is_empty() {
        return Err(Error::User(
            "an empty passphrase is not allowed; use --no-passphrase to store keys unprotected"
                .into(),
        ));
    }
    Ok(p)
}

/// Whether this process asked for the passphrase at a prompt (then, once
/// per profile, it offers to keep the profile unlocked).
static PROMPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn prompt(question: &str) -> duokey_terminal::Result<Zeroizing<String>> {
    PROMPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    rpassword::prompt_password(question)
        .map(Zeroizing::new)
        .map_err(|e| {
            Error::NoPassphrase(format!(
                "the profile is locked and its passphrase cannot be asked here ({e}): \
                 run `duokey unlock` in a terminal first, or set DUOKEY_PASSPHRASE"
            ))
        })
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

fn print_line(json: bool, line: &Line) {
    match (json, line) {
        (true, line) => print_json(line),
        (false, Line::Message(m)) => println!(
            "{}",
            display::entry(
                &format!(
                    "{} {}: ",
                    when::when(m.sent_at_ms, duokey_pki::clock::now_ms()),
                    m.sender
                ),
                &m.text
            )
        ),
        (false, Line::Notice(n)) => println!(
            "{}",
            display::entry(
                &format!("{} -- ", when::when(n.at_ms, duokey_pki::clock::now_ms())),
                &n.notice
            )
        ),
    }
}

/// An invite code asked for at the terminal (not echoed), or the first
/// line of standard input when it is not a terminal.
fn ask_code() -> duokey_terminal::Result<Zeroizing<String>> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return rpassword::prompt_password("Invite code (from the person who invited you): ")
            .map(Zeroizing::new)
            .map_err(|e| Error::User(format!("cannot read the code: {e}")));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::User(format!("cannot read the code from standard input: {e}")))?;
    Ok(Zeroizing::new(line.trim().to_owned()))
}

/// A message from standard input: one trailing newline (LF or CRLF), as
/// `echo` and editors add, is not part of it; inner newlines are.
fn message_from_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Whether a command can answer from the profile alone when the servers
/// cannot be reached: reading what this terminal holds, and
/// `send`, which queues.
fn works_offline(c: &Command) -> bool {
    matches!(
        c,
        Command::Send { .. }
            | Command::Status
            | Command::Invites { .. }
            | Command::Read { .. }
            | Command::Group {
                command: GroupCommand::List { .. } | GroupCommand::Members { .. }
            }
    )
}

/// Says on standard error that the answer comes from the profile (with
/// `--json`, as one JSON object: `{"warning":"offline","message":…}`).
fn offline_note(e: &Error, json: bool) {
    let text = format!(
        "offline: {e}. Showing what this terminal holds; nothing is lost, run the command again once the server is reachable."
    );
    match json {
        true => eprintln!(
            "{}",
            serde_json::json!({"warning": "offline", "message": text})
        ),
        false => eprintln!("{text}"),
    }
}

/// Opens the profile and syncs (SPEC §8). Returns whether the servers could
/// not be reached by a command that works offline (it then answers from
/// the profile; `send` says its message is queued).
async fn open(cli: &Cli) -> duokey_terminal::Result<(Terminal, bool)> {
    let mut t = open_profile(cli).await?;
    match t.sync().await {
        Ok(()) => Ok((t, false)),
        Err(e) if e.kind() == ErrorKind::Network && works_offline(&cli.command) => {
            if !matches!(cli.command, Command::Send { .. }) {
                offline_note(&e, cli.json);
            }
            Ok((t, true))
        }
        Err(e) => Err(e),
    }
}

/// Opens the profile (agent, else passphrase) and, after a typed
/// passphrase, offers once to keep it unlocked.
async fn open_profile(cli: &Cli) -> duokey_terminal::Result<Terminal> {
    let t = Terminal::open(&home(cli), || passphrase(false)).await?;
    if PROMPTED.load(std::sync::atomic::Ordering::Relaxed) && !cli.json {
        session::offer(&t).await?;
    }
    Ok(t)
}

async fn run(cli: Cli) -> duokey_terminal::Result<()> {
    let out = Out { json: cli.json };
    if let Some(done) = without_profile(&cli, out).await {
        return done;
    }
    let (mut t, offline) = open(&cli).await?;
    with_profile(&mut t, cli.command, out, offline).await
}

/// The commands that run before (or instead of) opening and syncing the
/// profile; `None` for the others.
async fn without_profile(cli: &Cli, out: Out) -> Option<duokey_terminal::Result<()>> {
    Some(match &cli.command {
        Command::Demo {
            cluster,
            postgres,
            nats,
        } => {
            let cluster = cluster.then(|| demo::Cluster {
                postgres: postgres.clone(),
                nats: nats.clone(),
            });
            demo::run(cli.json, cluster).await
        }
        Command::Init {
            user,
            token,
            config,
            no_passphrase,
            keep_history,
            password,
        } => {
            let how = NewProfile {
                token,
                no_passphrase: *no_passphrase,
                keep_history: *keep_history,
                password: *password,
            };
            init_command(cli, out, user, config, how).await
        }
        Command::Chat { .. } if cli.json => Err(Error::User(
            "duokey chat is interactive and prints no JSON; programs use `duokey read GROUP --follow --json`"
                .into(),
        )),
        Command::Chat { group } => match open_profile(cli).await {
            Ok(t) => chat::run(t, group.clone()).await,
            Err(e) => Err(e),
        },
        Command::Unlock { duration } => unlock(cli, out, *duration).await,
        Command::Lock => {
            lock(cli, out).await;
            Ok(())
        }
        Command::Agent { seconds } => session::serve(&home(cli), *seconds).await,
        Command::Whoami => whoami(cli, out).await,
        Command::Profile {
            command: ProfileCommand::SetServers { config },
        } => set_servers(cli, out, config).await,
        _ => return None,
    })
}

/// The commands that work on an open profile (synced first unless offline).
async fn with_profile(
    t: &mut Terminal,
    command: Command,
    out: Out,
    offline: bool,
) -> duokey_terminal::Result<()> {
    match command {
        Command::Init { .. }
        | Command::Demo { .. }
        | Command::Chat { .. }
        | Command::Unlock { .. }
        | Command::Lock
        | Command::Whoami
        | Command::Profile { .. }
        | Command::Agent { .. } => Ok(()),
        Command::Sync => sync(t, out).await,
        Command::Status => status(t, out, offline).await,
        Command::Group { command } => group(t, command, out).await,
        Command::Renew { password } => renew(t, out, password).await,
        Command::Invites { sent: false } => invites(t, out).await,
        Command::Invites { sent: true } => sent_invites(t, out).await,
        Command::Accept { invite, code } => accept(t, out, invite, code).await,
        Command::Decline { invite } => act(t, out, None, Action::Decline(invite)).await,
        Command::Send { group, text } => send(t, out, &group, text).await,
        Command::Read {
            group,
            follow,
            limit,
            since,
        } => {
            let since = match since {
                Some(s) => Some(when::since(&s, duokey_pki::clock::now_ms()).map_err(Error::User)?),
                None => None,
            };
            let shown = Shown { limit, since };
            read(t, out, &group, follow, offline, shown).await
        }
        Command::Verify { user, confirm } => {
            act(t, out, None, Action::Verify(user_arg(user)?, confirm)).await
        }
    }
}

/// How `duokey init` makes the profile.
struct NewProfile<'a> {
    token: &'a str,
    no_passphrase: bool,
    keep_history: bool,
    password: bool,
}

/// `duokey init`.
async fn init_command(
    cli: &Cli,
    out: Out,
    user: &str,
    config: &std::path::Path,
    how: NewProfile<'_>,
) -> duokey_terminal::Result<()> {
    let user = user_arg(user.to_owned())?;
    let cfg = ClientConfig::load(config)?;
    let t = init(
        &home(cli),
        &user,
        how.token,
        &cfg,
        how.no_passphrase,
        how.password,
    )
    .await?;
    t.set_keep_history(how.keep_history).await?;
    out.report(
        serde_json::json!({"user": t.user().as_str(), "home": t.home()}),
        || format!("Enrolled {} in {}", t.user(), t.home().display()),
    );
    Ok(())
}

/// `duokey unlock [--for D]`.
async fn unlock(cli: &Cli, out: Out, duration: u64) -> duokey_terminal::Result<()> {
    let ttl = std::time::Duration::from_secs(duration);
    session::unlock(&home(cli), ttl, || passphrase(false)).await?;
    out.report(serde_json::json!({"unlocked_for_secs": duration}), || {
        format!(
            "Unlocked for {}: commands will not ask for the passphrase until then, \
             until `duokey lock`, or until this login session ends.",
            session::hours(ttl)
        )
    });
    Ok(())
}

/// `duokey lock`.
async fn lock(cli: &Cli, out: Out) {
    let was = duokey_terminal::agent::lock(&home(cli)).await;
    out.report(serde_json::json!({"locked": was}), || match was {
        true => {
            "Locked: the key is erased from memory; commands ask for the passphrase again.".into()
        }
        false => "Not unlocked: commands already ask for the passphrase.".into(),
    });
}

/// `duokey profile set-servers`.
async fn set_servers(cli: &Cli, out: Out, config: &std::path::Path) -> duokey_terminal::Result<()> {
    let cfg = ClientConfig::load(config)?;
    let t = open_profile(cli).await?;
    t.set_servers(&cfg).await?;
    out.report(
        serde_json::json!({"servers": {"as": cfg.as_url, "gms": cfg.gms_url, "cs": cfg.cs_url}}),
        || {
            format!(
                "This profile now uses GMS {}, CS {}, AS {}.",
                cfg.gms_url, cfg.cs_url, cfg.as_url
            )
        },
    );
    Ok(())
}

/// `duokey accept INVITE [--code [CODE]]`.
async fn accept(
    t: &mut Terminal,
    out: Out,
    invite: String,
    code: Option<String>,
) -> duokey_terminal::Result<()> {
    let Some(code) = code else {
        return act(t, out, None, Action::Accept(invite)).await;
    };
    let code = if code.is_empty() {
        ask_code()?
    } else {
        Zeroizing::new(code)
    };
    let code = duokey_crypto::invite_code::InviteCode::parse(&code)?;
    act(t, out, None, Action::AcceptCode(invite, code)).await
}

/// How a command reports (SPEC §8): one JSON value on standard output with
/// `--json`, words for people otherwise.
#[derive(Debug, Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Shows what an action did.
    fn done(self, done: &actions::Done) {
        self.report(done.json(), || done.to_string());
    }

    /// Prints `value` as JSON, or the text `text` makes.
    fn report(self, value: serde_json::Value, text: impl FnOnce() -> String) {
        match self.json {
            true => print_json(&value),
            false => println!("{}", text()),
        }
    }

    /// Prints `rows` as a JSON array, or a line each (`empty` when none).
    fn rows<T: serde::Serialize>(
        self,
        rows: &[T],
        empty: &str,
        line: impl Fn(&T) -> String,
    ) -> duokey_terminal::Result<()> {
        let value = serde_json::to_value(rows).map_err(|_| Error::Internal("json"))?;
        self.report(value, || match rows.is_empty() {
            true => empty.to_owned(),
            false => rows.iter().map(line).collect::<Vec<_>>().join("\n"),
        });
        Ok(())
    }
}

/// `duokey whoami`, from the profile alone, without its key.
async fn whoami(cli: &Cli, out: Out) -> duokey_terminal::Result<()> {
    let home = home(cli);
    let p = Terminal::profile_info(&home).await?;
    let unlocked = duokey_terminal::agent::remaining(&home).await;
    let s = &p.servers;
    out.report(
        serde_json::json!({
            "user": p.user.as_str(),
            "home": home,
            "certificate": {"serial": p.serial, "not_after": p.not_after},
            "servers": {"as": s.as_url, "gms": s.gms_url, "cs": s.cs_url},
            "unlocked_secs": unlocked.map(|d| d.as_secs()),
        }),
        || {
            let lock = match unlocked {
                Some(d) => format!("unlocked for {} more (`duokey lock` locks)", session::hours(d)),
                None => "locked (the passphrase is asked; `duokey unlock` keeps it open)".into(),
            };
            format!(
                "{}\nprofile      {}\ncertificate  serial {}, valid until {}\nservers      GMS {}, CS {}, AS {}\nprofile is   {lock}",
                p.user,
                home.display(),
                p.serial,
                when::date(p.not_after),
                s.gms_url,
                s.cs_url,
                s.as_url
            )
        },
    );
    Ok(())
}

/// `duokey init`: enrols with the token (`-` reads it from standard input).
async fn init(
    home: &std::path::Path,
    user: &UserId,
    token: &str,
    cfg: &ClientConfig,
    no_passphrase: bool,
    with_password: bool,
) -> duokey_terminal::Result<Terminal> {
    let account_password = if with_password {
        Some(account_password()?)
    } else {
        None
    };
    let p = match no_passphrase {
        true => None,
        false => Some(passphrase(true)?),
    };
    let token = if token == "-" {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().read_line(&mut line)?;
        line
    } else {
        Zeroizing::new(token.to_owned())
    };
    let how = match &account_password {
        Some(password) => duokey_terminal::Enrolment::Password {
            token: token.trim(),
            password: password.as_bytes(),
        },
        None => duokey_terminal::Enrolment::Token(token.trim()),
    };
    Terminal::init_with(home, user, how, cfg, p.as_ref().map(|p| p.as_bytes())).await
}

/// The password of a new password account: `DUOKEY_PASSWORD`, or asked
/// twice; at least 10 characters (it is the account's only protection at
/// the server).
fn account_password() -> duokey_terminal::Result<Zeroizing<String>> {
    let p = match std::env::var("DUOKEY_PASSWORD") {
        Ok(p) => Zeroizing::new(p),
        Err(_) => {
            let p = prompt("Account password (for the server; not your profile passphrase): ")?;
            if *prompt("Account password again: ")? != *p {
                return Err(Error::User("the passwords differ".into()));
            }
            p
        }
    };
    if p.chars().count() < 10 {
        return Err(Error::User(
            "choose an account password of at least 10 characters".into(),
        ));
    }
    Ok(p)
}

/// `duokey sync`: also fetches every active group's messages.
async fn sync(t: &mut Terminal, out: Out) -> duokey_terminal::Result<()> {
    let mut synced = Vec::new();
    for g in t.list_groups().await? {
        if g.state == GroupState::Active {
            t.sync_messages(&g.group_id).await?;
            synced.push(g.group_id.to_hex());
        }
    }
    let queued = t.queued().await?;
    out.report(
        serde_json::json!({"synced": synced, "queued": queued}),
        || "synced".into(),
    );
    Ok(())
}

/// How many key changes `status` draws per group.
const TIMELINE_LENGTH: u64 = 40;

/// `duokey status`: the user, the queue, and each group's keys with their
/// history.
async fn status(t: &Terminal, out: Out, offline: bool) -> duokey_terminal::Result<()> {
    let groups = t.list_groups().await?;
    let queued = t.queued().await?;
    let mut timelines = Vec::with_capacity(groups.len());
    for g in &groups {
        timelines.push(t.timeline(&g.group_id, TIMELINE_LENGTH).await?);
    }
    let listed: Vec<serde_json::Value> = groups
        .iter()
        .zip(&timelines)
        .map(|(g, epochs)| {
            let mut v = serde_json::to_value(g).unwrap_or_default();
            v["timeline"] = serde_json::to_value(epochs).unwrap_or_default();
            v
        })
        .collect();
    let value = serde_json::json!({
        "user": t.user().as_str(),
        "groups": listed,
        "queued": queued,
        "offline": offline,
    });
    out.report(value, || {
        let now = duokey_terminal::now_ms();
        let mut text = format!("{} ({queued} queued message(s))", t.user());
        for (g, epochs) in groups.iter().zip(&timelines) {
            text.push_str(&format!(
                "\n{}  {:<20} {:<8} {}",
                g.group_id,
                display::inline(&g.name),
                g.state,
                display::keys(g.rn1_version, g.rn2_version)
            ));
            if let Some(last) = epochs.last() {
                text.push_str(&format!(
                    "\n    {}   last: {}, {}",
                    display::timeline(epochs),
                    display::last_change(last),
                    crate::when::when(last.issued_at_ms, now)
                ));
            }
        }
        if timelines.iter().any(|e| !e.is_empty()) {
            text.push_str(&format!("\n({})", display::TIMELINE_LEGEND));
        }
        text
    });
    Ok(())
}

/// `duokey renew`: a new certificate for the same identity key.
async fn renew(t: &mut Terminal, out: Out, password: bool) -> duokey_terminal::Result<()> {
    let (serial, _, until) = if password {
        let p = match std::env::var("DUOKEY_PASSWORD") {
            Ok(p) => Zeroizing::new(p),
            Err(_) => prompt("Account password: ")?,
        };
        t.renew_with_password(p.as_bytes()).await?
    } else {
        t.renew().await?
    };
    let now = i64::try_from(duokey_terminal::now_ms() / 1000).unwrap_or(0);
    out.report(
        serde_json::json!({"renewed": true, "serial": serial, "not_after": until}),
        || {
            format!(
                "Certificate renewed (serial {serial}): valid for {} more days. Your identity key is unchanged.",
                (until - now) / 86_400
            )
        },
    );
    Ok(())
}

/// `duokey invites`: the pending invitations.
async fn invites(t: &Terminal, out: Out) -> duokey_terminal::Result<()> {
    let inv = t.invitations().await?;
    out.rows(&inv, "no pending invitations", |i| {
        format!(
            "{}  {} invites you to {} ({}) as {}{}",
            i.invite_id,
            i.from,
            display::inline(&i.group_name),
            i.group_id,
            i.rights,
            if i.needs_code {
                "; needs the code they gave you (accept with --code, which asks for it)"
            } else {
                ""
            }
        )
    })
}

/// `duokey invites --sent`.
async fn sent_invites(t: &Terminal, out: Out) -> duokey_terminal::Result<()> {
    let sent = t.sent_invitations().await?;
    out.rows(&sent, "you have sent no invitations", |i| {
        format!(
            "{} to {} as {}: {}",
            display::inline(&i.group_name),
            i.to,
            i.rights,
            i.state.words()
        )
    })
}

/// `duokey send`: posted at once, or queued and said why.
async fn send(
    t: &mut Terminal,
    out: Out,
    group: &str,
    text: Option<String>,
) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let text = match text {
        Some(t) => t,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!(
                    "Type the message, then Ctrl-D on a new line to send it (Ctrl-C cancels)."
                );
            }
            message_from_stdin()?
        }
    };
    let group_id = hex::encode(gid);
    match t.send(&gid, &text).await? {
        SendOutcome::Posted(seq) if out.json => {
            print_json(&serde_json::json!({"group_id": group_id, "posted": seq}))
        }
        SendOutcome::Posted(_) => {}
        SendOutcome::Queued(why) if out.json => print_json(&serde_json::json!({
            "group_id": group_id,
            "queued": true,
            "waiting": match why { Waiting::Key => "key", Waiting::Server => "server" },
        })),
        SendOutcome::Queued(Waiting::Key) => {
            let why = t
                .key_wait(&gid)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| "the group's new key has not arrived yet".to_owned());
            eprintln!("Queued: {why}; it is sent at your next command after it arrives.")
        }
        SendOutcome::Queued(Waiting::Server) => eprintln!(
            "Queued, not sent yet: the server is unreachable; it is sent at your next command once the server is back."
        ),
    }
    Ok(())
}

/// `duokey read`: the history, then (with `--follow`) what arrives.
/// Which part of the history `read` shows.
#[derive(Debug, Clone, Copy)]
struct Shown {
    /// The last N lines.
    limit: Option<usize>,
    /// Lines from this time on (Unix ms).
    since: Option<u64>,
}

impl Shown {
    fn select(self, mut lines: Vec<Line>) -> Vec<Line> {
        let at = |l: &Line| match l {
            Line::Message(m) => m.sent_at_ms,
            Line::Notice(n) => n.at_ms,
        };
        lines.retain(|l| self.since.is_none_or(|s| at(l) >= s));
        let skip = self.limit.map_or(0, |n| lines.len().saturating_sub(n));
        lines.split_off(skip)
    }
}

async fn read(
    t: &mut Terminal,
    out: Out,
    group: &str,
    follow: bool,
    offline: bool,
    shown: Shown,
) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    if !offline {
        match t.sync_messages(&gid).await {
            Err(e) if e.kind() == ErrorKind::Network => offline_note(&e, out.json),
            r => r.map(drop)?,
        }
    }
    for line in shown.select(t.history(&gid).await?) {
        print_line(out.json, &line);
    }
    if follow {
        tokio::select! {
            r = t.follow(&gid, |line| print_line(out.json, &line)) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    Ok(())
}

/// Does `action` (on `group`) and shows what it did.
async fn act(
    t: &mut Terminal,
    out: Out,
    group: Option<GroupId>,
    action: Action,
) -> duokey_terminal::Result<()> {
    let done = actions::perform(t, group, action).await?;
    out.done(&done);
    Ok(())
}

async fn group(t: &mut Terminal, command: GroupCommand, out: Out) -> duokey_terminal::Result<()> {
    let action = match command {
        GroupCommand::Create {
            name,
            rotate_every,
            grace,
            no_rotate_rn1_on_remove,
        } => {
            let policy = duokey_terminal::GroupPolicy {
                rotate_every_secs: rotate_every.unwrap_or(0),
                grace_secs: grace.unwrap_or(0),
                rotate_rn1_on_remove: !no_rotate_rn1_on_remove,
                ..duokey_terminal::GroupPolicy::default()
            };
            return act(t, out, None, Action::Create(name, policy)).await;
        }
        GroupCommand::List { all } => return list_groups(t, out, all).await,
        GroupCommand::Forget { group } => return forget(t, out, &group).await,
        GroupCommand::Uninvite { group, user } => return uninvite(t, out, &group, user).await,
        GroupCommand::Members { group } => return members(t, out, &group).await,
        GroupCommand::Verify { group } => return membership_code(t, out, &group).await,
        GroupCommand::Policy {
            group,
            rotate_every,
            grace,
            retention,
            rn1_wait,
            rotate_rn1_on_remove,
        } => {
            let change = duokey_terminal::PolicyChange {
                rotate_every_secs: rotate_every,
                grace_secs: grace,
                retention_secs: retention,
                rn1_wait_secs: rn1_wait,
                rotate_rn1_on_remove,
            };
            return policy(t, out, &group, change).await;
        }
        GroupCommand::Invite {
            group,
            user,
            can_invite,
            can_remove,
            code,
            code_ttl,
        } => {
            let rights = actions::rights(can_invite, can_remove);
            let user = user_arg(user)?;
            let action = if code {
                Action::InviteCode(user, rights, code_ttl.saturating_mul(1000))
            } else {
                Action::Invite(user, rights)
            };
            (group, action)
        }
        GroupCommand::Remove { group, user } => (group, Action::Remove(user_arg(user)?)),
        GroupCommand::Leave { group } => (group, Action::Leave),
        GroupCommand::Rotate { group, rn1 } => (group, Action::Rotate(rn1)),
        GroupCommand::Delete { group, yes } => {
            if !yes && !confirm_delete(t, &group).await? {
                return Err(Error::User("not deleted (answer yes to delete)".into()));
            }
            (group, Action::Delete)
        }
        GroupCommand::Transfer { group, user, yes } => {
            let user = user_arg(user)?;
            if !yes && !confirm_transfer(&group, &user)? {
                return Err(Error::User(
                    "ownership kept (answer yes to hand it over)".into(),
                ));
            }
            (group, Action::Transfer(user))
        }
    };
    let (group, action) = action;
    let gid = t.resolve_group(&group).await?;
    act(t, out, Some(gid), action).await
}

/// `duokey group uninvite GROUP USER`.
async fn uninvite(
    t: &mut Terminal,
    out: Out,
    group: &str,
    user: String,
) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let user = user_arg(user)?;
    t.uninvite(&gid, &user).await?;
    out.report(
        serde_json::json!({"group_id": hex::encode(gid), "uninvited": user.as_str()}),
        || format!("Cancelled the invitation to {user}: if they accept it, they are not added."),
    );
    Ok(())
}

/// On a terminal, asks whether to make `user` the owner of `group`.
fn confirm_transfer(group: &str, user: &UserId) -> duokey_terminal::Result<bool> {
    confirm(&format!(
        "Make {user} the owner of {}? Only {user} can then delete the group or change its \
         policy; you keep the invite and remove rights. Type yes to hand it over: ",
        display::inline(group)
    ))
}

/// On a terminal, asks whether to delete `group` for everyone (scripts,
/// without a terminal, are not asked).
async fn confirm_delete(t: &Terminal, group: &str) -> duokey_terminal::Result<bool> {
    let gid = t.resolve_group(group).await?;
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Ok(true);
    }
    let members = t.members(&gid).await?.len();
    confirm(&format!(
        "Delete {} for all {members} member(s)? Nobody can send to it afterwards. Type yes to delete: ",
        display::inline(group)
    ))
}

/// Asks `question` on a terminal; `true` for "yes", and always `true`
/// without a terminal (scripts are not asked).
fn confirm(question: &str) -> duokey_terminal::Result<bool> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Ok(true);
    }
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// `duokey group forget`.
async fn forget(t: &Terminal, out: Out, group: &str) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let name = t.forget_group(&gid).await?;
    out.report(serde_json::json!({"forgotten": hex::encode(gid)}), || {
        format!(
            "Forgot {}: its history and keys are erased from this terminal.",
            display::inline(&name)
        )
    });
    Ok(())
}

/// `duokey group list`: active groups, or all with `--all`.
async fn list_groups(t: &Terminal, out: Out, all: bool) -> duokey_terminal::Result<()> {
    let mut groups = t.list_groups().await?;
    groups.retain(|g| all || g.state == GroupState::Active);
    out.rows(&groups, "", |g| {
        format!(
            "{}  {}  ({})",
            g.group_id,
            display::inline(&g.name),
            g.state
        )
    })
}

/// `duokey group members`.
async fn members(t: &Terminal, out: Out, group: &str) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let members = t.members(&gid).await?;
    // How each contact's key was confirmed (PROTOCOL §4.10, DESIGN D50),
    // from the profile.
    #[derive(serde::Serialize)]
    struct Row<'a, M> {
        #[serde(flatten)]
        member: &'a M,
        key_confirmed_by: &'static str,
    }
    let mut rows = Vec::with_capacity(members.len());
    for member in &members {
        let key_confirmed_by = if member.user == t.user().as_str() {
            "you"
        } else {
            t.trust(&member.user).await?.confirmed_by()
        };
        rows.push(Row {
            member,
            key_confirmed_by,
        });
    }
    out.rows(&rows, "", |r| {
        format!(
            "{}  {}  (key: {})",
            r.member.user, r.member.rights, r.key_confirmed_by
        )
    })
}

/// `duokey group verify`: the membership code (SPEC §4.7).
async fn membership_code(t: &mut Terminal, out: Out, group: &str) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let c = t.membership_code(&gid).await?;
    let value = serde_json::to_value(&c).map_err(|_| Error::Internal("json"))?;
    out.report(value, || {
        let mut text = format!(
            "Membership history at change {}: {}\nCompare this code with the other members (out of band); a different code at the same change means the group server shows you different histories.",
            c.seq, c.code
        );
        if c.histories_differ {
            text.push_str("\nWARNING: another member's terminal has already named a different change than yours: the group server is showing members different histories. Sending in this group is stopped; tell the group server's operator.");
        }
        text
    });
    Ok(())
}

/// `duokey group policy`: shows the policy, or changes it (signed, §4.7).
async fn policy(
    t: &mut Terminal,
    out: Out,
    group: &str,
    change: duokey_terminal::PolicyChange,
) -> duokey_terminal::Result<()> {
    let gid = t.resolve_group(group).await?;
    let changes = change.rotate_every_secs.is_some()
        || change.grace_secs.is_some()
        || change.retention_secs.is_some()
        || change.rn1_wait_secs.is_some()
        || change.rotate_rn1_on_remove.is_some();
    let p = if changes {
        t.change_policy(&gid, change).await?
    } else {
        t.policy(&gid).await?
    };
    let value = serde_json::to_value(&p).map_err(|_| Error::Internal("json"))?;
    out.report(value, || {
        let mut text = String::new();
        if changes {
            text.push_str(
                "Policy changed (signed by you; members follow it from the new key version).\n",
            );
        }
        text.push_str(&format!(
            "rotate every:          {} s\ngrace:                 {} s\nretention:             {} s\nrn1 wait:              {} s\nmax members:           {}\nrotate RN1 on removal: {}",
            p.rotate_every_secs,
            p.grace_secs,
            p.retention_secs,
            p.rn1_wait_secs,
            p.max_members,
            if p.rotate_rn1_on_remove { "on" } else { "off" }
        ));
        text
    });
    Ok(())
}

/// A user id given on the command line.
fn user_arg(user: String) -> duokey_terminal::Result<UserId> {
    UserId::new(user.clone()).map_err(|e| Error::User(format!("{user:?}: {e}")))
}

/// Prints an error as the user asked (text, or JSON on stderr) and gives
/// its exit code.
fn report(json: bool, kind: ErrorKind, message: &str) -> ExitCode {
    // A transport error alone does not say what to do.
    let advice;
    let message = if kind == ErrorKind::Network && !message.contains(" — ") {
        advice = format!(
            "{message} — a server cannot be reached or asks to wait; nothing was sent or lost, try again shortly"
        );
        advice.as_str()
    } else {
        message
    };
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"error": kind.as_str(), "message": message})
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(exit_code(kind))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) if std::env::args().any(|a| a == "--json") => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let message = first.strip_prefix("error: ").unwrap_or(first);
            return report(true, ErrorKind::Usage, message);
        }
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                json,
                ErrorKind::Failed,
                &format!("cannot start the runtime: {e}"),
            );
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(json, e.kind(), &e.to_string()),
    }
}
