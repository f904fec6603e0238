//! Shared helpers of the TLS integration tests: a real tokio-rustls server on
//! 127.0.0.1 and a client doing one round trip.
#![allow(dead_code)]
#![allow(clippy::expect_used, clippy::cast_possible_truncation)]
#![allow(clippy::cast_sign_loss)]
#![allow(clippy::cast_possible_wrap)] // a test fails by panicking

use duokey_crypto::{IdentityKey, UserId};
use duokey_pki::rustls::{ClientConfig, ServerConfig};
use duokey_pki::rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use duokey_pki::tokio_rustls::{TlsAcceptor, TlsConnector};
use duokey_pki::{Ca, identity_private_key_der, make_csr, peer_identity};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

/// Upper bound for one exchange, so a bug cannot hang the test suite.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A TLS echo server on 127.0.0.1: reads `ping!`, answers `pong <who>` where
/// `<who>` is the peer identity it saw, then closes.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Why the server refused handshakes, one message per refused connection.
    pub refusals: UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// The reason of the next refused handshake (waits for it, bounded by [`LIMIT`]).
    pub async fn next_refusal(&mut self) -> String {
        tokio::time::timeout(LIMIT, self.refusals.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "no refusal reported".to_string())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn_server(config: Arc<ServerConfig>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(config);
    let (tx, refusals) = unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(e.to_string());
                        return;
                    }
                };
                let mut buf = [0u8; 5];
                if tls.read_exact(&mut buf).await.is_err() || &buf != b"ping!" {
                    return;
                }
                let who = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    None => "anonymous".to_string(),
                    Some(cert) => match peer_identity(cert) {
                        Ok(id) => match id.user_id {
                            Some(u) => format!("user {u}"),
                            None => format!(
                                "server {}",
                                id.roles
                                    .iter()
                                    .map(|r| r.name())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            ),
                        },
                        Err(e) => format!("bad identity {e}"),
                    },
                };
                let _ = tls.write_all(format!("pong {who}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TestServer {
        addr,
        refusals,
        task,
    }
}

/// Connects to `addr` as `server_name`, sends `ping!` and returns the answer.
/// Any failure (handshake, refused certificate surfacing on the first read,
/// closed connection) is an `Err`.
pub async fn exchange(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
) -> Result<String, String> {
    let run = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("tcp: {e}"))?;
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        if conn.alpn_protocol() != Some(b"h2".as_slice()) {
            return Err("ALPN h2 not negotiated".to_string());
        }
        if conn.protocol_version() != Some(duokey_pki::rustls::ProtocolVersion::TLSv1_3) {
            return Err("not TLS 1.3".to_string());
        }
        tls.write_all(b"ping!")
            .await
            .map_err(|e| format!("write: {e}"))?;
        tls.flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let answer = String::from_utf8(answer).map_err(|e| e.to_string())?;
        if !answer.starts_with("pong ") {
            return Err(format!("no answer (got {answer:?})"));
        }
        Ok(answer.trim_end().trim_start_matches("pong ").to_string())
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .map_err(|_| "timed out".to_string())?
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("user id")
}

/// A terminal enrolled at `ca` the way the real flow does it: CSR with the
/// identity key, signed by the CA; returns the client chain and key.
pub fn terminal(ca: &Ca, name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let identity = IdentityKey::generate();
    let u = user(name);
    let csr = make_csr(&identity, &u).expect("csr");
    let cert = ca.sign_csr(&csr, &u, 30).expect("sign");
    (vec![cert], identity_private_key_der(&identity))
}
