//! The one error type of the PKI layer (SPEC §2).

use std::path::PathBuf;

/// Result alias of this crate (SPEC §2).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the PKI and TLS layer (SPEC §2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "create directory", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A PEM file or string holds no usable object of the wanted kind.
    #[error("invalid PEM ({what}): {detail}")]
    Pem {
        /// What was expected ("certificate", "private key", ...).
        what: &'static str,
        /// Why it was refused.
        detail: String,
    },

    /// Building or signing a certificate, request or CRL failed.
    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),

    /// A certificate could not be parsed or breaks the Duokey profile.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),

    /// The certificate request is not a well-formed DER PKCS#10 request.
    #[error("invalid certificate request: {0}")]
    CsrParse(String),

    /// The request's self-signature does not verify (tampered or forged request).
    #[error("the certificate request's signature does not verify (tampered or forged request)")]
    CsrSignature,

    /// The request's key is not Ed25519 (SPEC §2: terminal keys are Ed25519).
    #[error(
        "the certificate request's key is {found}, but terminal identity keys must be Ed25519 (SPEC §2)"
    )]
    CsrKeyNotEd25519 {
        /// The key algorithm found (OID or name).
        found: String,
    },

    /// The request names another user than the one being enrolled.
    #[error("the certificate request is for {found:?}, but the enrolment is for {expected:?}")]
    CsrUserMismatch {
        /// The user id the enrolment token was made for.
        expected: String,
        /// The subject common name found in the request (empty if none).
        found: String,
    },

    /// A certificate's key is not Ed25519 where SPEC §2 requires it (terminal leaf keys).
    #[error("the terminal certificate's key is not Ed25519 (SPEC §2 requires Ed25519 leaf keys)")]
    LeafKeyNotEd25519,

    /// A user id in a certificate or request is not a valid SPEC §2 user id.
    #[error("invalid user id {0:?} (SPEC §2: 1-255 bytes of [a-z0-9._@-], starting with [a-z0-9])")]
    InvalidUserId(String),

    /// A certificate carries a `duokey-*` role this version does not know.
    #[error("unknown Duokey role {0:?} in certificate")]
    UnknownRole(String),

    /// A role list is empty or mixes the terminal role with server roles.
    #[error("invalid role set: {0}")]
    InvalidRoles(&'static str),

    /// A host name for a server certificate is neither an IP address nor a DNS name.
    #[error("invalid server host name {0:?}: use a DNS name or an IP address")]
    InvalidHost(String),

    /// A server certificate was requested without any host name.
    #[error("a server certificate needs at least one host name or IP address")]
    NoHosts,

    /// The validity period is empty or cannot be represented.
    #[error("invalid validity period: {0}")]
    InvalidValidity(&'static str),

    /// The CA key does not belong to the CA certificate.
    #[error("the CA private key in {0} does not match the CA certificate")]
    KeyMismatch(PathBuf),

    /// A line of the revocation list file is not a hex serial number.
    #[error("revocation list {path}, line {line}: {detail}")]
    RevocationList {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },

    /// The revocation list file is missing: a server never takes that for
    /// "nothing is revoked" (it would fail open).
    #[error(
        "revocation list {0} does not exist; create it (an empty file means nothing is revoked) or fix tls.revocation_list"
    )]
    MissingRevocationList(PathBuf),

    /// A serial number is empty or too long (RFC 5280: at most 20 octets).
    #[error("invalid certificate serial number: {0}")]
    InvalidSerial(&'static str),

    /// The operating system's random generator failed.
    #[error("the operating system's random generator failed")]
    Random,

    /// rustls refused a configuration (bad key, bad certificate, ...).
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),

    /// The client-certificate verifier could not be built.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
