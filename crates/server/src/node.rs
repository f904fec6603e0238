//! Starting and stopping the roles of one process.

use crate::Error;
use crate::config::ServerConfig;
use duokey_accounts::AccountServer;
use duokey_cs::{Cs, CsConfig};
use duokey_gms::{Gms, GmsConfig};
use duokey_pki::clock::Clock;
use duokey_pki::grpc::{TlsConnection, Urls, channel_any, tls_incoming};
use duokey_pki::{Ca, ClientAuth, RevocationList, Role};
use duokey_proto::membership_sync_client::MembershipSyncClient;
use duokey_storage::{AsStore, CsStore, GmsStore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Server;

/// How often the revocation list and the server's certificate files are re-read.
const TLS_RELOAD: Duration = Duration::from_secs(10);
/// HTTP/2 streams one connection may hold open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// How long a shutdown waits for running calls.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often expired grants and envelopes are purged.
const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Starts the roles of a configuration.
#[derive(Debug)]
pub struct Node;

/// A running process: its bound addresses and a way to stop it.
#[derive(Debug)]
pub struct RunningNode {
    /// Where the GMS (and AS) listen, if run here.
    pub gms_addr: Option<SocketAddr>,
    /// Where the CS listens, if run here.
    pub cs_addr: Option<SocketAddr>,
    /// The GMS, if run here (tests and tools drive its scheduler and database).
    pub gms: Option<Gms>,
    /// The CS, if run here.
    pub cs: Option<Cs>,
    /// The revocation list the ports consult (reloaded from its file every 10 s).
    pub revocations: Arc<RevocationList>,
    /// The certificate the ports present (reloaded from its files every 10 s).
    pub certificate: Arc<ServerCertificate>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningNode {
    /// Stops accepting, ends the long-lived `Watch` and `Subscribe`
    /// streams, lets running calls finish for up to [`SHUTDOWN_GRACE`],
    /// then ends what is left and returns. Every
    /// acknowledged post is already on disk, so cutting a stream loses nothing.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // Streams never end on their own: end them now, so that the
        // shutdown waits only for calls that are running.
        if let Some(cs) = &self.cs {
            cs.close_streams();
        }
        if let Some(gms) = &self.gms {
            gms.close_streams();
        }
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::info!("closing the remaining streams");
            self.tasks.shutdown().await;
        }
    }
}

/// The node's TLS material: the CA, its own certificate (replaceable while
/// it runs) and the revocation list.
struct Tls {
    ca: duokey_pki::rustls_pki_types::CertificateDer<'static>,
    certificate: Arc<ServerCertificate>,
    revoked: Arc<RevocationList>,
}

impl Tls {
    fn load(cfg: &ServerConfig) -> Result<Tls, Error> {
        let revoked = match &cfg.tls.revocation_list {
            Some(p) => RevocationList::load(cfg.path(p))?,
            None => RevocationList::empty(),
        };
        Ok(Tls {
            ca: duokey_pki::pem::load_cert(&cfg.path(&cfg.tls.ca_cert))?,
            certificate: ServerCertificate::load(cfg.path(&cfg.tls.cert), cfg.path(&cfg.tls.key))?,
            revoked: Arc::new(revoked),
        })
    }

    fn server(&self, auth: ClientAuth) -> Result<Arc<duokey_pki::rustls::ServerConfig>, Error> {
        Ok(duokey_pki::server_config_live(
            &self.ca,
            self.certificate.identity.clone(),
            auth,
            self.revoked.clone(),
        )?)
    }

    /// The GMS's client to the CS (SPEC §5.4): the peer must carry the CS role.
    fn cs_client(&self) -> Result<Arc<duokey_pki::rustls::ClientConfig>, Error> {
        Ok(duokey_pki::client_config_live(
            &self.ca,
            self.certificate.identity.clone(),
            duokey_pki::Role::Cs,
        )?)
    }
}

/// What a server's certificate and key files hold: the certificate file's
/// bytes, its chain and the key.
type CertFiles = (
    Vec<u8>,
    Vec<duokey_pki::rustls_pki_types::CertificateDer<'static>>,
    duokey_pki::rustls_pki_types::PrivateKeyDer<'static>,
);

