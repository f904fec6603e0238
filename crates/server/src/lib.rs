//! # duokey-server — the AS, GMS and CS roles in one binary
//!
//! [`Node::start`] runs the roles a [`config::ServerConfig`] lists, each on its
//! real TLS 1.3 port with client certificates (SPEC §2, §5): the GMS port also
//! serves the AS enrolment call (which alone may come without a client
//! certificate), the CS port serves terminals and the GMS's `SetMembers`.
//! Every port also answers gRPC health checks and reflection.
//! [`dev::prepare`] creates everything `duokey-server dev` needs.
#![forbid(unsafe_code)]

pub mod config;
pub mod dev;
mod node;
pub mod rogue;
pub mod rpc_metrics;

pub use duokey_pki::clock::Clock;
pub use node::{Node, RunningNode, SHUTDOWN_GRACE};

/// Errors of the server binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem (says which file and what to change).
    #[error("configuration: {0}")]
    Config(String),
    /// A command given wrongly, or one that cannot run now; the text says
    /// what to do.
    #[error("{0}")]
    Usage(String),
    /// Certificates or keys.
    #[error(transparent)]
    Pki(#[from] duokey_pki::Error),
    /// Storage.
    #[error(transparent)]
    Storage(#[from] duokey_storage::Error),
    /// Enrolment.
    #[error(transparent)]
    Accounts(#[from] duokey_accounts::Error),
    /// Network.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster's bus (NATS).
    #[error(transparent)]
    Bus(#[from] duokey_bus::Error),
}

impl From<duokey_cs::StartError> for Error {
    fn from(e: duokey_cs::StartError) -> Error {
        match e {
            duokey_cs::StartError::Storage(e) => Error::Storage(e),
            duokey_cs::StartError::Bus(e) => Error::Bus(e),
        }
    }
}
