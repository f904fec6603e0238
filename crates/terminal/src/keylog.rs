//! `DUOKEY_KEYLOG` (SPEC §8.1): like browsers' `SSLKEYLOGFILE`, an opt-in
//! file of every secret the terminal derives or receives, for debugging,
//! interoperability, and for tests proving no server ever stores them.

use duokey_crypto::{Epoch, GroupId, GroupKey, R1, Rn2};
use std::io::Write;
use std::path::PathBuf;

/// Where to append, if enabled by the environment (never by a file).
#[derive(Debug, Clone, Default)]
pub struct KeyLog {
    path: Option<PathBuf>,
}

impl KeyLog {
    /// Reads `DUOKEY_KEYLOG`; prints the warning of SPEC §8.1 when it is set.
    pub fn from_env() -> KeyLog {
        let path = std::env::var_os("DUOKEY_KEYLOG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        if let Some(p) = &path {
            eprintln!(
                "WARNING: DUOKEY_KEYLOG is set: group secrets are written in the clear to {}. \
                 Use this for debugging only.",
                p.display()
            );
        }
        KeyLog { path }
    }

    fn append(&self, line: String) {
        let Some(path) = &self.path else { return };
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        if let Ok(mut f) = opts.open(path) {
            let _ = writeln!(f, "{line}");
        }
    }

    /// `DUOKEY_R1 <group> <rn1_version> <rn2_version> <R1 hex>`.
    pub fn r1(&self, g: &GroupId, rn1_version: u32, r1: &R1) {
        if self.path.is_some() {
            self.append(format!(
                "DUOKEY_R1 {g} {rn1_version} {} {}",
                r1.rn2_version(),
                hex::encode(r1.expose_secret())
            ));
        }
    }

    /// `DUOKEY_RN2 <group> <rn2_version> <rn2 hex>`.
    pub fn rn2(&self, g: &GroupId, rn2_version: u64, rn2: &Rn2) {
        if self.path.is_some() {
            self.append(format!(
                "DUOKEY_RN2 {g} {rn2_version} {}",
                hex::encode(rn2.expose_secret())
            ));
        }
    }

    /// `DUOKEY_GK <group> <rn1_version> <rn2_version> <gk hex>`.
    pub fn gk(&self, g: &GroupId, e: Epoch, gk: &GroupKey) {
        if self.path.is_some() {
            self.append(format!(
                "DUOKEY_GK {g} {} {} {}",
                e.rn1_version,
                e.rn2_version,
                hex::encode(gk.expose_secret())
            ));
        }
    }
}