/// The node's own certificate and key files, re-read while it runs (D34):
/// a certificate renewed with `duokey-server ca issue-server` into the
/// same files is presented from the next handshake on, without a restart.
#[derive(Debug)]
pub struct ServerCertificate {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    identity: Arc<duokey_pki::LiveIdentity>,
    /// The certificate file's bytes in use (public).
    in_use: std::sync::Mutex<Vec<u8>>,
}

impl ServerCertificate {
    fn load(cert: std::path::PathBuf, key: std::path::PathBuf) -> Result<Arc<Self>, Error> {
        let (bytes, chain, private) = Self::read(&cert, &key)?;
        Ok(Arc::new(ServerCertificate {
            identity: duokey_pki::LiveIdentity::new(chain, private)?,
            cert,
            key,
            in_use: std::sync::Mutex::new(bytes),
        }))
    }

    /// The certificate file's bytes, its chain and the key.
    fn read(cert: &std::path::Path, key: &std::path::Path) -> Result<CertFiles, Error> {
        let bytes = std::fs::read(cert).map_err(|e| {
            Error::Config(format!(
                "cannot read the server certificate {}: {e}",
                cert.display()
            ))
        })?;
        let chain = duokey_pki::pem::load_certs(cert)?;
        let private = duokey_pki::pem::load_key(key)?;
        Ok((bytes, chain, private))
    }

    /// Re-reads the files; `Ok(true)` when a new certificate is in use. A
    /// certificate whose key file does not match yet (the files are being
    /// replaced one after the other) is an error, and the current pair
    /// stays in use until the next reload.
    pub fn reload(&self) -> Result<bool, Error> {
        let (bytes, chain, private) = Self::read(&self.cert, &self.key)?;
        let mut in_use = self
            .in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *in_use == bytes {
            return Ok(false);
        }
        self.identity.replace(chain, private)?;
        *in_use = bytes;
        Ok(true)
    }

    /// The certificate presented now (DER).
    pub fn leaf(&self) -> Vec<u8> {
        self.identity.leaf().to_vec()
    }
}

/// The address this process dials its own CS by: a wildcard listen address
/// (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, bound.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
        }
        _ => bound,
    }
}

/// The AS's OPAQUE keys (DESIGN D51, PROTOCOL §5.16), in the data directory:
/// apart from the database, so that a copy of the database alone allows no
/// offline guessing of passwords. Every AS node of a cluster needs the same
/// file (copy it, as the CA key).
pub const PASSWORD_KEYS: &str = "opaque.key";

/// Reads the OPAQUE keys at `path`, making them (mode 0600) the first time.
fn password_keys(path: &Path) -> Result<duokey_crypto::password::ServerKeys, Error> {
    use duokey_crypto::password::ServerKeys;
    match std::fs::read(path) {
        Ok(bytes) => ServerKeys::from_bytes(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = ServerKeys::generate();
            duokey_pki::write_secret(path, &keys.to_bytes())?;
            tracing::info!(path = %path.display(), "created the OPAQUE keys of password accounts");
            Ok(keys)
        }
        Err(e) => Err(e.into()),
    }
}

fn db_url(cfg: &ServerConfig, url: &Option<String>, role: &str) -> Result<String, Error> {
    url.as_deref()
        .map(|u| cfg.db_url(u))
        .ok_or_else(|| Error::Config(format!("[database] {role} is required for the {role} role")))
}

async fn bind(addr: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))
}

fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(duokey_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))
}

impl Node {
    /// `duokey-server config --check`: what `start` would refuse, found
    /// without binding or opening anything — each role's settings and
    /// files, the revocation list, a certificate that goes with its key,
    /// the addresses, and how the GMS reaches the CS.
    pub fn check(cfg: &ServerConfig) -> Result<(), Error> {
        cfg.check_files()?;
        let tls = Tls::load(cfg)?;
        tls.server(ClientAuth::Required)?;
        if let Some(addr) = &cfg.metrics_addr {
            addr.parse::<SocketAddr>()
                .map_err(|_| Error::Config(format!("metrics_addr {addr} is not IP:PORT")))?;
        }
        let roles = cfg.roles()?;
        cfg.check_cluster()?;
        if roles.contains(&Role::Gms) && !roles.contains(&Role::Cs) && cfg.cs_url.is_none() {
            return Err(Error::Config(
                "cs_url is required when the GMS runs without the CS in this process".into(),
            ));
        }
        Ok(())
    }

