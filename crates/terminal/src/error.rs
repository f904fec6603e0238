//! The terminal's error type: messages say what happened and what to do.

/// Result with the terminal's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The passphrase does not open this profile.
    #[error(
        "wrong passphrase for this profile (nothing was changed); set DUOKEY_PASSPHRASE or type it again"
    )]
    WrongPassphrase,
    /// No profile in the home directory.
    #[error(
        "no profile in {0}; run `duokey init --user USER --token TOKEN --config CLIENT_TOML` first"
    )]
    NoProfile(String),
    /// A profile exists already.
    #[error("a profile already exists in {0}; use another --home")]
    ProfileExists(String),
    /// Something the user asked for is not possible; the text says why and what to do.
    #[error("{0}")]
    User(String),
    /// A server refused or failed a call.
    #[error("{what}: {status}")]
    Server {
        /// What we were doing.
        what: String,
        /// The server's answer.
        status: String,
    },
    /// A protocol object failed its checks.
    #[error(transparent)]
    Crypto(#[from] duokey_crypto::Error),
    /// Certificates.
    #[error(transparent)]
    Pki(#[from] duokey_pki::Error),
    /// The profile database.
    #[error("profile database: {0}")]
    Store(#[from] sqlx::Error),
    /// A stored value does not decode.
    #[error("corrupt profile: {0}")]
    Corrupt(&'static str),
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The random generator failed.
    #[error("operating system random generator failed")]
    Random,
    /// A bug in the terminal.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Error {
    pub(crate) fn user(msg: impl Into<String>) -> Error {
        Error::User(msg.into())
    }

    pub(crate) fn server(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
        let what = what.into();
        move |s| Error::Server {
            what,
            status: s.message().to_owned(),
        }
    }
}
