//! gRPC over Duokey's TLS (SPEC §5: "gRPC over TLS 1.3 (tonic + rustls)").
//!
//! tonic's own TLS settings cannot take a custom client-certificate verifier,
//! so Duokey terminates TLS itself with the configurations of
//! [`crate::server_config`] / [`crate::client_config`]:
//!
//! * [`tls_incoming`] turns a TCP listener into the connection stream of
//!   tonic's `Server::serve_with_incoming(_shutdown)`; handlers still get the
//!   peer's certificates with `request.peer_certs()` (feed the leaf to
//!   [`crate::peer_identity`]);
//! * [`channel`] makes a tonic [`Channel`] to an `https://` URL that connects
//!   with a Duokey client configuration.

use crate::tls::ALPN_H2;
use crate::{PeerIdentity, RevocationList, Role, peer_identity};
use duokey_crypto::{PublicIdentity, UserId};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// Longest time a client may take to complete the TLS handshake (SPEC §7.7:
/// slow or silent clients must not hold connection slots).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the TCP connection and TLS handshake (SPEC §5).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive ping interval of client channels, so long `Watch` and
/// `Subscribe` streams notice dead connections (SPEC §4.5, §5).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a refused connection is kept open for its client to read why.
const LINGER: Duration = Duration::from_secs(1);
/// How often an open connection's certificate is checked against the
/// revocation list (which servers reload every 10 s).
pub const REVOCATION_CHECK: Duration = Duration::from_secs(1);

/// One accepted TLS connection (SPEC §2); holds its connection slot until it is
/// closed.
#[derive(Debug)]
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    /// Fires when the client's certificate is revoked.
    kill: Option<oneshot::Receiver<()>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        metrics::gauge!("duokey_open_connections").decrement(1.0);
    }
}

