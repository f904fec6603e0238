//! Real TLS handshakes against a tokio-rustls server (SPEC §2, §7.1): TLS 1.3
//! only, client certificates of the Duokey CA required; no certificate, another
//! CA's, an expired or a revoked certificate is refused.
#![allow(clippy::expect_used, clippy::cast_possible_truncation)]
#![allow(clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)] // a test fails by panicking

mod common;

use common::{TestServer, exchange, spawn_server, terminal, user};
use duokey_crypto::IdentityKey;
use duokey_pki::rustls::ClientConfig;
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_pki::{
    Ca, ClientAuth, IssuedKey, RevocationList, Role, Validity, client_config,
    identity_private_key_der, make_csr, peer_identity, server_config,
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Setup {
    ca: Ca,
    server: IssuedKey,
}

fn setup() -> Setup {
    let ca = Ca::generate("Test Org").expect("ca");
    let server = ca
        .issue_server(
            &["127.0.0.1".to_string(), "localhost".to_string()],
            &[Role::Gms, Role::Cs, Role::As],
            30,
        )
        .expect("server cert");
    Setup { ca, server }
}

fn server_cfg(
    s: &Setup,
    auth: ClientAuth,
    revoked: Arc<RevocationList>,
) -> Arc<duokey_pki::rustls::ServerConfig> {
    server_cfg_of(&s.ca, &s.server, auth, revoked)
}

/// The server config of `server`, a certificate of `ca`, trusting `ca`'s clients.
fn server_cfg_of(
    ca: &Ca,
    server: &IssuedKey,
    auth: ClientAuth,
    revoked: Arc<RevocationList>,
) -> Arc<duokey_pki::rustls::ServerConfig> {
    server_config(
        &ca.cert_der(),
        server.chain(),
        server.key_der.clone_key(),
        auth,
        revoked,
    )
    .expect("server config")
}

/// A server of `s` that requires client certificates and revokes none.
async fn required_server(s: &Setup) -> TestServer {
    spawn_server(server_cfg(
        s,
        ClientAuth::Required,
        Arc::new(RevocationList::empty()),
    ))
    .await
}

/// A client that trusts `s`'s CA and presents a terminal certificate of `issuer` for `name`.
fn terminal_client(s: &Setup, issuer: &Ca, name: &str) -> Arc<ClientConfig> {
    let (chain, key) = terminal(issuer, name);
    client_config(&s.ca.cert_der(), Some((chain, key))).expect("client config")
}

/// A client that trusts `s`'s CA and presents `cert` with the key of `identity`.
fn cert_client(
    s: &Setup,
    cert: CertificateDer<'static>,
    identity: &IdentityKey,
) -> Arc<ClientConfig> {
    client_config(
        &s.ca.cert_der(),
        Some((vec![cert], identity_private_key_der(identity))),
    )
    .expect("client config")
}

/// Asserts that `client` completes a round trip with the server at `addr` and is seen as `who`.
async fn assert_seen_as(addr: SocketAddr, client: Arc<ClientConfig>, who: &str) {
    assert_eq!(
        exchange(client, addr, "127.0.0.1").await.as_deref(),
        Ok(who)
    );
}

/// Asserts that `client` fails against `srv` and the server's refusal names `why`.
async fn assert_refused(srv: &mut TestServer, client: Arc<ClientConfig>, why: &str) {
    let result = exchange(client, srv.addr, "127.0.0.1").await;
    assert!(result.is_err(), "{result:?}");
    let reason = srv.next_refusal().await;
    assert!(reason.contains(why), "{reason}");
}

#[tokio::test]
async fn valid_terminal_certificate_round_trip() {
    let s = setup();
    let srv = required_server(&s).await;
    let client = terminal_client(&s, &s.ca, "alice@example.org");

    // By IP SAN and by DNS SAN; the server sees the user id of the certificate.
    let who = exchange(client.clone(), srv.addr, "127.0.0.1").await;
    assert_eq!(who.as_deref(), Ok("user alice@example.org"));
    let who = exchange(client.clone(), srv.addr, "localhost").await;
    assert_eq!(who.as_deref(), Ok("user alice@example.org"));
    // A name the server certificate does not carry is refused by the client.
    assert!(exchange(client, srv.addr, "example.org").await.is_err());
}

#[tokio::test]
async fn server_certificate_works_as_client_certificate() {
    // SPEC §5.4: the GMS calls the CS with its own certificate.
    let s = setup();
    let srv = required_server(&s).await;
    let gms =
        s.ca.issue_server(&["gms.internal".to_string()], &[Role::Gms], 30)
            .expect("gms cert");
    let client = client_config(
        &s.ca.cert_der(),
        Some((gms.chain(), gms.key_der.clone_key())),
    )
    .expect("client config");
    assert_seen_as(srv.addr, client, "server gms").await;
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let s = setup();
    let mut srv = required_server(&s).await;
    let client = client_config(&s.ca.cert_der(), None).expect("client config");
    assert_refused(&mut srv, client, "peer sent no certificates").await;
}

#[tokio::test]
async fn other_ca_certificate_is_refused() {
    let s = setup();
    let mut srv = required_server(&s).await;
    let rogue = Ca::generate("Rogue Org").expect("rogue ca");
    // Same user id, same kind of certificate, wrong CA.
    let client = terminal_client(&s, &rogue, "alice@example.org");
    assert_refused(&mut srv, client, "UnknownIssuer").await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let s = setup();
    let mut srv = required_server(&s).await;
    let identity = IdentityKey::generate();
    let u = user("old@example.org");
    let csr = make_csr(&identity, &u).expect("csr");
    let now = time_now();
    let signed = |not_before, not_after| {
        let validity = Validity::from_unix(not_before, not_after).expect("validity");
        let cert =
            s.ca.sign_csr_with_validity(&csr, &u, validity)
                .expect("sign");
        cert_client(&s, cert, &identity)
    };
    let client = signed(now - 30 * 86_400, now - 86_400);
    assert_refused(&mut srv, client, "certificate expired").await;

    // Not yet valid is refused as well.
    let client = signed(now + 86_400, now + 2 * 86_400);
    assert_refused(&mut srv, client, "not valid yet").await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_reload_without_restart() {
    let s = setup();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("revoked.txt");
    std::fs::write(&path, "").expect("an empty list");
    let revoked = Arc::new(RevocationList::load(&path).expect("load"));
    let mut srv = spawn_server(server_cfg(&s, ClientAuth::Required, revoked.clone())).await;

    let (alice_chain, alice_key) = terminal(&s.ca, "alice@example.org");
    let alice_serial = peer_identity(&alice_chain[0]).expect("id").serial;
    let alice = client_config(&s.ca.cert_der(), Some((alice_chain, alice_key))).expect("cfg");
    let bob = terminal_client(&s, &s.ca, "bob@example.org");

    assert!(exchange(alice.clone(), srv.addr, "127.0.0.1").await.is_ok());

    RevocationList::revoke_in_file(&path, &alice_serial).expect("revoke");
    // The file alone changes nothing until the server reloads it...
    assert!(exchange(alice.clone(), srv.addr, "127.0.0.1").await.is_ok());
    assert_eq!(revoked.reload().expect("reload"), 1);
    // ...then the same running server refuses Alice on every new connection
    // (the same client config: no session resumption can bypass the check).
    for _ in 0..2 {
        assert_refused(&mut srv, alice.clone(), "Revoked").await;
    }
    // Others are unaffected.
    assert_seen_as(srv.addr, bob, "user bob@example.org").await;
}

#[tokio::test]
async fn optional_client_auth_port() {
    // The port that also serves the AS enrolment call (SPEC §2, §5.1).
    let s = setup();
    let revoked = Arc::new(RevocationList::empty());
    let mut srv = spawn_server(server_cfg(&s, ClientAuth::Optional, revoked.clone())).await;

    let anon = client_config(&s.ca.cert_der(), None).expect("cfg");
    assert_seen_as(srv.addr, anon, "anonymous").await;
    let (chain, key) = terminal(&s.ca, "alice@example.org");
    let serial = peer_identity(&chain[0]).expect("id").serial;
    let alice = client_config(&s.ca.cert_der(), Some((chain, key))).expect("cfg");
    assert_seen_as(srv.addr, alice.clone(), "user alice@example.org").await;
    // A certificate that is presented is still checked.
    let rogue = Ca::generate("Rogue").expect("ca");
    let forged = terminal_client(&s, &rogue, "alice@example.org");
    assert_refused(&mut srv, forged, "UnknownIssuer").await;
    revoked.insert(&serial);
    assert_refused(&mut srv, alice, "Revoked").await;
}

#[tokio::test]
async fn client_refuses_server_of_another_ca() {
    let s = setup();
    let srv = required_server(&s).await;
    let other = Ca::generate("Other").expect("ca");
    let (chain, key) = terminal(&other, "alice@example.org");
    // The client trusts only `other`, so the server's certificate is refused.
    let client = client_config(&other.cert_der(), Some((chain, key))).expect("cfg");
    let result = exchange(client, srv.addr, "127.0.0.1").await;
    assert!(
        matches!(&result, Err(e) if e.starts_with("handshake")),
        "{result:?}"
    );
}

/// A hand-made TLS 1.2 ClientHello, independent of rustls' client: the server
/// must answer with a `protocol_version` alert and never a ServerHello. `supported_versions`, if
/// given, is the list of versions offered in that extension.
fn tls12_client_hello(supported_versions: Option<&[u16]>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]); // legacy_version: TLS 1.2
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    let mut push_ext = |ty: u16, data: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    push_ext(0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    push_ext(0x000b, &[0x01, 0x00]); // EC point formats: uncompressed
    push_ext(
        0x000d,
        &[0x00, 0x08, 0x08, 0x07, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ); // sig algs
    if let Some(versions) = supported_versions {
        let mut data = vec![(versions.len() * 2) as u8];
        for v in versions {
            data.extend_from_slice(&v.to_be_bytes());
        }
        push_ext(0x002b, &data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `bytes` and returns everything the server answers until it closes.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let run = async {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp");
        tcp.write_all(bytes).await.expect("write");
        let mut answer = Vec::new();
        // The server closes after its alert; a reset also ends the answer.
        let _ = tcp.read_to_end(&mut answer).await;
        answer
    };
    tokio::time::timeout(common::LIMIT, run)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn tls12_client_is_refused() {
    let s = setup();
    let mut srv = required_server(&s).await;
    for offered in [None, Some(&[0x0303u16][..]), Some(&[0x0303u16, 0x0302][..])] {
        let answer = raw_exchange(srv.addr, &tls12_client_hello(offered)).await;
        // One alert record: type 21, 2 bytes, level fatal (2), protocol_version (70).
        assert_eq!(answer.first(), Some(&0x15), "{offered:?}: {answer:02x?}");
        assert_eq!(
            answer.get(3..7),
            Some(&[0x00, 0x02, 0x02, 70][..]),
            "{answer:02x?}"
        );
        assert!(
            !answer.contains(&0x16),
            "no handshake record (ServerHello) may follow"
        );
        let reason = srv.next_refusal().await;
        assert!(
            reason.contains("Tls12NotOffered")
                || reason.contains("SupportedVersionsExtensionRequired"),
            "{reason}"
        );
    }
}

/// A real rustls client that offers only TLS 1.2 (with a valid certificate).
#[tokio::test]
async fn real_tls12_client_is_refused() {
    use duokey_pki::rustls::{self, ClientConfig, RootCertStore};
    let s = setup();
    let mut srv = required_server(&s).await;
    let mut roots = RootCertStore::empty();
    roots.add(s.ca.cert_der()).expect("root");
    let (chain, key) = terminal(&s.ca, "alice@example.org");
    let mut config = ClientConfig::builder_with_provider(duokey_pki::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2 client")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let result = exchange(Arc::new(config), srv.addr, "127.0.0.1").await;
    assert!(
        matches!(&result, Err(e) if e.starts_with("handshake")),
        "{result:?}"
    );
    let reason = srv.next_refusal().await;
    assert!(
        reason.contains("SupportedVersionsExtensionRequired") || reason.contains("Tls12NotOffered"),
        "{reason}"
    );
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let s = setup();
    let mut srv = required_server(&s).await;
    // The echo server's own request in plaintext: a server that spoke
    // plaintext would answer "pong"; this one must refuse the handshake
    // (its recorded reason) and answer nothing or a TLS alert record.
    let answer = raw_exchange(srv.addr, b"ping!").await;
    assert!(!answer.windows(5).any(|w| w == b"pong "), "{answer:02x?}");
    assert!(
        answer.is_empty() || answer.first() == Some(&0x15),
        "{answer:02x?}"
    );
    let reason = srv.next_refusal().await;
    assert!(!reason.is_empty(), "the server recorded no refusal");
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test]
async fn a_cs_certificate_posing_as_the_gms_is_refused_by_clients() {
    // Two servers of one CA: a real GMS and a CS. A client of the GMS that is
    // pointed at the CS (a CS operator answering in the GMS's name) refuses
    // it at the handshake, while it still accepts the real GMS; a client of
    // the CS accepts the CS.
    let ca = Ca::generate("Test Org").expect("ca");
    let issue = |roles: &[Role]| {
        ca.issue_server(&["127.0.0.1".to_string()], roles, 30)
            .expect("server cert")
    };
    let start = |cert: IssuedKey| {
        let empty = Arc::new(RevocationList::empty());
        spawn_server(server_cfg_of(&ca, &cert, ClientAuth::Required, empty))
    };
    let gms = start(issue(&[Role::Gms])).await;
    let cs = start(issue(&[Role::Cs])).await;
    let (chain, key) = terminal(&ca, "alice");
    let for_role = |role| {
        duokey_pki::client_config_for(&ca.cert_der(), Some((chain.clone(), key.clone_key())), role)
            .expect("client config")
    };

    let posing = exchange(for_role(Role::Gms), cs.addr, "127.0.0.1").await;
    let err = posing.expect_err("a CS certificate must not pass as the GMS");
    assert!(err.contains("does not carry the gms role"), "{err}");
    assert_seen_as(gms.addr, for_role(Role::Gms), "user alice").await;
    assert_seen_as(cs.addr, for_role(Role::Cs), "user alice").await;
}
