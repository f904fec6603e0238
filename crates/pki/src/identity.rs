//! Who is on the other end of a verified connection (SPEC §2): the user id and
//! roles a certificate carries, its Ed25519 key and fingerprint.

use crate::ca::USER_URI_PREFIX;
use crate::error::{Error, Result};
use crate::role::{self, Role};
use duokey_crypto::UserId;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519, Oid,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity of a peer, read from its (already verified) leaf certificate
/// (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The user id of a terminal certificate (its subject CN); `None` for servers.
    pub user_id: Option<UserId>,
    /// The roles the certificate carries (SPEC §1), sorted; `[Terminal]` for a
    /// terminal, one or more server roles for a server.
    pub roles: Vec<Role>,
    /// The subject's Ed25519 public key, if the key is Ed25519 (always for
    /// terminals, SPEC §2).
    pub ed25519_public: Option<[u8; 32]>,
    /// The raw serial number (the DER INTEGER's content bytes).
    pub serial: Vec<u8>,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// SHA-256 of the certificate's DER, as shown by `duokey verify` (SPEC §2).
    pub fingerprint_sha256: [u8; 32],
    /// The subject common name, if any (a host name for servers).
    pub common_name: Option<String>,
}

impl PeerIdentity {
    /// Whether the certificate carries `role` (SPEC §1, e.g. the CS accepts
    /// `SetMembers` only from a peer with [`Role::Gms`], §5.4).
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether this is a terminal (user) certificate (SPEC §1).
    pub fn is_terminal(&self) -> bool {
        self.has_role(Role::Terminal)
    }

    /// The serial number as lowercase hex, as in the revocation list file (SPEC §2).
    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    /// The fingerprint as lowercase hex (SPEC §2 `duokey verify`).
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256)
    }
}

/// Reads the identity of a peer from its leaf certificate, DER (SPEC §2).
///
/// The certificate must already have been verified against the CA (the TLS
/// layer does this); this function only interprets it:
///
/// * roles come from the subject OU (encoding: [`crate::role`]); a certificate
///   without any `duokey-*` OU, such as one from an external enterprise CA, is a
///   terminal certificate;
/// * a terminal certificate must have exactly one CN that is a valid user id
///   and an Ed25519 key; a `urn:duokey:user:` URI SAN, if present, must name
///   the same user;
/// * a server certificate has no user id.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity> {
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::InvalidCertificate(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    let subject = cert.subject();

    let mut cns = subject.iter_common_name();
    let common_name = match (cns.next(), cns.next()) {
        (None, _) => None,
        (Some(cn), None) => Some(
            cn.as_str()
                .map_err(|_| {
                    Error::InvalidCertificate("the subject CN is not a text string".into())
                })?
                .to_owned(),
        ),
        (Some(_), Some(_)) => {
            return Err(Error::InvalidCertificate(
                "the subject has more than one CN".into(),
            ));
        }
    };

    let mut ous = Vec::new();
    for ou in subject.iter_organizational_unit() {
        ous.push(
            ou.as_str().map_err(|_| {
                Error::InvalidCertificate("a subject OU is not a text string".into())
            })?,
        );
    }
    let roles = role::roles_from_ou_values(ous)?;

    let spki = cert.public_key();
    let ed25519_public = if spki.algorithm.algorithm == OID_SIG_ED25519 {
        Some(
            <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref()).map_err(|_| {
                Error::InvalidCertificate("an Ed25519 public key must be 32 bytes".into())
            })?,
        )
    } else {
        None
    };

    let user_id = if roles.contains(&Role::Terminal) {
        let cn = common_name.as_deref().ok_or_else(|| {
            Error::InvalidCertificate("a terminal certificate needs a CN (the user id)".into())
        })?;
        let user = UserId::new(cn).map_err(|_| Error::InvalidUserId(cn.to_owned()))?;
        if ed25519_public.is_none() {
            return Err(Error::LeafKeyNotEd25519);
        }
        check_user_uri_sans(&cert, &user)?;
        Some(user)
    } else {
        None
    };

    Ok(PeerIdentity {
        user_id,
        roles,
        ed25519_public,
        serial: cert.raw_serial().to_vec(),
        not_after_unix: cert.validity().not_after.timestamp(),
        not_before_unix: cert.validity().not_before.timestamp(),
        fingerprint_sha256: Sha256::digest(cert_der).into(),
        common_name,
    })
}

/// Every `urn:duokey:user:` URI SAN must name `user` (SPEC §2: the user id is
/// the CN and a SAN).
fn check_user_uri_sans(cert: &X509Certificate<'_>, user: &UserId) -> Result<()> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::InvalidCertificate(format!("subject alternative names: {e}")))?;
    let Some(san) = san else {
        return Ok(());
    };
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && let Some(id) = uri.strip_prefix(USER_URI_PREFIX)
            && id != user.as_str()
        {
            return Err(Error::InvalidCertificate(format!(
                "the URI SAN names user {id:?} but the CN names {user}"
            )));
        }
    }
    Ok(())
}

/// A readable name of a public key algorithm, for error messages.
pub(crate) fn key_algorithm_name(oid: &Oid<'_>) -> String {
    if *oid == OID_PKCS1_RSAENCRYPTION {
        "RSA".into()
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        "ECDSA".into()
    } else if *oid == OID_SIG_ED25519 {
        "Ed25519".into()
    } else {
        format!("OID {oid}")
    }
}
