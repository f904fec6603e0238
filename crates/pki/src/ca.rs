//! The organisation's certificate authority, run by the AS (SPEC §1, §2, §5.1).
//!
//! # Certificate profile
//!
//! * **CA**: Ed25519 key, subject `O=<org>, CN=<org> Duokey CA`, 10 years,
//!   basic constraints `CA:true, pathlen:0`, key usages keyCertSign + cRLSign.
//! * **Servers** ([`Ca::issue_server`]): Ed25519 key made here, subject
//!   `CN=<first host>, OU=<roles>` (see [`crate::role`] for the OU encoding),
//!   one SAN per host (an IP SAN when the host parses as an IP address, else a
//!   DNS SAN), EKU serverAuth + clientAuth (servers also call each other, SPEC
//!   §5.4), key usage digitalSignature.
//! * **Terminals** ([`Ca::sign_csr`]): the terminal's own Ed25519 key from its
//!   request, subject `CN=<user id>, OU=duokey-terminal`, and a URI SAN
//!   `urn:duokey:user:<user id>` (see [`USER_URI_PREFIX`]; a DNS SAN cannot hold
//!   `@`, and a URI SAN is understood by every X.509 tool, unlike a custom
//!   otherName), EKU clientAuth, key usage digitalSignature.
//!
//! Every certificate gets a random 16-byte positive serial number and an
//! authority key identifier; all are valid from one hour before issuance (clock
//! skew) unless an explicit [`Validity`] is given.

use crate::error::{Error, Result};
use crate::files::{self, PUBLIC_MODE, SECRET_MODE};
use crate::role::{self, Role};
use duokey_crypto::UserId;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ED25519, PublicKeyData, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::{Zeroize, Zeroizing};

/// File name of the CA certificate written by [`Ca::save`] (SPEC §2).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key written by [`Ca::save`] (mode 0600; SPEC §2).
pub const CA_KEY_FILE: &str = "ca.key";
/// Prefix of the URI SAN that carries a terminal's user id (SPEC §2).
pub const USER_URI_PREFIX: &str = "urn:duokey:user:";
/// Validity of a new CA certificate, in days (10 years; SPEC §2).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// How far `not_before` is set in the past, to tolerate clock skew.
const BACKDATE: Duration = Duration::hours(1);
/// Length of the random serial numbers of issued certificates (SPEC §2).
pub const SERIAL_LEN: usize = 16;

/// The validity period of a certificate (SPEC §2: expired certificates are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// From one hour ago (clock skew) until `days` days from now (SPEC §2).
    pub fn days(days: u32) -> Result<Self> {
        if days == 0 {
            return Err(Error::InvalidValidity(
                "a certificate must be valid for at least one day",
            ));
        }
        let now = OffsetDateTime::now_utc();
        Ok(Self {
            not_before: now - BACKDATE,
            not_after: now + Duration::days(i64::from(days)),
        })
    }

    /// An explicit period in Unix seconds, e.g. one already over (for tests of
    /// SPEC §2 "an expired certificate MUST be refused").
    pub fn from_unix(not_before: i64, not_after: i64) -> Result<Self> {
        let conv = |t| {
            OffsetDateTime::from_unix_timestamp(t)
                .map_err(|_| Error::InvalidValidity("time out of range"))
        };
        let (not_before, not_after) = (conv(not_before)?, conv(not_after)?);
        if not_after <= not_before {
            return Err(Error::InvalidValidity(
                "not_after must be later than not_before",
            ));
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// Start of the period, Unix seconds (SPEC §2).
    pub fn not_before_unix(&self) -> i64 {
        self.not_before.unix_timestamp()
    }

    /// End of the period, Unix seconds (SPEC §2).
    pub fn not_after_unix(&self) -> i64 {
        self.not_after.unix_timestamp()
    }
}

/// A certificate issued together with a new private key (server certificates,
/// SPEC §2). The key is zeroized on drop.
pub struct IssuedKey {
    /// The certificate chain in PEM: the leaf certificate only (the Duokey CA
    /// issues directly, so there are no intermediates; the CA is not included).
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    /// The leaf certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key_der: PrivateKeyDer<'static>,
}

impl Drop for IssuedKey {
    /// The DER copy of the private key is wiped like the PEM one.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_der);
    }
}

/// `Debug` of a certificate holder: the certificate in PEM under `field`,
/// the private key never.
fn debug_hiding_key(f: &mut fmt::Formatter<'_>, name: &str, field: &str, pem: &str) -> fmt::Result {
    f.debug_struct(name)
        .field(field, &pem)
        .field("key", &"<redacted>")
        .finish()
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hiding_key(f, "IssuedKey", "chain_pem", &self.chain_pem)
    }
}

