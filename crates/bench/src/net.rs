//! Real servers for the benchmarks: `duokey-server run` in a child process
//! on 127.0.0.1 (so that its CPU time and memory are its own), and members
//! with certificates from its CA, each on its own mutual-TLS connections.

use crate::{BenchResult, Row};
use duokey_crypto::{IdentityKey, UserId};
use duokey_pki::grpc::channel;
use duokey_pki::{Ca, identity_private_key_der, make_csr};
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::group_management_client::GroupManagementClient;
use duokey_server::config::ServerConfig;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use tonic::transport::Channel;

/// `duokey-server` child processes (one, or the nodes of a cluster);
/// killed when dropped.
pub struct ServerProc {
    nodes: Vec<Node>,
    /// Its data directory (CA, databases).
    pub dir: tempfile::TempDir,
    /// `https://` URL of the GMS (and AS).
    pub gms_url: String,
    /// `https://` URL of the (first) CS.
    pub cs_url: String,
    /// Every CS node's URL (one on a single node).
    pub cs_urls: Vec<String>,
    /// The CA that signs members' certificates.
    pub ca: Ca,
}

/// One running `duokey-server run` and the addresses of its first line.
struct Node {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    gms_url: Option<String>,
    cs_url: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> BenchResult<PathBuf> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name("duokey-server");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it first (cargo build --release --bin duokey-server)",
            bin.display()
        ))
    }
}

/// The configuration of a bench server: limits raised for load.
fn bench_config(dir: &std::path::Path) -> BenchResult<ServerConfig> {
    let mut cfg = duokey_server::dev::prepare(dir, "127.0.0.1:0", "127.0.0.1:0")
        .map_err(|e| e.to_string())?;
    cfg.max_connections = 30_000;
    cfg.limits.rate_per_sec = 1_000_000;
    cfg.limits.rate_burst = 1_000_000;
    cfg.limits.subscriber_queue = 65_536;
    cfg.limits.min_rotate_every_secs = 1;
    Ok(cfg)
}

impl Node {
    /// Saves `cfg` as `file` in its data directory and runs it.
    fn run(cfg: &ServerConfig, file: &str) -> BenchResult<Node> {
        let config = cfg.data_dir.join(file);
        cfg.save(&config).map_err(|e| e.to_string())?;
        let mut child = Command::new(server_binary()?)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(cfg.data_dir.join("server.log"))
                    .map_err(|e| e.to_string())?,
            )
            .spawn()
            .map_err(|e| format!("starting duokey-server: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        // "Duokey server: GMS+AS on A, CS on B, data in DIR"
        if !line.starts_with("Duokey server:") {
            let log = std::fs::read_to_string(cfg.data_dir.join("server.log")).unwrap_or_default();
            return Err(format!("duokey-server did not start: {}", log.trim()));
        }
        let addr = |after: &str| {
            line.split(after)
                .nth(1)
                .and_then(|s| s.split(',').next())
                .map(str::trim)
                .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
                .map(|a| format!("https://{a}"))
        };
        Ok(Node {
            gms_url: addr("GMS+AS on "),
            cs_url: addr("CS on "),
            child,
            _stdout: stdout,
        })
    }
}

impl ServerProc {
    /// Prepares a data directory like `duokey-server dev`, lets `edit` change
    /// the configuration (limits are raised for load), and starts the server.
    pub fn start(edit: impl FnOnce(&mut ServerConfig)) -> BenchResult<ServerProc> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = bench_config(dir.path())?;
        edit(&mut cfg);
        let node = Node::run(&cfg, "server.toml")?;
        Self::around(dir, vec![node])
    }

