//! `duokey-server dev`: a CA, a server certificate and a configuration in one
//! directory, created on first run and reused afterwards.

use crate::config::{Databases, LimitsConfig, ServerConfig, TlsFiles};
use crate::{Error, Node, RunningNode};
use duokey_pki::grpc::Urls;
use duokey_pki::{Ca, Role};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Validity of dev server certificates.
const SERVER_CERT_DAYS: u32 = 825;

/// What terminals need to reach a server (written to `DIR/client.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The AS (enrolment): one URL, or every node's.
    pub as_url: Urls,
    /// The GMS: one URL, or every node's.
    pub gms_url: Urls,
    /// The CS: one URL, or every node's.
    pub cs_url: Urls,
    /// The organisation's CA certificate, PEM.
    pub ca_cert: String,
}

fn create_dir_private(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates (or reuses) the CA, the server certificate and `server.toml` in
/// `dir`, with the given listen addresses. Returns the configuration.
pub fn prepare(dir: &Path, gms_addr: &str, cs_addr: &str) -> Result<ServerConfig, Error> {
    create_dir_private(dir)?;
    let ca_dir = dir.join("ca");
    let ca = if ca_dir.join("ca.pem").exists() {
        Ca::load(&ca_dir)?
    } else {
        create_dir_private(&ca_dir)?;
        let ca = Ca::generate("Duokey development CA")?;
        ca.save(&ca_dir)?;
        tracing::info!(dir = %ca_dir.display(), "created a development CA");
        ca
    };
    if !dir.join("server.pem").exists() {
        let hosts = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        ca.issue_server(&hosts, &[Role::As, Role::Gms, Role::Cs], SERVER_CERT_DAYS)?
            .save(dir, "server")?;
    }
    let cfg = ServerConfig {
        data_dir: PathBuf::from("."),
        roles: vec!["as".into(), "gms".into(), "cs".into()],
        gms_addr: gms_addr.to_owned(),
        cs_addr: cs_addr.to_owned(),
        cs_url: None,
        nats_url: None,
        nats_subject_prefix: "duokey.v1".to_owned(),
        metrics_addr: None,
        max_connections: 10_000,
        tls: TlsFiles {
            ca_cert: "ca/ca.pem".into(),
            ca_key: Some("ca/ca.key".into()),
            cert: "server.pem".into(),
            key: "server.key".into(),
            revocation_list: Some("revoked.txt".into()),
        },
        database: Databases {
            as_url: Some("sqlite://as.db".into()),
            gms: Some("sqlite://gms.db".into()),
            cs: Some("sqlite://cs.db".into()),
        },
        limits: LimitsConfig::default(),
    };
    // An empty revocation list: the file must exist (a missing one is an
    // error, never "nothing revoked"); an existing one is kept.
    let revoked = dir.join("revoked.txt");
    if !revoked.exists() {
        std::fs::write(
            &revoked,
            "# Revoked certificate serials, one hex serial per line (duokey-server revoke).\n",
        )?;
    }
    let path = dir.join("server.toml");
    cfg.save(&path)?;
    ServerConfig::load(&path)
}

/// Takes the data directory `dir` for this process alone: a
/// second `duokey-server` on the same directory would open the same
/// databases and overwrite `client.toml` with its own ports. The lock is
/// held as long as the returned file is open (the whole run); the file
/// names the process that holds it.
pub fn lock_dir(dir: &Path) -> Result<std::fs::File, Error> {
    create_dir_private(dir)?;
    let path = dir.join("duokey-server.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)?;
    if let Err(e) = lock_soon(&file) {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::Usage(match e {
            std::fs::TryLockError::WouldBlock => format!(
                "another duokey-server ({}) is already using {}; stop it first, or give another --dir",
                holder.trim(),
                dir.display()
            ),
            std::fs::TryLockError::Error(e) => {
                format!("cannot lock {}: {e}", path.display())
            }
        }));
    }
    use std::io::Write;
    file.set_len(0)?;
    write!(file, "pid {}", std::process::id())?;
    Ok(file)
}

/// The exclusive lock, waiting up to a second for an administrator's
/// command that is looking (a shared lock held for microseconds, see
/// [`running_server`]) to let go.
fn lock_soon(file: &std::fs::File) -> Result<(), std::fs::TryLockError> {
    for _ in 0..20 {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
    file.try_lock()
}

/// The pid of the `duokey-server` running on `dir` (the one holding its
/// lock, see [`lock_dir`]), if any. Looking takes a shared lock, so two
/// commands looking at once do not see each other as a server; the pid
/// read must also be a process of this system running `duokey-server`
/// (not a reused pid, not one of another pid namespace).
pub fn running_server(dir: &Path) -> Option<i32> {
    let path = dir.join("duokey-server.lock");
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => {}
        // Nobody holds it (ours is released when `file` drops), or no lock.
        _ => return None,
    }
    let pid: i32 = std::fs::read_to_string(&path)
        .ok()?
        .trim()
        .strip_prefix("pid ")?
        .parse()
        .ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = exe.file_name()?.to_string_lossy();
    name.starts_with("duokey-server").then_some(pid)
}

/// Asks the server running on `dir` to reload its revocation list and
/// certificate now (SIGHUP); its pid, if one runs and was told.
pub fn reload_running(dir: &Path) -> Option<i32> {
    let pid = running_server(dir)?;
    let target = rustix::process::Pid::from_raw(pid)?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).ok()?;
    Some(pid)
}

