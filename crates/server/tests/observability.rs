//! Running a node (PROTOCOL §6.1, DESIGN D47, docs/CONFIG.md): `run
//! --config` with health, reflection, Prometheus metrics and a graceful stop
//! on SIGTERM, on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duokey_pki::grpc::channel;
use duokey_server::dev;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use tokio_stream::StreamExt;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process, killed if the test fails before it stops it.
struct Killed(std::process::Child);

impl std::ops::Deref for Killed {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Killed {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Prometheus text of the server's metrics port.
fn scrape(addr: &str) -> String {
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test]
async fn health_reflection_metrics_and_graceful_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = dev::prepare(dir.path(), "127.0.0.1:0", "127.0.0.1:0").unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    cfg.metrics_addr = Some(metrics.clone());
    cfg.data_dir = ".".into();
    let path = dir.path().join("prod.toml");
    cfg.save(&path).unwrap();

    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_duokey-server"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let cs = words[words.iter().rposition(|w| *w == "on").unwrap() + 1].trim_end_matches(',');

    // The server's own certificate is a valid client certificate of the CA.
    let ca = duokey_pki::pem::load_cert(&dir.path().join("ca/ca.pem")).unwrap();
    let chain = duokey_pki::pem::load_certs(&dir.path().join("server.pem")).unwrap();
    let key = duokey_pki::pem::load_key(&dir.path().join("server.key")).unwrap();
    let tls = duokey_pki::client_config(&ca, Some((chain, key))).unwrap();
    let ch = channel(&format!("https://{cs}"), tls).unwrap();

    let mut health = HealthClient::new(ch.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "duokey.v1.Communication".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(ch);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(20), answers.next())
        .await
        .expect("no reflection answer within 20 s")
        .expect("the reflection stream ended")
        .unwrap();
    let services = match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    assert!(
        services.iter().any(|s| s == "duokey.v1.Communication"),
        "{services:?}"
    );

    // Traffic a dashboard watches: a group created, a live stream, a post
    // delivered to it, and a refused post.
    let gms = words[words.iter().position(|w| *w == "on").unwrap() + 1].trim_end_matches(',');
    let net = duokey_testkit::Remote::attach(dir.path(), gms, cs);
    let mut alice = net.raw("alice").await;
    let g = alice.create_group("proj").await;
    alice.cs_ready(&g.group_id).await;
    let mut live = alice
        .cs
        .subscribe(duokey_proto::SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    alice.post(&g.group_id, "watched").await.unwrap();
    duokey_testkit::next_within(&mut live, "the delivery")
        .await
        .unwrap();
    let refused = alice.post(&[9; 16], "not my group").await.unwrap_err();
    let gid = duokey_crypto::GroupId::from_slice(&g.group_id).unwrap();
    alice.rotate_rn1(&gid).await;

    let body = scrape(&metrics);
    let refused_series = format!(
        "duokey_rpc_requests_total{{method=\"Communication/Post\",code=\"{:?}\"}} 1",
        refused.code()
    );
    for series in [
        "duokey_connections_total",
        "duokey_rpc_requests_total{method=\"Communication/Post\",code=\"Ok\"} 1",
        refused_series.as_str(),
        "duokey_rpc_requests_total{method=\"Health/Check\",code=\"Ok\"} 1",
        "duokey_rpc_seconds_bucket{method=\"Communication/Post\",le=\"+Inf\"} 2",
        "duokey_cs_posts_total 1",
        "duokey_cs_deliveries_total 1",
        "duokey_cs_post_seconds_count 1",
        "duokey_cs_delivery_seconds_count 1",
        "duokey_cs_post_batch_bucket{le=\"1\"} 1",
        "duokey_cs_subscribers 1",
        "duokey_db_seconds_count{op=\"cs_append_batch\"} 1",
        "duokey_db_seconds_count{op=\"gms_apply_change\"} 1",
        "duokey_db_seconds_count{op=\"gms_create_group\"} 1",
        "duokey_gms_rotations_total{cause=\"forced\"} 1",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }

    // A client still holding an open stream must not keep the server alive.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("shutting down")),
        "JSON logs: {logs}"
    );
}

#[test]
fn a_second_server_on_the_same_directory_is_refused_and_changes_nothing() {
    // DESIGN D31 (one server per data directory): the second
    // `duokey-server dev` on a directory in use names the running one and
    // leaves its databases and client.toml alone.
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_duokey-server"))
            .args([
                "dev",
                "--gms-addr",
                "127.0.0.1:0",
                "--cs-addr",
                "127.0.0.1:0",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let mut line = String::new();
    BufReader::new(first.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("Duokey server"), "{line}");
    let client = dir.path().join("client.toml");
    let before = std::fs::read_to_string(&client).unwrap();

    // Bounded: a second server that does start must fail the test, not hang it.
    let mut second = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = first.kill();
            panic!("the second server is still running after 20 s: it was not refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second server ran: {err}");
    assert!(
        err.contains("another duokey-server") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&client).unwrap(), before);
    let _ = first.kill();
    let _ = first.wait();
}