    /// Binds every port of `cfg`, opens the databases and starts serving
    /// the roles it names: the CS on its port, the GMS and the AS on theirs.
    pub async fn start(cfg: &ServerConfig) -> Result<RunningNode, Error> {
        Self::start_with_clock(cfg, Clock::system()).await
    }

    /// [`Node::start`] with the roles reading the time from `clock` (tests
    /// move it forward, D41).
    pub async fn start_with_clock(cfg: &ServerConfig, clock: Clock) -> Result<RunningNode, Error> {
        let roles = cfg.roles()?;
        cfg.check_cluster()?;
        let (stop, stopped) = watch::channel(false);
        let bus = match &cfg.nats_url {
            Some(url) => Some(connect_bus(cfg, url).await?),
            None => None,
        };
        let mut node = Starting {
            cfg,
            clock,
            tls: Tls::load(cfg)?,
            stopped,
            tasks: JoinSet::new(),
            bus,
        };
        let (cs, cs_addr) = match roles.contains(&Role::Cs) {
            true => node.start_cs().await.map(|(cs, a)| (Some(cs), Some(a)))?,
            false => (None, None),
        };
        let (gms, gms_addr) = match roles.contains(&Role::Gms) || roles.contains(&Role::As) {
            true => node
                .start_gms_port(&roles, cs_addr)
                .await
                .map(|(gms, a)| (gms, Some(a)))?,
            false => (None, None),
        };
        node.reload_tls_files();
        let shown =
            |a: Option<SocketAddr>| a.map_or_else(|| "not run".to_owned(), |a| a.to_string());
        tracing::info!(gms = %shown(gms_addr), cs = %shown(cs_addr), "serving");
        Ok(RunningNode {
            gms_addr,
            cs_addr,
            gms,
            cs,
            revocations: node.tls.revoked.clone(),
            certificate: node.tls.certificate.clone(),
            stop,
            tasks: node.tasks,
        })
    }
}

/// A node while its roles start: its configuration, its TLS material, the
/// stop signal and its tasks.
struct Starting<'a> {
    cfg: &'a ServerConfig,
    clock: Clock,
    tls: Tls,
    stopped: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    /// The cluster's bus, if this node is one of several.
    bus: Option<Arc<duokey_bus::Bus>>,
}

/// Connects to the cluster's NATS and checks that it carries the largest
/// frame (an envelope of `max_body_bytes` and its framing).
async fn connect_bus(cfg: &ServerConfig, url: &str) -> Result<Arc<duokey_bus::Bus>, Error> {
    let bus = duokey_bus::Bus::connect(url, &cfg.nats_subject_prefix).await?;
    let needed = cfg.limits.max_body_bytes + 4096;
    if bus.max_payload() < needed {
        return Err(Error::Config(format!(
            "the NATS server at {url} takes frames of at most {} bytes, and max_body_bytes needs \
             {needed}: raise its max_payload or lower max_body_bytes",
            bus.max_payload()
        )));
    }
    tracing::info!(nats = url, subjects = %cfg.nats_subject_prefix, "cluster mode: NATS connected");
    Ok(bus)
}

