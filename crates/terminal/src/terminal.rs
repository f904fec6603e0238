//! Opening a profile, enrolment, and the terminal's connections.

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::keylog::KeyLog;
use crate::store::Store;
use crate::vault::{Vault, random};
use duokey_crypto::{DeliverySecret, IdentityKey, PublicIdentity, UserId};
use duokey_pki::grpc::channel;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::group_management_client::GroupManagementClient;
use duokey_proto::{EnrollRequest, RenewRequest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::Channel;
use zeroize::Zeroizing;

/// A group as listed to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupInfo {
    /// 32 hex digits.
    pub group_id: String,
    /// Name.
    pub name: String,
    /// Where this terminal stands in it.
    pub state: crate::store::GroupState,
    /// Current RN1 version.
    pub rn1_version: u32,
    /// Current RN2 version.
    pub rn2_version: u64,
}

/// A member and its rights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    /// User id.
    pub user: String,
    /// Rights, e.g. "owner,invite,remove" or "member".
    pub rights: String,
}

/// A pending invitation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invitation {
    /// 32 hex digits.
    pub invite_id: String,
    /// 32 hex digits.
    pub group_id: String,
    /// Group name.
    pub group_name: String,
    /// Inviter.
    pub from: String,
    /// Rights offered.
    pub rights: String,
}

/// What happened to a message given to [`Terminal::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Posted and durable at the CS, at this log position.
    Posted(u64),
    /// Kept in the outbox (sealed) and sent by a later sync, or on
    /// reconnect, once what it waits for is there; never lost.
    Queued(Waiting),
}

/// What a queued message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The group's new RN1 (SPEC §4.3 step 4), or a valid grant after a
    /// refused one.
    Key,
    /// The CS: it could not be reached (a transient fault).
    Server,
}

/// An open profile, connected to the servers.
pub struct Terminal {
    pub(crate) home: PathBuf,
    pub(crate) store: Store,
    pub(crate) vault: Vault,
    pub(crate) me: UserId,
    pub(crate) identity: IdentityKey,
    pub(crate) delivery: DeliverySecret,
    /// Previous delivery secrets, newest first, kept for items sealed to
    /// them before contacts saw the new one.
    pub(crate) retired: Vec<DeliverySecret>,
    pub(crate) ca: CertificateDer<'static>,
    pub(crate) keylog: KeyLog,
    pub(crate) gms: GroupManagementClient<Channel>,
    pub(crate) cs: CommunicationClient<Channel>,
    pub(crate) keys: HashMap<UserId, PublicIdentity>,
    /// Verified membership state per group (SPEC §4.7), cached from the store.
    pub(crate) states: HashMap<[u8; 16], Arc<duokey_crypto::membership::State>>,
    /// Where warnings go: stderr (`None`) or kept for an interactive UI.
    pub(crate) warnings: std::sync::Mutex<Option<Vec<String>>>,
    /// The organisation's revoked serials, loaded from the profile on first
    /// use and refreshed at every sync.
    pub(crate) revoked: Option<Arc<duokey_pki::RevocationList>>,
    /// How often live streams yield [`crate::LiveEvent::Timer`].
    pub(crate) timed_duties: std::time::Duration,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Terminal({})", self.me)
    }
}

fn profile_path(home: &Path) -> PathBuf {
    home.join("profile.db")
}

fn encode_chain(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chain {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn decode_chain(mut b: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b
            .split_at_checked(4)
            .ok_or(Error::Corrupt("certificate chain"))?;
        let n = u32::from_be_bytes(
            len.try_into()
                .map_err(|_| Error::Corrupt("certificate chain"))?,
        ) as usize;
        let (c, rest) = rest
            .split_at_checked(n)
            .ok_or(Error::Corrupt("certificate chain"))?;
        out.push(CertificateDer::from(c.to_vec()));
        b = rest;
    }
    Ok(out)
}

/// The GMS and CS clients of a terminal with certificate `chain`. Each
/// server must carry its own role (D9): a CS certificate cannot pose as the
/// GMS.
fn clients(
    cfg: &ClientConfig,
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    identity: &IdentityKey,
) -> Result<(GroupManagementClient<Channel>, CommunicationClient<Channel>)> {
    let key = duokey_pki::identity_private_key_der(identity);
    let gms_tls = duokey_pki::client_config_for(
        ca,
        Some((chain.clone(), key.clone_key())),
        duokey_pki::Role::Gms,
    )?;
    let cs_tls = duokey_pki::client_config_for(ca, Some((chain, key)), duokey_pki::Role::Cs)?;
    let gms = GroupManagementClient::new(
        channel(&cfg.gms_url, gms_tls).map_err(Error::server("GMS address"))?,
    );
    let cs = CommunicationClient::new(
        channel(&cfg.cs_url, cs_tls).map_err(Error::server("CS address"))?,
    )
    .max_decoding_message_size(64 * 1024 * 1024);
    Ok((gms, cs))
}

/// Whether a certificate valid from `not_before` to `not_after` (Unix
/// seconds) is due for renewal at `now`: once two thirds of its lifetime
/// have passed.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    now >= not_before.saturating_add(lifetime / 3 * 2)
}