/// Writes `DIR/client.toml` for terminals, with the addresses actually bound.
pub fn write_client_file(
    dir: &Path,
    gms: &[SocketAddr],
    cs: &[SocketAddr],
) -> Result<PathBuf, Error> {
    let urls =
        |addrs: &[SocketAddr]| Urls::many(addrs.iter().map(|a| format!("https://{a}")).collect());
    let file = ClientFile {
        as_url: urls(gms),
        gms_url: urls(gms),
        cs_url: urls(cs),
        ca_cert: std::fs::read_to_string(dir.join("ca/ca.pem"))?,
    };
    let path = dir.join("client.toml");
    file.write(&path, "duokey-server dev")?;
    Ok(path)
}

impl ClientFile {
    /// What terminals need to reach the nodes of `configs` (one node, or
    /// every node of a cluster) by `hosts`: one host for all, or one per
    /// configuration (the names their certificates carry). The AS and GMS
    /// URLs list each node that runs the role, in the order given.
    pub fn for_nodes(configs: &[ServerConfig], hosts: &[String]) -> Result<ClientFile, Error> {
        if hosts.len() != 1 && hosts.len() != configs.len() {
            return Err(Error::Config(format!(
                "give one --host for every node, or one for all ({} configurations, {} hosts)",
                configs.len(),
                hosts.len()
            )));
        }
        let (mut as_url, mut gms_url, mut cs_url) = (Vec::new(), Vec::new(), Vec::new());
        for (i, cfg) in configs.iter().enumerate() {
            let host = &hosts[i.min(hosts.len() - 1)];
            let url = |addr: &str| {
                addr.rsplit_once(':')
                    .map(|(_, port)| format!("https://{host}:{port}"))
                    .ok_or_else(|| Error::Config(format!("{addr} has no port")))
            };
            let runs = |role: &str| cfg.roles.iter().any(|r| r == role);
            if runs("as") {
                as_url.push(url(&cfg.gms_addr)?);
            }
            if runs("gms") {
                gms_url.push(url(&cfg.gms_addr)?);
            }
            if runs("cs") {
                cs_url.push(url(&cfg.cs_addr)?);
            }
        }
        let first = configs
            .first()
            .ok_or_else(|| Error::Config("no server configuration given".into()))?;
        for (role, urls) in [("as", &as_url), ("gms", &gms_url), ("cs", &cs_url)] {
            if urls.is_empty() {
                return Err(Error::Config(format!(
                    "none of the configurations runs the {role} role: terminals need all three"
                )));
            }
        }
        Ok(ClientFile {
            as_url: Urls::many(as_url),
            gms_url: Urls::many(gms_url),
            cs_url: Urls::many(cs_url),
            ca_cert: std::fs::read_to_string(first.path(&first.tls.ca_cert))?,
        })
    }

