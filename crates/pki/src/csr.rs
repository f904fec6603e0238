//! Certificate requests (SPEC §2 enrolment, §5.1 `Enroll`): made by the
//! terminal with its existing Ed25519 identity key, checked by the AS.

use crate::error::{Error, Result};
use duokey_crypto::{IdentityKey, UserId};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use zeroize::Zeroize;

/// Builds a DER PKCS#10 certificate request for `user`, signed with the
/// terminal's Ed25519 identity key (SPEC §2: the key never leaves the terminal;
/// only this request goes to the AS, §5.1).
///
/// The subject is `CN=<user id>`; the AS decides everything else.
pub fn make_csr(identity: &IdentityKey, user: &UserId) -> Result<Vec<u8>> {
    let mut key = crate::keys::key_pair(identity)?;
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
