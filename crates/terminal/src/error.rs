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
    /// The passphrase could not be read (no terminal to prompt on, say); the
    /// text says how to give it.
    #[error("{0}")]
    NoPassphrase(String),
    /// No profile in the home directory.
    #[error(
        "no profile in {0}; run `duokey init --user USER --token TOKEN --config CLIENT_TOML` first"
    )]
    NoProfile(String),
    /// A profile exists already.
    #[error("a profile already exists in {0}; use another --home")]
    ProfileExists(String),
    /// What the user asked for is malformed or ambiguous; the text says why
    /// and what to do.
    #[error("{0}")]
    User(String),
    /// What the user named does not exist here (a group, an invitation, a
    /// contact); the text says how to list what does.
    #[error("{0}")]
    NotFound(String),
    /// A rule refuses what the user asked for (rights, membership, a changed
    /// key); the text says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// An item that cannot be processed yet (what it depends on has not
    /// reached this terminal); it is kept and retried.
    #[error("{0}")]
    Pending(String),
    /// A server refused or failed a call.
    #[error("{what}: {status}")]
    Server {
        /// What we were doing.
        what: String,
        /// The gRPC status code of the answer.
        code: tonic::Code,
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
    Store(#[from] crate::store::DbError),
    /// A stored value does not decode.
    #[error("corrupt profile: {0}")]
    Corrupt(&'static str),
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The random generator failed.
    #[error("operating system random generator failed")]
    Random,
    /// Another member already made the change this terminal was about to
    /// make on the group's behalf (the `rn1_wait` fallback).
    #[error("another member already replaced the missing group key")]
    Superseded,
    /// A bug in the terminal.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// The class of an [`Error`], for programs: stable names that `duokey --json`
/// prints as `"error"` and that choose the exit code (docs/PROTOCOL.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or ambiguous: fix the arguments.
    Usage,
    /// The profile, group, invitation or contact named does not exist.
    NotFound,
    /// A rule or a server refused: retrying the same thing will not help.
    Refused,
    /// A server could not be reached, is unavailable or asks to slow down:
    /// nothing was lost; retry later.
    Network,
    /// The passphrase is wrong or could not be read.
    Passphrase,
    /// Anything else: the profile, the disk, or a bug.
    Failed,
}

impl ErrorKind {
    /// The stable name (`"not_found"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Refused => "refused",
            ErrorKind::Network => "network",
            ErrorKind::Passphrase => "passphrase",
            ErrorKind::Failed => "failed",
        }
    }
}

impl Error {
    pub(crate) fn user(msg: impl Into<String>) -> Error {
        Error::User(msg.into())
    }

    pub(crate) fn not_found(msg: impl Into<String>) -> Error {
        Error::NotFound(msg.into())
    }

    pub(crate) fn refused(msg: impl Into<String>) -> Error {
        Error::Refused(msg.into())
    }

    pub(crate) fn server(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
        let what = what.into();
        move |s| Error::from_status(what, &s)
    }

    /// A live stream that failed or ended: whatever its status, the
    /// connection is gone and the caller reconnects (a network error).
    pub(crate) fn stream_lost(e: Error) -> Error {
        match e {
            Error::Server { what, status, .. } => Error::Server {
                what,
                code: tonic::Code::Unavailable,
                status,
            },
            other => other,
        }
    }

    /// A server's answer to `what`.
    pub(crate) fn from_status(what: impl Into<String>, s: &tonic::Status) -> Error {
        Error::Server {
            what: what.into(),
            code: s.code(),
            status: s.message().to_owned(),
        }
    }

    /// What class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        use duokey_crypto::Error as C;
        use tonic::Code;
        match self {
            Error::User(_) => ErrorKind::Usage,
            Error::NotFound(_) | Error::NoProfile(_) => ErrorKind::NotFound,
            Error::Refused(_) | Error::ProfileExists(_) => ErrorKind::Refused,
            Error::WrongPassphrase | Error::NoPassphrase(_) => ErrorKind::Passphrase,
            Error::Server { code, .. } => match code {
                Code::Unavailable
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::ResourceExhausted
                | Code::Aborted => ErrorKind::Network,
                Code::NotFound => ErrorKind::NotFound,
                Code::Internal | Code::DataLoss | Code::Unimplemented | Code::Ok => {
                    ErrorKind::Failed
                }
                _ => ErrorKind::Refused,
            },
            Error::Crypto(
                C::InvalidUserId | C::InvalidGroupName | C::UnsafeGroupName | C::InvalidHex { .. },
            ) => ErrorKind::Usage,
            _ => ErrorKind::Failed,
        }
    }
}
