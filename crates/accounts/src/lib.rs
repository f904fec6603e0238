//! # duokey-accounts — the Account Server (SPEC §2, §5.1)
//!
//! Enrols terminals: an administrator issues a one-time token for a user id
//! (`duokey-server enroll USER`, valid 24 h, stored only as its SHA-256
//! hash); the terminal sends the token with a certificate request for its own
//! Ed25519 key; the AS signs it with the organisation's CA — only for the
//! token's user id, and only once.
#![forbid(unsafe_code)]

use duokey_crypto::UserId;
use duokey_pki::Ca;
use duokey_proto::accounts_server::{Accounts, AccountsServer};
use duokey_proto::{EnrollRequest, EnrollResponse};
use duokey_storage::Db;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// How long a token stays valid: 24 h (issue 3).
pub const TOKEN_TTL_MS: i64 = 24 * 3600 * 1000;
/// Validity of terminal certificates.
pub const TERMINAL_CERT_DAYS: u32 = 365;

/// Errors of the AS outside gRPC calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] duokey_storage::Error),
    /// The random generator failed.
    #[error("operating system random generator failed")]
    Random,
}

/// Unix time in milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// Creates a one-time enrolment token for `user`, valid [`TOKEN_TTL_MS`].
/// Only its hash is stored; the token itself is returned once.
pub async fn issue_token(db: &Db, user: &UserId) -> Result<Zeroizing<String>, Error> {
    let mut raw = Zeroizing::new([0u8; 20]);
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, raw.as_mut_slice())
        .map_err(|_| Error::Random)?;
    let token = Zeroizing::new(format!("dk1-{}", hex::encode(raw.as_slice())));
    let now = now_ms();
    db.insert_token(&token_hash(&token), user.as_str(), now, now + TOKEN_TTL_MS)
        .await?;
    Ok(token)
}

/// The AS service.
#[derive(Clone)]
pub struct AccountServer {
    db: Db,
    ca: Arc<Ca>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl std::fmt::Debug for AccountServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountServer")
    }
}

impl AccountServer {
    /// An AS signing with `ca`; enrolment attempts are limited per client
    /// address (5 per second, bursts of 20) against token guessing floods.
    pub fn new(db: Db, ca: Arc<Ca>) -> AccountServer {
        let quota = Quota::per_second(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN));
        AccountServer {
            db,
            ca,
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// The gRPC service.
    pub fn service(&self) -> AccountsServer<AccountServer> {
        AccountsServer::new(self.clone()).max_decoding_message_size(64 * 1024)
    }
}

fn denied() -> Status {
    metrics::counter!("duokey_refusals_total", "reason" => "bad_token").increment(1);
    Status::permission_denied(
        "enrolment token is unknown, used or expired; ask your administrator for a new one",
    )
}

#[tonic::async_trait]
impl Accounts for AccountServer {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        if let Some(ip) = req.remote_addr().map(|a| a.ip()) {
            self.limiter.check_key(&ip).map_err(|_| {
                metrics::counter!("duokey_refusals_total", "reason" => "rate_limited").increment(1);
                Status::resource_exhausted("too many enrolment attempts; wait and retry")
            })?;
        }
        let r = req.into_inner();
        let hash = token_hash(&r.token);
        let now = now_ms();
        let storage = |e: duokey_storage::Error| {
            tracing::error!(error = %e, "storage failure");
            Status::unavailable("storage unavailable, retry")
        };
        let user = self
            .db
            .token_user(&hash, now)
            .await
            .map_err(storage)?
            .ok_or_else(denied)?;
        let user = UserId::new(user)
            .map_err(|_| Status::internal("stored token names an invalid user id"))?;
        let cert = self
            .ca
            .sign_csr(&r.csr_der, &user, TERMINAL_CERT_DAYS)
            .map_err(|e| Status::invalid_argument(format!("certificate request refused: {e}")))?;
        // Use the token only now, atomically: a failed request leaves it usable,
        // and two concurrent requests cannot both get a certificate.
        if self
            .db
            .use_token(&hash, now)
            .await
            .map_err(storage)?
            .as_deref()
            != Some(user.as_str())
        {
            return Err(denied());
        }
        tracing::info!(user = %user, "terminal enrolled");
        metrics::counter!("duokey_as_enrolments_total").increment(1);
        Ok(Response::new(EnrollResponse {
            cert_chain_der: vec![cert.to_vec()],
            ca_cert_der: self.ca.cert_der().to_vec(),
            user_id: user.to_string(),
        }))
    }
}