    /// Writes the file whole or not at all (a terminal never reads a
    /// half-written one), saying which command wrote it.
    pub fn write(&self, path: &Path, by: &str) -> Result<(), Error> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(
            &partial,
            format!("# Written by {by}: how terminals reach this server.\n{text}"),
        )?;
        std::fs::rename(&partial, path)?;
        Ok(())
    }
}

/// A development network running in this process (SPEC §6): the
/// configuration it runs on, the running roles and the `client.toml`
/// written for terminals.
pub struct Local {
    /// The configuration, after the caller's edit.
    pub config: ServerConfig,
    /// The running roles.
    pub node: RunningNode,
    /// `client.toml` with the addresses actually bound.
    pub client_file: PathBuf,
}

/// Prepares `dir` ([`prepare`], every role on 127.0.0.1 with ports chosen by
/// the system), applies `edit` to the configuration, starts the roles in
/// this process on `clock` and writes `client.toml`: what `duokey demo` and
/// the test kit run on.
pub async fn start_local(
    dir: &Path,
    edit: impl FnOnce(&mut ServerConfig),
    clock: duokey_pki::clock::Clock,
) -> Result<Local, Error> {
    let mut config = prepare(dir, "127.0.0.1:0", "127.0.0.1:0")?;
    edit(&mut config);
    let node = Node::start_with_clock(&config, clock).await?;
    let (Some(gms), Some(cs)) = (node.gms_addr, node.cs_addr) else {
        node.shutdown().await;
        return Err(Error::Config("a local network runs every role".into()));
    };
    let client_file = write_client_file(dir, &[gms], &[cs])?;
    Ok(Local {
        config,
        node,
        client_file,
    })
}

/// A cluster running in this process (DESIGN D49): GMS+AS nodes and CS nodes
/// on one PostgreSQL database and one NATS subject prefix, each node with
/// its own ports, and a `client.toml` that lists every node of each role.
pub struct LocalCluster {
    /// The configuration every node starts from (roles and addresses
    /// aside).
    pub config: ServerConfig,
    /// The GMS (and AS) nodes.
    pub gms: Vec<RunningNode>,
    /// The CS nodes.
    pub cs: Vec<RunningNode>,
    /// `client.toml` with every node's URL.
    pub client_file: PathBuf,
}

/// Where a local cluster runs: its database and NATS, the subject prefix
/// that keeps its frames apart, and how many nodes of each kind.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The PostgreSQL URL every node uses.
    pub database_url: String,
    /// The NATS server.
    pub nats_url: String,
    /// The subject prefix of this cluster's frames.
    pub subject_prefix: String,
    /// GMS+AS nodes.
    pub gms: usize,
    /// CS nodes.
    pub cs: usize,
}

impl LocalCluster {
    /// Prepares `dir` ([`prepare`]), points every role at the plan's
    /// database and NATS, applies `edit`, and starts the CS nodes, then the
    /// GMS+AS nodes (which reach every CS node), on 127.0.0.1 with ports
    /// chosen by the system; writes `client.toml`.
    pub async fn start(
        dir: &Path,
        plan: &ClusterPlan,
        edit: impl FnOnce(&mut ServerConfig),
        clock: duokey_pki::clock::Clock,
    ) -> Result<LocalCluster, Error> {
        let mut config = prepare(dir, "127.0.0.1:0", "127.0.0.1:0")?;
        config.database = Databases {
            as_url: Some(plan.database_url.clone()),
            gms: Some(plan.database_url.clone()),
            cs: Some(plan.database_url.clone()),
        };
        config.nats_url = Some(plan.nats_url.clone());
        config.nats_subject_prefix.clone_from(&plan.subject_prefix);
        edit(&mut config);
        let mut cluster = LocalCluster {
            config,
            gms: Vec::new(),
            cs: Vec::new(),
            client_file: dir.join("client.toml"),
        };
        for _ in 0..plan.cs {
            let node = cluster.start_node(&["cs"], None, clock.clone()).await;
            cluster.push(node, false).await?;
        }
        for _ in 0..plan.gms {
            let node = cluster
                .start_node(&["as", "gms"], None, clock.clone())
                .await;
            cluster.push(node, true).await?;
        }
        let addrs = |nodes: &[RunningNode], gms: bool| -> Vec<SocketAddr> {
            nodes
                .iter()
                .filter_map(|n| if gms { n.gms_addr } else { n.cs_addr })
                .collect()
        };
        write_client_file(dir, &addrs(&cluster.gms, true), &addrs(&cluster.cs, false))?;
        Ok(cluster)
    }

