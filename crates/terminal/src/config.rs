//! `client.toml`: how a terminal reaches the servers (written by
//! `duokey-server dev`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The client configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The Account Server (enrolment).
    pub as_url: String,
    /// The Group Management Server.
    pub gms_url: String,
    /// The Communication Server.
    pub cs_url: String,
    /// The organisation's CA certificate, PEM.
    pub ca_cert: String,
}

impl ClientConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::user(format!("cannot read {}: {e}", path.display())))?;
        ClientConfig::parse(&text).map_err(|e| Error::user(format!("{}: {e}", path.display())))
    }

    /// Parses the TOML text.
    pub fn parse(text: &str) -> Result<ClientConfig> {
        let cfg: ClientConfig = toml::from_str(text).map_err(|e| Error::user(e.to_string()))?;
        duokey_pki::pem::first_cert_from_pem(&cfg.ca_cert)?;
        for url in [&cfg.as_url, &cfg.gms_url, &cfg.cs_url] {
            if !url.starts_with("https://") {
                return Err(Error::user(format!(
                    "server URL {url} must start with https://"
                )));
            }
        }
        Ok(cfg)
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|_| Error::Internal("client config encoding"))
    }
}
