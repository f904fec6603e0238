//! A lying GMS for real (SPEC §7 P9): the real GMS service behind a wrapper
//! that rewrites its answers and pushes, served over real mutual TLS with the
//! server's own certificate on a port of its own. Terminals pointed at it
//! cannot tell it from the honest one except by what it says.

use duokey_gms::{Gms, WatchStream};
use duokey_proto::group_management_server::{GroupManagement, GroupManagementServer};
use duokey_proto::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

/// How the GMS lies about a grant (answers of every call and `Watch` pushes).
pub type GrantLie = Box<dyn Fn(&mut Grant) + Send + Sync>;

/// The current lie (`None` answers honestly), whether `GetChanges`
/// answers UNAVAILABLE (a transient outage, not a lie), the GMS that
/// answers instead of the real one once the operator forked its history,
/// and whether `GetGrant`/`GetGrants` answer UNAVAILABLE.
#[derive(Clone, Default)]
pub struct Lies(
    Arc<Mutex<Option<GrantLie>>>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Mutex<Option<Gms>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl Lies {
    /// From now on, every grant is rewritten by `lie`.
    pub fn set(&self, lie: impl Fn(&mut Grant) + Send + Sync + 'static) {
        *self.0.lock().unwrap() = Some(Box::new(lie));
    }

    /// Honest again.
    pub fn clear(&self) {
        *self.0.lock().unwrap() = None;
    }

    /// `GetChanges` answers UNAVAILABLE while `down`.
    pub fn changes_unavailable(&self, down: bool) {
        self.1.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// `GetGrant` and `GetGrants` answer UNAVAILABLE while `down` (a GMS
    /// restarting or rate-limiting: transient, not a refusal).
    pub fn grants_unavailable(&self, down: bool) {
        self.3.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    fn grants_down(&self) -> Result<(), Status> {
        match self.3.load(std::sync::atomic::Ordering::SeqCst) {
            true => Err(Status::unavailable("the group server is restarting")),
            false => Ok(()),
        }
    }

    /// From now on every call is answered by `fork` (a GMS over a copy of
    /// the real one's database): the clients behind this wrapper see a
    /// history that parts from everyone else's (SPEC §4.7 "Equivocation").
    pub fn fork_to(&self, fork: Gms) {
        *self.2.lock().unwrap() = Some(fork);
    }

    fn apply(&self, g: &mut Grant) {
        if let Some(lie) = self.0.lock().unwrap().as_ref() {
            lie(g);
        }
    }
}

/// The wrapper.
struct LyingGms {
    inner: Gms,
    lies: Lies,
}

impl LyingGms {
    /// The GMS that answers: the fork once there is one.
    fn gms(&self) -> Gms {
        self.lies
            .2
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| self.inner.clone())
    }

    fn grant(&self, r: Result<Response<Grant>, Status>) -> Result<Response<Grant>, Status> {
        let mut g = r?.into_inner();
        self.lies.apply(&mut g);
        Ok(Response::new(g))
    }
}

#[tonic::async_trait]
impl GroupManagement for LyingGms {
    async fn create_group(
        &self,
        r: Request<CreateGroupRequest>,
    ) -> Result<Response<Grant>, Status> {
        self.grant(self.gms().create_group(r).await)
    }
    async fn report_member(
        &self,
        r: Request<ReportMemberRequest>,
    ) -> Result<Response<Grant>, Status> {
        self.grant(self.gms().report_member(r).await)
    }
    async fn leave(&self, r: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        self.gms().leave(r).await
    }
    async fn rotate(&self, r: Request<RotateRequest>) -> Result<Response<Grant>, Status> {
        self.grant(self.gms().rotate(r).await)
    }
    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.gms().delete(r).await
    }
    async fn get_grants(
        &self,
        r: Request<GetGrantsRequest>,
    ) -> Result<Response<GetGrantsResponse>, Status> {
        self.lies.grants_down()?;
        let mut resp = self.gms().get_grants(r).await?.into_inner();
        resp.grants.iter_mut().for_each(|g| self.lies.apply(g));
        Ok(Response::new(resp))
    }
    async fn get_grant(&self, r: Request<GetGrantRequest>) -> Result<Response<Grant>, Status> {
        self.lies.grants_down()?;
        self.grant(self.gms().get_grant(r).await)
    }
    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        self.gms().list_groups(r).await
    }
    type WatchStream = WatchStream;
    async fn watch(&self, r: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let stream = self.gms().watch(r).await?.into_inner();
        let lies = self.lies.clone();
        let lying = stream.map(move |event| {
            let mut event = event?;
            if let Some(watch_event::Event::Grant(g)) = &mut event.event {
                lies.apply(g);
            }
            Ok(event)
        });
        Ok(Response::new(Box::pin(lying)))
    }
    async fn get_changes(
        &self,
        r: Request<GetChangesRequest>,
    ) -> Result<Response<GetChangesResponse>, Status> {
        if self.lies.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("the group server is restarting"));
        }
        self.gms().get_changes(r).await
    }
}

/// Serves `gms` through the lie on 127.0.0.1 with the dev server's
/// certificate in `srv` (it carries the GMS role); returns the address.
pub async fn serve(gms: Gms, srv: &Path, lies: Lies) -> SocketAddr {
    let service = GroupManagementServer::new(LyingGms { inner: gms, lies });
    serve_on(
        srv,
        tonic::transport::Server::builder().add_service(service),
    )
    .await
}

/// Serves `router` on a port of its own ([`tls_port`]); returns the address.
pub(crate) async fn serve_on(srv: &Path, router: tonic::transport::server::Router) -> SocketAddr {
    let (incoming, addr) = tls_port(srv).await;
    tokio::spawn(router.serve_with_incoming(incoming));
    addr
}

/// A port on 127.0.0.1 with the servers' TLS (certificate of `srv`,
/// clients from its CA).
pub(crate) async fn tls_port(
    srv: &Path,
) -> (
    impl tokio_stream::Stream<Item = std::io::Result<duokey_pki::grpc::TlsConnection>> + Send + 'static,
    SocketAddr,
) {
    let ca = duokey_pki::pem::load_cert(&srv.join("ca/ca.pem")).unwrap();
    let chain = duokey_pki::pem::load_certs(&srv.join("server.pem")).unwrap();
    let key = duokey_pki::pem::load_key(&srv.join("server.key")).unwrap();
    let tls = duokey_pki::server_config(
        &ca,
        chain,
        key,
        duokey_pki::ClientAuth::Required,
        Arc::new(duokey_pki::RevocationList::empty()),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = duokey_pki::grpc::tls_incoming(
        listener,
        tls,
        100,
        Arc::new(duokey_pki::RevocationList::empty()),
    );
    (incoming, addr)
}