    /// A cluster (DESIGN D49): `cs_nodes` CS processes and one AS+GMS
    /// process on the PostgreSQL database `database_url` and NATS at
    /// `nats_url`, with a subject prefix of their own.
    pub fn cluster(cs_nodes: usize, database_url: &str, nats_url: &str) -> BenchResult<ServerProc> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = bench_config(dir.path())?;
        for url in [
            &mut cfg.database.as_url,
            &mut cfg.database.gms,
            &mut cfg.database.cs,
        ] {
            *url = Some(database_url.to_owned());
        }
        cfg.nats_url = Some(nats_url.to_owned());
        cfg.nats_subject_prefix = format!("duokey.bench.{}", std::process::id());
        // Each node has a data directory of its own (it is locked); they
        // share the CA and the server certificate of the first.
        for file in [&mut cfg.tls.ca_cert, &mut cfg.tls.cert, &mut cfg.tls.key] {
            *file = cfg.data_dir.join(&*file);
        }
        cfg.tls.ca_key = cfg.tls.ca_key.as_ref().map(|k| cfg.data_dir.join(k));
        cfg.tls.revocation_list = cfg
            .tls
            .revocation_list
            .as_ref()
            .map(|k| cfg.data_dir.join(k));
        let node_dir = |name: &str| -> BenchResult<PathBuf> {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
            Ok(d)
        };
        let mut nodes = Vec::new();
        cfg.roles = vec!["cs".into()];
        for i in 0..cs_nodes {
            cfg.data_dir = node_dir(&format!("cs{i}"))?;
            nodes.push(Node::run(&cfg, "server.toml")?);
        }
        let cs_urls: Vec<String> = nodes.iter().filter_map(|n| n.cs_url.clone()).collect();
        cfg.roles = vec!["as".into(), "gms".into()];
        cfg.cs_url = Some(duokey_pki::grpc::Urls::many(cs_urls));
        cfg.data_dir = node_dir("gms")?;
        nodes.insert(0, Node::run(&cfg, "server.toml")?);
        Self::around(dir, nodes)
    }

    fn around(dir: tempfile::TempDir, nodes: Vec<Node>) -> BenchResult<ServerProc> {
        let gms_url = nodes
            .iter()
            .find_map(|n| n.gms_url.clone())
            .ok_or("no GMS started")?;
        let cs_urls: Vec<String> = nodes.iter().filter_map(|n| n.cs_url.clone()).collect();
        let cs_url = cs_urls.first().cloned().ok_or("no CS started")?;
        let ca = Ca::load(&dir.path().join("ca")).map_err(|e| e.to_string())?;
        Ok(ServerProc {
            nodes,
            dir,
            gms_url,
            cs_url,
            cs_urls,
            ca,
        })
    }

    /// The (first) server process's id.
    pub fn pid(&self) -> u32 {
        self.nodes.first().map_or(0, |n| n.child.id())
    }

    /// The process ids of the CS nodes.
    pub fn cs_pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.cs_url.is_some())
            .map(|n| n.child.id())
            .collect()
    }

    /// A member `name` with a fresh key and a certificate from the CA, on
    /// the first CS node.
    pub fn member(&self, name: &str) -> BenchResult<Member> {
        self.member_on(name, 0)
    }

    /// A member on CS node `cs` (modulo the number of nodes).
    pub fn member_on(&self, name: &str, cs: usize) -> BenchResult<Member> {
        let id = UserId::new(name).map_err(|e| e.to_string())?;
        let key = IdentityKey::generate();
        let csr = make_csr(&key, &id).map_err(|e| e.to_string())?;
        let cert = self.ca.sign_csr(&csr, &id, 30).map_err(|e| e.to_string())?;
        let tls = duokey_pki::client_config(
            &self.ca.cert_der(),
            Some((vec![cert], identity_private_key_der(&key))),
        )
        .map_err(|e| e.to_string())?;
        let gms = channel(&self.gms_url, tls.clone()).map_err(|e| e.to_string())?;
        let cs_url = &self.cs_urls[cs % self.cs_urls.len()];
        let cs = channel(cs_url, tls).map_err(|e| e.to_string())?;
        Ok(Member {
            id,
            key,
            gms: GroupManagementClient::new(gms),
            cs: CommunicationClient::new(cs).max_decoding_message_size(64 << 20),
        })
    }
}

/// A PostgreSQL schema of its own for a benchmark run.
pub struct Schema {
    /// The URL whose connections use it.
    pub url: String,
    admin: String,
    name: String,
}

