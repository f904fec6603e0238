//! Contacts' identity keys (SPEC §2, §7.8): fetched from the CS directory,
//! verified against the organisation's CA here (the directory is not
//! trusted), pinned on first use; a changed key is refused until the user
//! confirms it with `duokey verify USER --confirm`.

use crate::error::{Error, Result};
use crate::terminal::Terminal;
use duokey_crypto::{DeliveryKeyRecord, DeliveryPublic, PublicIdentity, UserId};
use duokey_pki::rustls::pki_types::UnixTime;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_pki::{ClientAuth, RevocationList, peer_identity};
use duokey_proto::GetUserRequest;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;

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
    /// The directory now shows another key: refused until confirmed.
    KeyChanged,
}

fn safety_number(a: (&str, &[u8]), b: (&str, &[u8])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    for (id, key) in [first, second] {
        h.update((id.len() as u16).to_be_bytes());
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
    /// the CA: (identity key, certificate fingerprint).
    async fn fetch_identity(
        &mut self,
        user: &UserId,
    ) -> Result<(PublicIdentity, [u8; 32], Vec<u8>)> {
        let resp = self
            .cs
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
        let verifier = duokey_pki::client_verifier(
            &self.ca,
            ClientAuth::Required,
            Arc::new(RevocationList::empty()),
        )?;
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
        ))
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
        let row = sqlx::query("SELECT identity_key FROM contacts WHERE user_id = ?")
            .bind(user.as_str())
            .fetch_optional(&self.store.pool)
            .await?;
        let key = match row {
            Some(r) => PublicIdentity::from_slice(&r.get::<Vec<u8>, _>(0))?,
            None => {
                let (key, fp, _) = self.fetch_identity(user).await?;
                sqlx::query("INSERT INTO contacts (user_id, identity_key, fingerprint) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(user.as_str())
                    .bind(key.to_bytes().as_slice())
                    .bind(fp.as_slice())
                    .execute(&self.store.pool)
                    .await?;
                key
            }
        };
        self.keys.insert(user.clone(), key);
        Ok(key)
    }

    /// A contact's delivery key, checked against its pinned identity key.
    pub(crate) async fn delivery_key(&mut self, user: &UserId) -> Result<DeliveryPublic> {
        let pinned = self.contact_key(user).await?;
        let (current, _, record) = self.fetch_identity(user).await?;
        if current != pinned {
            return Err(self.key_changed(user, &current).await?);
        }
        if record.is_empty() {
            return Err(Error::refused(format!(
                "{user} has not published a delivery key yet (their terminal must sync once)"
            )));
        }
        let rec = DeliveryKeyRecord::verify(&record, &pinned)?;
        if &rec.user != user {
            return Err(Error::refused(format!(
                "the delivery key record is not {user}'s"
            )));
        }
        Ok(rec.key)
    }

    async fn key_changed(&mut self, user: &UserId, new: &PublicIdentity) -> Result<Error> {
        sqlx::query("UPDATE contacts SET changed_key = ? WHERE user_id = ?")
            .bind(new.to_bytes().as_slice())
            .bind(user.as_str())
            .execute(&self.store.pool)
            .await?;
        Ok(Error::refused(format!(
            "WARNING: the identity key of {user} has CHANGED since you first saw it. This can mean a new device, \
             or an attacker. Nothing was sent to {user}. Compare safety numbers with `duokey verify {user}` \
             and accept the new key with `duokey verify {user} --confirm` only if they match."
        )))
    }

    /// What this terminal knows of `user`'s key, without asking any server.
    pub async fn trust(&self, user: &str) -> Result<Trust> {
        let row = sqlx::query("SELECT verified, changed_key FROM contacts WHERE user_id = ?")
            .bind(user)
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(match row {
            None => Trust::Unknown,
            Some(r) if r.get::<Option<Vec<u8>>, _>(1).is_some() => Trust::KeyChanged,
            Some(r) if r.get::<i64, _>(0) != 0 => Trust::Verified,
            Some(_) => Trust::Unverified,
        })
    }

    /// `duokey verify USER [--confirm]` (SPEC §2).
    pub async fn verify(&mut self, user: &UserId, confirm: bool) -> Result<Verification> {
        let pinned = self.contact_key(user).await?;
        let (current, fp, _) = self.fetch_identity(user).await?;
        let changed = current != pinned;
        if confirm {
            sqlx::query("UPDATE contacts SET identity_key = ?, fingerprint = ?, verified = 1, changed_key = NULL WHERE user_id = ?")
                .bind(current.to_bytes().as_slice())
                .bind(fp.as_slice())
                .bind(user.as_str())
                .execute(&self.store.pool)
                .await?;
            self.keys.insert(user.clone(), current);
        }
        let verified: i64 = sqlx::query("SELECT verified FROM contacts WHERE user_id = ?")
            .bind(user.as_str())
            .fetch_one(&self.store.pool)
            .await?
            .get(0);
        let mine = self.identity.public().to_bytes();
        Ok(Verification {
            user: user.to_string(),
            fingerprint: hex::encode(fp),
            safety_number: safety_number(
                (self.me.as_str(), &mine),
                (user.as_str(), &current.to_bytes()),
            ),
            verified: verified != 0,
            key_changed: changed && !confirm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_number_is_symmetric_and_key_dependent() {
        let a = safety_number(("alice", &[1; 32]), ("bob", &[2; 32]));
        assert_eq!(a, safety_number(("bob", &[2; 32]), ("alice", &[1; 32])));
        assert_ne!(a, safety_number(("alice", &[1; 32]), ("bob", &[3; 32])));
        assert_eq!(a.split(' ').count(), 10);
    }
}
