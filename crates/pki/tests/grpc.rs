//! gRPC (tonic) over Duokey TLS (SPEC §2, §5): a real tonic server fed by
//! `grpc::tls_incoming`, real tonic clients from `grpc::channel`; handlers see
//! the verified client certificate through `request.peer_certs()`.

mod common;

use common::terminal;
use duokey_pki::grpc::{channel, tls_incoming};
use duokey_pki::{
    Ca, ClientAuth, RevocationList, Role, client_config, peer_identity, server_config,
};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Code, Request, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Lets only Alice through, so the test proves handlers see the certificate.
fn only_alice(req: Request<()>) -> Result<Request<()>, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("empty chain"))?;
    let id = peer_identity(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    match id.user_id {
        Some(u) if u.as_str() == "alice@example.org" => Ok(req),
        _ => Err(Status::permission_denied("not alice")),
    }
}

async fn check(url: &str, config: Arc<duokey_pki::rustls::ClientConfig>) -> Result<i32, Status> {
    let mut client = HealthClient::new(channel(url, config)?);
    let answer = tokio::time::timeout(
        common::LIMIT,
        client.check(HealthCheckRequest {
            service: "duokey.test".into(),
        }),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("test timeout"))??;
    Ok(answer.into_inner().status)
}

#[tokio::test]
async fn tonic_round_trip_with_client_certificates() {
    let ca = Ca::generate("Test Org").expect("ca");
    let server = ca
        .issue_server(
            &["127.0.0.1".to_string(), "localhost".to_string()],
            &[Role::Cs],
            30,
        )
        .expect("server cert");
    let config = server_config(
        &ca.cert_der(),
        server.chain(),
        server.key_der.clone_key(),
        ClientAuth::Required,
        Arc::new(RevocationList::empty()),
    )
    .expect("server config");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("duokey.test", ServingStatus::Serving)
        .await;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(health, only_alice))
            .serve_with_incoming_shutdown(
                tls_incoming(listener, config, 16, Arc::new(RevocationList::empty())),
                async {
                    let _ = stopped.await;
                },
            ),
    );

    let ca_der = ca.cert_der();
    let alice = client_config(&ca_der, Some(terminal(&ca, "alice@example.org"))).expect("cfg");
    let bob = client_config(&ca_der, Some(terminal(&ca, "bob@example.org"))).expect("cfg");
    let anonymous = client_config(&ca_der, None).expect("cfg");
    let serving_status = ServingStatus::Serving as i32;

    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{port}");
        assert_eq!(check(&url, alice.clone()).await.ok(), Some(serving_status));
    }
    let url = format!("https://127.0.0.1:{port}");
    // Bob's certificate is valid: the call reaches the handler, which refuses him.
    assert_eq!(
        check(&url, bob).await.map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
    // Without a certificate the TLS layer refuses the connection.
    assert!(check(&url, anonymous).await.is_err());
    // Only https:// URLs are accepted.
    assert_eq!(
        check(&format!("http://127.0.0.1:{port}"), alice.clone())
            .await
            .map_err(|s| s.code()),
        Err(Code::InvalidArgument)
    );

    let _ = stop.send(());
    serving
        .await
        .expect("server task")
        .expect("server ends cleanly");
    // The listener is closed after shutdown.
    assert!(check(&url, alice).await.is_err());
}
