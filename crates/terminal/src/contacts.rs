//! Contacts' identity keys (SPEC §2, §7.8): fetched from the CS directory,
//! verified against the organisation's CA here (the directory is not
//! trusted), pinned on first use; a changed key is refused until the user
//! confirms it with `duokey verify USER --confirm`.

use crate::error::{Error, Result};
use crate::store::CheckedDeliveryKey;
use crate::terminal::Terminal;
use duokey_crypto::{DeliveryKeyRecord, DeliveryPublic, PublicIdentity, UserId};
use duokey_pki::rustls::pki_types::UnixTime;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_pki::{ClientAuth, RevocationList, peer_identity};
use duokey_proto::communication_client::CommunicationClient;
use duokey_proto::{GetRevocationsRequest, GetUserRequest};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tonic::transport::Channel;

/// How long a checked delivery key is reused without asking the directory
/// again (D29): a day. A terminal that replaces its delivery key must keep
/// the old secret at least this long.
pub const DELIVERY_KEY_TTL_MS: u64 = 24 * 3_600 * 1_000;
/// The oldest delivery key record anything is sealed to (30 days; a
/// terminal that syncs replaces its key every 7).
pub const DELIVERY_KEY_MAX_AGE_MS: u64 = 30 * 86_400_000;

/// Directory look-ups in flight at once when prefetching delivery keys.
const PREFETCH_WINDOW: usize = 16;
/// Meta key of the organisation's revoked serials (hex, one per line).
const REVOKED_META: &str = "revoked_serials";

/// An in-memory revocation list of `serials`.
fn list_of(serials: &[Vec<u8>]) -> RevocationList {
    let list = RevocationList::empty();
    serials.iter().for_each(|s| list.insert(s));
    list
}

/// What `duokey verify` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// The contact.
    pub user: String,
    /// SHA-256 of the contact's certificate, hex.
    pub fingerprint: String,
    /// A number both people compare out of band.
    pub safety_number: String,
    /// Whether it was confirmed.
    pub verified: bool,
    /// Whether the key changed since it was pinned (refused until confirmed).
    pub key_changed: bool,
    /// How the key the directory shows was confirmed: `code` (an invite
    /// code, PROTOCOL §4.10), `safety number` (`verify --confirm`), or
    /// `certificate only` (the CA's word).
    pub confirmed_by: &'static str,
}

/// How far this terminal trusts a contact's identity key (SPEC §2, §7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Not seen yet: the key is pinned at first use.
    Unknown,
    /// Pinned at first use, safety numbers not compared.
    Unverified,
    /// Safety numbers compared and confirmed (`verify --confirm`).
    Verified,
    /// Confirmed inside an invite code's exchange (PROTOCOL §4.10): the
    /// people who told each other the code hold these keys.
    Code,
    /// The directory now shows another key: refused until confirmed.
    KeyChanged,
}

impl Trust {
    /// How the key was confirmed, in the words `verify` and `group members`
    /// show (PROTOCOL §4.10, DESIGN D50): `code`, `safety number`,
    /// `certificate only`, or `KEY CHANGED`.
    pub fn confirmed_by(self) -> &'static str {
        match self {
            Trust::Code => "code",
            Trust::Verified => "safety number",
            Trust::Unknown | Trust::Unverified => "certificate only",
            Trust::KeyChanged => "KEY CHANGED",
        }
    }
}

