//! # duokey-testkit — real servers for tests (dev-dependency only)
//!
//! One way to start the Duokey servers for a test, benchmark or fuzz
//! harness: [`LocalNet::start`] runs the AS, GMS and CS of this process on
//! 127.0.0.1 with real mutual TLS 1.3 and real databases (SQLite in a
//! temporary directory unless the test chooses PostgreSQL), through the same
//! [`duokey_server::dev::start_local`] that `duokey demo` uses. On it:
//!
//! * [`LocalNet::enroll`] — a real terminal ([`Terminal`]) enrolled through
//!   the AS, with its profile in the test's directory;
//! * [`Remote::raw`] — a [`RawUser`]: an enrolled identity with raw gRPC
//!   connections, for tests of the servers' rules and for attackers who may
//!   send anything (SPEC §7);
//! * [`LocalNet::as_db`], [`LocalNet::gms_db`], [`LocalNet::cs_db`] — each
//!   role's store, as its operator sees it;
//! * [`LocalNet::advance`] — moves the one clock of the servers and the
//!   enrolled terminals forward, so a test jumps over a grace window or
//!   `rn1_wait` instead of sleeping (D41);
//! * [`LocalNet::lying_gms`] and [`LocalNet::forked_gms`] — the real GMS
//!   behind a wrapper that lies, or a copy that forks the history;
//! * [`LocalCluster::start`] — several GMS and CS nodes on PostgreSQL and
//!   NATS (DESIGN D49), and [`LocalCluster::via`] to reach a chosen pair.
//!
//! Every call panics on failure: a test kit reports by failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cluster;
mod lossy;
mod lying;
mod nats;
mod raw;
mod rogue;

pub use cluster::{LocalCluster, nats_url, postgres_schema, tool_or_skip};
pub use lossy::LostAnswers;
pub use lying::{GrantLie, Lies};
pub use nats::PrivateNats;
pub use raw::{RawUser, test_key};
pub use rogue::Rogue;

use duokey_crypto::GroupId;
use duokey_crypto::{R1, UserId};
use duokey_pki::Ca;
use duokey_pki::clock::Clock;
use duokey_pki::grpc::channel_from;
use duokey_server::config::ServerConfig;
use duokey_server::{RunningNode, dev};
use duokey_storage::{AsStore, CsStore, GmsStore};
use duokey_terminal::{ClientConfig, Line, Terminal};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

pub use duokey_pki::clock::now_ms;

/// The servers of this process on 127.0.0.1, in a temporary directory:
/// the servers' files in `srv/` ([`LocalNet::server_dir`]), each enrolled
/// terminal's profile in a directory named after its user
/// ([`LocalNet::home`]).
pub struct LocalNet {
    /// The test's directory (removed when the net is dropped).
    pub dir: tempfile::TempDir,
    /// The servers' configuration.
    pub config: ServerConfig,
    /// The running roles.
    pub node: RunningNode,
    /// How terminals reach them (`srv/client.toml`).
    pub client: ClientConfig,
    /// How raw users reach them.
    pub remote: Remote,
    /// The clock of the servers and of every terminal [`LocalNet::enroll`]
    /// makes: [`LocalNet::advance`] moves it (D41).
    pub clock: Clock,
}

