//! `duokey-server dev`: a CA, a server certificate and a configuration in one
//! directory, created on first run and reused afterwards.

use crate::config::{Databases, LimitsConfig, ServerConfig, TlsFiles};
use crate::{Error, Node, RunningNode};
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
    /// The AS (enrolment).
    pub as_url: String,
    /// The GMS.
    pub gms_url: String,
    /// The CS.
    pub cs_url: String,
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
pub fn write_client_file(dir: &Path, gms: SocketAddr, cs: SocketAddr) -> Result<PathBuf, Error> {
    let file = ClientFile {
        as_url: format!("https://{gms}"),
        gms_url: format!("https://{gms}"),
        cs_url: format!("https://{cs}"),
        ca_cert: std::fs::read_to_string(dir.join("ca/ca.pem"))?,
    };
    let path = dir.join("client.toml");
    file.write(&path, "duokey-server dev")?;
    Ok(path)
}

impl ClientFile {
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
    let client_file = write_client_file(dir, gms, cs)?;
    Ok(Local {
        config,
        node,
        client_file,
    })
}