impl Terminal {
    /// This terminal's certificate: (serial hex, valid from, valid until;
    /// Unix seconds).
    pub async fn certificate(&self) -> Result<(String, i64, i64)> {
        let chain = decode_chain(&self.store.meta_req("cert_chain").await?)?;
        let leaf = chain.first().ok_or(Error::Corrupt("cert_chain"))?;
        let p = duokey_pki::peer_identity(leaf)?;
        Ok((p.serial_hex(), p.not_before_unix, p.not_after_unix))
    }

    /// `duokey renew`: a new certificate for the same identity
    /// key from the AS, asked with the current one (so contacts' pins and
    /// safety numbers stay), then used for every connection. Returns it as
    /// [`Terminal::certificate`] does.
    pub async fn renew(&mut self) -> Result<(String, i64, i64)> {
        let cfg = ClientConfig::parse(
            std::str::from_utf8(&self.store.meta_req("client_config").await?)
                .map_err(|_| Error::Corrupt("config"))?,
        )?;
        let chain = decode_chain(&self.store.meta_req("cert_chain").await?)?;
        let key = duokey_pki::identity_private_key_der(&self.identity);
        let tls =
            duokey_pki::client_config_for(&self.ca, Some((chain, key)), duokey_pki::Role::As)?;
        let mut accounts = AccountsClient::new(
            channel(&cfg.as_url, tls).map_err(Error::server("connecting to the AS"))?,
        );
        let resp = accounts
            .renew(RenewRequest {
                csr_der: duokey_pki::make_csr(&self.identity, &self.me)?,
            })
            .await
            .map_err(Error::server("renewing the certificate"))?
            .into_inner();
        let leaf = resp
            .cert_chain_der
            .first()
            .ok_or(Error::Internal("the AS sent no certificate"))?;
        let p = duokey_pki::peer_identity(leaf)?;
        if p.user_id.as_ref() != Some(&self.me)
            || p.ed25519_public != Some(self.identity.public().to_bytes())
        {
            return Err(Error::refused(
                "the AS answered with a certificate for another user or key; nothing was changed",
            ));
        }
        self.store
            .set_meta("cert_chain", &encode_chain(&resp.cert_chain_der))
            .await?;
        let chain = decode_chain(&encode_chain(&resp.cert_chain_der))?;
        (self.gms, self.cs) = clients(&cfg, &self.ca, chain, &self.identity)?;
        tracing::info!(serial = %p.serial_hex(), "certificate renewed");
        self.certificate().await
    }

    /// Renews the certificate once it is due ([`renewal_due`]), at a sync.
    /// A failure is retried at the next sync; with less than a week left the
    /// user is told.
    pub(crate) async fn renew_if_due(&mut self) -> Result<()> {
        let (_, from, until) = self.certificate().await?;
        let now = i64::try_from(crate::now_ms() / 1000).unwrap_or(i64::MAX);
        if !renewal_due(from, until, now) {
            return Ok(());
        }
        if let Err(e) = self.renew().await
            && until - now < 7 * 86_400
        {
            self.warn(format!(
                "your certificate expires in {} day(s) and could not be renewed ({e}); run `duokey renew` \
                 once the server is reachable, or ask your administrator for a new enrolment",
                (until - now) / 86_400
            ));
        }
        Ok(())
    }

