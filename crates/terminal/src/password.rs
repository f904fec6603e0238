//! Password accounts (DESIGN D51, PROTOCOL §5.16): the terminal's
//! side of OPAQUE at the AS. Registration with a `--password-setup` token,
//! then a login whose session key binds the terminal's certificate request.
//! The password never leaves this process.

use crate::error::{Error, Result};
use duokey_crypto::UserId;
use duokey_crypto::password::{self, LoggingIn, Registering};
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::{
    EnrollResponse, PasswordLoginFinishRequest, PasswordLoginStartRequest,
    PasswordRegisterFinishRequest, PasswordRegisterStartRequest,
};
use tonic::transport::Channel;

/// How a new terminal gets its certificate (`duokey init`). Its `Debug`
/// shows neither the token nor the password.
#[derive(Clone, Copy)]
pub enum Enrolment<'a> {
    /// A one-time token, exchanged for a certificate (SPEC §2).
    Token(&'a str),
    /// A `--password-setup` token: the user chooses a password (OPAQUE
    /// registration), then logs in with it for a 30-day certificate.
    Password {
        /// The one-time token.
        token: &'a str,
        /// The password the user chose.
        password: &'a [u8],
    },
}

impl std::fmt::Debug for Enrolment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Enrolment::Token(_) => "Enrolment::Token(…)",
            Enrolment::Password { .. } => "Enrolment::Password(…)",
        })
    }
}

/// Registers `password` for `user` with `token`.
pub(crate) async fn register(
    accounts: &mut AccountsClient<Channel>,
    user: &UserId,
    token: &str,
    password: &[u8],
) -> Result<()> {
    let (state, request) = Registering::start(password)?;
    let started = accounts
        .password_register_start(PasswordRegisterStartRequest {
            token: token.trim().to_owned(),
            registration_request: request,
        })
        .await
        .map_err(Error::server("password registration refused"))?
        .into_inner();
    if started.user_id != user.as_str() {
        return Err(Error::user(format!(
            "this token is for {}, not {user}",
            started.user_id
        )));
    }
    let upload = state.finish(password, &started.registration_response)?;
    accounts
        .password_register_finish(PasswordRegisterFinishRequest {
            token: token.trim().to_owned(),
            registration_upload: upload,
        })
        .await
        .map_err(Error::server("password registration refused"))?;
    Ok(())
}

/// Logs `user` in with `password` and has the AS certify `csr_der` (a
/// request for this terminal's key) for 30 days.
pub(crate) async fn login(
    accounts: &mut AccountsClient<Channel>,
    user: &UserId,
    password: &[u8],
    csr_der: Vec<u8>,
) -> Result<EnrollResponse> {
    let (state, request) = LoggingIn::start(password)?;
    let started = accounts
        .password_login_start(PasswordLoginStartRequest {
            user_id: user.to_string(),
            credential_request: request,
        })
        .await
        .map_err(login_refused)?
        .into_inner();
    let (finalization, session_key) = state
        .finish(password, &started.credential_response)
        .map_err(|e| match e {
            duokey_crypto::Error::WrongPassword => Error::refused(format!(
                "wrong password for {user} (or not your organisation's server)"
            )),
            other => other.into(),
        })?;
    let csr_mac = password::csr_mac(&session_key, &csr_der)?.to_vec();
    let answer = accounts
        .password_login_finish(PasswordLoginFinishRequest {
            login_id: started.login_id,
            credential_finalization: finalization,
            csr_der,
            csr_mac,
        })
        .await
        .map_err(login_refused)?
        .into_inner();
    Ok(answer)
}

/// The AS's refusal of a login. A full wrong-password limit is a definitive
/// answer for its window (retrying at once only waits longer), not a
/// transient fault to retry shortly.
fn login_refused(s: tonic::Status) -> Error {
    if s.code() == tonic::Code::ResourceExhausted
        && s.message().starts_with("too many wrong passwords")
    {
        return Error::refused(format!("password login refused: {}", s.message()));
    }
    Error::from_status("password login refused", &s)
}

#[cfg(test)]
mod tests {
    use super::Enrolment;

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!(
            "{:?} {:?}",
            Enrolment::Token("dk1-secret-token"),
            Enrolment::Password {
                token: "dk1-secret-token",
                password: b"hunter2 hunter2"
            }
        );
        assert!(
            !shown.contains("secret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
