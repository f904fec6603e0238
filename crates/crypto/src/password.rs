//! Password accounts (SPEC §9; PROTOCOL §5.16; DESIGN D51): OPAQUE (RFC 9807,
//! the `opaque-ke` crate) between a terminal and the AS. The password never
//! leaves the terminal; the AS keeps, per user, only the OPAQUE record, and
//! an offline dictionary attack on that record needs the AS's OPRF key
//! ([`ServerKeys`], kept in a file apart from the database).
//!
//! Suite: OPRF and key exchange on ristretto255, 3DH with SHA-512, and
//! Argon2id as the key-stretching function. Every message crosses as the
//! crate's own serialization (bytes); both sides are pure functions here so
//! that the AS and the terminal share one implementation.

use crate::error::{Error, Result};
use opaque_ke::generic_array::{ArrayLength, GenericArray};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, RegistrationRequest, RegistrationResponse, RegistrationUpload, ServerLogin,
    ServerLoginParameters, ServerRegistration, ServerSetup,
};
use zeroize::Zeroizing;

/// Argon2id as OPAQUE's key-stretching function (the workspace's argon2,
/// with its default parameters: 19 MiB, 2 passes).
#[derive(Default)]
pub struct Argon2Ksf;

impl opaque_ke::ksf::Ksf for Argon2Ksf {
    fn hash<L: ArrayLength<u8>>(
        &self,
        input: GenericArray<u8, L>,
    ) -> std::result::Result<GenericArray<u8, L>, opaque_ke::errors::InternalError> {
        let mut output = GenericArray::default();
        argon2::Argon2::default()
            .hash_password_into(&input, &[0; 16], &mut output)
            .map_err(|_| opaque_ke::errors::InternalError::KsfError)?;
        Ok(output)
    }
}

/// Duokey's OPAQUE suite.
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2_010::Sha512>;
    type Ksf = Argon2Ksf;
}

fn rng() -> rand_core_06::OsRng {
    rand_core_06::OsRng
}

fn malformed(what: &'static str) -> impl Fn(opaque_ke::errors::ProtocolError) -> Error {
    move |_| Error::Malformed { what }
}

/// The AS's OPAQUE secrets (the OPRF seed and its key-exchange key pair):
/// without them the stored records allow no offline dictionary attack.
pub struct ServerKeys(ServerSetup<Suite>);

impl ServerKeys {
    /// Fresh keys.
    pub fn generate() -> ServerKeys {
        ServerKeys(ServerSetup::new(&mut rng()))
    }

    /// The keys as stored.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Keys read back.
    pub fn from_bytes(bytes: &[u8]) -> Result<ServerKeys> {
        ServerSetup::deserialize(bytes)
            .map(ServerKeys)
            .map_err(|_| Error::Malformed {
                what: "OPAQUE server keys",
            })
    }
}

/// The AS's answer to a registration request for `user`.
pub fn server_register_start(keys: &ServerKeys, user: &str, request: &[u8]) -> Result<Vec<u8>> {
    let request =
        RegistrationRequest::deserialize(request).map_err(malformed("registration request"))?;
    let start = ServerRegistration::<Suite>::start(&keys.0, request, user.as_bytes())
        .map_err(malformed("registration request"))?;
    Ok(start.message.serialize().to_vec())
}

/// The record the AS stores from the terminal's final registration message.
pub fn server_register_finish(upload: &[u8]) -> Result<Vec<u8>> {
    let upload = RegistrationUpload::<Suite>::deserialize(upload)
        .map_err(malformed("registration upload"))?;
    Ok(ServerRegistration::finish(upload).serialize().to_vec())
}

/// The AS's answer to a login request for `user` (whose `record`, if the
/// user has one: an unknown user gets an answer that looks the same), and
/// the state it keeps until the terminal's last message.
pub fn server_login_start(
    keys: &ServerKeys,
    user: &str,
    record: Option<&[u8]>,
    request: &[u8],
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let record = record
        .map(ServerRegistration::<Suite>::deserialize)
        .transpose()
        .map_err(malformed("OPAQUE record"))?;
    let request = CredentialRequest::deserialize(request).map_err(malformed("login request"))?;
    let start = ServerLogin::start(
        &mut rng(),
        &keys.0,
        record,
        request,
        user.as_bytes(),
        ServerLoginParameters::default(),
    )
    .map_err(malformed("login request"))?;
    Ok((
        start.message.serialize().to_vec(),
        Zeroizing::new(start.state.serialize().to_vec()),
    ))
}

/// The session key, if the terminal's last message proves the password;
/// [`Error::WrongPassword`] otherwise.
pub fn server_login_finish(state: &[u8], finalization: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let state = ServerLogin::<Suite>::deserialize(state).map_err(malformed("login state"))?;
    let finalization = CredentialFinalization::deserialize(finalization)
        .map_err(malformed("login finalization"))?;
    let done = state
        .finish(finalization, ServerLoginParameters::default())
        .map_err(|_| Error::WrongPassword)?;
    Ok(Zeroizing::new(done.session_key.to_vec()))
}

/// A terminal's registration in progress.
pub struct Registering(ClientRegistration<Suite>);

impl Registering {
    /// Starts registering `password`: the state and the request to send.
    pub fn start(password: &[u8]) -> Result<(Registering, Vec<u8>)> {
        let start = ClientRegistration::<Suite>::start(&mut rng(), password)
            .map_err(|_| Error::Internal("OPAQUE registration start"))?;
        Ok((Registering(start.state), start.message.serialize().to_vec()))
    }

