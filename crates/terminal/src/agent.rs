//! The unlocked session (`duokey unlock`, D44): a small agent process holds
//! the profile key so that later commands skip the passphrase's Argon2id
//! derivation, as ssh-agent and gpg-agent do for their keys.
//!
//! * It listens on `agent.sock` in the profile directory (mode 0600 in a
//!   0700 directory) and answers only peers of the profile owner's uid
//!   (checked with `SO_PEERCRED`).
//! * The key lives in one page locked in memory (never swapped), the process
//!   is marked not dumpable (no core file, no `ptrace` or `/proc/PID/mem` by
//!   other processes of the user), and the key is zeroized when the agent
//!   ends: on `duokey lock`, at its deadline (`--for`, default 8 hours),
//!   when the login session that started it ends, when its socket or the
//!   profile is removed, or on SIGTERM/SIGINT/SIGHUP.
//! * The protocol is one request byte and a fixed-size answer: `K` → the
//!   32-byte key, `S` → the seconds left (u64, big-endian), `L` → `1`, then
//!   the agent ends.
//!
//! The agent never reads the profile: a terminal checks the key it is given
//! against the profile's passphrase check, so a key that does not open the
//! profile is ignored and the passphrase asked as before.

use crate::error::{Error, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

/// The socket's file name in the profile directory.
pub const SOCKET: &str = "agent.sock";
/// How long `duokey unlock` keeps the key without `--for`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a client waits for the agent's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How often the agent checks that its session, socket and profile remain.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The agent's socket for the profile in `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET)
}

/// Asks the agent of `home` for one answer of `N` bytes.
async fn ask<const N: usize>(home: &Path, request: u8) -> Option<Zeroizing<[u8; N]>> {
    let exchange = async {
        let mut s = UnixStream::connect(socket_path(home)).await.ok()?;
        s.write_all(&[request]).await.ok()?;
        let mut answer = Zeroizing::new([0u8; N]);
        s.read_exact(answer.as_mut_slice()).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .ok()
        .flatten()
}

/// The profile key from a running agent, or `None` (no agent, or it does
/// not answer): the caller then asks for the passphrase.
pub async fn key(home: &Path) -> Option<Zeroizing<[u8; 32]>> {
    ask::<32>(home, b'K').await
}

/// How long the running agent of `home` has left, or `None` if none runs.
pub async fn remaining(home: &Path) -> Option<Duration> {
    ask::<8>(home, b'S')
        .await
        .map(|b| Duration::from_secs(u64::from_be_bytes(*b)))
}

/// Ends the agent of `home` (it zeroizes the key first); `false` if none ran.
pub async fn lock(home: &Path) -> bool {
    let stopped = ask::<1>(home, b'L').await.is_some();
    if !stopped {
        // A socket left by an agent that was killed: remove it.
        let _ = std::fs::remove_file(socket_path(home));
    }
    stopped
}

/// The key in one page of memory that the kernel never swaps out. Fields
/// drop in order: the key is zeroized before its page is unlocked.
struct LockedKey {
    key: Box<Zeroizing<[u8; 32]>>,
    _locked: region::LockGuard,
}

impl LockedKey {
    fn new(key: &[u8; 32]) -> Result<LockedKey> {
        let mut boxed = Box::new(Zeroizing::new([0u8; 32]));
        let locked = region::lock(boxed.as_ptr(), 32).map_err(|e| {
            Error::user(format!(
                "cannot lock the key in memory ({e}); raise the locked-memory limit (`ulimit -l`)"
            ))
        })?;
        boxed.copy_from_slice(key);
        Ok(LockedKey {
            key: boxed,
            _locked: locked,
        })
    }
}

/// A bound agent, ready to serve ([`Agent::serve`]).
pub struct Agent {
    listener: UnixListener,
    key: LockedKey,
    home: PathBuf,
    owner: u32,
    socket_ino: u64,
    deadline: tokio::time::Instant,
    session: Option<PathBuf>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("home", &self.home).finish()
    }
}

impl Agent {
    /// Takes the key (the caller's copy is left to it to zeroize), hardens
    /// this process and binds the socket of `home`, replacing an agent that
    /// already runs there.
    pub async fn bind(home: &Path, key: &[u8; 32], ttl: Duration) -> Result<Agent> {
        // Not dumpable: other processes of the user cannot read our memory.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
            .map_err(|e| Error::Io(e.into()))?;
        let key = LockedKey::new(key)?;
        lock(home).await;
        let path = socket_path(home);
        let listener = UnixListener::bind(&path).map_err(|e| {
            Error::user(format!(
                "cannot listen on {} ({e}); is the profile directory writable?",
                path.display()
            ))
        })?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(Agent {
            listener,
            key,
            home: home.to_owned(),
            owner: std::fs::metadata(home)?.uid(),
            socket_ino: std::fs::metadata(&path)?.ino(),
            deadline: tokio::time::Instant::now() + ttl,
            session: session_leader(),
        })
    }

