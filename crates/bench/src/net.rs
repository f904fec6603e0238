//! Real servers for the benchmarks: `duokey-server run` in a child process
//! on 127.0.0.1 (so that its CPU time and memory are its own), and members
//! with certificates from its CA, each on its own mutual-TLS connections.

use crate::BenchResult;
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

/// A `duokey-server` child process; killed when dropped.
pub struct ServerProc {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// Its data directory (CA, databases).
    pub dir: tempfile::TempDir,
    /// `https://` URL of the GMS (and AS).
    pub gms_url: String,
    /// `https://` URL of the CS.
    pub cs_url: String,
    /// The CA that signs members' certificates.
    pub ca: Ca,
}

impl Drop for ServerProc {
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

impl ServerProc {
    /// Prepares a data directory like `duokey-server dev`, lets `edit` change
    /// the configuration (limits are raised for load), and starts the server.
    pub fn start(edit: impl FnOnce(&mut ServerConfig)) -> BenchResult<ServerProc> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = duokey_server::dev::prepare(dir.path(), "127.0.0.1:0", "127.0.0.1:0")
            .map_err(|e| e.to_string())?;
        cfg.max_connections = 30_000;
        cfg.limits.rate_per_sec = 1_000_000;
        cfg.limits.rate_burst = 1_000_000;
        cfg.limits.subscriber_queue = 65_536;
        cfg.limits.min_rotate_every_secs = 1;
        edit(&mut cfg);
        let config = dir.path().join("server.toml");
        cfg.save(&config).map_err(|e| e.to_string())?;
        let mut child = Command::new(server_binary()?)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting duokey-server: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        // "Duokey server: GMS+AS on A, CS on B, data in DIR"
        let addr = |after: &str| {
            line.split(after)
                .nth(1)
                .and_then(|s| s.split(',').next())
                .map(|a| format!("https://{}", a.trim()))
                .ok_or_else(|| format!("unexpected first line: {line:?}"))
        };
        let (gms_url, cs_url) = (addr("GMS+AS on ")?, addr("CS on ")?);
        let ca = Ca::load(&dir.path().join("ca")).map_err(|e| e.to_string())?;
        Ok(ServerProc {
            child,
            _stdout: stdout,
            dir,
            gms_url,
            cs_url,
            ca,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A member `name` with a fresh key and a certificate from the CA.
    pub fn member(&self, name: &str) -> BenchResult<Member> {
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
        let cs = channel(&self.cs_url, tls).map_err(|e| e.to_string())?;
        Ok(Member {
            id,
            key,
            gms: GroupManagementClient::new(gms),
            cs: CommunicationClient::new(cs).max_decoding_message_size(64 << 20),
        })
    }
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