fn safety_number(a: (&str, &[u8]), b: (&str, &[u8])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    for (id, key) in [first, second] {
        h.update(u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.update(id.as_bytes());
        h.update(key);
    }
    let d = h.finalize();
    d.chunks(3)
        .take(10)
        .map(|c| {
            format!(
                "{:05}",
                (u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(*c.get(2).unwrap_or(&0)))
                    % 100_000
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Terminal {
    /// Fetches a user's certificate from the directory and checks it against
    /// the CA: (identity key, certificate fingerprint, delivery-key record).
    pub(crate) async fn fetch_identity(&self, user: &UserId) -> Result<Identity> {
        let id = fetch_identity(self.cs.clone(), self.ca.clone(), user.clone()).await?;
        self.store
            .put_contact_serial(user.as_str(), &id.0.to_bytes(), &id.3)
            .await?;
        Ok(id)
    }

    /// Fetches the organisation's revocation list from the CS and keeps it
    /// in the profile. A CS from before `GetRevocations` has none
    /// to give: the last list stays.
    pub(crate) async fn sync_revocations(&mut self) -> Result<()> {
        let resp = match self.cs.get_revocations(GetRevocationsRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(()),
            // The first call of a sync: say what a user recognises.
            Err(s) => return Err(Error::from_status("reaching the communication server", &s)),
        };
        let text: String = resp
            .serials
            .iter()
            .map(|s| format!("{}\n", hex::encode(s)))
            .collect();
        self.store.set_meta(REVOKED_META, text.as_bytes()).await?;
        self.revoked = Some(Arc::new(list_of(&resp.serials)));
        Ok(())
    }

    /// The revocation list last fetched (loaded from the profile once).
    async fn revocations(&mut self) -> Result<Arc<RevocationList>> {
        if let Some(list) = &self.revoked {
            return Ok(list.clone());
        }
        let text = self.store.meta(REVOKED_META).await?.unwrap_or_default();
        let serials: Vec<Vec<u8>> = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| hex::decode(l.trim()).ok())
            .collect();
        let list = Arc::new(list_of(&serials));
        self.revoked = Some(list.clone());
        Ok(list)
    }

    /// Refuses `user` if the organisation revoked the certificate of the key
    /// this terminal trusts for it (SPEC §2, §4.7): nothing is
    /// sealed to it, no item signed with it accepted.
    pub(crate) async fn check_not_revoked(&mut self, user: &UserId) -> Result<()> {
        if user == &self.me {
            return Ok(());
        }
        let key = self.contact_key(user).await?.to_bytes();
        let serial = match self.store.contact_serial(user.as_str(), &key).await? {
            Some(serial) => serial,
            None => {
                let (current, _, _, serial) = self.fetch_identity(user).await?;
                if current.to_bytes() != key {
                    return Err(Error::refused(format!(
                        "the directory no longer certifies the key this terminal trusts for {user} \
                         (they were enrolled again): compare safety numbers with `duokey verify {user}`"
                    )));
                }
                serial
            }
        };
        self.check_serial(user, &serial).await
    }

    /// Refuses a certificate `serial` of `user` that the organisation revoked.
    pub(crate) async fn check_serial(&mut self, user: &UserId, serial: &[u8]) -> Result<()> {
        if self.revocations().await?.is_revoked(serial) {
            return Err(Error::refused(format!(
                "{user}'s certificate was revoked by your organisation: nothing is sent to {user} \
                 and nothing from them is accepted. Remove {user} from your groups \
                 (`duokey group remove GROUP {user}`)"
            )));
        }
        Ok(())
    }

    /// A contact's pinned identity key (pinning it on first use). A key that
    /// differs from the pinned one is refused loudly (SPEC §2, §7.8).
    pub(crate) async fn contact_key(&mut self, user: &UserId) -> Result<PublicIdentity> {
        if user == &self.me {
            return Ok(self.identity.public());
        }
        if let Some(k) = self.keys.get(user) {
            return Ok(*k);
        }
        let key = match self.store.pinned_key(user.as_str()).await? {
            Some(k) => PublicIdentity::from_slice(&k)?,
            None => {
                let (key, fp, _, _) = self.fetch_identity(user).await?;
                self.store
                    .pin_contact(user.as_str(), &key.to_bytes(), &fp)
                    .await?;
                key
            }
        };
        self.keys.insert(user.clone(), key);
        Ok(key)
    }

    /// A contact's delivery key, checked against its pinned identity key;
    /// one checked within [`DELIVERY_KEY_TTL_MS`] against the same pin is
    /// reused without asking the directory (D29).
    pub(crate) async fn delivery_key(&mut self, user: &UserId) -> Result<DeliveryPublic> {
        let pinned = self.contact_key(user).await?;
        if let Some(k) = self.fresh_delivery_key(user, &pinned).await? {
            return Ok(k);
        }
        let fetched = self.fetch_identity(user).await?;
        self.check_delivery_key(user, &pinned, fetched).await
    }

    /// A delivery key checked recently against `pinned`, if there is one.
    async fn fresh_delivery_key(
        &self,
        user: &UserId,
        pinned: &PublicIdentity,
    ) -> Result<Option<DeliveryPublic>> {
        let Some(k) = self.store.delivery_key(user.as_str()).await? else {
            return Ok(None);
        };
        Ok(reusable(&k, pinned, self.now_ms()).then_some(DeliveryPublic(k.delivery_key)))
    }

    /// Checks what the directory said of `user` against its pin and records
    /// the delivery key.
    async fn check_delivery_key(
        &mut self,
        user: &UserId,
        pinned: &PublicIdentity,
        (current, _, record, _): Identity,
    ) -> Result<DeliveryPublic> {
        if &current != pinned {
            return Err(self.key_changed(user, &current).await?);
        }
        if record.is_empty() {
            return Err(Error::refused(format!(
                "{user} has not published a delivery key yet (their terminal must sync once)"
            )));
        }
        let rec = DeliveryKeyRecord::verify(&record, pinned)?;
        if &rec.user != user {
            return Err(Error::refused(format!(
                "the delivery key record is not {user}'s"
            )));
        }
        // D38: terminals replace their key weekly, so an old record
        // is either a terminal long offline or a directory serving a key
        // that may have been stolen since; nothing is sealed to it.
        if let Some(days) = too_old(rec.created_at_ms, self.now_ms()) {
            return Err(Error::refused(format!(
                "{user}'s delivery key is {days} days old (their terminal has not been online since); \
                 the group key is sent once it publishes a fresh one"
            )));
        }
        let checked = CheckedDeliveryKey {
            identity_key: pinned.to_bytes(),
            delivery_key: rec.key.0,
            checked_ms: self.now_ms(),
        };
        self.store.put_delivery_key(user.as_str(), &checked).await?;
        Ok(rec.key)
    }

    /// Makes sure the delivery keys of `users` are at hand, asking the
    /// directory for those not checked recently several at a time (an RN1
    /// rotation to a large group otherwise waits for one round trip per
    /// member). A user that cannot be checked is left for
    /// [`Terminal::delivery_key`] to report.
    pub(crate) async fn prefetch_delivery_keys(&mut self, users: &[UserId]) -> Result<()> {
        let mut missing = Vec::new();
        for user in users {
            let pinned = self.contact_key(user).await?;
            if self.fresh_delivery_key(user, &pinned).await?.is_none() {
                missing.push((user.clone(), pinned));
            }
        }
        let window = Arc::new(tokio::sync::Semaphore::new(PREFETCH_WINDOW));
        let mut fetching = tokio::task::JoinSet::new();
        for (user, pinned) in missing {
            let (cs, ca, window) = (self.cs.clone(), self.ca.clone(), window.clone());
            fetching.spawn(async move {
                let _permit = window.acquire_owned().await;
                (fetch_identity(cs, ca, user.clone()).await, user, pinned)
            });
        }
        while let Some(done) = fetching.join_next().await {
            if let Ok((Ok(identity), user, pinned)) = done {
                self.store
                    .put_contact_serial(user.as_str(), &identity.0.to_bytes(), &identity.3)
                    .await?;
                let _ = self.check_delivery_key(&user, &pinned, identity).await;
            }
        }
        Ok(())
    }

    pub(crate) async fn key_changed(
        &mut self,
        user: &UserId,
        new: &PublicIdentity,
    ) -> Result<Error> {
        self.store
            .mark_key_changed(user.as_str(), &new.to_bytes())
            .await?;
        Ok(Error::refused(format!(
            "WARNING: the identity key of {user} has CHANGED since you first saw it. This can mean a new device, \
             or an attacker. Nothing was sent to {user}. Compare safety numbers with `duokey verify {user}` \
             and accept the new key with `duokey verify {user} --confirm` only if they match."
        )))
    }

    /// What this terminal knows of `user`'s key, without asking any server.
    pub async fn trust(&self, user: &str) -> Result<Trust> {
        Ok(match self.store.contact_state(user).await? {
            None => Trust::Unknown,
            Some(c) if c.key_changed => Trust::KeyChanged,
            Some(c) if c.by_code => Trust::Code,
            Some(c) if c.verified => Trust::Verified,
            Some(_) => Trust::Unverified,
        })
    }

    /// `duokey verify USER [--confirm]` (SPEC §2).
    pub async fn verify(&mut self, user: &UserId, confirm: bool) -> Result<Verification> {
        if *user == self.me {
            return Err(Error::user(
                "that is you: a safety number is compared with someone else (`duokey verify USER`); \
                 `duokey whoami` shows your own certificate",
            ));
        }
        let pinned = self.contact_key(user).await?;
        let (current, fp, _, _) = self.fetch_identity(user).await?;
        let changed = current != pinned;
        if confirm {
            self.store
                .confirm_contact(user.as_str(), &current.to_bytes(), &fp)
                .await?;
            self.keys.insert(user.clone(), current);
        }
        let verified = self
            .store
            .contact_state(user.as_str())
            .await?
            .is_some_and(|c| c.verified);
        let mine = self.identity.public().to_bytes();
        let by_code = self
            .store
            .contact_code(user.as_str(), &current.to_bytes())
            .await?;
        let verified = verified && (confirm || !changed);
        let confirmed_by = match (by_code, verified) {
            (true, _) => Trust::Code,
            (false, true) => Trust::Verified,
            (false, false) => Trust::Unverified,
        }
        .confirmed_by();
        Ok(Verification {
            user: user.to_string(),
            fingerprint: hex::encode(fp),
            safety_number: safety_number(
                (self.me.as_str(), &mine),
                (user.as_str(), &current.to_bytes()),
            ),
            // A changed key is never "verified" until the user confirms it.
            verified,
            key_changed: changed && !confirm,
            confirmed_by,
        })
    }
}

/// Whether a delivery key checked earlier may be used at `now_ms` without
/// asking the directory (D29): checked with the key pinned now, less than
/// [`DELIVERY_KEY_TTL_MS`] ago (a clock that went back counts as now).
fn reusable(k: &CheckedDeliveryKey, pinned: &PublicIdentity, now_ms: u64) -> bool {
    k.identity_key == pinned.to_bytes() && now_ms.saturating_sub(k.checked_ms) < DELIVERY_KEY_TTL_MS
}

/// The age in days of a delivery key record made at `created_at_ms`, if it
/// is older than [`DELIVERY_KEY_MAX_AGE_MS`] at `now_ms` (a record from the
/// future counts as new).
fn too_old(created_at_ms: u64, now_ms: u64) -> Option<u64> {
    let age = now_ms.saturating_sub(created_at_ms);
    (age > DELIVERY_KEY_MAX_AGE_MS).then_some(age / 86_400_000)
}

/// What the directory says of a user, checked: identity key, certificate
/// fingerprint, delivery-key record, certificate serial.
pub(crate) type Identity = (PublicIdentity, [u8; 32], Vec<u8>, Vec<u8>);

/// Fetches a user's certificate from the directory and checks it against
/// the CA (the directory is not trusted).
async fn fetch_identity(
    mut cs: CommunicationClient<Channel>,
    ca: CertificateDer<'static>,
    user: UserId,
) -> Result<Identity> {
    let user = &user;
    let resp = cs
        .get_user(GetUserRequest {
            user_id: user.to_string(),
        })
        .await
        .map_err(Error::server(format!("looking up {user}")))?
        .into_inner();
    let leaf = resp.cert_chain_der.first().ok_or_else(|| {
        Error::not_found(format!(
            "{user} has no certificate in the directory (not enrolled?)"
        ))
    })?;
    let verifier =
        duokey_pki::client_verifier(&ca, ClientAuth::Required, Arc::new(RevocationList::empty()))?;
    let der = CertificateDer::from(leaf.clone());
    let rest: Vec<CertificateDer<'static>> = resp
        .cert_chain_der
        .iter()
        .skip(1)
        .cloned()
        .map(CertificateDer::from)
        .collect();
    verifier
        .verify_client_cert(&der, &rest, UnixTime::now())
        .map_err(|e| {
            Error::refused(format!(
                "the directory's certificate for {user} is not valid: {e}"
            ))
        })?;
    let peer = peer_identity(leaf)?;
    if peer.user_id.as_ref() != Some(user) || !peer.is_terminal() {
        return Err(Error::refused(format!(
            "the directory's certificate is not {user}'s"
        )));
    }
    let key = peer
        .ed25519_public
        .ok_or_else(|| Error::refused(format!("{user}'s certificate has no Ed25519 key")))?;
    Ok((
        PublicIdentity::from_bytes(&key)?,
        peer.fingerprint_sha256,
        resp.delivery_key_record,
        peer.serial,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duokey_crypto::IdentityKey;

    #[test]
    fn delivery_keys_older_than_thirty_days_are_not_sealed_to() {
        let day = 86_400_000;
        let now = 100 * day;
        assert_eq!(too_old(now - 30 * day, now), None, "30 days is still fine");
        assert_eq!(too_old(now - 30 * day - 1, now), Some(30));
        assert_eq!(too_old(now - 45 * day, now), Some(45));
        assert_eq!(too_old(now + day, now), None, "from the future");
    }

    #[test]
    fn safety_number_is_symmetric_and_key_dependent() {
        let a = safety_number(("alice", &[1; 32]), ("bob", &[2; 32]));
        assert_eq!(a, safety_number(("bob", &[2; 32]), ("alice", &[1; 32])));
        assert_ne!(a, safety_number(("alice", &[1; 32]), ("bob", &[3; 32])));
        assert_eq!(a.split(' ').count(), 10);
    }

    #[test]
    fn a_checked_delivery_key_is_reused_for_a_day_and_only_under_the_same_pin() {
        let pinned = IdentityKey::from_seed([1; 32]).public();
        let other = IdentityKey::from_seed([2; 32]).public();
        let k = CheckedDeliveryKey {
            identity_key: pinned.to_bytes(),
            delivery_key: [9; 32],
            checked_ms: 1_000,
        };
        assert!(reusable(&k, &pinned, 1_000));
        assert!(reusable(&k, &pinned, 1_000 + DELIVERY_KEY_TTL_MS - 1));
        assert!(!reusable(&k, &pinned, 1_000 + DELIVERY_KEY_TTL_MS));
        assert!(!reusable(&k, &other, 1_000), "a changed pin must refetch");
        assert!(reusable(&k, &pinned, 0), "a clock that went back");
    }
}