    /// Answers requests until the agent must end (see the module docs) or
    /// `stop` completes (the binary passes its signals), then removes its
    /// socket; the key is zeroized when `self` drops.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep_until(self.deadline) => break,
                _ = watch.tick() => if !self.still_wanted() { break },
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if self.answer(stream).await {
                        break;
                    }
                }
            }
        }
        self.remove_socket();
        Ok(())
    }

    /// Whether the socket is still ours (not removed, not replaced by
    /// another agent's), and the profile and starting session remain.
    fn still_wanted(&self) -> bool {
        let socket_ours =
            std::fs::metadata(socket_path(&self.home)).is_ok_and(|m| m.ino() == self.socket_ino);
        let session_alive = self.session.as_ref().is_none_or(|p| p.exists());
        socket_ours && session_alive && crate::terminal::profile_path(&self.home).exists()
    }

    /// Removes the socket if it is still this agent's.
    fn remove_socket(&self) {
        let path = socket_path(&self.home);
        if std::fs::metadata(&path).is_ok_and(|m| m.ino() == self.socket_ino) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Serves one request; `true` if it asked the agent to end.
    async fn answer(&self, mut stream: UnixStream) -> bool {
        let peer_ok = stream.peer_cred().is_ok_and(|c| c.uid() == self.owner);
        let mut request = [0u8; 1];
        let read = tokio::time::timeout(ANSWER_WITHIN, stream.read_exact(&mut request)).await;
        if !peer_ok || !matches!(read, Ok(Ok(_))) {
            return false;
        }
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let sent = match request[0] {
            b'K' => stream.write_all(self.key.key.as_slice()).await,
            b'S' => stream.write_all(&left.as_secs().to_be_bytes()).await,
            b'L' => {
                // Gone before the answer, so that a replacing agent can bind.
                self.remove_socket();
                let _ = stream.write_all(&[1]).await;
                return true;
            }
            _ => Ok(()),
        };
        // A client that hung up before the answer changes nothing.
        drop(sent);
        false
    }
}

/// `/proc/SID` of the login session this process belongs to, whose end
/// (the session leader exiting: logout, the terminal closed) ends the
/// agent. `None` where there is none to watch: no session leader alive, no
/// `/proc`, or the `duokey` that starts the agent leads the session itself
/// (a `duokey chat` that a tmux pane runs without a shell: its end is not
/// a logout, and the user asked for the session's duration).
///
/// The session id is read from `/proc/self/stat`, not `getsid(2)`: in a
/// container whose session leader lives outside its PID namespace the
/// kernel answers 0, which `rustix` treats as impossible and panics on (a
/// CI run met it). 0 means "no leader to watch".
fn session_leader() -> Option<PathBuf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let sid = session_of(&stat)?;
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let starter = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    let path = PathBuf::from(format!("/proc/{sid}"));
    (sid != me && Some(sid) != starter && path.exists()).then_some(path)
}

/// The session id field of a `/proc/PID/stat` line (`proc(5)`: the fourth
/// field after the parenthesised command name, which may itself hold
/// spaces and parentheses); `None` for 0 (a leader outside this PID
/// namespace) or a line that does not parse.
fn session_of(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let sid: i32 = after_name.split_whitespace().nth(3)?.parse().ok()?;
    (sid > 0).then_some(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn profile() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(crate::terminal::profile_path(dir.path()), b"").unwrap();
        dir
    }

    /// An agent bound in `home`, holding a key of `byte`s, for `ttl`.
    async fn bound(home: &tempfile::TempDir, byte: u8, ttl: Duration) -> Agent {
        Agent::bind(home.path(), &[byte; 32], ttl).await.unwrap()
    }

    #[test]
    fn the_session_is_read_from_stat_and_zero_means_none() {
        let line = "4242 (duokey (x) y) S 4200 4242 4100 34816 4242 4194560 0 0";
        assert_eq!(session_of(line), Some(4100));
        assert_eq!(session_of("7 (sh) S 0 1 0 0 -1 4194560"), None);
        assert_eq!(session_of("garbage"), None);
    }

    #[tokio::test]
    async fn the_agent_gives_the_key_until_locked_and_then_nobody_answers() {
        let home = profile().await;
        let agent = bound(&home, 7, DEFAULT_TTL).await;
        let mode = std::fs::metadata(socket_path(home.path())).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let served = tokio::spawn(agent.serve(std::future::pending()));
        assert_eq!(key(home.path()).await.unwrap().as_slice(), &[7; 32]);
        let left = remaining(home.path()).await.unwrap();
        assert!(left > DEFAULT_TTL - Duration::from_secs(60), "{left:?}");
        assert!(lock(home.path()).await);
        served.await.unwrap().unwrap();
        assert!(key(home.path()).await.is_none());
        assert!(!socket_path(home.path()).exists());
        assert!(!lock(home.path()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_agent_ends_at_its_deadline() {
        let home = profile().await;
        let agent = bound(&home, 1, Duration::from_secs(30)).await;
        // Paused time jumps to the deadline once the agent only waits.
        agent.serve(std::future::pending()).await.unwrap();
        assert!(!socket_path(home.path()).exists());
    }

    #[tokio::test]
    async fn a_second_agent_replaces_the_first() {
        let home = profile().await;
        let first = bound(&home, 1, DEFAULT_TTL).await;
        let first = tokio::spawn(first.serve(std::future::pending()));
        let second = bound(&home, 2, DEFAULT_TTL).await;
        first.await.unwrap().unwrap();
        let second = tokio::spawn(second.serve(std::future::pending()));
        assert_eq!(key(home.path()).await.unwrap().as_slice(), &[2; 32]);
        assert!(lock(home.path()).await);
        second.await.unwrap().unwrap();
    }
}