impl std::ops::Deref for LocalNet {
    type Target = Remote;
    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl LocalNet {
    /// The servers with the development defaults, except that a group may
    /// be rotated every second (tests rotate on purpose).
    pub async fn start() -> LocalNet {
        Self::start_with(|_| {}).await
    }

    /// The servers with `edit` applied to their configuration first.
    pub async fn start_with(edit: impl FnOnce(&mut ServerConfig)) -> LocalNet {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::adjustable();
        let local = dev::start_local(
            &dir.path().join("srv"),
            |c| {
                c.limits.min_rotate_every_secs = 1;
                edit(c);
            },
            clock.clone(),
        )
        .await
        .unwrap();
        Self::around(dir, local, clock)
    }

    /// The servers with a rate limit of `burst` calls at once, then one a
    /// second, per certificate.
    pub async fn start_rate_limited(burst: u32) -> LocalNet {
        Self::start_with(|c| {
            c.limits.rate_per_sec = 1;
            c.limits.rate_burst = burst;
        })
        .await
    }

    fn around(dir: tempfile::TempDir, local: dev::Local, clock: Clock) -> LocalNet {
        let client = ClientConfig::load(&local.client_file).unwrap();
        let remote = Remote::new(&local.config, &client);
        LocalNet {
            dir,
            config: local.config,
            node: local.node,
            client,
            remote,
            clock,
        }
    }

    /// Moves the clock of the servers and of the enrolled terminals forward
    /// by `by`: a test jumps over a grace window, `rn1_wait` or an erasure
    /// window instead of sleeping through it.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Stops the servers and starts them again on the same configuration
    /// and databases (on new ports; [`Remote::reconnect_user`] follows them).
    pub async fn restart(self) -> LocalNet {
        let LocalNet {
            dir,
            config,
            node,
            clock,
            ..
        } = self;
        node.shutdown().await;
        let local = dev::start_local(&config.data_dir, |c| *c = config.clone(), clock.clone())
            .await
            .unwrap();
        Self::around(dir, local, clock)
    }

    /// Stops the servers.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }

    /// Where the servers keep their files (CA, certificate, databases).
    pub fn server_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Where `user`'s terminal profile lives.
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join(user)
    }

    /// Waits (bounded) until the GMS has told the CS every membership change.
    pub async fn cs_caught_up(&self) {
        let gms = self.node.gms.as_ref().unwrap();
        tokio::time::timeout(Duration::from_secs(20), gms.cs_caught_up())
            .await
            .expect("CS sync");
    }

    /// Enrols `name` through the AS with a terminal profile of its own in
    /// [`LocalNet::home`] (no passphrase).
    pub async fn enroll(&self, name: &str) -> Terminal {
        self.enroll_via(name, &self.client).await
    }

    /// Enrols `name` with a profile that talks to the servers `client` names.
    pub async fn enroll_via(&self, name: &str, client: &ClientConfig) -> Terminal {
        let id = UserId::new(name).unwrap();
        let token = self.token(name).await;
        let mut t = Terminal::init(&self.home(name), &id, &token, client, None)
            .await
            .unwrap();
        t.set_clock(self.clock.clone());
        t
    }

    /// The AS's database, as its operator sees it.
    pub async fn as_db(&self) -> AsStore {
        AsStore::open(&role_db_url(&self.config, "as"))
            .await
            .unwrap()
    }

    /// The GMS's database, as its operator sees it.
    pub async fn gms_db(&self) -> GmsStore {
        GmsStore::open(&role_db_url(&self.config, "gms"))
            .await
            .unwrap()
    }

    /// The CS's database, as its operator sees it.
    pub async fn cs_db(&self) -> CsStore {
        CsStore::open(&role_db_url(&self.config, "cs"))
            .await
            .unwrap()
    }

    /// The real GMS behind a lying wrapper on a port of its own, and the
    /// client configuration that reaches it (SPEC §7 P9).
    pub async fn lying_gms(&self) -> (ClientConfig, Lies) {
        let lies = Lies::default();
        let gms = self.node.gms.clone().unwrap();
        let addr = lying::serve(gms, &self.server_dir(), lies.clone()).await;
        let mut cfg = self.client.clone();
        cfg.gms_url = duokey_terminal::config::Urls::one(format!("https://{addr}"));
        (cfg, lies)
    }

    /// The real CS behind a wrapper that loses the answers of posts it
    /// stored ([`LostAnswers::lose`]), and the client configuration that
    /// reaches it.
    pub async fn lossy_cs(&self) -> (ClientConfig, LostAnswers) {
        let lost = LostAnswers::default();
        let cs = self.node.cs.clone().unwrap();
        let addr = lossy::serve(cs, &self.server_dir(), lost.clone()).await;
        let mut cfg = self.client.clone();
        cfg.cs_url = duokey_terminal::config::Urls::one(format!("https://{addr}"));
        (cfg, lost)
    }