impl IssuedKey {
    /// Writes `<dir>/<stem>.pem` (the chain) and `<dir>/<stem>.key` (the private
    /// key, mode 0600 from its creation on), creating `dir` if needed (SPEC §2).
    pub fn save(&self, dir: &Path, stem: &str) -> Result<()> {
        files::ensure_dir(dir)?;
        files::write_atomic(
            &dir.join(format!("{stem}.pem")),
            self.chain_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        files::write_atomic(
            &dir.join(format!("{stem}.key")),
            self.key_pem.as_bytes(),
            SECRET_MODE,
        )
    }

    /// The chain as DER certificates, for [`crate::server_config`] and
    /// [`crate::client_config`] (SPEC §2).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }
}

/// The organisation's CA (SPEC §1 "AS holds the CA key", §2). The private key
/// is zeroized on drop and never shown by `Debug`.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_hiding_key(f, "Ca", "cert_pem", &self.cert_pem)
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl Ca {
    /// A new CA with an Ed25519 key, valid for 10 years (SPEC §2).
    pub fn generate(org_name: &str) -> Result<Ca> {
        let org = org_name.trim();
        if org.is_empty() {
            return Err(Error::InvalidCertificate(
                "the organisation name of a CA must not be empty".into(),
            ));
        }
        let key = crate::keys::generate_key_pair()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationName,
            DnValue::Utf8String(org.to_owned()),
        );
        dn.push(
            DnType::CommonName,
            DnValue::Utf8String(format!("{org} Duokey CA")),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let validity = Validity::days(CA_VALIDITY_DAYS)?;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Writes `ca.pem` and `ca.key` (PKCS#8 PEM, mode 0600 from its creation on)
    /// into `dir`, creating it (mode 0700) if needed (SPEC §2).
    pub fn save(&self, dir: &Path) -> Result<()> {
        files::ensure_dir(dir)?;
        files::write_atomic(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        let key_pem = Zeroizing::new(self.key.serialize_pem());
        files::write_atomic(&dir.join(CA_KEY_FILE), key_pem.as_bytes(), SECRET_MODE)
    }

    /// Reads a CA written by [`Ca::save`] from `dir` (`ca.pem`, `ca.key`),
    /// checking that the key belongs to the certificate and that it is a CA
    /// certificate (SPEC §2).
    pub fn load(dir: &Path) -> Result<Ca> {
        Self::load_files(&dir.join(CA_CERT_FILE), &dir.join(CA_KEY_FILE))
    }

    /// Reads a CA from a PEM certificate file and a PKCS#8 PEM key file
    /// anywhere (e.g. paths from a server configuration), with the checks of
    /// [`Ca::load`] (SPEC §2).
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Ca> {
        let cert_der = crate::pem::load_cert(cert_path)?;
        let key_pem = Zeroizing::new(files::read_string(key_path)?);
        let key = KeyPair::from_pem(&key_pem)?;

        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| Error::InvalidCertificate(format!("{}: {e}", cert_path.display())))?;
        if x509
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key.public_key_raw()
        {
            return Err(Error::KeyMismatch(key_path.to_path_buf()));
        }
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(Error::InvalidCertificate(format!(
                "{} is not a CA certificate",
                cert_path.display()
            )));
        }
        let cert_pem = crate::pem::cert_to_pem(&cert_der);
        Ok(Ca {
            cert_der,
            cert_pem,
            key,
        })
    }

    /// The CA certificate, DER: the only trust anchor of Duokey's TLS (SPEC §2).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The CA certificate, PEM (for `client.toml` and `ca.pem`; SPEC §2, §8).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// Issues a server certificate for `hosts` carrying `roles` (SPEC §1, §2),
    /// valid for `validity_days` days, with a new Ed25519 key.
    ///
    /// Each host becomes an IP SAN if it parses as an IP address, else a DNS SAN.
    /// `roles` must be non-empty server roles (no [`Role::Terminal`]).
    pub fn issue_server(
        &self,
        hosts: &[String],
        roles: &[Role],
        validity_days: u32,
    ) -> Result<IssuedKey> {
        self.issue_server_with_validity(hosts, roles, Validity::days(validity_days)?)
    }

    /// [`Ca::issue_server`] with an explicit validity period (SPEC §2).
    pub fn issue_server_with_validity(
        &self,
        hosts: &[String],
        roles: &[Role],
        validity: Validity,
    ) -> Result<IssuedKey> {
        let roles = role::canonical_server_roles(roles)?;
        let first = hosts.first().ok_or(Error::NoHosts)?;
        let mut sans = Vec::with_capacity(hosts.len());
        for host in hosts {
            sans.push(host_san(host)?);
        }

        let key = crate::keys::generate_key_pair()?;
        let mut params = leaf_params(validity)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DnValue::Utf8String(first.clone()));
        dn.push(
            DnType::OrganizationalUnitName,
            DnValue::Utf8String(role::roles_ou_value(&roles)),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer()?)?;

        let key_pem = Zeroizing::new(key.serialize_pem());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut key = key;
        key.zeroize();
        Ok(IssuedKey {
            chain_pem: cert.pem(),
            key_pem,
            cert_der: cert.der().clone(),
            key_der,
        })
    }

    /// Signs a terminal's certificate request (SPEC §2, §5.1 `Enroll`), valid
    /// for `validity_days` days.
    ///
    /// Refuses a request that is not DER PKCS#10 ([`Error::CsrParse`]), whose key
    /// is not Ed25519 ([`Error::CsrKeyNotEd25519`]), whose self-signature does not
    /// verify ([`Error::CsrSignature`]) or whose subject CN is not exactly
    /// `expected_user` ([`Error::CsrUserMismatch`]). Everything else in the
    /// request (other subject attributes, requested extensions) is ignored: the
    /// certificate gets the terminal profile described in the module docs.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        expected_user: &UserId,
        validity_days: u32,
    ) -> Result<CertificateDer<'static>> {
        self.sign_csr_with_validity(csr_der, expected_user, Validity::days(validity_days)?)
    }

    /// [`Ca::sign_csr`] with an explicit validity period (SPEC §2).
    pub fn sign_csr_with_validity(
        &self,
        csr_der: &[u8],
        expected_user: &UserId,
        validity: Validity,
    ) -> Result<CertificateDer<'static>> {
        let public = crate::csr::verify_csr(csr_der, expected_user)?;
        self.issue_terminal(expected_user, &public, validity)
    }

    /// Issues a terminal certificate for an Ed25519 public key (SPEC §2).
    fn issue_terminal(
        &self,
        user: &UserId,
        ed25519_public: &[u8; 32],
        validity: Validity,
    ) -> Result<CertificateDer<'static>> {
        let mut params = leaf_params(validity)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            DnValue::Utf8String(user.as_str().to_owned()),
        );
        dn.push(
            DnType::OrganizationalUnitName,
            DnValue::Utf8String(Role::Terminal.ou().to_owned()),
        );
        params.distinguished_name = dn;
        let uri = Ia5String::try_from(format!("{USER_URI_PREFIX}{}", user.as_str()))
            .map_err(|e| Error::InvalidUserId(format!("{user}: {e}")))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&Ed25519Public(*ed25519_public), &self.issuer()?)?;
        Ok(cert.der().clone())
    }

    /// A CRL signed by the CA listing `revoked_serials` (raw serial bytes), valid
    /// for 7 days, for relying parties that consume CRLs (SPEC §2). Duokey's own
    /// servers use the [`crate::RevocationList`] file instead.
    pub fn crl_der(&self, revoked_serials: &[Vec<u8>]) -> Result<Vec<u8>> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked_serials.len());
        for serial in revoked_serials {
            check_serial(serial)?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            });
        }
        let crl_number = u64::try_from(now.unix_timestamp()).unwrap_or_default();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer()?)?.der().to_vec())
    }
}

