//! The terminal's own certificate (SPEC §2): its chain as stored, and
//! renewal from two thirds of its lifetime.

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::terminal::{Terminal, clients};
use duokey_pki::grpc::channel_any;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_proto::RenewRequest;
use duokey_proto::accounts_client::AccountsClient;

/// This terminal's chain as stored in its profile (framed by
/// [`duokey_crypto::chain`]).
pub(crate) fn decode_chain(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let chain = duokey_crypto::chain::decode_chain(bytes)
        .map_err(|_| Error::Corrupt("certificate chain"))?;
    Ok(chain.into_iter().map(CertificateDer::from).collect())
}

/// Who a profile is ([`Terminal::profile_info`]).
#[derive(Debug, Clone)]
pub struct ProfileInfo {
    /// The user.
    pub user: duokey_crypto::UserId,
    /// The certificate's serial, hex.
    pub serial: String,
    /// The end of its validity, Unix seconds.
    pub not_after: i64,
    /// The servers it uses.
    pub servers: ClientConfig,
}

/// The stored certificate: (serial hex, valid from, valid until; Unix s).
async fn leaf_certificate(store: &crate::store::Store) -> Result<(String, i64, i64)> {
    let chain = decode_chain(&store.meta_req("cert_chain").await?)?;
    let leaf = chain.first().ok_or(Error::Corrupt("cert_chain"))?;
    let p = duokey_pki::peer_identity(leaf)?;
    Ok((p.serial_hex(), p.not_before_unix, p.not_after_unix))
}

/// The servers the profile uses, as `init` stored its `client.toml`.
async fn stored_config(store: &crate::store::Store) -> Result<ClientConfig> {
    ClientConfig::parse(
        std::str::from_utf8(&store.meta_req("client_config").await?)
            .map_err(|_| Error::Corrupt("config"))?,
    )
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
        leaf_certificate(&self.store).await
    }

    /// Who the profile in `home` is — user, certificate, servers — read
    /// without its key (none of it is secret): `duokey whoami` works on a
    /// locked profile and contacts no server.
    pub async fn profile_info(home: &std::path::Path) -> Result<ProfileInfo> {
        let store = Terminal::open_store(home).await?;
        let (serial, _, not_after) = leaf_certificate(&store).await?;
        Ok(ProfileInfo {
            user: duokey_crypto::UserId::from_bytes(&store.meta_req("user_id").await?)?,
            serial,
            not_after,
            servers: stored_config(&store).await?,
        })
    }

    /// `duokey profile set-servers`: this profile uses the servers of
    /// `cfg` from the next command on. Only the addresses may change: a
    /// `client.toml` of another organisation's CA is refused (this
    /// terminal's certificate would mean nothing there).
    pub async fn set_servers(&self, cfg: &ClientConfig) -> Result<()> {
        let ca = |c: &ClientConfig| duokey_pki::pem::first_cert_from_pem(&c.ca_cert);
        if ca(cfg)? != ca(&stored_config(&self.store).await?)? {
            return Err(Error::refused(
                "that client.toml names another organisation's CA; this profile's certificate is only \
                 valid under its own. Enrol a new profile (`duokey --home DIR init`) for those servers",
            ));
        }
        self.store
            .set_meta("client_config", cfg.to_toml()?.as_bytes())
            .await
    }

    /// `duokey renew`: a new certificate for the same identity
    /// key from the AS, asked with the current one (so contacts' pins and
    /// safety numbers stay), then used for every connection. Returns it as
    /// [`Terminal::certificate`] does.
    pub async fn renew(&mut self) -> Result<(String, i64, i64)> {
        self.renew_with(None).await
    }

    /// `duokey renew --password`: a password account logs in again with
    /// its password (PROTOCOL §5.16, DESIGN D51) for a new 30-day certificate
    /// for the same key — also once the old one has expired, which `renew`
    /// cannot do.
    pub async fn renew_with_password(&mut self, password: &[u8]) -> Result<(String, i64, i64)> {
        self.renew_with(Some(password)).await
    }

    async fn renew_with(&mut self, password: Option<&[u8]>) -> Result<(String, i64, i64)> {
        let cfg = ClientConfig::parse(
            std::str::from_utf8(&self.store.meta_req("client_config").await?)
                .map_err(|_| Error::Corrupt("config"))?,
        )?;
        let csr_der = duokey_pki::make_csr(&self.identity, &self.me)?;
        let resp = match password {
            Some(password) => {
                let anon = duokey_pki::client_config_for(&self.ca, None, duokey_pki::Role::As)?;
                let mut accounts = AccountsClient::new(
                    channel_any(cfg.as_url.as_slice(), anon)
                        .map_err(Error::server("connecting to the AS"))?,
                );
                crate::password::login(&mut accounts, &self.me, password, csr_der).await?
            }
            None => {
                let chain = decode_chain(&self.store.meta_req("cert_chain").await?)?;
                let key = duokey_pki::identity_private_key_der(&self.identity);
                let tls = duokey_pki::client_config_for(
                    &self.ca,
                    Some((chain, key)),
                    duokey_pki::Role::As,
                )?;
                let mut accounts = AccountsClient::new(
                    channel_any(cfg.as_url.as_slice(), tls)
                        .map_err(Error::server("connecting to the AS"))?,
                );
                accounts
                    .renew(RenewRequest { csr_der })
                    .await
                    .map_err(Error::server("renewing the certificate"))?
                    .into_inner()
            }
        };
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
            .set_meta(
                "cert_chain",
                &duokey_crypto::chain::encode_chain(&resp.cert_chain_der)?,
            )
            .await?;
        let chain = decode_chain(&duokey_crypto::chain::encode_chain(&resp.cert_chain_der)?)?;
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
