//! Opening a profile, enrolment, and the terminal's connections.

use crate::certificate::decode_chain;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::keylog::KeyLog;
use crate::store::Store;
use crate::vault::{Vault, random};
use duokey_crypto::GroupId;
use duokey_crypto::{DeliverySecret, IdentityKey, PublicIdentity, UserId};
use duokey_pki::grpc::channel_any;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_proto::EnrollRequest;
use duokey_proto::accounts_client::AccountsClient;
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::group_management_client::GroupManagementClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::Channel;
use zeroize::Zeroizing;

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
    pub(crate) states: HashMap<GroupId, Arc<duokey_crypto::membership::State>>,
    /// Where warnings go: stderr (`None`) or kept for an interactive UI.
    pub(crate) warnings: std::sync::Mutex<Option<Vec<String>>>,
    /// The organisation's revoked serials, loaded from the profile on first
    /// use and refreshed at every sync.
    pub(crate) revoked: Option<Arc<duokey_pki::RevocationList>>,
    /// How often live streams yield [`crate::LiveEvent::Timer`].
    pub(crate) timed_duties: std::time::Duration,
    /// Where this terminal reads the time for its stamps and decisions
    /// (grace windows, `rn1_wait`, erasure; D41).
    pub(crate) clock: duokey_pki::clock::Clock,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Terminal({})", self.me)
    }
}

pub(crate) fn profile_path(home: &Path) -> PathBuf {
    home.join("profile.db")
}

/// The GMS and CS clients of a terminal with certificate `chain`. Each
/// server must carry its own role (D9): a CS certificate cannot pose as the
/// GMS.
pub(crate) fn clients(
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
        channel_any(cfg.gms_url.as_slice(), gms_tls).map_err(Error::server("GMS address"))?,
    );
    let cs = CommunicationClient::new(
        channel_any(cfg.cs_url.as_slice(), cs_tls).map_err(Error::server("CS address"))?,
    )
    .max_decoding_message_size(64 * 1024 * 1024);
    Ok((gms, cs))
}