    /// Enrols a new profile in `home` (SPEC §2, §8 `duokey init`): a new
    /// Ed25519 identity key, a certificate from the AS for `token`, a new
    /// delivery key; secrets sealed under `passphrase` (or a stored random
    /// key when `None`, i.e. `--no-passphrase`).
    pub async fn init(
        home: &Path,
        user: &UserId,
        token: &str,
        cfg: &ClientConfig,
        passphrase: Option<&[u8]>,
    ) -> Result<Terminal> {
        let path = profile_path(home);
        if path.exists() {
            return Err(Error::ProfileExists(home.display().to_string()));
        }
        std::fs::create_dir_all(home)?;
        #[cfg(unix)]
        std::fs::set_permissions(home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let identity = IdentityKey::generate();
        let ca = duokey_pki::pem::first_cert_from_pem(&cfg.ca_cert)?;
        let anon = duokey_pki::client_config_for(&ca, None, duokey_pki::Role::As)?;
        let mut accounts = AccountsClient::new(
            channel(&cfg.as_url, anon).map_err(Error::server("connecting to the AS"))?,
        );
        let csr = duokey_pki::make_csr(&identity, user)?;
        let resp = accounts
            .enroll(EnrollRequest {
                token: token.trim().to_owned(),
                csr_der: csr,
            })
            .await
            .map_err(Error::server("enrolment refused"))?
            .into_inner();
        let store = Store::open(&path).await?;
        let vault = match passphrase {
            Some(p) => {
                let salt: [u8; 16] = random()?;
                store.set_meta("kdf_salt", &salt).await?;
                Vault::derive(p, &salt)?
            }
            None => {
                let key = Vault::random_key()?;
                store.set_meta("plain_key", key.as_slice()).await?;
                Vault::from_plain_key(*key)
            }
        };
        store.set_meta("vault_check", &vault.check_value()?).await?;
        store.set_meta("user_id", user.as_bytes()).await?;
        store
            .set_meta("client_config", cfg.to_toml()?.as_bytes())
            .await?;
        store
            .set_meta("cert_chain", &encode_chain(&resp.cert_chain_der))
            .await?;
        store
            .set_meta(
                "identity",
                &vault.seal("identity", identity.to_seed().as_slice())?,
            )
            .await?;
        let delivery = DeliverySecret::generate();
        store
            .set_meta(
                "delivery",
                &vault.seal("delivery", delivery.to_bytes().as_slice())?,
            )
            .await?;
        store
            .set_meta_u64(crate::store::DELIVERY_CREATED, crate::now_ms())
            .await?;
        let mut t = Terminal::connect(home, store, vault).await?;
        t.publish_delivery_key().await?;
        Ok(t)
    }

    /// Opens the profile in `home`; `passphrase` is asked only if the profile
    /// has one. A wrong passphrase changes nothing.
    pub async fn open(
        home: &Path,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Terminal> {
        let path = profile_path(home);
        if !path.exists() {
            return Err(Error::NoProfile(home.display().to_string()));
        }
        let store = Store::open(&path).await?;
        let vault = match store.meta("plain_key").await? {
            Some(k) => {
                Vault::from_plain_key(k.try_into().map_err(|_| Error::Corrupt("plain key"))?)
            }
            None => Vault::derive(passphrase()?.as_bytes(), &store.meta_req("kdf_salt").await?)?,
        };
        vault.verify_check(&store.meta_req("vault_check").await?)?;
        let mut t = Terminal::connect(home, store, vault).await?;
        if t.store.meta("dk_published").await?.is_none() {
            t.publish_delivery_key().await?;
        }
        Ok(t)
    }

    async fn connect(home: &Path, store: Store, vault: Vault) -> Result<Terminal> {
        let me = UserId::from_bytes(&store.meta_req("user_id").await?)?;
        let cfg = ClientConfig::parse(
            std::str::from_utf8(&store.meta_req("client_config").await?)
                .map_err(|_| Error::Corrupt("config"))?,
        )?;
        let identity =
            IdentityKey::from_seed(*vault.open32("identity", &store.meta_req("identity").await?)?);
        let delivery = DeliverySecret::from_bytes(
            &*vault.open32("delivery", &store.meta_req("delivery").await?)?,
        )?;
        let retired = crate::delivery::open_retired(&vault, &store.retired_delivery().await?)?;
        let chain = decode_chain(&store.meta_req("cert_chain").await?)?;
        let ca = duokey_pki::pem::first_cert_from_pem(&cfg.ca_cert)?;
        let (gms, cs) = clients(&cfg, &ca, chain, &identity)?;
        Ok(Terminal {
            home: home.to_owned(),
            store,
            vault,
            me,
            identity,
            delivery,
            retired,
            ca,
            keylog: KeyLog::from_env(),
            gms,
            cs,
            keys: HashMap::new(),
            states: HashMap::new(),
            warnings: std::sync::Mutex::new(None),
            revoked: None,
            timed_duties: crate::live::TIMED_DUTIES,
        })
    }

    /// Keeps warnings (dropped items, deliveries to retry) for
    /// [`Terminal::take_warnings`] instead of printing them on stderr, for
    /// interactive UIs that own the screen.
    pub fn keep_warnings(&self) {
        if let Ok(mut w) = self.warnings.lock() {
            w.get_or_insert_with(Vec::new);
        }
    }

    /// The warnings kept since the last call (see [`Terminal::keep_warnings`]).
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .ok()
            .and_then(|mut w| w.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// Tells the user something went wrong without stopping (never a secret).
    pub(crate) fn warn(&self, text: String) {
        tracing::warn!(warning = %text);
        match self.warnings.lock().as_deref_mut() {
            Ok(Some(kept)) => kept.push(text),
            _ => eprintln!("{text}"),
        }
    }

    /// This profile's user id.
    pub fn user(&self) -> &UserId {
        &self.me
    }

    /// The profile directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The profile store, for tools and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The vault (tests use it to read sealed values as the terminal does).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }
}

#[cfg(test)]
mod renewal_tests {
    use super::renewal_due;

    #[test]
    fn a_certificate_is_renewed_from_two_thirds_of_its_lifetime() {
        let (from, until) = (1_000, 1_000 + 365 * 86_400);
        assert!(!renewal_due(from, until, from));
        assert!(!renewal_due(from, until, from + 243 * 86_400));
        assert!(renewal_due(from, until, from + 244 * 86_400));
        assert!(renewal_due(from, until, until + 1), "expired: still try");
    }
}
