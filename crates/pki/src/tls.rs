//! TLS configurations (SPEC §2, §5): TLS 1.3 only, ring only, the Duokey CA as
//! the only trust anchor, client certificates required (except on the port of
//! the AS enrolment call), revocation checked on every handshake, ALPN `h2`.
//!
//! Session resumption is switched off on the server: a resumed TLS 1.3 session
//! skips certificate verification, so with resumption a certificate revoked (or
//! expired) after the first connection could keep reconnecting. Every
//! connection therefore makes a full handshake and passes the verifier.

use crate::error::Result;
use crate::identity::peer_identity;
use crate::revocation::RevocationList;
use crate::role::Role;
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::{Arc, PoisonError, RwLock};

/// The ALPN protocol of Duokey's gRPC connections (SPEC §5: gRPC over HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";

/// Whether a server port demands client certificates (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every connection must present a valid, unrevoked certificate of the CA.
    Required,
    /// A connection may come without a certificate (only on the port that also
    /// serves the AS enrolment call, SPEC §2, §5.1); a certificate that *is*
    /// presented is still verified and checked for revocation. Handlers must
    /// then check for a certificate themselves.
    Optional,
}

/// The crypto provider of every Duokey TLS config (SPEC §2): ring, set
/// explicitly so no process-wide default provider is needed.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'_>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone().into_owned())?;
    Ok(Arc::new(roots))
}

/// The client-certificate verifier of Duokey servers (SPEC §2): webpki
/// verification against `ca` only (so certificates of another CA and expired
/// ones are refused), then the Duokey profile ([`crate::peer_identity`] must
/// accept the certificate) and the revocation list, consulted on every
/// handshake.
pub fn client_verifier(
    ca: &CertificateDer<'_>,
    client_auth: ClientAuth,
    revoked: Arc<RevocationList>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, crypto_provider());
    if client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    Ok(Arc::new(DuokeyClientVerifier {
        inner: builder.build()?,
        revoked,
    }))
}

/// A certificate chain and its key that can be replaced while the process
/// runs: a server's certificate renewed with `duokey-server ca
/// issue-server` takes effect at the next handshake, without a restart.
/// It is both the certificate a server presents and the client certificate
/// of its calls to other servers. Open connections keep the certificate
/// they were made with.
#[derive(Debug)]
pub struct LiveIdentity {
    current: RwLock<Arc<CertifiedKey>>,
}

impl LiveIdentity {
    /// `chain` (leaf first) and its `key`; refused if they do not match.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<LiveIdentity>> {
        Ok(Arc::new(LiveIdentity {
            current: RwLock::new(certified(chain, key)?),
        }))
    }

    /// Presents `chain` and `key` from the next handshake on; on an error
    /// (an empty chain, a key of another certificate) the current pair stays.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<()> {
        let next = certified(chain, key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// The certificate presented now (the leaf).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current().cert[0].clone()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>> {
    if chain.is_empty() {
        return Err(crate::Error::InvalidCertificate(
            "an empty certificate chain".into(),
        ));
    }
    let key = CertifiedKey::from_der(chain, key, &crypto_provider())?;
    // `from_der` lets a key whose match it cannot check through; these keys
    // (Ed25519, ECDSA) can always be checked, so insist.
    key.keys_match()?;
    Ok(Arc::new(key))
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for LiveIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TLS configuration of a Duokey server port (SPEC §2, §5): TLS 1.3 only,
/// `chain`/`key` as the server's identity, client certificates of `ca` per
/// `client_auth`, certificates in `revoked` refused, ALPN `h2`, no session
/// resumption.
pub fn server_config(
    ca: &CertificateDer<'_>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
    revoked: Arc<RevocationList>,
) -> Result<Arc<ServerConfig>> {
    server_config_live(ca, LiveIdentity::new(chain, key)?, client_auth, revoked)
}

/// [`server_config`] presenting `identity`, which can be replaced while the
/// server runs.
pub fn server_config_live(
    ca: &CertificateDer<'_>,
    identity: Arc<LiveIdentity>,
    client_auth: ClientAuth,
    revoked: Arc<RevocationList>,
) -> Result<Arc<ServerConfig>> {
    let verifier = client_verifier(ca, client_auth, revoked)?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The TLS configuration of a Duokey client (terminal, or a server calling
/// another, SPEC §2, §5.4): TLS 1.3 only, the server verified against `ca`
/// only (and its name against its SANs), ALPN `h2`, and `client` as the client
/// certificate chain and key (`None` only for the AS enrolment call).
pub fn client_config(
    ca: &CertificateDer<'_>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>> {
    let identity = match client {
        Some((chain, key)) => Some(LiveIdentity::new(chain, key)?),
        None => None,
    };
    build_client_config(ca, identity, None)
}

/// [`client_config`] for calling a server of `role` (SPEC §1, §2; D9): the
/// server's certificate must also carry that role, so a certificate the CA
/// issued for another role (a CS posing as the GMS, say) is refused at the
/// handshake.
pub fn client_config_for(
    ca: &CertificateDer<'_>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    role: Role,
) -> Result<Arc<ClientConfig>> {
    let identity = match client {
        Some((chain, key)) => Some(LiveIdentity::new(chain, key)?),
        None => None,
    };
    build_client_config(ca, identity, Some(role))
}

/// [`client_config_for`] with `identity` as the client certificate, which
/// can be replaced while the process runs (a server calling another).
pub fn client_config_live(
    ca: &CertificateDer<'_>,
    identity: Arc<LiveIdentity>,
    role: Role,
) -> Result<Arc<ClientConfig>> {
    build_client_config(ca, Some(identity), Some(role))
}

fn build_client_config(
    ca: &CertificateDer<'_>,
    client: Option<Arc<LiveIdentity>>,
    role: Option<Role>,
) -> Result<Arc<ClientConfig>> {
    let provider = crypto_provider();
    let inner =
        WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone()).build()?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DuokeyServerVerifier { inner, role }));
    let mut config = match client {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A certificate webpki accepted but the Duokey profile refuses, as rustls
/// reports it to the peer.
fn profile_refusal(e: crate::Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The handshake signature checks of a verifier that adds Duokey's checks to
/// the certificate only: they are `self.inner`'s (webpki's), unchanged.
macro_rules! inner_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// webpki verification of a server (CA and host name), then its role.
#[derive(Debug)]
struct DuokeyServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    role: Option<Role>,
}

impl ServerCertVerifier for DuokeyServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let Some(role) = self.role else {
            return Ok(verified);
        };
        let identity = peer_identity(end_entity).map_err(profile_refusal)?;
        if !identity.roles.contains(&role) {
            return Err(profile_refusal(crate::Error::InvalidCertificate(format!(
                "the server's certificate does not carry the {} role (roles: {})",
                role.name(),
                identity
                    .roles
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        Ok(verified)
    }

    inner_signature_checks!();
}

/// webpki verification plus the Duokey profile and the revocation list.
#[derive(Debug)]
struct DuokeyClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RevocationList>,
}

impl ClientCertVerifier for DuokeyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = peer_identity(end_entity).map_err(profile_refusal)?;
        if self.revoked.is_revoked(&identity.serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    inner_signature_checks!();
}
