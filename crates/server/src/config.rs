//! The server configuration file (`duokey-server run --config FILE`).
//!
//! Every setting, its default and its unit are in `docs/CONFIG.md`;
//! `duokey-server config --example` prints [`EXAMPLE`], a commented file
//! with all of them (tested to parse below), and `config --check FILE`
//! checks a file without starting anything.

use crate::Error;
use duokey_pki::Role;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The commented example configuration (`duokey-server config --example`).
pub const EXAMPLE: &str = include_str!("example.toml");

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Base directory of relative paths and SQLite files.
    pub data_dir: PathBuf,
    /// Roles run by this process: `as`, `gms`, `cs`.
    pub roles: Vec<String>,
    /// Listen address of the GMS (and AS).
    pub gms_addr: String,
    /// Listen address of the CS.
    pub cs_addr: String,
    /// URL by which the GMS reaches the CS, or the URLs of the CS nodes of
    /// a cluster (tried in turn).
    #[serde(default)]
    pub cs_url: Option<duokey_pki::grpc::Urls>,
    /// NATS server of a cluster (DESIGN D49): set, this node shares its
    /// PostgreSQL database with other nodes and tells them what it commits.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// Subject prefix on NATS; the nodes of one cluster share it.
    #[serde(default = "default_nats_subject_prefix")]
    pub nats_subject_prefix: String,
    /// Optional Prometheus listen address.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Largest number of open connections per port.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Certificates and keys.
    pub tls: TlsFiles,
    /// Database URLs per role.
    pub database: Databases,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_nats_subject_prefix() -> String {
    "duokey.v1".to_owned()
}

fn default_max_connections() -> usize {
    10_000
}

/// Certificate and key files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The CA private key (PEM), needed by the AS only.
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// This server's certificate chain (PEM).
    pub cert: PathBuf,
    /// This server's private key (PEM).
    pub key: PathBuf,
    /// Revoked serials, one hex serial per line.
    #[serde(default)]
    pub revocation_list: Option<PathBuf>,
}

/// Database URLs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Databases {
    /// AS database.
    #[serde(rename = "as", default)]
    pub as_url: Option<String>,
    /// GMS database.
    #[serde(default)]
    pub gms: Option<String>,
    /// CS database.
    #[serde(default)]
    pub cs: Option<String>,
}

/// Limits and abuse controls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body (and inbox item).
    pub max_body_bytes: usize,
    /// Sustained requests per second per user (each role counts its own).
    pub rate_per_sec: u32,
    /// Request burst per user.
    pub rate_burst: u32,
    /// Deliveries queued per subscriber before it is disconnected.
    pub subscriber_queue: usize,
    /// Encoded bytes queued per subscriber before it is disconnected.
    pub subscriber_queue_bytes: usize,
    /// Shortest rotation period a group may choose.
    pub min_rotate_every_secs: u64,
    /// Longest retention a group may choose.
    pub max_retention_secs: u64,
    /// Most groups one user may be a member of.
    pub max_groups_per_user: u64,
    /// Most items one inbox holds.
    pub inbox_max_items: u64,
    /// Most bytes one inbox holds.
    pub inbox_max_bytes: u64,
    /// Inbox items older than this are erased.
    pub inbox_retention_secs: u64,
    /// Open live streams one user may hold, per role (`Subscribe` at the
    /// CS, `Watch` at the GMS).
    pub streams_per_user: usize,
    /// Wrong passwords one password account may have in 15 minutes before
    /// its logins wait (AS, DESIGN D51).
    pub wrong_passwords_per_account: u64,
    /// Wrong passwords from one client address, for any accounts, in 15
    /// minutes before logins from it wait (AS, DESIGN D51).
    pub wrong_passwords_per_address: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let cs = duokey_cs::CsConfig::default();
        let gms = duokey_gms::GmsConfig::default();
        let logins = duokey_accounts::LoginLimits::default();
        Self {
            max_body_bytes: cs.limits.max_body,
            rate_per_sec: cs.rate_per_sec,
            rate_burst: cs.rate_burst,
            subscriber_queue: cs.subscriber_queue,
            subscriber_queue_bytes: cs.subscriber_queue_bytes,
            min_rotate_every_secs: gms.min_rotate_every_secs,
            max_retention_secs: gms.max_retention_secs,
            max_groups_per_user: gms.max_groups_per_user,
            inbox_max_items: cs.inbox_max_items,
            inbox_max_bytes: cs.inbox_max_bytes,
            inbox_retention_secs: cs.inbox_retention_secs,
            streams_per_user: cs.streams_per_user,
            wrong_passwords_per_account: logins.per_account,
            wrong_passwords_per_address: logins.per_address,
        }
    }
}

/// A server role by its short name (`as`, `gms`, `cs`), as the
/// configuration file and `ca issue-server --roles` name them (SPEC §1).
pub fn server_role(name: &str) -> Result<Role, Error> {
    match name.parse::<Role>() {
        Ok(r) if r.is_server() => Ok(r),
        _ => Err(Error::Config(format!(
            "unknown server role {name:?} (use as, gms, cs)"
        ))),
    }
}