    /// A second GMS over a copy of the real one's database as it is now: an
    /// operator who forks the group's history to show some members another
    /// one (SPEC §4.7 "Equivocation"; see [`Lies::fork_to`]).
    pub async fn forked_gms(&self) -> duokey_gms::Gms {
        let copy = self.server_dir().join("gms-fork.db");
        let live = sqlx::SqlitePool::connect(&role_db_url(&self.config, "gms"))
            .await
            .unwrap();
        sqlx::query("VACUUM INTO ?")
            .bind(copy.display().to_string())
            .execute(&live)
            .await
            .unwrap();
        live.close().await;
        let db = GmsStore::open_sqlite(&copy).await.unwrap();
        duokey_gms::Gms::new(
            db,
            duokey_gms::GmsConfig {
                clock: self.clock.clone(),
                ..duokey_gms::GmsConfig::default()
            },
        )
    }

    /// Every R1 of `gid` that `t`'s user can get hold of now: what its
    /// terminal holds, plus every `rn1` item for it the CS keeps, opened with
    /// its delivery key (an attacker's program would not drop one). Taken
    /// after a removal, this sees a new RN1 wrongly sent to the removed
    /// member, which keys captured before it would not.
    pub async fn r1s_reaching(&self, t: &Terminal, gid: &GroupId) -> Vec<(u32, R1)> {
        let cs = self.cs_db().await;
        let inbox = cs.inbox_after(t.user().as_str(), 0, 10_000).await.unwrap();
        cs.close().await;
        let items: Vec<Vec<u8>> = inbox.into_iter().map(|e| e.item).collect();
        let mut out = t.held_r1s(gid).await.unwrap();
        out.extend(t.r1s_in(gid, &items));
        out
    }

    /// How many `rn1` items the CS holds for `user` (who never syncs in the
    /// attack tests): what reached the attacker.
    pub async fn rn1_items_to(&self, user: &str) -> usize {
        let cs = self.cs_db().await;
        let inbox = cs.inbox_after(user, 0, 100_000).await.unwrap();
        cs.close().await;
        inbox
            .iter()
            .filter_map(|e| duokey_crypto::SignedItem::parse(&e.item).ok())
            .filter(|s| matches!(s.item.body.kind(), duokey_crypto::ItemKind::Rn1))
            .count()
    }
}

/// The database URL of a role: the configured one, or SQLite in the data
/// directory.
fn role_db_url(config: &ServerConfig, role: &str) -> String {
    let chosen = match role {
        "as" => &config.database.as_url,
        "gms" => &config.database.gms,
        "cs" => &config.database.cs,
        other => panic!("no server role {other:?}"),
    };
    match chosen {
        Some(url) => config.db_url(url),
        None => format!(
            "sqlite://{}",
            config.data_dir.join(format!("{role}.db")).display()
        ),
    }
}

/// How to reach servers and enrol raw users: in this process or another.
pub struct Remote {
    /// The servers' data directory.
    pub dir: PathBuf,
    /// The GMS (and AS) URL.
    pub gms_url: String,
    /// The CS URL.
    pub cs_url: String,
    /// The organisation's CA.
    pub ca: Ca,
    /// Where the AS keeps its tokens.
    pub as_db_url: String,
}

impl Remote {
    fn new(config: &ServerConfig, client: &ClientConfig) -> Remote {
        Remote {
            dir: config.data_dir.clone(),
            gms_url: client.gms_url.as_slice()[0].clone(),
            cs_url: client.cs_url.as_slice()[0].clone(),
            ca: Ca::load(&config.data_dir.join("ca")).unwrap(),
            as_db_url: role_db_url(config, "as"),
        }
    }

