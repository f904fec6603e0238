//! Unit tests of the CA, requests and peer identities (SPEC §2).

use crate::ca::{CA_CERT_FILE, CA_KEY_FILE, SERIAL_LEN, USER_URI_PREFIX};
use crate::*;
use duokey_crypto::{IdentityKey, UserId};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_parser::extensions::{ExtendedKeyUsage, GeneralName};
use x509_parser::prelude::{FromDer, X509Certificate};

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).expect("parse certificate").1
}

/// The subject's organizational units (where Duokey writes the roles).
fn ous<'c>(cert: &'c X509Certificate<'_>) -> Vec<&'c str> {
    cert.subject()
        .iter_organizational_unit()
        .map(|a| a.as_str().expect("str"))
        .collect()
}

/// The extended key usage, present in every certificate of the CA.
fn eku<'c>(cert: &'c X509Certificate<'_>) -> &'c ExtendedKeyUsage<'c> {
    cert.extended_key_usage()
        .expect("eku")
        .expect("present")
        .value
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn terminal_cert(
    ca: &Ca,
    id: &IdentityKey,
    u: &UserId,
) -> rustls_pki_types::CertificateDer<'static> {
    let csr = make_csr(id, u).expect("csr");
    ca.sign_csr(&csr, u, 30).expect("sign")
}

#[test]
fn ca_profile() {
    let ca = Ca::generate("Example Org").expect("ca");
    let der = ca.cert_der();
    let cert = parse(&der);
    assert!(cert.is_ca());
    let bc = cert
        .basic_constraints()
        .expect("bc")
        .expect("present")
        .value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().expect("ku").expect("present").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_SIG_ED25519
    );
    let years = (cert.validity().not_after.timestamp() - now()) / (365 * 86_400);
    assert!((9..=10).contains(&years), "{years}");
    assert_eq!(cert.raw_serial().len(), SERIAL_LEN);
    // Self-signed.
    cert.verify_signature(None).expect("self-signature");
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(Ca::generate("  ").is_err());
}

#[cfg(unix)]
#[test]
fn ca_save_load_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let ca_dir = dir.path().join("ca");
    let ca = Ca::generate("Example Org").expect("ca");
    ca.save(&ca_dir).expect("save");
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);
    let key_text = std::fs::read_to_string(ca_dir.join(CA_KEY_FILE)).expect("read");
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));

    let loaded = Ca::load(&ca_dir).expect("load");
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.cert_pem(), ca.cert_pem());

    // A certificate issued by the loaded CA chains to the original certificate.
    let u = user("alice@example.org");
    let leaf = terminal_cert(&loaded, &IdentityKey::generate(), &u);
    let ca_der = ca.cert_der();
    let ca_cert = parse(&ca_der);
    let leaf_cert = parse(&leaf);
    leaf_cert
        .verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    assert_eq!(leaf_cert.issuer().as_raw(), ca_cert.subject().as_raw());

    // Saving again replaces the files, still 0600.
    loaded.save(&ca_dir).expect("save again");
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);

    // Another CA's key does not fit this certificate.
    let other = tempfile::tempdir().expect("tmp");
    Ca::generate("Other")
        .expect("ca")
        .save(other.path())
        .expect("save");
    std::fs::copy(other.path().join(CA_KEY_FILE), ca_dir.join(CA_KEY_FILE)).expect("copy");
    assert!(matches!(Ca::load(&ca_dir), Err(Error::KeyMismatch(_))));
    // A missing directory is a clear I/O error.
    assert!(matches!(
        Ca::load(&dir.path().join("nope")),
        Err(Error::Io { .. })
    ));
    assert!(ca_dir.join(CA_CERT_FILE).exists());
}