impl TlsConnection {
    /// Ends the connection with an error once `kill` fires (its certificate
    /// was revoked): hyper's next read or write fails and every call and
    /// stream on it ends.
    fn killed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let kill = self.kill.as_mut()?;
        match Pin::new(kill).poll(cx) {
            Poll::Ready(Ok(())) => Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client's certificate was revoked",
            )),
            // The watcher is gone (the list has no file to watch): nothing to do.
            Poll::Ready(Err(_)) => {
                self.kill = None;
                None
            }
            Poll::Pending => None,
        }
    }

    /// The verified certificate chain of the client, if it sent one (SPEC §2).
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        self.inner.get_ref().1.peer_certificates()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = <tokio_rustls::server::TlsStream<TcpStream> as Connected>::ConnectInfo;

    /// tonic's TLS connection info, so `request.peer_certs()` works (SPEC §2).
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts TLS connections on `listener` with `config` (SPEC §2, §5) and yields
/// them to tonic's `serve_with_incoming(_shutdown)`.
///
/// Handshakes run concurrently, each limited to [`HANDSHAKE_TIMEOUT`]; refused
/// handshakes (no, foreign, expired or revoked certificate, TLS 1.2, plaintext)
/// are logged and never reach tonic. At most `max_connections` connections
/// (including those still in their handshake) are open at a time; beyond that
/// the listener waits (the kernel queues new connections). Accepting stops
/// when the stream is dropped, e.g. when the server shuts down.
///
/// Must be called within a tokio runtime.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    max_connections: usize,
    revoked: Arc<RevocationList>,
) -> impl Stream<Item = Result<TlsConnection, io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(
        max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                () = tx.closed() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                () = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let revoked = revoked.clone();
            tokio::spawn(async move {
                let handshake = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(inner)) => {
                        metrics::counter!("duokey_connections_total").increment(1);
                        metrics::gauge!("duokey_open_connections").increment(1.0);
                        let serial = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|leaf| crate::peer_identity(leaf).ok())
                            .map(|p| p.serial);
                        let kill = serial.map(|s| watch_revocation(s, revoked, peer));
                        let conn = TlsConnection {
                            inner,
                            kill,
                            _slot: slot,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err((e, tcp))) => {
                        metrics::counter!("duokey_refusals_total", "reason" => "tls_handshake")
                            .increment(1);
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                        linger(tcp).await;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a refused connection so that the client reads the TLS alert that
/// says why (e.g. `CertificateRevoked`): closing a socket whose client has
/// already sent data would reset it, and a reset drops the alert unread.
/// So: end our side, then read and discard until the client closes, at
/// most [`LINGER`].
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Watches a connection's client certificate `serial` (SPEC §2: a revoked
/// certificate MUST be refused — also on a connection opened before the
/// revocation): checks the shared list every [`REVOCATION_CHECK`] and fires
/// the returned receiver once the serial is on it. Stops when the
/// connection is gone.
fn watch_revocation(
    serial: Vec<u8>,
    revoked: Arc<RevocationList>,
    peer: SocketAddr,
) -> oneshot::Receiver<()> {
    let (fire, kill) = oneshot::channel();
    tokio::spawn(async move {
        let mut fire = fire;
        loop {
            tokio::select! {
                () = fire.closed() => return,
                () = tokio::time::sleep(REVOCATION_CHECK) => {}
            }
            if revoked.is_revoked(&serial) {
                metrics::counter!("duokey_refusals_total", "reason" => "revoked_connection")
                    .increment(1);
                tracing::info!(%peer, serial = %hex::encode(&serial), "connection closed: its certificate was revoked");
                let _ = fire.send(());
                return;
            }
        }
    });
    kill
}

/// A lazily connecting tonic channel to `url` (`https://host:port`) over
/// Duokey TLS with `config` (SPEC §2, §5): the server is verified against the
/// configuration's CA and its name against `host`.
///
/// The TLS is done by this connector, not by tonic, so the channel itself
/// talks to an `http://` endpoint internally; the wire is TLS 1.3 all the same.
pub fn channel(url: &str, config: Arc<ClientConfig>) -> Result<Channel, Status> {
    channel_from(url, config, None)
}

/// Like [`channel`], but connections leave from the local address `local`
/// when given (hosts with several addresses; tests that play clients from
/// different addresses on loopback).
pub fn channel_from(
    url: &str,
    config: Arc<ClientConfig>,
    local: Option<IpAddr>,
) -> Result<Channel, Status> {
    channel_any_from(&[url.to_owned()], config, local)
}

/// A lazily connecting channel to the first of `urls` (the nodes of one
/// role in a cluster, DESIGN D49) that answers: each connection attempt
/// starts at the node that last worked (a random one at first, to spread
/// the terminals), and a node that failed is left alone for a cool-down
/// that doubles from 1 s to 30 s, unless every node is cooling down. Calls
/// on a connection that breaks fail with `UNAVAILABLE`; the next call
/// connects to the next node.
pub fn channel_any(urls: &[String], config: Arc<ClientConfig>) -> Result<Channel, Status> {
    channel_any_from(urls, config, None)
}

fn channel_any_from(
    urls: &[String],
    config: Arc<ClientConfig>,
    local: Option<IpAddr>,
) -> Result<Channel, Status> {
    let targets = urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<Result<Vec<_>, Status>>()?;
    let first = targets
        .first()
        .ok_or_else(|| Status::invalid_argument("no server URL given"))?;
    if !config.alpn_protocols.iter().any(|p| p == ALPN_H2) {
        return Err(Status::invalid_argument(
            "the TLS client configuration must offer ALPN h2",
        ));
    }
    let endpoint = Endpoint::from_shared(format!("http://{}", first.authority))
        .map_err(|e| Status::invalid_argument(format!("invalid server URL {}: {e}", first.url)))?
        // Each node gets CONNECT_TIMEOUT (see `Failover::connect_to`).
        .connect_timeout(CONNECT_TIMEOUT * u32::try_from(targets.len()).unwrap_or(u32::MAX))
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_while_idle(true);
    let nodes = Arc::new(Failover::new(targets, TlsConnector::from(config), local));
    let service = tower::service_fn(move |_: Uri| {
        let nodes = nodes.clone();
        async move { nodes.connect().await.map(TokioIo::new) }
    });
    Ok(endpoint.connect_with_connector_lazy(service))
}

/// The URLs of one role's servers: one, or several nodes of a cluster
/// (DESIGN D49). Configuration files take a string or a list of strings, and
/// a single URL is written back as a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "OneOrMany", into = "OneOrMany")]
pub struct Urls(Vec<String>);

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Urls {
    fn from(v: OneOrMany) -> Urls {
        match v {
            OneOrMany::One(u) => Urls(vec![u]),
            OneOrMany::Many(us) => Urls(us),
        }
    }
}

impl From<Urls> for OneOrMany {
    fn from(u: Urls) -> OneOrMany {
        match <[String; 1]>::try_from(u.0) {
            Ok([one]) => OneOrMany::One(one),
            Err(many) => OneOrMany::Many(many),
        }
    }
}

impl Urls {
    /// One URL.
    pub fn one(url: impl Into<String>) -> Urls {
        Urls(vec![url.into()])
    }

    /// Several.
    pub fn many(urls: Vec<String>) -> Urls {
        Urls(urls)
    }

    /// All of them, in the configured order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether each is an `https://` URL with a host and there is at least
    /// one; the error says which is not.
    pub fn check(&self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Err(Status::invalid_argument("an empty list of server URLs"));
        }
        self.0.iter().try_for_each(|u| Target::parse(u).map(drop))
    }
}

impl std::fmt::Display for Urls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// One server of a role, from its `https://` URL.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    authority: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Status> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Status::invalid_argument(format!("invalid server URL {url:?}: {e}")))?;
        if uri.scheme_str() != Some("https") {
            return Err(Status::invalid_argument(format!(
                "server URL {url:?} must start with https:// (Duokey speaks only TLS)"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Status::invalid_argument(format!("server URL {url:?} has no host")))?
            .clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid server name {host:?}: {e}")))?;
        Ok(Target {
            url: url.to_owned(),
            authority: authority.to_string(),
            port: authority.port_u16().unwrap_or(443),
            host,
            server_name,
        })
    }
}

/// Shortest and longest time a node that failed is left alone.
const COOL_DOWN: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// The servers of one channel and which of them to try first.
struct Failover {
    targets: Vec<Target>,
    tls: TlsConnector,
    local: Option<IpAddr>,
    state: std::sync::Mutex<FailoverState>,
}

struct FailoverState {
    /// The node to try first.
    preferred: usize,
    /// Per node: until when it is left alone, and its next cool-down.
    cooling: Vec<(Option<tokio::time::Instant>, Duration)>,
}

impl Failover {
    fn new(targets: Vec<Target>, tls: TlsConnector, local: Option<IpAddr>) -> Failover {
        let n = targets.len();
        let preferred = if n > 1 { rand::random_range(0..n) } else { 0 };
        Failover {
            targets,
            tls,
            local,
            state: std::sync::Mutex::new(FailoverState {
                preferred,
                cooling: vec![(None, COOL_DOWN.0); n],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailoverState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The nodes in the order to try them now: from the preferred one on,
    /// those cooling down last.
    fn order(&self) -> Vec<usize> {
        let state = self.lock();
        let now = tokio::time::Instant::now();
        let n = self.targets.len();
        let mut order: Vec<usize> = (0..n).map(|i| (state.preferred + i) % n).collect();
        order.sort_by_key(|i| state.cooling[*i].0.is_some_and(|until| until > now));
        order
    }

    fn worked(&self, i: usize) {
        let mut state = self.lock();
        state.preferred = i;
        state.cooling[i] = (None, COOL_DOWN.0);
    }

    fn failed(&self, i: usize) {
        let mut state = self.lock();
        let (_, next) = state.cooling[i];
        state.cooling[i] = (
            Some(tokio::time::Instant::now() + next),
            (next * 2).min(COOL_DOWN.1),
        );
    }

    /// A TLS connection to the first node that answers.
    async fn connect(&self) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut last = io::Error::new(io::ErrorKind::NotConnected, "no server");
        for i in self.order() {
            let t = &self.targets[i];
            match self.connect_to(t).await {
                Ok(tls) => {
                    self.worked(i);
                    return Ok(tls);
                }
                Err(e) => {
                    if self.targets.len() > 1 {
                        tracing::debug!(url = %t.url, error = %e, "server unreachable, trying the next");
                    }
                    self.failed(i);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn connect_to(
        &self,
        t: &Target,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let attempt = async {
            let tcp = connect_tcp(&t.host, t.port, self.local).await?;
            tcp.set_nodelay(true)?;
            self.tls.connect(t.server_name.clone(), tcp).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, format!("{} did not answer", t.url))
            })?
    }
}

/// A TCP connection to `host:port`, from `local` if given.
async fn connect_tcp(host: &str, port: u16, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect((host, port)).await;
    };
    let server = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{host} has no address of the same family as {local}"),
            )
        })?;
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(server).await
}

/// A verified caller: who made a request, from its TLS client certificate.
/// The caller's user id always comes from here, never from a request field.
#[derive(Debug, Clone)]
pub struct Caller {
    /// What the leaf certificate says.
    pub peer: PeerIdentity,
    /// The presented chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
}

impl Caller {
    /// The caller of `req`; `UNAUTHENTICATED` without a usable certificate.
    pub fn of<T>(req: &Request<T>) -> Result<Caller, Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("a client certificate from the organisation's CA is required")
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let peer = peer_identity(leaf)
            .map_err(|e| Status::unauthenticated(format!("unusable client certificate: {e}")))?;
        Ok(Caller {
            peer,
            chain: certs.iter().map(|c| c.to_vec()).collect(),
        })
    }

    /// The terminal's user id and certified key; `PERMISSION_DENIED` for a
    /// server certificate.
    pub fn terminal(&self) -> Result<(UserId, PublicIdentity), Status> {
        let denied = || Status::permission_denied("this call needs a terminal (user) certificate");
        let user = self
            .peer
            .user_id
            .clone()
            .filter(|_| self.peer.is_terminal())
            .ok_or_else(denied)?;
        let key = self
            .peer
            .ed25519_public
            .as_ref()
            .and_then(|k| PublicIdentity::from_bytes(k).ok())
            .ok_or_else(denied)?;
        Ok((user, key))
    }

    /// `PERMISSION_DENIED` unless the certificate carries `role`.
    pub fn require_role(&self, role: Role) -> Result<(), Status> {
        if self.peer.has_role(role) {
            Ok(())
        } else {
            metrics::counter!("duokey_refusals_total", "reason" => "wrong_role").increment(1);
            Err(Status::permission_denied(format!(
                "only a {} certificate may make this call",
                role.name()
            )))
        }
    }
}