impl ServerConfig {
    /// Reads a file; relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<ServerConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses the text of a file in directory `base` and checks its roles.
    pub fn parse(text: &str, base: &Path) -> Result<ServerConfig, Error> {
        let mut cfg: ServerConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        // `dev/.` shown as `dev`.
        cfg.data_dir = base.join(&cfg.data_dir).components().collect();
        cfg.roles()?;
        Ok(cfg)
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
    }

    /// What `config --check` adds to parsing: each role has what it needs
    /// (its database, the CA key for the AS) and the files named exist.
    pub fn check_files(&self) -> Result<(), Error> {
        let roles = self.roles()?;
        let need = |url: &Option<String>, role: &str| {
            url.as_ref().map(|_| ()).ok_or_else(|| {
                Error::Config(format!("[database] {role} is required for the {role} role"))
            })
        };
        let mut files = vec![
            ("tls.ca_cert", &self.tls.ca_cert),
            ("tls.cert", &self.tls.cert),
        ];
        files.push(("tls.key", &self.tls.key));
        if roles.contains(&Role::As) {
            need(&self.database.as_url, "as")?;
            let key =
                self.tls.ca_key.as_ref().ok_or_else(|| {
                    Error::Config("tls.ca_key is required for the as role".into())
                })?;
            files.push(("tls.ca_key", key));
        }
        if roles.contains(&Role::Gms) {
            need(&self.database.gms, "gms")?;
        }
        if roles.contains(&Role::Cs) {
            need(&self.database.cs, "cs")?;
        }
        self.check_cluster()?;
        for (name, file) in files {
            let path = self.path(file);
            if path.is_file() {
                continue;
            }
            let dir = path
                .parent()
                .unwrap_or(Path::new("."))
                .display()
                .to_string();
            let create = match name {
                "tls.ca_cert" | "tls.ca_key" => format!("duokey-server ca init --dir {dir}"),
                _ => {
                    format!("duokey-server ca issue-server --ca-dir CA_DIR --name HOST --out {dir}")
                }
            };
            return Err(Error::Config(format!(
                "{name}: {} does not exist; create it with `{create}`",
                path.display()
            )));
        }
        Ok(())
    }

    /// A cluster (`nats_url`) shares its databases: each must be
    /// PostgreSQL, and `cs_url` must be given (the GMS cannot guess the
    /// other CS nodes).
    pub fn check_cluster(&self) -> Result<(), Error> {
        if self.nats_url.is_none() {
            return Ok(());
        }
        let urls = [
            ("as", &self.database.as_url),
            ("gms", &self.database.gms),
            ("cs", &self.database.cs),
        ];
        for (role, url) in urls {
            if url.as_deref().is_some_and(|u| u.starts_with("sqlite:")) {
                return Err(Error::Config(format!(
                    "[database] {role} is SQLite, but nats_url makes this node part of a cluster, \
                     whose nodes share a PostgreSQL database: use postgres://… or remove nats_url"
                )));
            }
        }
        if let Some(urls) = &self.cs_url {
            urls.check()
                .map_err(|e| Error::Config(format!("cs_url: {}", e.message())))?;
        }
        Ok(())
    }

    /// The roles, parsed.
    pub fn roles(&self) -> Result<Vec<Role>, Error> {
        self.roles.iter().map(|r| server_role(r)).collect()
    }

    /// A path from the file, relative to `data_dir`.
    pub fn path(&self, p: &Path) -> PathBuf {
        self.data_dir.join(p)
    }

    /// A database URL; a relative `sqlite://` path is made relative to `data_dir`.
    pub fn db_url(&self, url: &str) -> String {
        match url.strip_prefix("sqlite://") {
            Some(p) if !p.starts_with('/') => {
                format!("sqlite://{}", self.data_dir.join(p).display())
            }
            _ => url.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_with_every_setting_and_the_default_limits() {
        let cfg = ServerConfig::parse(EXAMPLE, Path::new("/etc/duokey")).unwrap();
        assert_eq!(cfg.roles().unwrap(), [Role::As, Role::Gms, Role::Cs]);
        assert!(cfg.metrics_addr.is_some() && cfg.cs_url.is_some());
        assert!(cfg.tls.ca_key.is_some() && cfg.tls.revocation_list.is_some());
        assert!(cfg.database.as_url.is_some() && cfg.database.cs.is_some());
        // The example shows the defaults: the documentation and the code agree.
        let shown = toml::to_string(&cfg.limits).unwrap();
        assert_eq!(shown, toml::to_string(&LimitsConfig::default()).unwrap());
        // Every key of every section appears uncommented in the example.
        let all = toml::to_string(&cfg).unwrap();
        for line in all.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} is missing from example.toml"
            );
        }
    }

    #[test]
    fn check_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = EXAMPLE.replace("/var/lib/duokey", ".");
        let cfg = ServerConfig::parse(&text, dir.path()).unwrap();
        let err = cfg.check_files().unwrap_err().to_string();
        assert!(
            err.contains("tls.ca_cert") && err.contains("ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn server_roles_parse_by_short_name_and_never_as_terminal() {
        assert_eq!(server_role("gms").unwrap(), Role::Gms);
        assert_eq!(server_role("cs").unwrap(), Role::Cs);
        assert_eq!(server_role("as").unwrap(), Role::As);
        for bad in ["terminal", "GMS", "", "ca"] {
            let err = server_role(bad).unwrap_err().to_string();
            assert!(err.contains("use as, gms, cs"), "{bad}: {err}");
        }
    }
}