#[cfg(unix)]
#[test]
fn server_certificate_profile() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::generate("Example Org").expect("ca");
    let hosts = vec![
        "gms.example.org".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let issued = ca
        .issue_server(&hosts, &[Role::Cs, Role::Gms, Role::As, Role::Gms], 365)
        .expect("issue");
    let cert = parse(&issued.cert_der);
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .expect("san")
        .expect("present")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::IPAddress(ip) => format!("ip:{}", hex::encode(ip)),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        vec![
            "dns:gms.example.org".to_string(),
            "ip:7f000001".to_string(),
            format!("ip:{}", hex::encode(std::net::Ipv6Addr::LOCALHOST.octets())),
        ]
    );
    let eku = eku(&cert);
    assert!(eku.server_auth && eku.client_auth);
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_SIG_ED25519
    );

    let id = peer_identity(&issued.cert_der).expect("identity");
    assert_eq!(id.roles, vec![Role::As, Role::Gms, Role::Cs]);
    assert!(id.user_id.is_none());
    assert!(id.has_role(Role::Gms) && !id.is_terminal());
    assert_eq!(id.common_name.as_deref(), Some("gms.example.org"));
    assert_eq!(ous(&cert), vec!["duokey-as duokey-gms duokey-cs"]);

    // Files: chain and 0600 key, readable back.
    let dir = tempfile::tempdir().expect("tmp");
    issued.save(dir.path(), "server").expect("save");
    let key_path = dir.path().join("server.key");
    assert_eq!(
        std::fs::metadata(&key_path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let chain = pem::load_certs(&dir.path().join("server.pem")).expect("chain");
    assert_eq!(chain, issued.chain());
    let key = pem::load_key(&key_path).expect("key");
    assert_eq!(key.secret_der(), issued.key_der.secret_der());
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
}

#[test]
fn server_certificate_refusals() {
    let ca = Ca::generate("Example Org").expect("ca");
    let h = vec!["localhost".to_string()];
    assert!(matches!(
        ca.issue_server(&h, &[], 1),
        Err(Error::InvalidRoles(_))
    ));
    assert!(matches!(
        ca.issue_server(&h, &[Role::Gms, Role::Terminal], 1),
        Err(Error::InvalidRoles(_))
    ));
    assert!(matches!(
        ca.issue_server(&[], &[Role::Gms], 1),
        Err(Error::NoHosts)
    ));
    assert!(matches!(
        ca.issue_server(&["bad host!".to_string()], &[Role::Gms], 1),
        Err(Error::InvalidHost(_))
    ));
    assert!(matches!(
        ca.issue_server(&h, &[Role::Gms], 0),
        Err(Error::InvalidValidity(_))
    ));
}

#[test]
fn terminal_certificate_profile() {
    let ca = Ca::generate("Example Org").expect("ca");
    let id = IdentityKey::generate();
    let u = user("alice@example.org");
    let der = terminal_cert(&ca, &id, &u);
    let cert = parse(&der);

    let peer = peer_identity(&der).expect("identity");
    assert_eq!(peer.user_id.as_ref(), Some(&u));
    assert_eq!(peer.roles, vec![Role::Terminal]);
    assert_eq!(peer.ed25519_public, Some(id.public().to_bytes()));
    assert_eq!(peer.serial.len(), SERIAL_LEN);
    assert_eq!(peer.serial, cert.raw_serial());
    assert_eq!(peer.serial_hex(), hex::encode(&peer.serial));
    let fp: [u8; 32] = Sha256::digest(&der).into();
    assert_eq!(peer.fingerprint_sha256, fp);
    assert_eq!(peer.fingerprint_hex().len(), 64);
    let days = (peer.not_after_unix - now() + 60) / 86_400;
    assert_eq!(days, 30);

    let sans = &cert
        .subject_alternative_name()
        .expect("san")
        .expect("present")
        .value
        .general_names;
    assert_eq!(sans.len(), 1);
    assert!(
        matches!(sans.first(), Some(GeneralName::URI(uri)) if *uri == format!("{USER_URI_PREFIX}alice@example.org"))
    );
    let eku = eku(&cert);
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(ous(&cert), vec!["duokey-terminal"]);

    // Two certificates never share a serial.
    let again = peer_identity(&terminal_cert(&ca, &id, &u)).expect("identity");
    assert_ne!(again.serial, peer.serial);
}

#[test]
fn sign_csr_refuses_other_user() {
    let ca = Ca::generate("Example Org").expect("ca");
    let csr = make_csr(&IdentityKey::generate(), &user("mallory@example.org")).expect("csr");
    match ca.sign_csr(&csr, &user("alice@example.org"), 30) {
        Err(Error::CsrUserMismatch { expected, found }) => {
            assert_eq!(expected, "alice@example.org");
            assert_eq!(found, "mallory@example.org");
        }
        other => panic!("expected a user mismatch, got {other:?}"),
    }
    // A prefix or a differently cased id is another user too.
    let csr = make_csr(&IdentityKey::generate(), &user("alice")).expect("csr");
    assert!(matches!(
        ca.sign_csr(&csr, &user("alice@example.org"), 30),
        Err(Error::CsrUserMismatch { .. })
    ));
}

#[test]
fn sign_csr_refuses_non_ed25519_key() {
    let ca = Ca::generate("Example Org").expect("ca");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "alice@example.org");
    let csr = params.serialize_request(&key).expect("csr");
    match ca.sign_csr(csr.der(), &user("alice@example.org"), 30) {
        Err(Error::CsrKeyNotEd25519 { found }) => assert_eq!(found, "ECDSA"),
        other => panic!("expected a key type error, got {other:?}"),
    }
}