/// A fresh schema on the PostgreSQL database `url`.
pub async fn fresh_schema(url: &str) -> BenchResult<Schema> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .subsec_nanos();
    let name = format!("duokey_bench_{}_{nanos}", std::process::id());
    let pool = sqlx::PgPool::connect(url)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    pool.close().await;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(Schema {
        url: format!("{url}{sep}options=-c%20search_path%3D{name}"),
        admin: url.to_owned(),
        name,
    })
}

impl Schema {
    /// Drops the schema and what it holds.
    pub async fn drop(self) {
        if let Ok(pool) = sqlx::PgPool::connect(&self.admin).await {
            let sql = format!("DROP SCHEMA {} CASCADE", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }
}

/// CPU time spent by the CS nodes of a [`ServerProc`], and by this
/// machine's PostgreSQL and NATS processes, since [`CpuMeter::start`].
pub struct CpuMeter {
    nodes: Vec<(u32, f64)>,
    postgres: f64,
    nats: f64,
}

impl CpuMeter {
    /// Starts counting.
    pub fn start(srv: &ServerProc) -> CpuMeter {
        CpuMeter {
            nodes: srv.cs_pids().into_iter().map(|p| (p, cpu_ms(p))).collect(),
            postgres: cpu_ms_named("postgres"),
            nats: cpu_ms_named("nats-server"),
        }
    }

    /// CPU µs per delivery: each CS node, all of them, PostgreSQL, NATS.
    pub fn rows(&self, scenario: &str, params: &str, system: &str, deliveries: u64) -> Vec<Row> {
        #[expect(clippy::cast_precision_loss, reason = "a count far below 2^52")]
        let per = |ms: f64| ms * 1000.0 / (deliveries.max(1) as f64);
        let row = |what: String, ms: f64| {
            Row::new(
                scenario,
                params,
                &format!("{system}_{what}_cpu_us_per_delivery"),
                per(ms),
                "µs",
            )
        };
        let mut rows = Vec::new();
        let mut total = 0.0;
        for (i, (pid, before)) in self.nodes.iter().enumerate() {
            let spent = cpu_ms(*pid) - before;
            total += spent;
            if self.nodes.len() > 1 {
                rows.push(row(format!("cs{i}"), spent));
            }
        }
        rows.push(row("cs".into(), total));
        rows.push(row(
            "postgres".into(),
            cpu_ms_named("postgres") - self.postgres,
        ));
        rows.push(row("nats".into(), cpu_ms_named("nats-server") - self.nats));
        rows
    }
}

/// CPU time of every process of this machine named `comm`, in ms.
fn cpu_ms_named(comm: &str) -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_ms)
        .filter(|ms| ms.is_finite())
        .sum()
}

/// A user with its own TLS connections to the GMS and the CS.
pub struct Member {
    /// User id.
    pub id: UserId,
    /// Identity key (signs envelopes).
    pub key: IdentityKey,
    /// GMS client.
    pub gms: GroupManagementClient<Channel>,
    /// CS client.
    pub cs: CommunicationClient<Channel>,
}

/// CPU time (user + system) of every thread of process `pid`, in ms, from
/// `/proc/PID/task/*/schedstat` (nanosecond resolution).
pub fn cpu_ms(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// Profiling hook: when `DUOKEY_BENCH_PERF_CTL` names the control FIFO of
/// `perf record --control fifo:FIFO --delay=-1`, writes `command` (`enable`
/// or `disable`) to it, so that a profile covers only the measured window
/// (docs/PERFORMANCE.md, "Profile").
pub fn perf_ctl(command: &str) {
    if let Some(fifo) = std::env::var_os("DUOKEY_BENCH_PERF_CTL") {
        let _ = std::fs::write(fifo, format!("{command}\n"));
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// 16 random bytes (report ids).
pub fn random16() -> Vec<u8> {
    duokey_crypto::ItemId::random()
        .map(|i| i.as_bytes().to_vec())
        .unwrap_or_else(|_| vec![0; 16])
}
