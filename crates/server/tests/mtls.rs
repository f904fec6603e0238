//! SPEC §2, issue 3 point 2: every refused-certificate case, on the real ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use duokey_crypto::{IdentityKey, UserId};
use duokey_pki::{Ca, RevocationList, Validity, make_csr, peer_identity};
use duokey_proto::*;
use support::TestNet;
use tonic::Code;

async fn list_groups(user: &mut support::TestUser) -> Result<ListGroupsResponse, tonic::Status> {
    user.gms
        .list_groups(ListGroupsRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn get_user(user: &mut support::TestUser) -> Result<GetUserResponse, tonic::Status> {
    user.cs
        .get_user(GetUserRequest {
            user_id: user.id.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn enrolled_terminal_is_served_on_both_ports() {
    let net = TestNet::start().await;
    let mut alice = net.enroll("alice").await;
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
async fn no_client_certificate_is_refused() {
    let net = TestNet::start().await;
    let mut cs = communication_client::CommunicationClient::new(net.anonymous(&net.cs_url()));
    assert!(
        cs.get_user(GetUserRequest {
            user_id: "alice".into()
        })
        .await
        .is_err(),
        "CS port requires a certificate"
    );
    // The GMS port serves the AS, so TLS lets the client in, but no GMS call.
    let mut gms =
        group_management_client::GroupManagementClient::new(net.anonymous(&net.gms_url()));
    let err = gms.list_groups(ListGroupsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn certificate_of_another_ca_is_refused() {
    let net = TestNet::start().await;
    let rogue = Ca::generate("Rogue").unwrap();
    let id = UserId::new("alice").unwrap();
    let key = IdentityKey::generate();
    let cert = rogue
        .sign_csr(&make_csr(&key, &id).unwrap(), &id, 30)
        .unwrap();
    let mut mallory = net.user_with_chain(id, key, vec![cert]);
    assert!(list_groups(&mut mallory).await.is_err());
    assert!(get_user(&mut mallory).await.is_err());
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let net = TestNet::start().await;
    let id = UserId::new("alice").unwrap();
    let key = IdentityKey::generate();
    let now = (support::now_ms() / 1000) as i64;
    let validity = Validity::from_unix(now - 7200, now - 3600).unwrap();
    let cert = net
        .ca
        .sign_csr_with_validity(&make_csr(&key, &id).unwrap(), &id, validity)
        .unwrap();
    let mut old = net.user_with_chain(id, key, vec![cert]);
    assert!(list_groups(&mut old).await.is_err());
    assert!(get_user(&mut old).await.is_err());
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_reload_without_restart() {
    let net = TestNet::start().await;
    let mut bob = net.enroll("bob").await;
    let id = UserId::new("carol").unwrap();
    let key = IdentityKey::generate();
    let cert = net
        .ca
        .sign_csr(&make_csr(&key, &id).unwrap(), &id, 30)
        .unwrap();
    let serial = peer_identity(&cert).unwrap().serial;
    let mut carol = net.user_with_chain(id.clone(), key.clone(), vec![cert.clone()]);
    assert!(
        get_user(&mut carol).await.is_ok(),
        "served before revocation"
    );
    let list = net.cfg.path(net.cfg.tls.revocation_list.as_ref().unwrap());
    RevocationList::revoke_in_file(&list, &serial).unwrap();
    net.node.revocations.reload().unwrap();
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

#[tokio::test]
async fn only_the_gms_certificate_may_set_members() {
    let net = TestNet::start().await;
    let mut alice = net.enroll("alice").await;
    let grant = alice.create_group("proj").await;
    let mut sync = membership_sync_client::MembershipSyncClient::new(
        duokey_pki::grpc::channel(
            &net.cs_url(),
            duokey_pki::client_config(
                &net.ca.cert_der(),
                Some((
                    alice_chain(&mut alice).await,
                    duokey_pki::identity_private_key_der(&alice.key),
                )),
            )
            .unwrap(),
        )
        .unwrap(),
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
    alice: &mut support::TestUser,
) -> Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>> {
    get_user(alice)
        .await
        .unwrap()
        .cert_chain_der
        .into_iter()
        .map(Into::into)
        .collect()
}

#[tokio::test]
async fn enrolment_token_works_once_and_only_for_its_user() {
    let net = TestNet::start().await;
    let mut accounts = accounts_client::AccountsClient::new(net.anonymous(&net.gms_url()));
    let token = net.token("alice").await;
    let key = IdentityKey::generate();
    let bob = UserId::new("bob").unwrap();
    let wrong = accounts
        .enroll(EnrollRequest {
            token: token.clone(),
            csr_der: make_csr(&key, &bob).unwrap(),
        })
        .await;
    assert_eq!(
        wrong.unwrap_err().code(),
        Code::InvalidArgument,
        "CSR for another user refused"
    );
    let alice = UserId::new("alice").unwrap();
    let csr = make_csr(&key, &alice).unwrap();
    let ok = accounts
        .enroll(EnrollRequest {
            token: token.clone(),
            csr_der: csr.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.user_id, "alice");
    let again = accounts
        .enroll(EnrollRequest {
            token,
            csr_der: csr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "a token works once");
    let guess = accounts
        .enroll(EnrollRequest {
            token: "dk1-00".into(),
            csr_der: csr,
        })
        .await
        .unwrap_err();
    assert_eq!(guess.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn plaintext_grpc_is_refused_on_every_port() {
    let net = TestNet::start().await;
    for addr in [net.node.gms_addr.unwrap(), net.node.cs_addr.unwrap()] {
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut gms = group_management_client::GroupManagementClient::new(plain.clone());
        assert!(
            gms.list_groups(ListGroupsRequest {}).await.is_err(),
            "plaintext refused on {addr}"
        );
        let mut cs = communication_client::CommunicationClient::new(plain);
        assert!(
            cs.get_user(GetUserRequest {
                user_id: "alice".into()
            })
            .await
            .is_err(),
            "plaintext refused on {addr}"
        );
    }
}