/// Parameters shared by server and terminal certificates.
fn leaf_params(validity: Validity) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The SAN of a server host: IP address or DNS name.
fn host_san(host: &str) -> Result<SanType> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    rustls_pki_types::DnsName::try_from(host).map_err(|_| Error::InvalidHost(host.to_owned()))?;
    let name = Ia5String::try_from(host).map_err(|_| Error::InvalidHost(host.to_owned()))?;
    Ok(SanType::DnsName(name))
}

/// A random positive serial of exactly [`SERIAL_LEN`] bytes (first byte 0x01..=0x7f,
/// so its DER encoding needs no sign byte and drops no leading zero).
fn random_serial() -> Result<SerialNumber> {
    let mut serial = [0u8; SERIAL_LEN];
    crate::random::fill(&mut serial)?;
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    Ok(SerialNumber::from_slice(&serial))
}

/// A serial for a CRL entry: not zero, at most 20 octets (RFC 5280 §4.1.2.2)
/// once leading zero bytes are dropped.
fn check_serial(serial: &[u8]) -> Result<()> {
    let significant = serial.iter().skip_while(|&&b| b == 0).count();
    if significant == 0 {
        return Err(Error::InvalidSerial("empty or zero"));
    }
    if significant > 20 {
        return Err(Error::InvalidSerial("longer than 20 octets"));
    }
    Ok(())
}

/// A bare Ed25519 public key, as rcgen's subject key of a terminal certificate.
struct Ed25519Public([u8; 32]);

impl PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}
