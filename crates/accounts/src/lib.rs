//! # duokey-accounts — the Account Server (SPEC §2, §5.1)
//!
//! Enrols terminals: an administrator issues a one-time token for a user id
//! (`duokey-server enroll USER`, valid 24 h unless `--ttl`, stored only as its SHA-256
//! hash); the terminal sends the token with a certificate request for its own
//! Ed25519 key; the AS signs it with the organisation's CA — only for the
//! token's user id, and only once.
#![forbid(unsafe_code)]

use duokey_crypto::UserId;
use duokey_crypto::password::{self, ServerKeys};
use duokey_pki::clock::Clock;
use duokey_pki::{Ca, RevocationList};
use duokey_proto::accounts_server::{Accounts, AccountsServer};
use duokey_proto::{
    EnrollRequest, EnrollResponse, PasswordLoginFinishRequest, PasswordLoginStartRequest,
    PasswordLoginStartResponse, PasswordRegisterFinishRequest, PasswordRegisterFinishResponse,
    PasswordRegisterStartRequest, PasswordRegisterStartResponse, RenewRequest,
};
use duokey_storage::AsStore;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// How long a token stays valid: 24 h.
pub const TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;
/// Validity of terminal certificates.
pub const TERMINAL_CERT_DAYS: u32 = 365;
/// Validity of a password account's certificate: it logs in again with its
/// password after that (DESIGN D51).
pub const PASSWORD_CERT_DAYS: u32 = 30;
/// The window of [`LoginLimits`]: 15 minutes.
pub const LOGIN_WINDOW_MS: i64 = 15 * 60 * 1000;

/// How many wrong passwords the AS takes in [`LOGIN_WINDOW_MS`] before it
/// refuses further logins until the window passes (DESIGN D51):
/// online guessing is bounded per account and per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Wrong passwords per account (a right one starts its count again).
    pub per_account: u64,
    /// Wrong passwords from one client address, for any accounts (a right
    /// one does not reset it). Set it above the number of people behind
    /// one address (an office's NAT) who may mistype.
    pub per_address: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            per_account: 5,
            per_address: 30,
        }
    }
}
/// How long a login's first step waits for its second: 60 s.
pub const LOGIN_TTL_MS: i64 = 60 * 1000;

/// Errors of the AS outside gRPC calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] duokey_storage::Error),
    /// The random generator failed.
    #[error("operating system random generator failed")]
    Random,
    /// The user holds a valid certificate and the token would silently
    /// replace it.
    #[error(
        "{user} already holds a valid certificate (serial {serial}). If their device was lost or replaced, \
         run `duokey-server enroll {user} --replace`: the old certificate is revoked, and {user}'s contacts \
         are shown the new key to confirm"
    )]
    AlreadyEnrolled {
        /// The user.
        user: String,
        /// The serial of the valid certificate (hex).
        serial: String,
    },
}

/// A new enrolment token, and the certificates it replaces (to revoke).
#[derive(Debug)]
pub struct IssuedToken {
    /// The one-time token, shown once.
    pub token: Zeroizing<String>,
    /// Serials of the user's valid certificates that `--replace` replaces:
    /// the caller revokes them.
    pub replaced: Vec<Vec<u8>>,
}

use duokey_pki::clock::now_ms_i64 as now_ms;

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// Creates a one-time enrolment token for `user`, valid [`TOKEN_TTL_MS`],
/// for a user who holds no certificate the AS issued (see
/// [`issue_token_with`]).
pub async fn issue_token(db: &AsStore, user: &UserId) -> Result<Zeroizing<String>, Error> {
    Ok(issue_token_with(db, user, false, &RevocationList::empty())
        .await?
        .token)
}

/// The serials of `user`'s valid certificates: issued by this AS, not
/// expired, not on `revoked`.
async fn valid_certs(
    db: &AsStore,
    user: &str,
    revoked: &RevocationList,
    now_ms: i64,
) -> duokey_storage::Result<Vec<Vec<u8>>> {
    let mut serials = db.unexpired_certs(user, now_ms).await?;
    serials.retain(|s| !revoked.is_revoked(s));
    Ok(serials)
}

/// Creates a one-time enrolment token for `user`, valid [`TOKEN_TTL_MS`]
/// (see [`issue_token_for`]).
pub async fn issue_token_with(
    db: &AsStore,
    user: &UserId,
    replace: bool,
    revoked: &RevocationList,
) -> Result<IssuedToken, Error> {
    issue_token_for(db, user, replace, revoked, TOKEN_TTL_MS).await
}

