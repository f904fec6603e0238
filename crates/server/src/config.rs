//! The server configuration file (`duokey-server run --config FILE`).
//!
//! ```toml
//! data_dir = "/var/lib/duokey"        # relative paths below are relative to the file
//! roles = ["as", "gms", "cs"]         # which roles this process runs
//! gms_addr = "0.0.0.0:7443"           # GMS port; the AS is served beside it
//! cs_addr = "0.0.0.0:7444"            # CS port
//! cs_url = "https://cs.example.org:7444"  # how the GMS reaches the CS (default: cs_addr)
//! metrics_addr = "127.0.0.1:9100"     # optional Prometheus /metrics
//! max_connections = 10000             # per port
//!
//! [tls]
//! ca_cert = "ca/ca.pem"
//! ca_key = "ca/ca.key"                # the AS only
//! cert = "server.pem"
//! key = "server.key"
//! revocation_list = "revoked.txt"     # one hex serial per line, reloaded every 10 s
//!
//! [database]                          # sqlite://PATH or postgres://…
//! as = "sqlite://as.db"
//! gms = "sqlite://gms.db"
//! cs = "sqlite://cs.db"
//!
//! [limits]
//! max_body_bytes = 262144
//! rate_per_sec = 200                  # per client certificate
//! rate_burst = 400
//! subscriber_queue = 1024             # deliveries queued per live stream
//! subscriber_queue_bytes = 8388608    # bytes queued per live stream (8 MiB); a fuller one is cut
//! min_rotate_every_secs = 60
//! max_retention_secs = 31536000       # longest retention a group may choose (365 days)
//! max_groups_per_user = 1000
//! inbox_max_items = 10000             # per recipient; more is RESOURCE_EXHAUSTED until they sync
//! inbox_max_bytes = 67108864
//! inbox_retention_secs = 2592000      # unread inbox items are erased after 30 days
//! streams_per_user = 8                # open live streams per user and role (Subscribe, Watch)
//! ```

use crate::Error;
use duokey_pki::Role;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    /// URL by which the GMS reaches the CS.
    #[serde(default)]
    pub cs_url: Option<String>,
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
    /// Sustained requests per second per client certificate.
    pub rate_per_sec: u32,
    /// Request burst per client certificate.
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let cs = duokey_cs::CsConfig::default();
        let gms = duokey_gms::GmsConfig::default();
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
        cfg.data_dir = base.join(&cfg.data_dir);
        cfg.roles()?;
        Ok(cfg)
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))
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
