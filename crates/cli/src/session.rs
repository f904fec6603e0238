//! The unlocked session (D44): `duokey unlock`, `duokey lock`, the agent
//! process they start and stop, and the one-time offer after a typed
//! passphrase. The agent itself is `duokey_terminal::agent`.

use duokey_terminal::{Error, Result, Terminal, agent};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use zeroize::Zeroizing;

/// `duokey unlock`: asks the passphrase (never the agent), then starts an
/// agent holding the key for `ttl`, replacing a running one.
pub async fn unlock(
    home: &Path,
    ttl: Duration,
    passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
) -> Result<()> {
    let key = Terminal::profile_key(home, passphrase).await?;
    start_agent(home, &key, ttl)
}

/// Starts `duokey agent` in its own process group (a Ctrl-C in this shell
/// does not reach it) and hands it the key through a pipe (never the
/// command line or the environment); returns once it listens. An agent that
/// ends before saying `ready` holds nothing yet: it is started once more,
/// then its exit status and last words are reported.
fn start_agent(home: &Path, key: &[u8; 32], ttl: Duration) -> Result<()> {
    match spawn_agent(home, key, ttl)? {
        Started::Ready => Ok(()),
        Started::Refused(why) => Err(Error::User(format!("the agent could not start: {why}"))),
        Started::Ended(_) => match spawn_agent(home, key, ttl)? {
            Started::Ready => Ok(()),
            Started::Refused(why) => Err(Error::User(format!("the agent could not start: {why}"))),
            Started::Ended(how) => Err(Error::User(format!(
                "the agent ended before it was ready ({how}); run `duokey unlock` again"
            ))),
        },
    }
}

/// The agent's standard error, in the profile directory.
const AGENT_LOG: &str = "agent.log";

/// What became of one agent started by [`spawn_agent`].
enum Started {
    /// It listens.
    Ready,
    /// It said why it cannot (a socket it cannot bind, memory it cannot lock).
    Refused(String),
    /// It ended without a word on standard output: its status and stderr.
    Ended(String),
}

fn spawn_agent(home: &Path, key: &[u8; 32], ttl: Duration) -> Result<Started> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    // Its standard error goes to a file of the profile (never a pipe that
    // closes when `unlock` ends), read back if it fails to start.
    let log_path = home.join(AGENT_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)?;
    let mut child = Command::new(exe)
        .arg("--home")
        .arg(home)
        .args(["agent", "--seconds", &ttl.as_secs().to_string()])
        .env_remove("DUOKEY_PASSPHRASE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or(Error::Internal("agent stdin"))?;
    // An agent that died at once closed its end: that is reported below.
    let _ = stdin.write_all(key);
    drop(stdin);
    let stdout = child.stdout.take().ok_or(Error::Internal("agent stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(match line.trim_end() {
        "ready" => Started::Ready,
        "" => {
            let status = child.wait()?;
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let said = said.trim();
            Started::Ended(match said.is_empty() {
                true => status.to_string(),
                false => format!("{status}: {said}"),
            })
        }
        why => Started::Refused(why.to_owned()),
    })
}

/// The hidden `duokey agent` command: reads the key from standard input,
/// says `ready` (or why not) on standard output, then serves until the
/// agent must end or a signal arrives.
pub async fn serve(home: &Path, seconds: u64) -> Result<()> {
    let mut key = Zeroizing::new([0u8; 32]);
    std::io::Read::read_exact(&mut std::io::stdin(), key.as_mut_slice())?;
    let bound = agent::Agent::bind(home, &key, Duration::from_secs(seconds)).await;
    drop(key);
    let mut out = std::io::stdout();
    let agent = match bound {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return Err(e);
        }
    };
    writeln!(out, "ready")?;
    out.flush()?;
    agent.serve(signals()?).await
}

/// Completes at SIGTERM, SIGINT or SIGHUP.
fn signals() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// Once per profile, after a passphrase typed at a prompt opened it: offers
/// to keep the profile unlocked (`duokey unlock`'s default duration).
pub async fn offer(t: &Terminal) -> Result<()> {
    if !std::io::stdin().is_terminal() || !t.first_time("unlock").await? {
        return Ok(());
    }
    let Some(key) = t.unlock_key().await? else {
        return Ok(());
    };
    eprint!(
        "Keep this profile unlocked for {} so that commands stop asking for the passphrase? \
         (`duokey lock` locks it again; `duokey unlock` asks later) [y/N] ",
        hours(agent::DEFAULT_TTL)
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim().eq_ignore_ascii_case("y") || answer.trim().eq_ignore_ascii_case("yes") {
        start_agent(t.home(), &key, agent::DEFAULT_TTL)?;
        eprintln!("Unlocked for {}.", hours(agent::DEFAULT_TTL));
    }
    Ok(())
}

/// "8 h", "90 min", "45 s".
pub fn hours(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}