impl Starting<'_> {
    /// The CS (SPEC §6) on its port, with its retention sweep.
    async fn start_cs(&mut self) -> Result<(Cs, SocketAddr), Error> {
        let cfg = self.cfg;
        let db = CsStore::open(&db_url(cfg, &cfg.database.cs, "cs")?).await?;
        let config = cs_config(&cfg.limits, &self.tls, &self.clock);
        let server = Cs::start_with_bus(db, config, self.bus.clone()).await?;
        let listener = bind(&cfg.cs_addr).await?;
        let addr = listener.local_addr()?;
        let (health, health_svc) = tonic_health::server::health_reporter();
        for service in ["duokey.v1.Communication", "duokey.v1.MembershipSync"] {
            health
                .set_service_status(service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let router = Server::builder()
            .layer(crate::rpc_metrics::RpcMetricsLayer)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .add_service(health_svc)
            .add_service(reflection()?)
            .add_service(server.communication())
            .add_service(server.membership_sync());
        let incoming = self.incoming(listener, ClientAuth::Required)?;
        let done = self.stop_signal();
        self.spawn_port("CS", router.serve_with_incoming_shutdown(incoming, done));
        let (sweeper, clock) = (server.clone(), self.clock.clone());
        self.every(RETENTION_SWEEP, move || {
            let (sweeper, clock) = (sweeper.clone(), clock.clone());
            async move {
                match sweeper.purge_expired(clock.now_ms_i64()).await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired envelopes purged"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "retention purge failed"),
                }
            }
        });
        Ok((server, addr))
    }

    /// The port of the GMS and the AS (the AS lets clients without a
    /// certificate in, to enrol); each role only if `roles` names it.
    async fn start_gms_port(
        &mut self,
        roles: &[Role],
        cs_addr: Option<SocketAddr>,
    ) -> Result<(Option<Gms>, SocketAddr), Error> {
        let listener = bind(&self.cfg.gms_addr).await?;
        let addr = listener.local_addr()?;
        let (health, health_svc) = tonic_health::server::health_reporter();
        let mut router = Server::builder()
            .layer(crate::rpc_metrics::RpcMetricsLayer)
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .add_service(health_svc)
            .add_service(reflection()?);
        let gms = match roles.contains(&Role::Gms) {
            true => Some(self.start_gms(cs_addr).await?),
            false => None,
        };
        if gms.is_some() {
            health
                .set_service_status(
                    "duokey.v1.GroupManagement",
                    tonic_health::ServingStatus::Serving,
                )
                .await;
        }
        let auth = if roles.contains(&Role::As) {
            router = router.add_service(self.accounts().await?.service());
            health
                .set_service_status("duokey.v1.Accounts", tonic_health::ServingStatus::Serving)
                .await;
            ClientAuth::Optional
        } else {
            ClientAuth::Required
        };
        let router = router.add_optional_service(gms.as_ref().map(Gms::service));
        let incoming = self.incoming(listener, auth)?;
        let done = self.stop_signal();
        self.spawn_port("GMS", router.serve_with_incoming_shutdown(incoming, done));
        Ok((gms, addr))
    }

    /// The GMS (SPEC §6) with its duties: telling the CS the membership,
    /// the rotation schedule and the grant retention sweep.
    async fn start_gms(&mut self, cs_addr: Option<SocketAddr>) -> Result<Gms, Error> {
        let cfg = self.cfg;
        let db = GmsStore::open(&db_url(cfg, &cfg.database.gms, "gms")?).await?;
        let config = gms_config(&cfg.limits, &self.clock);
        let server = match &self.bus {
            Some(bus) => Gms::with_bus(db, config, bus.clone()).await?,
            None => Gms::new(db, config),
        };
        let cs_urls = cfg
            .cs_url
            .clone()
            .or_else(|| cs_addr.map(|a| Urls::one(format!("https://{}", reachable(a)))))
            .ok_or_else(|| Error::Config("cs_url is required when the CS runs elsewhere".into()))?;
        let client = MembershipSyncClient::new(
            channel_any(cs_urls.as_slice(), self.tls.cs_client()?)
                .map_err(|s| Error::Config(format!("cs_url: {}", s.message())))?,
        );
        self.spawn(duokey_gms::cs_sync::run(server.clone(), client));
        self.spawn(server.clone().run_scheduler());
        let (sweeper, clock) = (server.clone(), self.clock.clone());
        self.every(RETENTION_SWEEP, move || {
            let (sweeper, clock) = (sweeper.clone(), clock.clone());
            async move {
                if let Err(e) = sweeper.purge_expired(clock.now_ms_i64()).await {
                    tracing::error!(error = %e, "grant retention purge failed");
                }
            }
        });
        Ok(server)
    }

    /// The AS (SPEC §2), which signs with the organisation's CA key.
    async fn accounts(&self) -> Result<AccountServer, Error> {
        let cfg = self.cfg;
        let key = cfg
            .tls
            .ca_key
            .as_ref()
            .ok_or_else(|| Error::Config("tls.ca_key is required for the as role".into()))?;
        let ca = Ca::load_files(&cfg.path(&cfg.tls.ca_cert), &cfg.path(key))?;
        let db = AsStore::open(&db_url(cfg, &cfg.database.as_url, "as")?).await?;
        let keys = password_keys(&cfg.path(Path::new(PASSWORD_KEYS)))?;
        let limits = duokey_accounts::LoginLimits {
            per_account: cfg.limits.wrong_passwords_per_account,
            per_address: cfg.limits.wrong_passwords_per_address,
        };
        Ok(
            AccountServer::new(db, Arc::new(ca), self.tls.revoked.clone())
                .with_password_keys(keys)
                .with_login_limits(limits)
                .with_clock(self.clock.clone()),
        )
    }

    /// Re-reads the revocation list and the server certificate every
    /// [`TLS_RELOAD`] (D34), and at once on SIGHUP (which `duokey-server
    /// revoke` sends to the server running on its data directory).
    fn reload_tls_files(&mut self) {
        let (revoked, certificate) = (self.tls.revoked.clone(), self.tls.certificate.clone());
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP cannot reload; the files are re-read every 10 s");
                None
            }
        };
        let mut tick = tokio::time::interval(TLS_RELOAD);
        self.spawn(async move {
            loop {
                match hangup.as_mut() {
                    Some(hup) => tokio::select! {
                        _ = tick.tick() => {}
                        _ = hup.recv() => tracing::info!("SIGHUP: reloading the revocation list and certificate"),
                    },
                    None => {
                        tick.tick().await;
                    }
                }
                reload_tls(&revoked, &certificate);
            }
        });
    }

    /// The TLS connections of a port, with the node's connection limit.
    fn incoming(
        &self,
        listener: TcpListener,
        auth: ClientAuth,
    ) -> Result<
        impl tokio_stream::Stream<Item = std::io::Result<TlsConnection>> + Send + 'static,
        Error,
    > {
        Ok(tls_incoming(
            listener,
            self.tls.server(auth)?,
            self.cfg.max_connections,
            self.tls.revoked.clone(),
        ))
    }

    /// Resolves once the node is told to stop.
    fn stop_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Runs a port's server until the stop signal.
    fn spawn_port(
        &mut self,
        port: &'static str,
        serving: impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, port, "server failed");
            }
        });
    }

    /// Runs `work` until the stop signal.
    fn spawn(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(until_stopped(self.stopped.clone(), work));
    }

    /// Runs `work` now and then every `period`, until the stop signal.
    fn every<F, W>(&mut self, period: Duration, mut work: F)
    where
        F: FnMut() -> W + Send + 'static,
        W: std::future::Future<Output = ()> + Send,
    {
        self.spawn(async move {
            loop {
                work().await;
                tokio::time::sleep(period).await;
            }
        });
    }
}

