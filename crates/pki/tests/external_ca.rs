//! An existing enterprise CA instead of Duokey's own (SPEC §2): RSA ≥ 2048,
//! ECDSA P-256/P-384 or Ed25519 CA keys, Ed25519 leaf keys. The CA and its
//! certificates are made with rcgen the way another PKI would; the terminal
//! certificates carry no Duokey OU and are read as role Terminal with the CN as
//! user id. Real handshakes prove webpki verifies each CA signature algorithm.
#![allow(clippy::expect_used, clippy::cast_possible_truncation)]
#![allow(clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)] // a test fails by panicking

mod common;

use common::{exchange, spawn_server, user};
use duokey_crypto::IdentityKey;
use duokey_pki::rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use duokey_pki::{
    ClientAuth, Error, RevocationList, Role, client_config, identity_private_key_der, make_csr,
    peer_identity, server_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PKCS_RSA_SHA256, SanType,
};
use std::sync::Arc;

/// The RSA test CA key (ring cannot generate RSA keys; see tests/data/README.md).
fn rsa_ca_key() -> KeyPair {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rsa2048-test-ca.key.pem"
    );
    let pem = std::fs::read_to_string(path).expect("read RSA fixture");
    KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &PKCS_RSA_SHA256).expect("RSA key")
}

/// Certificate parameters for the subject `dn`, rcgen's defaults otherwise.
fn params_for(dn: &[(DnType, &str)]) -> CertificateParams {
    let mut params = CertificateParams::default();
    for (kind, value) in dn {
        params.distinguished_name.push(kind.clone(), *value);
    }
    params
}

fn enterprise_ca(key: KeyPair) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = params_for(&[
        (DnType::OrganizationName, "Example Corp"),
        (DnType::CommonName, "Example Corp Enterprise Root"),
    ]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, key).expect("enterprise CA")
}

/// A server certificate of the enterprise CA, with the Duokey role OU.
fn enterprise_server(
    ca: &CertifiedIssuer<'static, KeyPair>,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ED25519).expect("key");
    let mut params = params_for(&[
        (DnType::CommonName, "duokey.corp"),
        (DnType::OrganizationalUnitName, "duokey-cs"),
    ]);
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca).expect("server cert");
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// The enterprise CA signs the terminal's Duokey CSR its own way: subject CN
/// only (no OU), an email SAN, clientAuth.
fn enterprise_terminal(
    ca: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    [u8; 32],
) {
    let identity = IdentityKey::generate();
    let csr = make_csr(&identity, &user(name)).expect("csr");
    let csr = rcgen::CertificateSigningRequestParams::from_der(&csr.into()).expect("parse csr");
    let mut params = csr.params.clone();
    params.subject_alt_names = vec![SanType::Rfc822Name(name.try_into().expect("ia5"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&csr.public_key, ca)
        .expect("terminal cert");
    (
        vec![cert.der().clone()],
        identity_private_key_der(&identity),
        identity.public().to_bytes(),
    )
}

/// The enterprise CA's terminal leaf as `peer_identity` reads it (P-256
/// root, Ed25519 leaf with no OU): role Terminal, the CN as user id.
#[test]
fn external_ecdsa_ca_terminal_certificate() {
    let issuer = enterprise_ca(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key"));
    let leaf_key = KeyPair::generate_for(&PKCS_ED25519).expect("leaf key");
    let mut lp = params_for(&[(DnType::CommonName, "carol@example.com")]);
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = lp.signed_by(&leaf_key, &issuer).expect("leaf");
    let id = peer_identity(leaf.der()).expect("identity");
    assert_eq!(id.roles, vec![Role::Terminal]);
    assert_eq!(id.user_id, Some(user("carol@example.com")));
    assert!(id.ed25519_public.is_some());

    // A department OU does not change that.
    lp.distinguished_name
        .push(DnType::OrganizationalUnitName, "Engineering");
    let leaf = lp.signed_by(&leaf_key, &issuer).expect("leaf");
    assert_eq!(
        peer_identity(leaf.der()).expect("id").roles,
        vec![Role::Terminal]
    );

    // A terminal leaf must be Ed25519 and its CN a valid user id.
    let ec_leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let leaf = lp.signed_by(&ec_leaf_key, &issuer).expect("leaf");
    assert!(matches!(
        peer_identity(leaf.der()),
        Err(Error::LeafKeyNotEd25519)
    ));
    let bad = params_for(&[(DnType::CommonName, "Carol Smith")]);
    let leaf = bad.signed_by(&leaf_key, &issuer).expect("leaf");
    assert!(matches!(
        peer_identity(leaf.der()),
        Err(Error::InvalidUserId(_))
    ));
}

async fn check_enterprise_ca(key: KeyPair) {
    let ca = enterprise_ca(key);
    let ca_der = ca.der().clone();
    let (server_chain, server_key) = enterprise_server(&ca);
    let server_id = peer_identity(&server_chain[0]).expect("server identity");
    assert_eq!(server_id.roles, vec![Role::Cs]);

    let config = server_config(
        &ca_der,
        server_chain,
        server_key,
        ClientAuth::Required,
        Arc::new(RevocationList::empty()),
    )
    .expect("server config");
    let mut srv = spawn_server(config).await;

    let (chain, key, public) = enterprise_terminal(&ca, "dave@corp.example");
    let id = peer_identity(&chain[0]).expect("terminal identity");
    assert_eq!(id.roles, vec![Role::Terminal]);
    assert_eq!(id.user_id, Some(user("dave@corp.example")));
    assert_eq!(id.ed25519_public, Some(public));

    let client = client_config(&ca_der, Some((chain, key))).expect("client config");
    assert_eq!(
        exchange(client, srv.addr, "127.0.0.1").await.as_deref(),
        Ok("user dave@corp.example")
    );

    // A Duokey-CA certificate is still refused by the enterprise-CA server.
    let duokey = duokey_pki::Ca::generate("Duokey").expect("ca");
    let (chain, key) = common::terminal(&duokey, "dave@corp.example");
    let client = client_config(&ca_der, Some((chain, key))).expect("client config");
    assert!(exchange(client, srv.addr, "127.0.0.1").await.is_err());
    let reason = srv.next_refusal().await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[tokio::test]
async fn enterprise_ca_ecdsa_p256() {
    check_enterprise_ca(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key")).await;
}

#[tokio::test]
async fn enterprise_ca_ecdsa_p384() {
    check_enterprise_ca(KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key")).await;
}

#[tokio::test]
async fn enterprise_ca_rsa_2048() {
    check_enterprise_ca(rsa_ca_key()).await;
}

#[tokio::test]
async fn enterprise_ca_ed25519() {
    check_enterprise_ca(KeyPair::generate_for(&PKCS_ED25519).expect("key")).await;
}
