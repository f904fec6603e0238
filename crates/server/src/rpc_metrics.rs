//! Per-RPC metrics for every port (issue 16 point 6): how many calls each
//! method got, with which gRPC status, and how long they took to answer.
//!
//! * `duokey_rpc_requests_total{method, code}`: `method` is `Service/Method`
//!   (e.g. `Communication/Post`), `code` the gRPC status name (`Ok`,
//!   `PermissionDenied`, …). For a stream, `Ok` means it opened.
//! * `duokey_rpc_seconds{method}`: time until the response headers (the
//!   whole call for unary methods; the opening for streams).
//!
//! A path that names no method of this server is counted as `unknown`, so
//! that a client cannot create unbounded label values.

use std::future::Future;
use std::pin::Pin;
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
        let path = req.uri().path().to_owned();
        let started = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await;
            let code = match &res {
                Ok(r) => status_of(r.headers()),
                Err(_) => tonic::Code::Unavailable,
            };
            let method = method_label(&path, code);
            metrics::histogram!("duokey_rpc_seconds", "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("duokey_rpc_requests_total", "method" => method, "code" => format!("{code:?}"))
                .increment(1);
            res
        })
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
/// `unknown` for a method this server does not have.
fn method_label(path: &str, code: tonic::Code) -> String {
    let known = code != tonic::Code::Unimplemented
        && (path.starts_with("/duokey.v1.") || path.starts_with("/grpc."));
    let name = path.rsplit_once('.').map(|(_, m)| m);
    match name {
        Some(m) if known && m.len() <= 64 => m.to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_by_service_and_unknown_paths_share_one_label() {
        let ok = tonic::Code::Ok;
        assert_eq!(
            method_label("/duokey.v1.Communication/Post", ok),
            "Communication/Post"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check", ok),
            "Health/Check"
        );
        assert_eq!(
            method_label(
                "/duokey.v1.Communication/Anything",
                tonic::Code::Unimplemented
            ),
            "unknown"
        );
        assert_eq!(method_label("/evil/path", ok), "unknown");
    }

    #[test]
    fn the_status_is_read_from_a_trailers_only_answer() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_of(&h), tonic::Code::Ok);
        h.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(status_of(&h), tonic::Code::PermissionDenied);
    }
}
