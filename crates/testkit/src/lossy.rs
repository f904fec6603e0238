//! The real CS behind a wrapper that loses answers: a `Post` is stored and
//! delivered, but its caller is told `UNAVAILABLE` (a node that died after
//! committing, a connection that broke on the way back). Terminals must
//! neither lose the message nor show it twice (DESIGN D49).

use crate::lying::tls_port;
use duokey_cs::{Cs, Subscription};
use duokey_proto::communication_server::{Communication, CommunicationServer};
use duokey_proto::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::{Request, Response, Status};

/// How many answers to `Post` the wrapper still loses.
#[derive(Clone, Default)]
pub struct LostAnswers(Arc<AtomicUsize>);

impl LostAnswers {
    /// Loses the answers of the next `n` posts.
    pub fn lose(&self, n: usize) {
        self.0.store(n, Ordering::SeqCst);
    }

    /// How many are still to lose.
    pub fn left(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

struct LossyCs {
    inner: Cs,
    lost: LostAnswers,
}

#[tonic::async_trait]
impl Communication for LossyCs {
    async fn publish_delivery_key(
        &self,
        r: Request<PublishDeliveryKeyRequest>,
    ) -> Result<Response<PublishDeliveryKeyResponse>, Status> {
        self.inner.publish_delivery_key(r).await
    }
    async fn get_user(
        &self,
        r: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        self.inner.get_user(r).await
    }
    async fn get_revocations(
        &self,
        r: Request<GetRevocationsRequest>,
    ) -> Result<Response<GetRevocationsResponse>, Status> {
        self.inner.get_revocations(r).await
    }
    async fn send_item(
        &self,
        r: Request<SendItemRequest>,
    ) -> Result<Response<SendItemResponse>, Status> {
        self.inner.send_item(r).await
    }
    async fn send_items(
        &self,
        r: Request<SendItemsRequest>,
    ) -> Result<Response<SendItemsResponse>, Status> {
        self.inner.send_items(r).await
    }
    async fn items(&self, r: Request<ItemsRequest>) -> Result<Response<ItemsResponse>, Status> {
        self.inner.items(r).await
    }
    async fn ack_items(
        &self,
        r: Request<AckItemsRequest>,
    ) -> Result<Response<AckItemsResponse>, Status> {
        self.inner.ack_items(r).await
    }
    async fn post(&self, r: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        let answer = self.inner.post(r).await;
        if answer.is_ok() && self.lost.take() {
            return Err(Status::unavailable("the answer was lost on its way back"));
        }
        answer
    }
    async fn fetch(&self, r: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        self.inner.fetch(r).await
    }
    type SubscribeStream = Subscription;
    async fn subscribe(
        &self,
        r: Request<SubscribeRequest>,
    ) -> Result<Response<Subscription>, Status> {
        self.inner.subscribe(r).await
    }
}

/// Serves `cs` behind the wrapper on a port of its own.
pub async fn serve(cs: Cs, srv: &Path, lost: LostAnswers) -> SocketAddr {
    let (incoming, addr) = tls_port(srv).await;
    let service = CommunicationServer::new(LossyCs { inner: cs, lost });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}
