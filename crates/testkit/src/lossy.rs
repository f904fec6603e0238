//! The real CS behind a wrapper that loses answers: a `Post` is stored and
//! delivered, but its caller is told `UNAVAILABLE` (a node that died after
//! committing, a connection that broke on the way back). Terminals must
//! neither lose the message nor show it twice (DESIGN D49).

use crate::lying::serve_on;
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

/// `impl Communication for LossyCs`: the calls in `forward` go to the real
/// CS unchanged; the items after it are the wrapper's own.
macro_rules! lossy_communication {
    (forward { $($call:ident($req:ident) -> $resp:ident;)* } $($own:tt)*) => {
        #[tonic::async_trait]
        impl Communication for LossyCs {
            $(async fn $call(&self, r: Request<$req>) -> Result<Response<$resp>, Status> {
                self.inner.$call(r).await
            })*
            $($own)*
        }
    };
}

lossy_communication! {
    forward {
        publish_delivery_key(PublishDeliveryKeyRequest) -> PublishDeliveryKeyResponse;
        get_user(GetUserRequest) -> GetUserResponse;
        get_revocations(GetRevocationsRequest) -> GetRevocationsResponse;
        send_item(SendItemRequest) -> SendItemResponse;
        send_items(SendItemsRequest) -> SendItemsResponse;
        items(ItemsRequest) -> ItemsResponse;
        ack_items(AckItemsRequest) -> AckItemsResponse;
        fetch(FetchRequest) -> FetchResponse;
        subscribe(SubscribeRequest) -> Subscription;
    }
    type SubscribeStream = Subscription;
    async fn post(&self, r: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        let answer = self.inner.post(r).await;
        if answer.is_ok() && self.lost.take() {
            return Err(Status::unavailable("the answer was lost on its way back"));
        }
        answer
    }
}

/// Serves `cs` behind the wrapper on a port of its own.
pub async fn serve(cs: Cs, srv: &Path, lost: LostAnswers) -> SocketAddr {
    let service = CommunicationServer::new(LossyCs { inner: cs, lost });
    serve_on(
        srv,
        tonic::transport::Server::builder().add_service(service),
    )
    .await
}
