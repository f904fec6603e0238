//! Certificate requests (SPEC §2 enrolment, §5.1 `Enroll`): made by the
//! terminal with its existing Ed25519 identity key, checked by the AS.

use crate::error::{Error, Result};
use duokey_crypto::{IdentityKey, UserId};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, PKCS_ED25519};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use zeroize::{Zeroize, Zeroizing};

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7), followed by the
/// 32-byte seed: `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
/// OCTET STRING { OCTET STRING seed } }`.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The terminal identity key as PKCS#8 v1 DER (48 bytes), zeroized on drop.
fn identity_pkcs8(identity: &IdentityKey) -> Zeroizing<Vec<u8>> {
    let seed = identity.to_seed();
    let mut der = Zeroizing::new(Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + 32));
    der.extend_from_slice(&PKCS8_ED25519_PREFIX);
    der.extend_from_slice(seed.as_slice());
    der
}

/// The terminal's identity key as a rustls private key, so the terminal
/// authenticates its TLS connections with the key its certificate names
/// (SPEC §2). Pass it with the certificate to [`crate::client_config`].
pub fn identity_private_key_der(identity: &IdentityKey) -> PrivateKeyDer<'static> {
    let der = identity_pkcs8(identity);
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

/// Builds a DER PKCS#10 certificate request for `user`, signed with the
/// terminal's Ed25519 identity key (SPEC §2: the key never leaves the terminal;
/// only this request goes to the AS, §5.1).
///
/// The subject is `CN=<user id>`; the AS decides everything else.
pub fn make_csr(identity: &IdentityKey, user: &UserId) -> Result<Vec<u8>> {
    let pkcs8 = identity_pkcs8(identity);
    let mut key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_ED25519,
    )?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        DnValue::Utf8String(user.as_str().to_owned()),
    );
    params.distinguished_name = dn;
    let result = params.serialize_request(&key);
    key.zeroize();
    Ok(result?.der().to_vec())
}

/// Checks a terminal's request (SPEC §2): DER PKCS#10 with no trailing bytes,
/// an Ed25519 key, a valid self-signature, and a subject CN equal to `expected`.
/// Returns the Ed25519 public key.
pub(crate) fn verify_csr(csr_der: &[u8], expected: &UserId) -> Result<[u8; 32]> {
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| Error::CsrParse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::CsrParse(format!("{} trailing bytes", rest.len())));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(Error::CsrKeyNotEd25519 {
            found: crate::identity::key_algorithm_name(&spki.algorithm.algorithm),
        });
    }
    let public: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| Error::CsrParse("an Ed25519 public key must be 32 bytes".into()))?;
    if spki.algorithm.parameters.is_some() {
        return Err(Error::CsrParse("Ed25519 key with parameters".into()));
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ED25519 {
        return Err(Error::CsrSignature);
    }
    csr.verify_signature().map_err(|_| Error::CsrSignature)?;

    let mut cns = info.subject.iter_common_name();
    let found = match (cns.next(), cns.next()) {
        (Some(cn), None) => cn
            .as_str()
            .map_err(|_| Error::CsrParse("the subject CN is not a text string".into()))?
            .to_owned(),
        (None, _) => String::new(),
        (Some(_), Some(_)) => {
            return Err(Error::CsrParse("the subject has more than one CN".into()));
        }
    };
    if found.as_bytes() != expected.as_bytes() {
        return Err(Error::CsrUserMismatch {
            expected: expected.as_str().to_owned(),
            found,
        });
    }
    Ok(public)
}