impl Terminal {
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
        Self::init_with(
            home,
            user,
            crate::password::Enrolment::Token(token),
            cfg,
            passphrase,
        )
        .await
    }

    /// [`Terminal::init`] with a token or, for a password account (DESIGN
    /// D51), a `--password-setup` token and the password the user chose.
    pub async fn init_with(
        home: &Path,
        user: &UserId,
        how: crate::password::Enrolment<'_>,
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
        let chain = enrol(user, &identity, how, cfg).await?;
        let store = Store::open(&path).await?;
        let vault = new_vault(&store, passphrase).await?;
        store.set_meta("vault_check", &vault.check_value()?).await?;
        store.set_meta("user_id", user.as_bytes()).await?;
        let config = cfg.to_toml()?;
        store.set_meta("client_config", config.as_bytes()).await?;
        let chain = duokey_crypto::chain::encode_chain(&chain)?;
        store.set_meta("cert_chain", &chain).await?;
        let seed = vault.seal("identity", identity.to_seed().as_slice())?;
        store.set_meta("identity", &seed).await?;
        let delivery = DeliverySecret::generate();
        let sealed = vault.seal("delivery", delivery.to_bytes().as_slice())?;
        store.set_meta("delivery", &sealed).await?;
        store
            .set_meta_u64(crate::store::DELIVERY_CREATED, crate::now_ms())
            .await?;
        let mut t = Terminal::connect(home, store, vault).await?;
        t.publish_delivery_key().await?;
        Ok(t)
    }

    /// Opens the profile in `home`. Its key comes from the stored key
    /// (`--no-passphrase`), else from a running agent (`duokey unlock`,
    /// [`crate::agent`]), else from `passphrase`, asked only then. A wrong
    /// passphrase changes nothing.
    pub async fn open(
        home: &Path,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Terminal> {
        let mut t = Self::open_offline(home, passphrase).await?;
        if t.store.meta("dk_published").await?.is_none() {
            t.publish_delivery_key().await?;
        }
        Ok(t)
    }

    /// Opens the profile as [`Terminal::open`] does but contacts no server.
    async fn open_offline(
        home: &Path,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Terminal> {
        let store = Self::open_store(home).await?;
        let vault = Self::open_vault(home, &store, passphrase, true).await?;
        Terminal::connect(home, store, vault).await
    }

    /// The key of the profile in `home`, from `passphrase` (never from an
    /// agent), checked against the profile: what `duokey unlock` gives the
    /// agent. Contacts no server.
    pub async fn profile_key(
        home: &Path,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let store = Self::open_store(home).await?;
        if store.meta("plain_key").await?.is_some() {
            return Err(Error::user(
                "this profile has no passphrase (it was made with --no-passphrase): there is nothing to unlock",
            ));
        }
        let vault = Self::open_vault(home, &store, passphrase, false).await?;
        Ok(vault.key_bytes())
    }

    /// A copy of this profile's key, to hand to the agent of an unlocked
    /// session ([`crate::agent`]) after the passphrase opened the profile.
    /// `None` for a profile without a passphrase (nothing to unlock).
    pub async fn unlock_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>> {
        Ok(match self.store.meta("plain_key").await? {
            Some(_) => None,
            None => Some(self.vault.key_bytes()),
        })
    }

    /// `true` the first time it is called with `what` for this profile,
    /// `false` ever after (a question the user was asked once, say).
    pub async fn first_time(&self, what: &str) -> Result<bool> {
        let key = format!("asked:{what}");
        if self.store.meta(&key).await?.is_some() {
            return Ok(false);
        }
        self.store.set_meta(&key, b"1").await?;
        Ok(true)
    }

    pub(crate) async fn open_store(home: &Path) -> Result<Store> {
        let path = profile_path(home);
        if !path.exists() {
            return Err(Error::NoProfile(home.display().to_string()));
        }
        Store::open(&path).await
    }

    /// The profile's vault, checked; from the agent first if `agent`.
    async fn open_vault(
        home: &Path,
        store: &Store,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>>,
        agent: bool,
    ) -> Result<Vault> {
        let check = store.meta_req("vault_check").await?;
        if let Some(k) = store.meta("plain_key").await? {
            let vault =
                Vault::from_plain_key(k.try_into().map_err(|_| Error::Corrupt("plain key"))?);
            vault.verify_check(&check)?;
            return Ok(vault);
        }
        if agent && let Some(key) = crate::agent::key(home).await {
            let vault = Vault::from_plain_key(*key);
            if vault.verify_check(&check).is_ok() {
                return Ok(vault);
            }
        }
        let vault = Vault::derive(passphrase()?.as_bytes(), &store.meta_req("kdf_salt").await?)?;
        vault.verify_check(&check)?;
        Ok(vault)
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
            clock: duokey_pki::clock::Clock::system(),
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

    /// Reads the time from `clock` from now on (tests move it forward;
    /// the default is the system clock).
    pub fn set_clock(&mut self, clock: duokey_pki::clock::Clock) {
        self.clock = clock;
    }

    /// Now, on this terminal's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// This profile's user id.
    pub fn user(&self) -> &UserId {
        &self.me
    }

    /// This terminal's identity key (public half).
    pub fn identity_public(&self) -> duokey_crypto::PublicIdentity {
        self.identity.public()
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

impl Terminal {
    /// One full sync (SPEC §8: every command first syncs): grants, inbox,
    /// pending RN1 duties, the outbox, then key erasure.
    pub async fn sync(&mut self) -> Result<()> {
        self.renew_if_due().await?;
        self.sync_revocations().await?;
        self.sync_grants().await?;
        self.sync_items().await?;
        self.retry_pending_items().await?;
        self.replace_missing_rn1().await?;
        self.finish_invitations().await?;
        self.flush_outbox().await?;
        self.erase_expired().await
    }
}

/// Enrols `identity` as `user` at the AS (SPEC §2): with a token, or as a
/// password account (DESIGN D51); the certificate chain issued.
async fn enrol(
    user: &UserId,
    identity: &IdentityKey,
    how: crate::password::Enrolment<'_>,
    cfg: &ClientConfig,
) -> Result<Vec<Vec<u8>>> {
    let ca = duokey_pki::pem::first_cert_from_pem(&cfg.ca_cert)?;
    let anon = duokey_pki::client_config_for(&ca, None, duokey_pki::Role::As)?;
    let mut accounts = AccountsClient::new(
        channel_any(cfg.as_url.as_slice(), anon).map_err(Error::server("connecting to the AS"))?,
    );
    let csr = duokey_pki::make_csr(identity, user)?;
    let resp = match how {
        crate::password::Enrolment::Token(token) => accounts
            .enroll(EnrollRequest {
                token: token.trim().to_owned(),
                csr_der: csr,
            })
            .await
            .map_err(Error::server("enrolment refused"))?
            .into_inner(),
        crate::password::Enrolment::Password { token, password } => {
            crate::password::register(&mut accounts, user, token, password).await?;
            crate::password::login(&mut accounts, user, password, csr).await?
        }
    };
    Ok(resp.cert_chain_der)
}

/// A new profile's vault: its key from `passphrase` (salt stored), or a
/// random key stored beside it (`--no-passphrase`).
async fn new_vault(store: &Store, passphrase: Option<&[u8]>) -> Result<Vault> {
    match passphrase {
        Some(p) => {
            let salt: [u8; 16] = random()?;
            store.set_meta("kdf_salt", &salt).await?;
            Vault::derive(p, &salt)
        }
        None => {
            let key = Vault::random_key()?;
            store.set_meta("plain_key", key.as_slice()).await?;
            Ok(Vault::from_plain_key(*key))
        }
    }
}
