//! # duokey-pki — certificates and TLS of Duokey (SPEC §1, §2, §5)
//!
//! * [`Ca`]: the organisation's CA run by the AS — generate, save, load, issue
//!   server certificates carrying [`Role`]s, sign terminals' requests
//!   ([`Ca::sign_csr`], SPEC §5.1 `Enroll`), and optionally sign CRLs.
//! * [`make_csr`]: the terminal's certificate request, signed with its existing
//!   Ed25519 identity key (SPEC §2).
//! * [`peer_identity`]: user id, roles, key and fingerprint of a verified peer
//!   certificate, including terminal certificates of an external enterprise CA.
//! * [`RevocationList`]: the reloadable list of revoked serial numbers.
//! * [`server_config`] / [`client_config`]: rustls configurations — TLS 1.3
//!   only, ring only, client certificates required, revocation checked on every
//!   handshake, ALPN `h2`.
//! * [`grpc`]: tonic glue — a TLS-accepting incoming stream for servers and a
//!   TLS-connecting channel for clients, both with the configurations above.
//!
//! Certificate encodings (roles in the subject OU, the user id as CN and as a
//! `urn:duokey:user:<id>` URI SAN) are described in [`role`] and [`ca`].
#![forbid(unsafe_code)]

pub mod ca;
pub mod clock;
mod csr;
mod error;
mod files;
pub use files::write_secret;
pub mod grpc;
mod identity;
mod keys;
pub mod pem;
mod random;
pub mod revocation;
pub mod role;
mod tls;

#[cfg(test)]
mod tests;

pub use ca::{Ca, IssuedKey, Validity};
pub use csr::make_csr;
pub use error::{Error, Result};
pub use identity::{PeerIdentity, peer_identity};
pub use keys::identity_private_key_der;
pub use revocation::RevocationList;
pub use role::Role;
pub use tls::{
    ALPN_H2, ClientAuth, LiveIdentity, client_config, client_config_for, client_config_live,
    client_verifier, crypto_provider, server_config, server_config_live,
};

/// The rustls version this crate builds its configurations with (TLS, SPEC §2).
pub use rustls;
/// The certificate and key types of the TLS API (SPEC §2).
pub use rustls_pki_types;
/// The tokio adapter matching [`rustls`], for servers' accept loops (SPEC §5).
pub use tokio_rustls;