#[test]
fn sign_csr_refuses_tampered_or_malformed_requests() {
    let ca = Ca::generate("Example Org").expect("ca");
    let u = user("alice@example.org");
    let csr = make_csr(&IdentityKey::generate(), &u).expect("csr");
    ca.sign_csr(&csr, &u, 30)
        .expect("the untampered request is fine");

    // Flip a bit of the signature.
    let mut bad_sig = csr.clone();
    if let Some(last) = bad_sig.last_mut() {
        *last ^= 0x01;
    }
    assert!(matches!(
        ca.sign_csr(&bad_sig, &u, 30),
        Err(Error::CsrSignature)
    ));

    // Change the signed subject (alice -> blice) and ask for the new name.
    let pos = csr
        .windows(5)
        .position(|w| w == b"alice")
        .expect("CN in the request");
    let mut bad_cn = csr.clone();
    if let Some(b) = bad_cn.get_mut(pos) {
        *b = b'b';
    }
    assert!(matches!(
        ca.sign_csr(&bad_cn, &user("blice@example.org"), 30),
        Err(Error::CsrSignature)
    ));

    // Change the public key: the signature no longer verifies.
    let public = IdentityKey::generate().public().to_bytes();
    let key_pos = csr
        .windows(32)
        .position(|w| w == make_csr_public_key(&csr).as_slice());
    if let Some(p) = key_pos {
        let mut bad_key = csr.clone();
        if let Some(slot) = bad_key.get_mut(p..p + 32) {
            slot.copy_from_slice(&public);
        }
        assert!(matches!(
            ca.sign_csr(&bad_key, &u, 30),
            Err(Error::CsrSignature)
        ));
    }

    // Not DER, truncated, trailing bytes.
    assert!(matches!(
        ca.sign_csr(b"hello", &u, 30),
        Err(Error::CsrParse(_))
    ));
    assert!(matches!(
        ca.sign_csr(csr.get(..csr.len() - 10).expect("slice"), &u, 30),
        Err(Error::CsrParse(_))
    ));
    let mut trailing = csr.clone();
    trailing.push(0);
    assert!(matches!(
        ca.sign_csr(&trailing, &u, 30),
        Err(Error::CsrParse(_))
    ));
}

fn make_csr_public_key(csr: &[u8]) -> Vec<u8> {
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).expect("csr");
    req.certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec()
}

#[test]
fn make_csr_uses_the_identity_key() {
    let id = IdentityKey::from_seed([7; 32]);
    let csr = make_csr(&id, &user("bob@example.org")).expect("csr");
    assert_eq!(make_csr_public_key(&csr), id.public().to_bytes().to_vec());
    let key = identity_private_key_der(&id);
    assert_eq!(key.secret_der().len(), 48);
}

#[test]
fn validity_periods() {
    assert!(Validity::from_unix(100, 100).is_err());
    assert!(Validity::from_unix(200, 100).is_err());
    let v = Validity::from_unix(1_000, 2_000).expect("validity");
    assert_eq!((v.not_before_unix(), v.not_after_unix()), (1_000, 2_000));
    let ca = Ca::generate("Example Org").expect("ca");
    let u = user("old@example.org");
    let csr = make_csr(&IdentityKey::generate(), &u).expect("csr");
    let t = now();
    let der = ca
        .sign_csr_with_validity(
            &csr,
            &u,
            Validity::from_unix(t - 10 * 86_400, t - 86_400).expect("v"),
        )
        .expect("sign");
    assert_eq!(peer_identity(&der).expect("id").not_after_unix, t - 86_400);
}

#[test]
fn crl_is_signed_by_the_ca() {
    let ca = Ca::generate("Example Org").expect("ca");
    let serials = vec![vec![0x11; 16], vec![0x22; 16]];
    let crl_der = ca.crl_der(&serials).expect("crl");
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).expect("crl");
    let ca_der = ca.cert_der();
    let ca_cert = parse(&ca_der);
    crl.verify_signature(ca_cert.public_key())
        .expect("signature");
    let listed: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(listed, serials);
    assert!(ca.crl_der(&[vec![]]).is_err());
}

#[test]
fn peer_identity_refuses_inconsistent_user_san() {
    let ca_key = KeyPair::generate_for(&PKCS_ED25519).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, ca_key).expect("issuer");
    let leaf_key = KeyPair::generate_for(&PKCS_ED25519).expect("key");
    let mut lp = CertificateParams::new(vec![]).expect("params");
    lp.distinguished_name
        .push(DnType::CommonName, "alice@example.org");
    lp.distinguished_name
        .push(DnType::OrganizationalUnitName, "duokey-terminal");
    lp.subject_alt_names = vec![rcgen::SanType::URI(
        format!("{USER_URI_PREFIX}mallory@example.org")
            .try_into()
            .expect("ia5"),
    )];
    let leaf = lp.signed_by(&leaf_key, &issuer).expect("leaf");
    assert!(matches!(
        peer_identity(leaf.der()),
        Err(Error::InvalidCertificate(_))
    ));
    assert!(peer_identity(b"garbage").is_err());
}