/// Creates a one-time enrolment token for `user`, valid `ttl_ms`; only its
/// hash is stored. Re-enrolment is explicit: if the user holds a valid
/// certificate, the token is refused unless `replace`, and then the
/// certificates it replaces are returned for the caller to revoke.
pub async fn issue_token_for(
    db: &AsStore,
    user: &UserId,
    replace: bool,
    revoked: &RevocationList,
    ttl_ms: i64,
) -> Result<IssuedToken, Error> {
    let valid = valid_certs(db, user.as_str(), revoked, now_ms()).await?;
    if let (false, Some(serial)) = (replace, valid.first()) {
        return Err(Error::AlreadyEnrolled {
            user: user.to_string(),
            serial: hex::encode(serial),
        });
    }
    let mut raw = Zeroizing::new([0u8; 20]);
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, raw.as_mut_slice())
        .map_err(|_| Error::Random)?;
    let token = Zeroizing::new(format!("dk1-{}", hex::encode(raw.as_slice())));
    let now = now_ms();
    db.insert_token(
        &token_hash(&token),
        user.as_str(),
        now,
        now.saturating_add(ttl_ms),
        replace,
    )
    .await?;
    if replace {
        tracing::warn!(user = %user, replaced = valid.len(), "replacement enrolment token issued");
    }
    Ok(IssuedToken {
        token,
        replaced: valid,
    })
}

/// Like [`issue_token_for`], for a token that sets up a password account
/// (OPAQUE registration, PROTOCOL §5.16) instead of enrolling a certificate
/// request.
pub async fn issue_password_token(
    db: &AsStore,
    user: &UserId,
    replace: bool,
    revoked: &RevocationList,
    ttl_ms: i64,
) -> Result<IssuedToken, Error> {
    let issued = issue_token_for(db, user, replace, revoked, ttl_ms).await?;
    db.mark_password_token(&token_hash(&issued.token)).await?;
    Ok(issued)
}

/// The AS service.
#[derive(Clone)]
pub struct AccountServer {
    db: AsStore,
    ca: Arc<Ca>,
    revoked: Arc<RevocationList>,
    limiter: Arc<duokey_pki::clock::KeyedLimiter<IpAddr>>,
    password_keys: Option<Arc<ServerKeys>>,
    login_limits: LoginLimits,
    /// The time of token and login checks, and of the request limiter
    /// (DESIGN D41: tests move it instead of sleeping).
    clock: Clock,
}

impl std::fmt::Debug for AccountServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountServer")
    }
}