/// The CS's settings from the server configuration.
fn cs_config(limits: &crate::config::LimitsConfig, tls: &Tls, clock: &Clock) -> CsConfig {
    let mut c = CsConfig {
        clock: clock.clone(),
        ..CsConfig::default()
    };
    c.limits.max_body = limits.max_body_bytes;
    c.rate_per_sec = limits.rate_per_sec;
    c.rate_burst = limits.rate_burst;
    c.subscriber_queue = limits.subscriber_queue;
    c.subscriber_queue_bytes = limits.subscriber_queue_bytes;
    c.revocations = tls.revoked.clone();
    c.inbox_max_items = limits.inbox_max_items;
    c.inbox_max_bytes = limits.inbox_max_bytes;
    c.inbox_retention_secs = limits.inbox_retention_secs;
    c.streams_per_user = limits.streams_per_user;
    c
}

/// The GMS's settings from the server configuration.
fn gms_config(limits: &crate::config::LimitsConfig, clock: &Clock) -> GmsConfig {
    GmsConfig {
        clock: clock.clone(),
        min_rotate_every_secs: limits.min_rotate_every_secs,
        rate_per_sec: limits.rate_per_sec,
        rate_burst: limits.rate_burst,
        max_retention_secs: limits.max_retention_secs,
        max_groups_per_user: limits.max_groups_per_user,
        streams_per_user: limits.streams_per_user,
    }
}

/// Runs `work` until the stop signal.
async fn until_stopped(
    mut stopped: watch::Receiver<bool>,
    work: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => {}
        () = work => {}
    }
}

/// One reload of the revocation list and the server certificate; on error
/// the current ones stay in force.
fn reload_tls(revoked: &RevocationList, certificate: &ServerCertificate) {
    if let Err(e) = revoked.reload() {
        tracing::warn!(error = %e, "cannot reload the revocation list");
    }
    match certificate.reload() {
        Ok(true) => tracing::info!(
            file = %certificate.cert.display(),
            "server certificate reloaded; new connections get it"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "cannot reload the server certificate; the current one stays in use"
        ),
    }
}
