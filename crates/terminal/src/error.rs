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
    #[error("profile database: {0}{advice}", advice = damaged_advice(&.0.to_string()))]
    Store(#[from] crate::store::DbError),
    /// A stored value does not decode.
    #[error("the profile is damaged ({0}){advice}", advice = damaged_advice("malformed"))]
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

    /// A server's answer to `what`, with what to do when the cause is one
    /// a person can act on.
    pub(crate) fn from_status(what: impl Into<String>, s: &tonic::Status) -> Error {
        Error::Server {
            what: what.into(),
            code: s.code(),
            status: explain(s),
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
            Error::Server { status, .. }
                if advice(status).is_some_and(|(_, transient)| !transient) =>
            {
                ErrorKind::Refused
            }
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

/// A status's message and its causes (a transport error hides the TLS or
/// socket error that says what happened), followed by what to do when the
/// cause is one a person can act on.
fn explain(s: &tonic::Status) -> String {
    let mut text = s.message().to_owned();
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        let e_text = e.to_string();
        if !text.contains(&e_text) {
            text = format!("{text}: {e_text}");
        }
        cause = e.source();
    }
    match advice(&text) {
        Some((what_to_do, _)) => format!("{text} — {what_to_do}"),
        None => text,
    }
}

/// What to do when the profile file is damaged (SQLite says "malformed",
/// "not a database"; a value does not decode).
fn damaged_advice(text: &str) -> &'static str {
    let damaged = [
        "malformed",
        "not a database",
        "no rows returned",
        "no such table",
    ];
    match damaged.iter().any(|d| text.contains(d)) {
        true => {
            " — restore the profile directory from a backup, or enrol this terminal again with `duokey init` in a new --home"
        }
        false => "",
    }
}

/// What to do about a failure whose text names a known cause, and whether
/// the cause may pass by itself (a server down) or needs someone to act (a
/// certificate that does not match).
fn advice(text: &str) -> Option<(&'static str, bool)> {
    const CA: &str = "the server's certificate is not from the CA in client.toml: check that the client.toml comes from this server's administrator";
    const ADVICE: [(&str, &str, bool); 7] = [
        (
            "CertificateRevoked",
            "this terminal's certificate was revoked: ask your administrator for a new token and enrol again (`duokey init` with a new --home)",
            false,
        ),
        ("UnknownIssuer", CA, false),
        ("BadSignature", CA, false),
        (
            "BadEncoding",
            "a certificate does not decode: check the CA certificate (PEM) in client.toml",
            false,
        ),
        (
            "Expired",
            "a certificate has expired: check this machine's clock, then `duokey renew` or enrol again",
            false,
        ),
        (
            "NotValidForName",
            "the server's certificate does not name the address in client.toml: use the address the administrator gave",
            false,
        ),
        (
            "Connection refused",
            "nothing answers at that address: is the server running? (`duokey whoami` shows the addresses); nothing was sent or lost",
            true,
        ),
    ];
    ADVICE
        .iter()
        .find(|(cause, _, _)| text.contains(cause))
        .map(|(_, what, transient)| (*what, *transient))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_causes_say_what_to_do() {
        let revoked = "transport error: received fatal alert: CertificateRevoked";
        assert!(super::advice(revoked).unwrap().0.contains("enrol again"));
        for ca in ["UnknownIssuer", "invalid peer certificate: BadSignature"] {
            assert_eq!(
                super::advice(ca).unwrap(),
                (super::advice("UnknownIssuer").unwrap().0, false)
            );
        }
        let down = super::advice("Connection refused (os error 111)").unwrap();
        assert!(down.0.contains("running") && down.1, "{down:?}");
        assert_eq!(super::advice("storage unavailable, retry"), None);
    }
}
