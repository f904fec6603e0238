//! A cluster in this process (issue 17): several GMS (+AS) nodes and CS
//! nodes on 127.0.0.1 sharing one PostgreSQL schema and one NATS subject
//! prefix of their own, with real mutual TLS between everyone.

use crate::Remote;
use duokey_pki::Ca;
use duokey_pki::clock::Clock;
use duokey_pki::grpc::Urls;
use duokey_server::config::ServerConfig;
use duokey_server::{Node, RunningNode};
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
    let schema = format!("duokey_t{}_{:016x}", std::process::id(), rand_u64());
    let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "DUOKEY_TEST_POSTGRES_URL is set but PostgreSQL at {url} cannot be reached ({e}): \
             start it (`bash .ci/run` does: pg_ctlcluster --skip-systemctl-redirect VERSION main start) \
             or unset the variable to skip these tests"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
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

/// GMS and CS nodes of one cluster in this process.
pub struct LocalCluster {
    /// The test's directory (removed when dropped).
    pub dir: tempfile::TempDir,
    /// The GMS (and AS) nodes.
    pub gms: Vec<RunningNode>,
    /// The CS nodes.
    pub cs: Vec<RunningNode>,
    /// Every URL of every role, as a terminal of the cluster has them.
    pub client: ClientConfig,
    /// The shared database.
    pub database_url: String,
    /// The clock of every node (D41).
    pub clock: Clock,
    base: ServerConfig,
}

impl LocalCluster {
    /// `gms` GMS+AS nodes and `cs` CS nodes on a fresh PostgreSQL schema and
    /// NATS prefix; `None` (said) without PostgreSQL or NATS.
    pub async fn start(gms: usize, cs: usize) -> Option<LocalCluster> {
        let (db, nats) = (postgres_schema().await?, nats_url()?);
        let dir = tempfile::tempdir().unwrap();
        let mut base =
            duokey_server::dev::prepare(&dir.path().join("srv"), "127.0.0.1:0", "127.0.0.1:0")
                .unwrap();
        base.limits.min_rotate_every_secs = 1;
        for url in [
            &mut base.database.as_url,
            &mut base.database.gms,
            &mut base.database.cs,
        ] {
            *url = Some(db.clone());
        }
        base.nats_url = Some(nats);
        base.nats_subject_prefix = format!("duokey.test.{:016x}", rand_u64());
        let clock = Clock::adjustable();
        let mut cluster = LocalCluster {
            dir,
            gms: Vec::new(),
            cs: Vec::new(),
            client: ClientConfig {
                as_url: Urls::many(Vec::new()),
                gms_url: Urls::many(Vec::new()),
                cs_url: Urls::many(Vec::new()),
                ca_cert: std::fs::read_to_string(base.path(&base.tls.ca_cert)).unwrap(),
            },
            database_url: db,
            clock,
            base,
        };
        for _ in 0..cs {
            cluster.cs.push(cluster.start_node(&["cs"], None).await);
        }
        for _ in 0..gms {
            cluster
                .gms
                .push(cluster.start_node(&["as", "gms"], None).await);
        }
        let urls = |nodes: &[RunningNode], cs: bool| {
            let addr = |n: &RunningNode| if cs { n.cs_addr } else { n.gms_addr };
            Urls::many(
                nodes
                    .iter()
                    .map(|n| format!("https://{}", addr(n).unwrap()))
                    .collect(),
            )
        };
        cluster.client.as_url = urls(&cluster.gms, false);
        cluster.client.gms_url = urls(&cluster.gms, false);
        cluster.client.cs_url = urls(&cluster.cs, true);
        Some(cluster)
    }

    /// A CS node on the cluster's database that hears none of the other
    /// nodes' frames (a subject prefix of its own): what it gets right, it
    /// got from the database, not from a frame that happened to arrive.
    pub async fn start_deaf_cs(&mut self) {
        let node = self.start_node_with(&["cs"], None, |c| {
            c.nats_subject_prefix.push_str(".deaf");
        });
        let node = node.await;
        self.cs.push(node);
    }

    /// One more node with `roles` (the GMS nodes reach every CS node started
    /// before them), its CS on `cs_addr` if given.
    pub async fn start_node(&self, roles: &[&str], cs_addr: Option<SocketAddr>) -> RunningNode {
        self.start_node_with(roles, cs_addr, |_| {}).await
    }

    async fn start_node_with(
        &self,
        roles: &[&str],
        cs_addr: Option<SocketAddr>,
        edit: impl FnOnce(&mut ServerConfig),
    ) -> RunningNode {
        let mut cfg = self.base.clone();
        edit(&mut cfg);
        cfg.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        if let Some(addr) = cs_addr {
            cfg.cs_addr = addr.to_string();
        }
        let cs_urls: Vec<String> = self
            .cs
            .iter()
            .map(|n| format!("https://{}", n.cs_addr.unwrap()))
            .collect();
        if !cs_urls.is_empty() {
            cfg.cs_url = Some(Urls::many(cs_urls));
        }
        Node::start_with_clock(&cfg, self.clock.clone())
            .await
            .unwrap()
    }

    /// Stops CS node `i` (its streams end, its port closes) and returns
    /// its address, for [`LocalCluster::restart_cs`].
    pub async fn stop_cs(&mut self, i: usize) -> SocketAddr {
        let node = self.cs.remove(i);
        let addr = node.cs_addr.unwrap();
        node.shutdown().await;
        addr
    }

    /// Starts a CS node again on `addr` (as the last of `cs`).
    pub async fn restart_cs(&mut self, addr: SocketAddr) {
        let node = self.start_node(&["cs"], Some(addr)).await;
        self.cs.push(node);
    }

    /// How raw users reach GMS node `gms` and CS node `cs`.
    pub fn via(&self, gms: usize, cs: usize) -> Remote {
        Remote {
            dir: self.base.data_dir.clone(),
            gms_url: format!("https://{}", self.gms[gms].gms_addr.unwrap()),
            cs_url: format!("https://{}", self.cs[cs].cs_addr.unwrap()),
            ca: Ca::load(&self.base.data_dir.join("ca")).unwrap(),
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