    async fn push(&mut self, node: Result<RunningNode, Error>, gms: bool) -> Result<(), Error> {
        match node {
            Ok(n) if gms => self.gms.push(n),
            Ok(n) => self.cs.push(n),
            Err(e) => {
                self.shutdown().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts one more node with `roles` on the cluster's configuration,
    /// its CS on `cs_addr` if given (a node restarted where it was); a GMS
    /// among them reaches every CS node started so far.
    pub async fn start_node(
        &self,
        roles: &[&str],
        cs_addr: Option<SocketAddr>,
        clock: duokey_pki::clock::Clock,
    ) -> Result<RunningNode, Error> {
        self.start_node_with(roles, cs_addr, clock, |_| {}).await
    }

    /// [`LocalCluster::start_node`], with `edit` applied to the node's
    /// configuration.
    pub async fn start_node_with(
        &self,
        roles: &[&str],
        cs_addr: Option<SocketAddr>,
        clock: duokey_pki::clock::Clock,
        edit: impl FnOnce(&mut ServerConfig),
    ) -> Result<RunningNode, Error> {
        let mut cfg = self.config.clone();
        edit(&mut cfg);
        cfg.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        if let Some(addr) = cs_addr {
            cfg.cs_addr = addr.to_string();
        }
        let cs_urls: Vec<String> = self
            .cs
            .iter()
            .filter_map(|n| n.cs_addr)
            .map(|a| format!("https://{a}"))
            .collect();
        if !cs_urls.is_empty() {
            cfg.cs_url = Some(Urls::many(cs_urls));
        }
        Node::start_with_clock(&cfg, clock).await
    }

    /// Stops every node, GMS first.
    pub async fn shutdown(&mut self) {
        for node in self.gms.drain(..).chain(self.cs.drain(..)) {
            node.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(dir: &Path, roles: &[&str], gms: &str, cs: &str) -> ServerConfig {
        let mut cfg = prepare(dir, gms, cs).unwrap();
        cfg.data_dir = dir.to_owned();
        cfg.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        cfg
    }

    #[test]
    fn a_cluster_client_file_lists_every_node_of_each_role() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [
            node(dir.path(), &["as", "gms"], "0.0.0.0:7501", "0.0.0.0:1"),
            node(dir.path(), &["as", "gms"], "0.0.0.0:7502", "0.0.0.0:1"),
            node(dir.path(), &["cs"], "0.0.0.0:1", "0.0.0.0:7503"),
        ];
        let hosts = [
            "g1.example".to_owned(),
            "g2.example".into(),
            "c1.example".into(),
        ];
        let file = ClientFile::for_nodes(&nodes, &hosts).unwrap();
        let gms = ["https://g1.example:7501", "https://g2.example:7502"];
        assert_eq!(file.gms_url.as_slice(), gms);
        assert_eq!(file.as_url.as_slice(), gms);
        assert_eq!(file.cs_url.as_slice(), ["https://c1.example:7503"]);
        // Written as lists, read back by terminals as the same lists.
        let text = toml::to_string_pretty(&file).unwrap();
        let back: ClientFile = toml::from_str(&text).unwrap();
        assert_eq!(back.gms_url, file.gms_url);

        let one = ClientFile::for_nodes(&nodes, &hosts[..1]).unwrap();
        assert_eq!(one.cs_url.as_slice(), ["https://g1.example:7503"]);
        let wrong = ClientFile::for_nodes(&nodes, &hosts[..2]).unwrap_err();
        assert!(
            wrong.to_string().contains("one --host for every node"),
            "{wrong}"
        );
        let no_cs = ClientFile::for_nodes(&nodes[..2], &hosts[..1]).unwrap_err();
        assert!(no_cs.to_string().contains("cs role"), "{no_cs}");
    }
}
