//! A cluster in this process (DESIGN D49): several GMS (+AS) nodes and CS
//! nodes on 127.0.0.1 sharing one PostgreSQL schema and one NATS subject
//! prefix of their own, with real mutual TLS between everyone.

use crate::Remote;
use duokey_pki::Ca;
use duokey_pki::clock::Clock;
use duokey_server::dev;
use duokey_terminal::ClientConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// A fresh schema on the test PostgreSQL (`DUOKEY_TEST_POSTGRES_URL`), so
/// that runs and tests sharing the database never meet: the URL that makes
/// it the connection's search path. `None`, with a `SKIPPED:` line, when
/// the variable is not set.
pub async fn postgres_schema() -> Option<String> {
    let Ok(url) = std::env::var("DUOKEY_TEST_POSTGRES_URL") else {
        println!("SKIPPED: DUOKEY_TEST_POSTGRES_URL is not set (bash .ci/run sets it)");
        return None;
    };
    let schema = duokey_storage::scratch::Schema::create(&url, "duokey_t")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "DUOKEY_TEST_POSTGRES_URL is set but a schema cannot be made at {url} ({e}): \
                 start PostgreSQL (`bash .ci/run` does: pg_ctlcluster --skip-systemctl-redirect VERSION main start) \
                 or unset the variable to skip these tests"
            )
        });
    Some(schema.url)
}

/// Whether the tool a test needs is here. If not, the test fails with
/// `install` where `env` is set — the environment (`bash .ci/run`) says
/// the service the tool belongs to is present, so a missing tool is a
/// broken set-up, not a reason to pass — and is skipped with a `SKIPPED:`
/// line where it is not.
pub fn tool_or_skip(present: bool, tool: &str, env: &str, install: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os(env).is_some() {
        panic!("{env} is set but {tool} is not installed: {install}, or unset {env} to skip");
    }
    println!("SKIPPED: {tool} is not installed and {env} is not set");
    false
}

fn rand_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    u64::try_from(nanos % u128::from(u64::MAX)).unwrap() ^ u64::from(std::process::id()) << 48
}

/// The cluster's NATS (`DUOKEY_TEST_NATS_URL`), or `None` with a `SKIPPED:`
/// line.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("DUOKEY_TEST_NATS_URL").ok();
    if url.is_none() {
        println!("SKIPPED: DUOKEY_TEST_NATS_URL is not set (bash .ci/run sets it)");
    }
    url
}

/// GMS and CS nodes of one cluster in this process (their list and
/// configuration through `Deref` to [`dev::LocalCluster`]).
pub struct LocalCluster {
    /// The test's directory (removed when dropped).
    pub dir: tempfile::TempDir,
    /// The running nodes.
    pub nodes: dev::LocalCluster,
    /// Every URL of every role, as a terminal of the cluster has them.
    pub client: ClientConfig,
    /// The shared database.
    pub database_url: String,
    /// The clock of every node (D41).
    pub clock: Clock,
}

impl std::ops::Deref for LocalCluster {
    type Target = dev::LocalCluster;
    fn deref(&self) -> &dev::LocalCluster {
        &self.nodes
    }
}

impl std::ops::DerefMut for LocalCluster {
    fn deref_mut(&mut self) -> &mut dev::LocalCluster {
        &mut self.nodes
    }
}

impl LocalCluster {
    /// `gms` GMS+AS nodes and `cs` CS nodes on a fresh PostgreSQL schema and
    /// NATS prefix; `None` (said) without PostgreSQL or NATS.
    pub async fn start(gms: usize, cs: usize) -> Option<LocalCluster> {
        Self::start_on(gms, cs, &nats_url()?).await
    }

    /// [`LocalCluster::start`] on the NATS server at `nats` (one a test
    /// stops and starts).
    pub async fn start_on(gms: usize, cs: usize, nats: &str) -> Option<LocalCluster> {
        let db = postgres_schema().await?;
        let dir = tempfile::tempdir().unwrap();
        let plan = dev::ClusterPlan {
            database_url: db.clone(),
            nats_url: nats.to_owned(),
            subject_prefix: format!("duokey.test.{:016x}", rand_u64()),
            gms,
            cs,
        };
        let clock = Clock::adjustable();
        let nodes = dev::LocalCluster::start(
            &dir.path().join("srv"),
            &plan,
            |c| c.limits.min_rotate_every_secs = 1,
            clock.clone(),
        )
        .await
        .unwrap();
        let client = ClientConfig::load(&nodes.client_file).unwrap();
        Some(LocalCluster {
            dir,
            nodes,
            client,
            database_url: db,
            clock,
        })
    }

    /// A CS node on the cluster's database that hears none of the other
    /// nodes' frames (a subject prefix of its own): what it gets right, it
    /// got from the database, not from a frame that happened to arrive.
    pub async fn start_deaf_cs(&mut self) {
        let node = self
            .nodes
            .start_node_with(&["cs"], None, self.clock.clone(), |c| {
                c.nats_subject_prefix.push_str(".deaf");
            })
            .await
            .unwrap();
        self.nodes.cs.push(node);
    }

    /// Stops CS node `i` (its streams end, its port closes) and returns
    /// its address, for [`LocalCluster::restart_cs`].
    pub async fn stop_cs(&mut self, i: usize) -> SocketAddr {
        let node = self.nodes.cs.remove(i);
        let addr = node.cs_addr.unwrap();
        node.shutdown().await;
        addr
    }

    /// Starts a CS node again on `addr` (as the last of `cs`).
    pub async fn restart_cs(&mut self, addr: SocketAddr) {
        let node = self
            .nodes
            .start_node(&["cs"], Some(addr), self.clock.clone())
            .await
            .unwrap();
        self.nodes.cs.push(node);
    }

    /// How raw users reach GMS node `gms` and CS node `cs`.
    pub fn via(&self, gms: usize, cs: usize) -> Remote {
        Remote {
            dir: self.config.data_dir.clone(),
            gms_url: format!("https://{}", self.gms[gms].gms_addr.unwrap()),
            cs_url: format!("https://{}", self.cs[cs].cs_addr.unwrap()),
            ca: Ca::load(&self.config.data_dir.join("ca")).unwrap(),
            as_db_url: self.database_url.clone(),
        }
    }
    /// Waits (bounded) until every GMS node has told the CS every change.
    pub async fn cs_caught_up(&self) {
        for node in &self.gms {
            let gms = node.gms.as_ref().unwrap();
            tokio::time::timeout(Duration::from_secs(20), gms.cs_caught_up())
                .await
                .expect("CS sync");
        }
    }

    /// Enrols `name` with a terminal that knows every node of the cluster
    /// (its profile in the test's directory, no passphrase).
    pub async fn enroll(&self, name: &str) -> duokey_terminal::Terminal {
        let id = duokey_crypto::UserId::new(name).unwrap();
        let token = self.via(0, 0).token(name).await;
        let home = self.dir.path().join(name);
        let mut t = duokey_terminal::Terminal::init(&home, &id, &token, &self.client, None)
            .await
            .unwrap();
        t.set_clock(self.clock.clone());
        t
    }

    /// Moves every node's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}
