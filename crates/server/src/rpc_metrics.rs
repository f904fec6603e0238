//! Per-RPC metrics for every port (DESIGN D47): how many calls each
//! method got, with which gRPC status, and how long they took to answer.
//!
//! * `duokey_rpc_requests_total{method, code}`: `method` is `Service/Method`
//!   (e.g. `Communication/Post`), `code` the gRPC status name (`Ok`,
//!   `PermissionDenied`, …). For a stream, `Ok` means it opened.
//! * `duokey_rpc_seconds{method}`: time until the response headers (the
//!   whole call for unary methods; the opening for streams).
//!
//! A path that names no method of this server (its methods are read from
//! the descriptor sets it serves for reflection) is counted as `unknown`,
//! so that a client cannot create unbounded label values; a call the
//! client abandons before the answer is counted as `Cancelled`.

use prost::Message as _;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

/// The layer that `Server::builder().layer(..)` takes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service that records each call, around the router.
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut call = Call {
            path: req.uri().path().to_owned(),
            started: Instant::now(),
            counted: false,
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await;
            match &res {
                Ok(r) => call.count(status_of(r.headers())),
                // The router itself failed: no method to name.
                Err(_) => call.count(tonic::Code::Unimplemented),
            }
            res
        })
    }
}

/// One call being answered; counted once, as `Cancelled` if the client
/// went away (or its deadline passed) before the answer.
struct Call {
    path: String,
    started: Instant,
    counted: bool,
}

impl Call {
    fn count(&mut self, code: tonic::Code) {
        self.counted = true;
        let method = method_label(&self.path);
        metrics::histogram!("duokey_rpc_seconds", "method" => method.clone())
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!("duokey_rpc_requests_total", "method" => method, "code" => format!("{code:?}"))
            .increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.counted {
            self.count(tonic::Code::Cancelled);
        }
    }
}

/// The status of a response: in its headers when the call failed at once
/// (a "trailers-only" answer), else `Ok` (the answer has begun).
fn status_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// `Service/Method` of a path like `/duokey.v1.Communication/Post`, or
/// `unknown` for a method this server does not serve.
fn method_label(path: &str) -> String {
    match path.rsplit_once('.').map(|(_, m)| m) {
        Some(m) if served().contains(m) => m.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `Service/Method` of every method this server serves, from the
/// descriptor sets it publishes for reflection (and reflection's own).
fn served() -> &'static HashSet<String> {
    static SERVED: OnceLock<HashSet<String>> = OnceLock::new();
    SERVED.get_or_init(|| {
        let mut names = HashSet::from(["ServerReflection/ServerReflectionInfo".to_owned()]);
        let sets = [
            duokey_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ];
        for set in sets {
            let Ok(files) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for service in files.file.iter().flat_map(|f| &f.service) {
                for method in &service.method {
                    names.insert(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
        names
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_by_service_and_unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/duokey.v1.Communication/Post"),
            "Communication/Post"
        );
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_label("/duokey.v1.Communication/Anything"), "unknown");
        assert_eq!(method_label("/evil/path"), "unknown");
        assert!(served().contains("GroupManagement/GetGrants"));
        assert!(served().contains("Accounts/Enroll"));
    }

    #[test]
    fn the_status_is_read_from_a_trailers_only_answer() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_of(&h), tonic::Code::Ok);
        h.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(status_of(&h), tonic::Code::PermissionDenied);
    }
}
