//! `client.toml`: how a terminal reaches the servers (written by
//! `duokey-server dev`).

use crate::error::{Error, Result};
pub use duokey_pki::grpc::Urls;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The client configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The Account Server (enrolment): a URL, or a list of the nodes of a
    /// cluster (DESIGN D49), tried in turn.
    pub as_url: Urls,
    /// The Group Management Server (one URL or a list).
    pub gms_url: Urls,
    /// The Communication Server (one URL or a list).
    pub cs_url: Urls,
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
        for (key, urls) in [
            ("as_url", &cfg.as_url),
            ("gms_url", &cfg.gms_url),
            ("cs_url", &cfg.cs_url),
        ] {
            urls.check()
                .map_err(|e| Error::user(format!("{key}: {}", e.message())))?;
        }
        // The CA must be a certificate TLS can use, not only PEM-shaped.
        let ca = duokey_pki::pem::first_cert_from_pem(&cfg.ca_cert)?;
        duokey_pki::client_config_for(&ca, None, duokey_pki::Role::As).map_err(|e| {
            Error::user(format!(
                "the CA certificate in client.toml cannot be used ({e}): ask your administrator for the client.toml again"
            ))
        })?;
        Ok(cfg)
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|_| Error::Internal("client config encoding"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text, and any mutation of a valid file, is parsed or refused
        /// with an error — never a panic (SPEC §7.7).
        #[test]
        fn any_text_is_parsed_or_refused(text in ".{0,400}", cut in 0usize..400, byte in any::<u8>()) {
            let _ = ClientConfig::parse(&text);
            let valid = "as_url = \"https://h:1\"\ngms_url = \"https://h:1\"\ncs_url = \"https://h:2\"\nca_cert = \"\"\"\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\"\"\"\n";
            let mut bytes = valid.as_bytes().to_vec();
            let i = cut % bytes.len();
            bytes[i] = byte;
            let _ = ClientConfig::parse(&String::from_utf8_lossy(&bytes));
            let _ = ClientConfig::parse(&valid[..cut.min(valid.len())]);
        }
    }

    #[test]
    fn a_file_without_a_ca_certificate_is_refused() {
        let text = "as_url = \"https://h:1\"\ngms_url = \"https://h:1\"\ncs_url = \"https://h:2\"\nca_cert = \"x\"\n";
        assert!(ClientConfig::parse(text).is_err());
    }

    #[test]
    fn plain_http_urls_are_refused() {
        let text = "as_url = \"http://h:1\"\ngms_url = \"https://h:1\"\ncs_url = \"https://h:2\"\nca_cert = \"x\"\n";
        let err = ClientConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains("must start with https://"), "{err}");
    }

    #[test]
    fn one_url_or_a_list_of_the_nodes_of_a_cluster() {
        let ca = "ca_cert = \"x\"\n";
        let one = format!(
            "as_url = \"https://h:1\"\ngms_url = \"https://h:1\"\ncs_url = \"https://h:2\"\n{ca}"
        );
        let many = format!(
            "as_url = \"https://h:1\"\ngms_url = [\"https://a:1\", \"https://b:1\"]\ncs_url = [\"https://a:2\"]\n{ca}"
        );
        let cfg: ClientConfig = toml::from_str(&many).unwrap();
        assert_eq!(cfg.gms_url.as_slice(), ["https://a:1", "https://b:1"]);
        assert_eq!(cfg.cs_url.as_slice(), ["https://a:2"]);
        // A single URL is written back as a string: old files stay as they were.
        let back: ClientConfig = toml::from_str(&one).unwrap();
        assert!(back.to_toml().unwrap().contains("cs_url = \"https://h:2\""));
        let empty = many.replace("[\"https://a:2\"]", "[]");
        let err = ClientConfig::parse(&empty).unwrap_err().to_string();
        assert!(err.contains("cs_url") && err.contains("empty"), "{err}");
        let plain = many.replace("https://b:1", "http://b:1");
        let err = ClientConfig::parse(&plain).unwrap_err().to_string();
        assert!(err.contains("gms_url") && err.contains("https://"), "{err}");
    }
}
