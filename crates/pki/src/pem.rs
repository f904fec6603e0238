//! Reading and writing PEM files of certificates and keys (SPEC §2), for the
//! server and terminal configuration files.

use crate::error::{Error, Result};
use crate::files;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use zeroize::Zeroizing;

/// All certificates in a PEM text, in order (leaf first for a chain; SPEC §2).
pub fn certs_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: "certificate",
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first certificate in a PEM text (e.g. the CA; SPEC §2).
pub fn first_cert_from_pem(text: &str) -> Result<CertificateDer<'static>> {
    certs_from_pem(text)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Pem {
            what: "certificate",
            detail: "no CERTIFICATE block found".into(),
        })
}

/// The private key in a PEM text (PKCS#8, or PKCS#1 / SEC1 for keys made by
/// other tools; SPEC §2).
pub fn key_from_pem(text: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| Error::Pem {
        what: "private key",
        detail: e.to_string(),
    })
}

/// Reads all certificates of a PEM file (e.g. `server.pem`, `ca.pem`; SPEC §2).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    certs_from_pem(&files::read_string(path)?).map_err(|e| with_path(e, path))
}

/// Reads the first certificate of a PEM file (e.g. the CA's `ca.pem`; SPEC §2).
pub fn load_cert(path: &Path) -> Result<CertificateDer<'static>> {
    first_cert_from_pem(&files::read_string(path)?).map_err(|e| with_path(e, path))
}

/// Reads the private key of a PEM file (e.g. `server.key`; SPEC §2).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text = Zeroizing::new(files::read_string(path)?);
    key_from_pem(&text).map_err(|e| with_path(e, path))
}

/// A certificate as PEM text (LF line endings, as rcgen writes them; SPEC §2).
pub fn cert_to_pem(cert: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", cert.as_ref().to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Pem { what, detail } => Error::Pem {
            what,
            detail: format!("{}: {detail}", path.display()),
        },
        other => other,
    }
}