impl AccountServer {
    /// An AS signing with `ca`; enrolment attempts are limited per client
    /// address (5 per second, bursts of 20) against token guessing floods.
    /// `revoked` is the servers' revocation list: a replacement enrolment
    /// revokes the certificates it replaces in its file.
    pub fn new(db: AsStore, ca: Arc<Ca>, revoked: Arc<RevocationList>) -> AccountServer {
        AccountServer {
            db,
            ca,
            revoked,
            limiter: Arc::new(limiter(&Clock::system())),
            password_keys: None,
            login_limits: LoginLimits::default(),
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` (token lifetimes, logins, the limits).
    pub fn with_clock(mut self, clock: Clock) -> AccountServer {
        self.limiter = Arc::new(limiter(&clock));
        self.clock = clock;
        self
    }

    /// Takes password accounts (OPAQUE, DESIGN D51) with `keys`, the AS's
    /// OPRF and key-exchange secrets (every AS node of a cluster needs the
    /// same).
    pub fn with_password_keys(mut self, keys: ServerKeys) -> AccountServer {
        self.password_keys = Some(Arc::new(keys));
        self
    }

    /// Limits wrong passwords to `limits` instead of the defaults.
    pub fn with_login_limits(mut self, limits: LoginLimits) -> AccountServer {
        self.login_limits = limits;
        self
    }

    /// The gRPC service.
    pub fn service(&self) -> AccountsServer<AccountServer> {
        AccountsServer::new(self.clone()).max_decoding_message_size(64 * 1024)
    }
}

/// Requests per client address: 5 a second, bursts of 20.
fn limiter(clock: &Clock) -> duokey_pki::clock::KeyedLimiter<IpAddr> {
    duokey_pki::clock::keyed_limiter(5, 20, clock)
}

/// What a token sets up (DESIGN D51).
#[derive(Debug, Clone, Copy)]
enum TokenUse {
    /// A terminal's certificate (`Enroll`).
    Certificate,
    /// A password account (OPAQUE registration, PROTOCOL §5.16).
    Password,
}

/// Why the AS issued a certificate: what it logs and counts.
#[derive(Debug, Clone, Copy)]
enum Issued {
    /// `Renew`: a new certificate for the same key.
    Renewal,
    /// `Enroll`: a terminal's certificate, for a token.
    Enrolment,
    /// `PasswordLoginFinish`: a password account's certificate.
    PasswordLogin,
}

fn denied() -> Status {
    metrics::counter!("duokey_refusals_total", "reason" => "bad_token").increment(1);
    Status::permission_denied(
        "enrolment token is unknown, used or expired; ask your administrator for a new one",
    )
}

impl AccountServer {
    /// Revokes the certificates a replacement enrolment replaced,
    /// in the list file when there is one; logged.
    fn revoke_replaced(&self, user: &UserId, serials: &[Vec<u8>]) {
        for serial in serials {
            if let Some(path) = self.revoked.path()
                && let Err(e) = RevocationList::revoke_in_file(path, serial)
            {
                tracing::error!(error = %e, "cannot write the revocation list");
            }
            self.revoked.insert(serial);
            tracing::warn!(user = %user, serial = %hex::encode(serial), "certificate replaced and revoked");
        }
    }
}

impl AccountServer {
    /// `RESOURCE_EXHAUSTED` when the client's address is over its rate.
    fn rate_limit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if let Some(ip) = req.remote_addr().map(|a| client_key(a.ip())) {
            self.limiter.check_key(&ip).map_err(|_| {
                metrics::counter!("duokey_refusals_total", "reason" => "rate_limited").increment(1);
                Status::resource_exhausted("too many enrolment attempts; wait and retry")
            })?;
        }
        Ok(())
    }

    /// Signs `csr_der` for `user`.
    async fn issue(&self, csr_der: &[u8], user: &UserId) -> Result<Vec<u8>, Status> {
        self.issue_for(csr_der, user, TERMINAL_CERT_DAYS).await
    }

    /// Signs `csr_der` for `user`, valid `days`.
    async fn issue_for(&self, csr_der: &[u8], user: &UserId, days: u32) -> Result<Vec<u8>, Status> {
        let cert = self
            .ca
            .sign_csr(csr_der, user, days)
            .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
        Ok(cert.to_vec())
    }

    /// Records a certificate just issued (its serial and expiry).
    async fn record(&self, cert: &[u8], user: &UserId) -> Result<(), Status> {
        let issued = duokey_pki::peer_identity(cert)
            .map_err(|_| Status::internal("cannot read the certificate just issued"))?;
        self.db
            .record_cert(
                &issued.serial,
                user.as_str(),
                self.clock.now_ms_i64(),
                issued.not_after_unix.saturating_mul(1000),
            )
            .await
            .map_err(Status::from)
    }

    /// The answer to a call that issued `cert` to `user`, logged and counted.
    fn answer(&self, cert: Vec<u8>, user: &UserId, why: Issued) -> Response<EnrollResponse> {
        let (event, counter) = match why {
            Issued::Renewal => ("terminal certificate renewed", "duokey_as_renewals_total"),
            Issued::Enrolment => ("terminal enrolled", "duokey_as_enrolments_total"),
            Issued::PasswordLogin => (
                "password login: certificate issued",
                "duokey_as_password_logins_total",
            ),
        };
        tracing::info!(user = %user, "{event}");
        metrics::counter!(counter).increment(1);
        Response::new(EnrollResponse {
            cert_chain_der: vec![cert],
            ca_cert_der: self.ca.cert_der().to_vec(),
            user_id: user.to_string(),
        })
    }
}

#[tonic::async_trait]
impl Accounts for AccountServer {
    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<EnrollResponse>, Status> {
        self.rate_limit(&req)?;
        let caller = duokey_pki::grpc::Caller::of(&req)?;
        let (user, key) = caller.terminal()?;
        let cert = self.issue(&req.get_ref().csr_der, &user).await?;
        let same_key = duokey_pki::peer_identity(&cert)
            .ok()
            .and_then(|p| p.ed25519_public)
            .is_some_and(|k| k == key.to_bytes());
        if !same_key {
            return Err(Status::invalid_argument(
                "a renewal keeps the identity key: the request must carry the key of the current certificate",
            ));
        }
        self.record(&cert, &user).await?;
        Ok(self.answer(cert, &user, Issued::Renewal))
    }

    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        self.rate_limit(&req)?;
        let r = req.into_inner();
        let hash = token_hash(&r.token);
        let now = self.clock.now_ms_i64();
        let (user, replace) = self.token_user(&hash, now, TokenUse::Certificate).await?;
        // D33: a certificate issued since the token was is not replaced
        // silently either.
        let valid = valid_certs(&self.db, user.as_str(), &self.revoked, now).await?;
        if !valid.is_empty() && !replace {
            return Err(Status::failed_precondition(format!(
                "{user} already holds a valid certificate; ask your administrator for a replacement \
                 token (`duokey-server enroll {user} --replace`)"
            )));
        }
        let cert = self.issue(&r.csr_der, &user).await?;
        // Use the token only now, atomically: a failed request leaves it usable,
        // and two concurrent requests cannot both get a certificate.
        self.use_token(&hash, now, &user).await?;
        self.record(&cert, &user).await?;
        if replace {
            self.revoke_replaced(&user, &valid);
        }
        Ok(self.answer(cert, &user, Issued::Enrolment))
    }

    async fn password_register_start(
        &self,
        req: Request<PasswordRegisterStartRequest>,
    ) -> Result<Response<PasswordRegisterStartResponse>, Status> {
        let (r, keys) = self.password_call(req)?;
        let user = self.password_token_user(&r.token).await?;
        let response =
            password::server_register_start(keys, user.as_str(), &r.registration_request)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(PasswordRegisterStartResponse {
            registration_response: response,
            user_id: user.to_string(),
        }))
    }

    async fn password_register_finish(
        &self,
        req: Request<PasswordRegisterFinishRequest>,
    ) -> Result<Response<PasswordRegisterFinishResponse>, Status> {
        let (r, _) = self.password_call(req)?;
        let user = self.password_token_user(&r.token).await?;
        let record = password::server_register_finish(&r.registration_upload)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self.clock.now_ms_i64();
        self.use_token(&token_hash(&r.token), now, &user).await?;
        self.db.put_password(user.as_str(), &record, now).await?;
        tracing::info!(user = %user, "password account registered");
        Ok(Response::new(PasswordRegisterFinishResponse {}))
    }

    async fn password_login_start(
        &self,
        req: Request<PasswordLoginStartRequest>,
    ) -> Result<Response<PasswordLoginStartResponse>, Status> {
        let addr = client_addr(&req);
        let (r, keys) = self.password_call(req)?;
        let user = UserId::new(r.user_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self.clock.now_ms_i64();
        let mut login_id = [0u8; 16];
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut login_id)
            .map_err(|_| Status::internal("random generator"))?;
        // Counted before the answer, as a wrong password until the login
        // succeeds: with the answer the client can test its guess without a
        // second step. Recorded before it is counted, so that starts racing
        // each other all see each other (at most the limit get an answer).
        self.db
            .record_login_attempt(
                &login_id,
                user.as_str(),
                &addr,
                now,
                now.saturating_sub(LOGIN_WINDOW_MS),
            )
            .await?;
        if let Err(refused) = self.check_login_limits(&user, &addr, now).await {
            self.db.drop_login_attempt(&login_id).await?;
            return Err(refused);
        }
        let record = self.db.password_record(user.as_str()).await?;
        let (response, state) = password::server_login_start(
            keys,
            user.as_str(),
            record.as_deref(),
            &r.credential_request,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.db
            .put_login(
                &login_id,
                user.as_str(),
                &state,
                (now, now.saturating_add(LOGIN_TTL_MS)),
            )
            .await?;
        Ok(Response::new(PasswordLoginStartResponse {
            credential_response: response,
            login_id: login_id.to_vec(),
        }))
    }

    async fn password_login_finish(
        &self,
        req: Request<PasswordLoginFinishRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let (r, _) = self.password_call(req)?;
        let now = self.clock.now_ms_i64();
        let (user, state) = self.db.take_login(&r.login_id, now).await?.ok_or_else(|| {
            Status::permission_denied("unknown, used or expired login; log in again")
        })?;
        let user = UserId::new(user)
            .map_err(|_| Status::internal("stored login names an invalid user id"))?;
        let session_key = match password::server_login_finish(&state, &r.credential_finalization) {
            Ok(k) => k,
            // Already counted at the first step.
            Err(_) => {
                metrics::counter!("duokey_refusals_total", "reason" => "wrong_password")
                    .increment(1);
                return Err(Status::unauthenticated(format!(
                    "wrong password for {user}"
                )));
            }
        };
        password::check_csr_mac(&session_key, &r.csr_der, &r.csr_mac)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.db.login_succeeded(&r.login_id, user.as_str()).await?;
        let cert = self
            .issue_for(&r.csr_der, &user, PASSWORD_CERT_DAYS)
            .await?;
        self.record(&cert, &user).await?;
        Ok(self.answer(cert, &user, Issued::PasswordLogin))
    }
}

/// The client's address as the login limits count it (see [`client_key`]).
fn client_addr<T>(req: &Request<T>) -> String {
    req.remote_addr()
        .map(|a| client_key(a.ip()).to_string())
        .unwrap_or_default()
}

/// The address a client's requests are counted under: IPv4 as it is (also
/// when mapped into IPv6), IPv6 by its /64 network — a subscriber's usual
/// allocation, whose 2^64 addresses cost an attacker nothing to change.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl AccountServer {
    /// `RESOURCE_EXHAUSTED` when `user` or `addr` had too many wrong
    /// passwords in the last [`LOGIN_WINDOW_MS`], counting the attempt
    /// being made (already recorded).
    async fn check_login_limits(&self, user: &UserId, addr: &str, now: i64) -> Result<(), Status> {
        let since = now.saturating_sub(LOGIN_WINDOW_MS);
        let by_user = self.db.login_failures(user.as_str(), since).await?;
        let by_addr = self.db.address_login_failures(addr, since).await?;
        let whose = if by_user > self.login_limits.per_account {
            format!("for {user}")
        } else if by_addr > self.login_limits.per_address {
            "from your network address".to_owned()
        } else {
            return Ok(());
        };
        metrics::counter!("duokey_refusals_total", "reason" => "password_limit").increment(1);
        Err(Status::resource_exhausted(format!(
            "too many wrong passwords {whose}; wait 15 minutes, or ask your administrator"
        )))
    }

    /// What every password call starts with: the request limit, this
    /// server taking password accounts at all; then the message.
    fn password_call<T>(&self, req: Request<T>) -> Result<(T, &ServerKeys), Status> {
        self.rate_limit(&req)?;
        let keys = self.password_keys()?;
        Ok((req.into_inner(), keys))
    }

    fn password_keys(&self) -> Result<&ServerKeys, Status> {
        self.password_keys
            .as_deref()
            .ok_or_else(|| Status::failed_precondition("this server takes no password accounts"))
    }

    /// The user of an unused, unexpired `--password-setup` token.
    async fn password_token_user(&self, token: &str) -> Result<UserId, Status> {
        let now = self.clock.now_ms_i64();
        let (user, _) = self
            .token_user(&token_hash(token), now, TokenUse::Password)
            .await?;
        Ok(user)
    }

    /// The user of the unused, unexpired token `hash` and whether it
    /// replaces certificates; refused unless it sets up `wanted`.
    async fn token_user(
        &self,
        hash: &[u8],
        now: i64,
        wanted: TokenUse,
    ) -> Result<(UserId, bool), Status> {
        let (user, replace) = self.db.token_user(hash, now).await?.ok_or_else(denied)?;
        let password = self.db.is_password_token(hash).await?;
        match (wanted, password) {
            (TokenUse::Certificate, true) => Err(Status::failed_precondition(
                "this token sets up a password account: `duokey init --user USER --password`",
            )),
            (TokenUse::Password, false) => Err(Status::failed_precondition(
                "this token enrols a certificate, not a password: use `duokey init` without --password",
            )),
            _ => UserId::new(user)
                .map(|user| (user, replace))
                .map_err(|_| Status::internal("stored token names an invalid user id")),
        }
    }

    /// Uses the token `hash`, once and atomically; refused unless it is
    /// still `user`'s (used or expired meanwhile).
    async fn use_token(&self, hash: &[u8], now: i64, user: &UserId) -> Result<(), Status> {
        if self.db.use_token(hash, now).await?.as_deref() != Some(user.as_str()) {
            return Err(denied());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;
    use std::net::IpAddr;

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_network() {
        let key = |s: &str| client_key(s.parse::<IpAddr>().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
