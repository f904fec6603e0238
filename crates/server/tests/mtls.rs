//! SPEC §2, SECURITY P1: every refused-certificate case, on the real ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// a test fails by panicking
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)]

use duokey_crypto::{IdentityKey, UserId};
use duokey_pki::rustls_pki_types::CertificateDer;
use duokey_pki::rustls_pki_types::ServerName;
use duokey_pki::tokio_rustls::TlsConnector;
use duokey_pki::tokio_rustls::client::TlsStream;
use duokey_pki::{Ca, RevocationList, Validity, make_csr, peer_identity};
use duokey_proto::*;
use duokey_testkit::{LocalNet, RawUser};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

async fn list_groups(user: &mut RawUser) -> Result<ListGroupsResponse, tonic::Status> {
    user.gms
        .list_groups(ListGroupsRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn get_user(user: &mut RawUser) -> Result<GetUserResponse, tonic::Status> {
    user.cs
        .get_user(GetUserRequest {
            user_id: user.id.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A key for `name` and its certificate signed by `ca` for 30 days (not the
/// AS's enrolment: the test chooses the CA).
fn signed_by(ca: &Ca, name: &str) -> (UserId, IdentityKey, CertificateDer<'static>) {
    let id = UserId::new(name).unwrap();
    let key = IdentityKey::generate();
    let cert = ca.sign_csr(&make_csr(&key, &id).unwrap(), &id, 30).unwrap();
    (id, key, cert)
}

/// A certificate of `net`'s CA for `key` and `id` that expired an hour ago.
fn expired_cert(net: &LocalNet, key: &IdentityKey, id: &UserId) -> CertificateDer<'static> {
    let now = (duokey_testkit::now_ms() / 1000) as i64;
    net.ca
        .sign_csr_with_validity(
            &make_csr(key, id).unwrap(),
            id,
            Validity::from_unix(now - 7200, now - 3600).unwrap(),
        )
        .unwrap()
}

/// The servers' revocation list file.
fn revocation_list(net: &LocalNet) -> std::path::PathBuf {
    net.config
        .path(net.config.tls.revocation_list.as_ref().unwrap())
}

/// Revokes `serial` in the list file and has the running node reload it.
fn revoke(net: &LocalNet, serial: &[u8]) {
    RevocationList::revoke_in_file(&revocation_list(net), serial).unwrap();
    net.node.revocations.reload().unwrap();
}

#[tokio::test]
async fn enrolled_terminal_is_served_on_both_ports() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    assert!(list_groups(&mut alice).await.unwrap().groups.is_empty());
    let me = get_user(&mut alice).await.unwrap();
    let peer = peer_identity(&me.cert_chain_der[0]).unwrap();
    assert_eq!(
        peer.user_id,
        Some(alice.id.clone()),
        "the directory recorded the handshake's certificate"
    );
}

#[tokio::test]
async fn certificate_of_another_ca_is_refused() {
    let net = LocalNet::start().await;
    let rogue = Ca::generate("Rogue").unwrap();
    let (id, key, cert) = signed_by(&rogue, "alice");
    let mut mallory = net.user_with_chain(id, key, vec![cert]);
    assert!(list_groups(&mut mallory).await.is_err());
    assert!(get_user(&mut mallory).await.is_err());
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let net = LocalNet::start().await;
    let id = UserId::new("alice").unwrap();
    let key = IdentityKey::generate();
    let cert = expired_cert(&net, &key, &id);
    let mut old = net.user_with_chain(id, key, vec![cert]);
    assert!(list_groups(&mut old).await.is_err());
    assert!(get_user(&mut old).await.is_err());
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_reload_without_restart() {
    let net = LocalNet::start().await;
    let mut bob = net.raw("bob").await;
    let (id, key, cert) = signed_by(&net.ca, "carol");
    let serial = peer_identity(&cert).unwrap().serial;
    let mut carol = net.user_with_chain(id.clone(), key.clone(), vec![cert.clone()]);
    assert!(
        get_user(&mut carol).await.is_ok(),
        "served before revocation"
    );
    revoke(&net, &serial);
    // New connections with the revoked certificate are refused on both ports.
    let mut carol = net.user_with_chain(id, key, vec![cert]);
    assert!(
        get_user(&mut carol).await.is_err(),
        "revoked certificate refused on the CS port"
    );
    assert!(
        list_groups(&mut carol).await.is_err(),
        "revoked certificate refused on the GMS port"
    );
    assert!(
        list_groups(&mut bob).await.is_ok(),
        "others are still served"
    );
}

/// DESIGN D14: a terminal revoked while connected loses its open `Subscribe`
/// and `Watch` streams and every call on its connection within the reload
/// interval, not only new handshakes. Control: another user's stream on the
/// same server keeps receiving.
#[tokio::test]
async fn a_revoked_terminal_loses_its_open_streams_and_connection() {
    use tokio_stream::StreamExt;
    let net = LocalNet::start().await;
    let (mut alice, mut bob, g) = net.raw_group_of_two(0).await;
    let serial = peer_identity(&get_user(&mut alice).await.unwrap().cert_chain_der[0])
        .unwrap()
        .serial;
    net.cs_caught_up().await;
    let mut deliveries = alice.subscribe().await;
    let mut grants = alice.watch().await;
    let mut bobs = bob.subscribe().await;

    revoke(&net, &serial);
    let bound = duokey_pki::grpc::REVOCATION_CHECK * 10;
    let ended =
        |what: &str,
         item: Result<Option<Result<(), tonic::Status>>, tokio::time::error::Elapsed>| {
            let item = item.unwrap_or_else(|_| panic!("{what} stayed open after the revocation"));
            assert!(
                matches!(item, None | Some(Err(_))),
                "{what} delivered instead of ending"
            );
        };
    let next = tokio::time::timeout(bound, deliveries.next()).await;
    ended("Subscribe", next.map(|o| o.map(|r| r.map(drop))));
    let next = tokio::time::timeout(bound, grants.next()).await;
    ended("Watch", next.map(|o| o.map(|r| r.map(drop))));
    assert!(
        get_user(&mut alice).await.is_err(),
        "calls on the old connection"
    );
    // Control: bob, connected all along, is still served live.
    assert_eq!(bob.post(&g.group_id, "still here").await.unwrap(), 1);
    let got = duokey_testkit::next_within(&mut bobs, "bob's delivery")
        .await
        .unwrap();
    assert!(matches!(got.event, Some(delivery::Event::Envelope(_))));
}

/// DESIGN D33: re-enrolment is explicit at the AS too. Two plain tokens for
/// dave issued before he enrolled: the first enrols him, the second is
/// refused (it would replace his valid certificate silently); a
/// replacement token works and revokes the old certificate.
#[tokio::test]
async fn a_second_plain_token_cannot_replace_a_valid_certificate() {
    let net = LocalNet::start().await;
    let (first, second) = (net.token("dave").await, net.token("dave").await);
    let mut dave = net.raw_with("dave", &first, None).await.unwrap();
    let refused = net.raw_with("dave", &second, None).await.err().unwrap();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    assert!(refused.message().contains("--replace"), "{refused}");
    let db = duokey_storage::AsStore::open(&net.as_db_url).await.unwrap();
    let dave_id = UserId::new("dave").unwrap();
    let err = duokey_accounts::issue_token(&db, &dave_id)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--replace"), "{err}");
    let old = peer_identity(&get_user(&mut dave).await.unwrap().cert_chain_der[0])
        .unwrap()
        .serial;
    let list = revocation_list(&net);
    let revoked = RevocationList::load(&list).unwrap();
    let issued = duokey_accounts::issue_token_with(&db, &dave_id, true, &revoked)
        .await
        .unwrap();
    db.close().await;
    assert_eq!(issued.replaced, std::slice::from_ref(&old));
    // The replacement enrolment revokes whatever it replaces, also here
    // where the admin tool did not write the list first.
    net.raw_with("dave", &issued.token, None).await.unwrap();
    assert!(
        net.node.revocations.is_revoked(&old),
        "the replaced certificate is revoked"
    );
    assert!(
        RevocationList::load(&list).unwrap().is_revoked(&old),
        "in the list file"
    );
}

/// An AS client presenting `chain` for `key`.
fn accounts_as(
    net: &LocalNet,
    key: &IdentityKey,
    chain: Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
) -> accounts_client::AccountsClient<tonic::transport::Channel> {
    let tls = duokey_pki::client_config_for(
        &net.ca.cert_der(),
        Some((chain, duokey_pki::identity_private_key_der(key))),
        duokey_pki::Role::As,
    )
    .unwrap();
    accounts_client::AccountsClient::new(duokey_pki::grpc::channel(&net.gms_url(), tls).unwrap())
}

/// A renewal request for `key` as `id`.
fn renewal(key: &IdentityKey, id: &UserId) -> RenewRequest {
    RenewRequest {
        csr_der: make_csr(key, id).unwrap(),
    }
}

/// DESIGN D34: a terminal renews its certificate with the current one, for
/// the same key (new serial, a full new lifetime); another key, no
/// certificate, or an expired one cannot renew.
#[tokio::test]
async fn a_terminal_renews_its_certificate_for_the_same_key_and_only_so() {
    let net = LocalNet::start().await;
    let alice = net.raw("alice").await;
    let id = alice.id.clone();
    let old = peer_identity(&alice.chain[0]).unwrap();
    let mut accounts = accounts_as(&net, &alice.key, alice.chain.clone());
    let renewed = accounts
        .renew(renewal(&alice.key, &id))
        .await
        .unwrap()
        .into_inner();
    let new = peer_identity(&renewed.cert_chain_der[0]).unwrap();
    assert_eq!(new.ed25519_public, old.ed25519_public, "same identity key");
    assert_eq!(new.user_id, old.user_id);
    assert_ne!(new.serial, old.serial);
    assert!(new.not_after_unix >= old.not_after_unix);
    // The renewed certificate is served.
    let mut again = net.user_with_chain(
        id.clone(),
        alice.key.clone(),
        vec![renewed.cert_chain_der[0].clone().into()],
    );
    assert!(get_user(&mut again).await.is_ok());

    let other = IdentityKey::generate();
    let err = accounts.renew(renewal(&other, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let mut anonymous = accounts_client::AccountsClient::new(net.anonymous(&net.gms_url()));
    let err = anonymous.renew(renewal(&alice.key, &id)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let expired = expired_cert(&net, &alice.key, &id);
    let mut stale = accounts_as(&net, &alice.key, vec![expired]);
    assert!(
        stale.renew(renewal(&alice.key, &id)).await.is_err(),
        "an expired certificate renewed"
    );
}

#[tokio::test]
async fn only_the_gms_certificate_may_set_members() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    let grant = alice.create_group("proj").await;
    let chain = alice_chain(&mut alice).await;
    let mut sync = membership_sync_client::MembershipSyncClient::new(
        duokey_pki::grpc::channel(&net.cs_url(), net.tls_as(&alice.key, chain)).unwrap(),
    );
    let err = sync
        .set_members(SetMembersRequest {
            group_id: grant.group_id.clone(),
            rn2_version: 99,
            members: vec!["alice".into(), "mallory".into()],
            deleted: false,
            retention_secs: 60,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

async fn alice_chain(
    alice: &mut RawUser,
) -> Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>> {
    get_user(alice)
        .await
        .unwrap()
        .cert_chain_der
        .into_iter()
        .map(Into::into)
        .collect()
}

/// `Enroll` with `token` and `csr_der` at `accounts`.
async fn enroll(
    accounts: &mut accounts_client::AccountsClient<tonic::transport::Channel>,
    token: &str,
    csr_der: Vec<u8>,
) -> Result<EnrollResponse, tonic::Status> {
    accounts
        .enroll(EnrollRequest {
            token: token.to_owned(),
            csr_der,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn enrolment_token_works_once_and_only_for_its_user() {
    let net = LocalNet::start().await;
    let mut accounts = accounts_client::AccountsClient::new(net.anonymous(&net.gms_url()));
    let token = net.token("alice").await;
    let key = IdentityKey::generate();
    let bob = UserId::new("bob").unwrap();
    let wrong = enroll(&mut accounts, &token, make_csr(&key, &bob).unwrap()).await;
    assert_eq!(
        wrong.unwrap_err().code(),
        Code::InvalidArgument,
        "CSR for another user refused"
    );
    let alice = UserId::new("alice").unwrap();
    let csr = make_csr(&key, &alice).unwrap();
    let ok = enroll(&mut accounts, &token, csr.clone()).await.unwrap();
    assert_eq!(ok.user_id, "alice");
    let again = enroll(&mut accounts, &token, csr.clone())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "a token works once");
    let guess = enroll(&mut accounts, "dk1-00", csr).await.unwrap_err();
    assert_eq!(guess.code(), Code::PermissionDenied);
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: how a
/// plaintext HTTP/2 (gRPC) client opens a connection.
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// What a server at `addr` answers a plaintext HTTP/2 client, until it
/// closes or 5 s pass.
async fn plaintext_answer(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(H2_OPENING).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    answer
}

/// Whether `answer` starts with an HTTP/2 SETTINGS frame: a server that
/// speaks plaintext HTTP/2.
fn is_http2(answer: &[u8]) -> bool {
    answer.len() >= 9 && answer[3] == 0x04 && answer[5..9] == [0, 0, 0, 0]
}

/// A plaintext gRPC server (the health service), for the control.
async fn plaintext_grpc_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn plaintext_http2_gets_no_http2_answer_on_any_port() {
    // Control: the probe tells a plaintext gRPC server when it meets one.
    let control = plaintext_answer(plaintext_grpc_server().await).await;
    assert!(
        is_http2(&control),
        "the probe cannot see plaintext: {control:02x?}"
    );
    // The real ports answer with silence or a TLS alert record (0x15), never
    // HTTP/2: the refusal is at the transport, before any gRPC status.
    let net = LocalNet::start().await;
    for addr in [net.node.gms_addr.unwrap(), net.node.cs_addr.unwrap()] {
        let answer = plaintext_answer(addr).await;
        assert!(!is_http2(&answer), "{addr} speaks plaintext HTTP/2");
        assert!(
            answer.first().is_none_or(|b| *b == 0x15),
            "{addr}: neither silence nor a TLS alert: {answer:02x?}"
        );
    }
}

/// A TLS connection to `addr` (as 127.0.0.1) of `client`, trusting `net`'s
/// CA (no client certificate when `None`).
async fn tls_connect(
    net: &LocalNet,
    addr: std::net::SocketAddr,
    client: Option<&RawUser>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let key = client.map(|u| {
        (
            u.chain.clone(),
            duokey_pki::identity_private_key_der(&u.key),
        )
    });
    let tls = duokey_pki::client_config(&net.ca.cert_der(), key).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// Opens TLS 1.3 to `addr` as `client` (no certificate when `None`), sends
/// the HTTP/2 opening and returns the first bytes the server answers, or the
/// error that ended the connection.
async fn tls_answer(
    net: &LocalNet,
    addr: std::net::SocketAddr,
    client: Option<&RawUser>,
) -> std::io::Result<Vec<u8>> {
    let mut s = tls_connect(net, addr, client).await?;
    s.write_all(H2_OPENING).await?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
    buf.truncate(n);
    Ok(buf)
}

#[tokio::test]
async fn the_cs_port_refuses_a_client_without_certificate_in_the_handshake() {
    // SPEC §2: the CS requires a client certificate at the TLS layer
    // (`ClientAuth::Required`); with an optional one the connection would
    // open and only the application would refuse. The GMS port serves the
    // AS too, so it lets the client in (the control: the probe sees HTTP/2
    // there) and then refuses every GMS call.
    let net = LocalNet::start().await;
    let alice = net.raw("alice").await;
    let refused = tls_answer(&net, net.node.cs_addr.unwrap(), None).await;
    let err = refused.expect_err("the CS answered a client without a certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let with_cert = tls_answer(&net, net.node.cs_addr.unwrap(), Some(&alice))
        .await
        .unwrap();
    assert!(is_http2(&with_cert), "control: {with_cert:02x?}");
    let gms_port = tls_answer(&net, net.node.gms_addr.unwrap(), None)
        .await
        .unwrap();
    assert!(is_http2(&gms_port), "control: {gms_port:02x?}");
    let mut gms =
        group_management_client::GroupManagementClient::new(net.anonymous(&net.gms_url()));
    let err = gms.list_groups(ListGroupsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

/// The certificate a port presents to `user` in a fresh handshake.
async fn presented(net: &LocalNet, addr: std::net::SocketAddr, user: &RawUser) -> Vec<u8> {
    let s = tls_connect(net, addr, Some(user)).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// DESIGN D34: a server certificate renewed into its files is
/// presented from the next handshake on, on both ports, without a restart;
/// the open connection goes on and new terminals connect. A half-replaced
/// pair (the new certificate with the old key) is refused and the current
/// pair stays in use.
#[tokio::test]
async fn a_renewed_server_certificate_is_used_without_a_restart() {
    let net = LocalNet::start().await;
    let mut alice = net.raw("alice").await;
    assert!(list_groups(&mut alice).await.is_ok());
    let (cs, gms) = (net.node.cs_addr.unwrap(), net.node.gms_addr.unwrap());
    let old = presented(&net, cs, &alice).await;
    assert_eq!(old, net.node.certificate.leaf());
    assert!(!net.node.certificate.reload().unwrap(), "unchanged files");

    let ca = Ca::load(&net.server_dir().join("ca")).unwrap();
    let hosts = ["localhost", "127.0.0.1"].map(String::from);
    let roles = [
        duokey_pki::Role::As,
        duokey_pki::Role::Gms,
        duokey_pki::Role::Cs,
    ];
    let fresh = ca.issue_server(&hosts, &roles, 30).unwrap();
    let staged = tempfile::tempdir().unwrap();
    fresh.save(staged.path(), "server").unwrap();
    let new = fresh.chain()[0].to_vec();
    assert_ne!(new, old);

    std::fs::copy(
        staged.path().join("server.pem"),
        net.server_dir().join("server.pem"),
    )
    .unwrap();
    let err = net.node.certificate.reload().unwrap_err();
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    assert_eq!(
        presented(&net, cs, &alice).await,
        old,
        "the old pair stays in use"
    );

    std::fs::copy(
        staged.path().join("server.key"),
        net.server_dir().join("server.key"),
    )
    .unwrap();
    assert!(net.node.certificate.reload().unwrap());
    assert_eq!(presented(&net, cs, &alice).await, new);
    assert_eq!(presented(&net, gms, &alice).await, new);
    assert!(
        list_groups(&mut alice).await.is_ok(),
        "the open connection goes on"
    );
    let mut bob = net.raw("bob").await;
    assert!(get_user(&mut bob).await.is_ok(), "a new terminal connects");
}