    /// The final message to send, from the AS's answer.
    pub fn finish(self, password: &[u8], response: &[u8]) -> Result<Vec<u8>> {
        let response = RegistrationResponse::deserialize(response)
            .map_err(malformed("registration response"))?;
        let done = self
            .0
            .finish(
                &mut rng(),
                password,
                response,
                ClientRegistrationFinishParameters::default(),
            )
            .map_err(malformed("registration response"))?;
        Ok(done.message.serialize().to_vec())
    }
}

/// A terminal's login in progress.
pub struct LoggingIn(ClientLogin<Suite>);

impl LoggingIn {
    /// Starts logging in with `password`: the state and the request to send.
    pub fn start(password: &[u8]) -> Result<(LoggingIn, Vec<u8>)> {
        let start = ClientLogin::<Suite>::start(&mut rng(), password)
            .map_err(|_| Error::Internal("OPAQUE login start"))?;
        Ok((LoggingIn(start.state), start.message.serialize().to_vec()))
    }

    /// The final message to send and the session key shared with the AS;
    /// [`Error::WrongPassword`] if the AS's answer does not open with
    /// `password` (a wrong password, or not this AS).
    pub fn finish(self, password: &[u8], response: &[u8]) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        let response =
            CredentialResponse::deserialize(response).map_err(malformed("login response"))?;
        let done = self
            .0
            .finish(
                &mut rng(),
                password,
                response,
                ClientLoginFinishParameters::default(),
            )
            .map_err(|_| Error::WrongPassword)?;
        Ok((
            done.message.serialize().to_vec(),
            Zeroizing::new(done.session_key.to_vec()),
        ))
    }
}

const CSR_LABEL: &[u8] = b"duokey/v1 login csr";

/// The MAC that binds a certificate request to a login's session key: the
/// AS signs only a request made by whoever logged in.
pub fn csr_mac(session_key: &[u8], csr_der: &[u8]) -> Result<[u8; 32]> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(session_key)
        .map_err(|_| Error::Internal("HMAC key"))?;
    mac.update(CSR_LABEL);
    mac.update(csr_der);
    Ok(mac.finalize().into_bytes().into())
}

/// Checks [`csr_mac`] in constant time.
pub fn check_csr_mac(session_key: &[u8], csr_der: &[u8], got: &[u8]) -> Result<()> {
    use subtle::ConstantTimeEq;
    let want = csr_mac(session_key, csr_der)?;
    if bool::from(want.as_slice().ct_eq(got)) {
        Ok(())
    } else {
        Err(Error::BadSignature {
            what: "login certificate request",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn register(keys: &ServerKeys, password: &[u8]) -> Vec<u8> {
        let (state, request) = Registering::start(password).unwrap();
        let response = server_register_start(keys, "alice", &request).unwrap();
        let upload = state.finish(password, &response).unwrap();
        server_register_finish(&upload).unwrap()
    }

    fn login(keys: &ServerKeys, record: Option<&[u8]>, password: &[u8]) -> Result<Vec<u8>> {
        let (state, request) = LoggingIn::start(password)?;
        let (response, server_state) = server_login_start(keys, "alice", record, &request)?;
        let (finalization, client_key) = state.finish(password, &response)?;
        let server_key = server_login_finish(&server_state, &finalization)?;
        assert_eq!(*client_key, *server_key);
        Ok(client_key.to_vec())
    }

    #[test]
    fn the_right_password_logs_in_and_both_sides_share_a_key() {
        let keys = ServerKeys::generate();
        let record = register(&keys, b"correct horse battery staple");
        let one = login(&keys, Some(&record), b"correct horse battery staple").unwrap();
        let two = login(&keys, Some(&record), b"correct horse battery staple").unwrap();
        assert_ne!(one, two, "a fresh key per login");
        // The keys survive being stored.
        let again = ServerKeys::from_bytes(&keys.to_bytes()).unwrap();
        login(&again, Some(&record), b"correct horse battery staple").unwrap();
    }

    #[test]
    fn a_wrong_password_an_unknown_user_or_other_server_keys_fail() {
        let keys = ServerKeys::generate();
        let record = register(&keys, b"correct horse battery staple");
        assert!(matches!(
            login(&keys, Some(&record), b"correct horse battery stable"),
            Err(Error::WrongPassword)
        ));
        assert!(matches!(
            login(&keys, None, b"correct horse battery staple"),
            Err(Error::WrongPassword)
        ));
        let other = ServerKeys::generate();
        assert!(matches!(
            login(&other, Some(&record), b"correct horse battery staple"),
            Err(Error::WrongPassword)
        ));
    }

    #[test]
    fn a_stolen_record_without_the_server_keys_confirms_no_guess() {
        // The thief has the record and a dictionary that holds the password,
        // but not the AS's keys: trying each word with keys of its own, no
        // word logs in, the right one included.
        let keys = ServerKeys::generate();
        let record = register(&keys, b"tr0ub4dor&3");
        let thief = ServerKeys::generate();
        for word in [&b"password"[..], b"letmein", b"tr0ub4dor&3", b"hunter2"] {
            assert!(login(&thief, Some(&record), word).is_err());
        }
        // With the keys, the right word does: the keys are what protect it.
        assert!(login(&keys, Some(&record), b"tr0ub4dor&3").is_ok());
    }

    #[test]
    fn a_certificate_request_is_bound_to_the_login() {
        let mac = csr_mac(b"session key one", b"csr").unwrap();
        assert!(check_csr_mac(b"session key one", b"csr", &mac).is_ok());
        assert!(check_csr_mac(b"session key two", b"csr", &mac).is_err());
        assert!(check_csr_mac(b"session key one", b"another csr", &mac).is_err());
    }

    #[test]
    fn the_record_holds_nothing_of_the_password() {
        let keys = ServerKeys::generate();
        let password = b"correct horse battery staple";
        let record = register(&keys, password);
        assert!(!record.windows(password.len()).any(|w| w == password));
        assert_eq!(record.len(), 192);
    }
}