    /// Servers of another process whose data directory is `dir` and which
    /// listen on `gms` and `cs`.
    pub fn attach(dir: &Path, gms: &str, cs: &str) -> Remote {
        Remote {
            dir: dir.to_owned(),
            gms_url: format!("https://{gms}"),
            cs_url: format!("https://{cs}"),
            ca: Ca::load(&dir.join("ca")).unwrap(),
            as_db_url: format!("sqlite://{}", dir.join("as.db").display()),
        }
    }

    /// The same servers, now listening on `gms` and `cs` (after a restart).
    pub fn reconnect(&mut self, gms: &str, cs: &str) {
        self.gms_url = format!("https://{gms}");
        self.cs_url = format!("https://{cs}");
    }

    /// The GMS (and AS) URL.
    pub fn gms_url(&self) -> String {
        self.gms_url.clone()
    }

    /// The CS URL.
    pub fn cs_url(&self) -> String {
        self.cs_url.clone()
    }

    /// A one-time enrolment token for `user`, from the AS database.
    pub async fn token(&self, user: &str) -> String {
        let db = AsStore::open(&self.as_db_url).await.unwrap();
        let token = duokey_accounts::issue_token(&db, &UserId::new(user).unwrap())
            .await
            .unwrap();
        db.close().await;
        token.to_string()
    }

    /// An anonymous (no client certificate) channel.
    pub fn anonymous(&self, url: &str) -> Channel {
        self.anonymous_from(url, None)
    }

    /// An anonymous channel whose connections leave from `local`.
    pub fn anonymous_from(&self, url: &str, local: Option<IpAddr>) -> Channel {
        channel_from(
            url,
            duokey_pki::client_config(&self.ca.cert_der(), None).unwrap(),
            local,
        )
        .unwrap()
    }
}

/// The next message of `stream`, bounded: a bug fails the test with what was
/// awaited instead of hanging it.
pub async fn next_within<S>(stream: &mut S, what: &str) -> S::Item
where
    S: tokio_stream::Stream + Unpin,
{
    use tokio_stream::StreamExt;
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}

/// `owner` creates group `name` (default policy) and `other` joins it;
/// the group's id.
pub async fn group_of_two(owner: &mut Terminal, other: &mut Terminal, name: &str) -> GroupId {
    let gid = new_group(owner, name).await;
    join(owner, other, &gid).await;
    gid
}

/// Invites `other` into `gid` and completes the join on both terminals.
pub async fn join(owner: &mut Terminal, other: &mut Terminal, gid: &GroupId) {
    join_with(owner, other, gid, duokey_crypto::Rights::NONE).await;
}

/// [`join`], with `rights` for the invitee.
pub async fn join_with(
    owner: &mut Terminal,
    other: &mut Terminal,
    gid: &GroupId,
    rights: duokey_crypto::Rights,
) {
    owner.invite(gid, other.user(), rights).await.unwrap();
    other.sync().await.unwrap();
    other.accept(&hex::encode(gid)).await.unwrap();
    owner.sync().await.unwrap();
    other.sync().await.unwrap();
}

/// The notices (`-- …` lines) `t` shows for the group, in order.
pub async fn notices(t: &Terminal, gid: &GroupId) -> Vec<String> {
    lines_of(t, gid, |l| match l {
        Line::Notice(n) => Some(n.notice),
        Line::Message(_) => None,
    })
    .await
}

/// What `pick` takes of each line `t` shows for the group, in order.
async fn lines_of<T>(t: &Terminal, gid: &GroupId, pick: impl Fn(Line) -> Option<T>) -> Vec<T> {
    t.history(gid)
        .await
        .unwrap()
        .into_iter()
        .filter_map(pick)
        .collect()
}

/// A new group `name` that `t` owns, with the default policy.
pub async fn new_group(t: &mut Terminal, name: &str) -> GroupId {
    let policy = duokey_terminal::GroupPolicy::default();
    t.create_group(name, policy).await.unwrap().group_id
}

/// The message texts `t` shows for the group.
pub async fn texts(t: &Terminal, gid: &GroupId) -> Vec<String> {
    lines_of(t, gid, |l| match l {
        Line::Message(m) => Some(m.text),
        Line::Notice(_) => None,
    })
    .await
}
