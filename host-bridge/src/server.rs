//! The one HTTP listener, and what is mounted on it.
//!
//! host-bridge listens on a single address (`--listen`, the app port under
//! Dapr). The listener is bound before any component compiles, so a caller
//! that dials early (daprd dials the app port every 100 ms) gets an answer:
//! `/healthz` says 503 `starting` until every component is compiled and the
//! triggers are serving, and 200 from then on. Any other request that
//! arrives while starting waits until the app is ready (at most
//! [`STARTUP_WAIT`], then 503).
//!
//! Once ready, a request goes to the first [`Endpoint`] that serves its
//! method and path: the host's own (`/healthz`, `/metrics`), then the
//! broker backend's, then the HTTP trigger's component routes.
//!
//! **Bounded bodies.** No body is read past `--max-body-size` (daprd's
//! default, 4 MiB). The router puts the limit in every request's
//! extensions, and endpoints read bodies only through [`read_body`]: a
//! `Content-Length` over the limit is refused without reading a byte, and a
//! chunked body is read up to the limit and no further. The sidecar API
//! answers `413`; a delivery from daprd answers DROP (see `dapr_app`).

use crate::broker::Metrics;
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// The body of every response the server sends.
pub type Body = wasmtime_wasi_http::WasiBody;
/// A request as it comes off the wire.
pub type Request = http::Request<Incoming>;
/// A response as it goes back.
pub type Response = http::Response<Body>;

/// Something mounted on the listener.
#[async_trait]
pub trait Endpoint: Send + Sync + 'static {
    /// Whether this endpoint answers `method path`.
    fn serves(&self, method: &Method, path: &str) -> bool;

    /// Answers the request. Errors are answered too (with a 4xx or 5xx), so
    /// this cannot fail.
    async fn serve(&self, request: Request) -> Response;
}

/// A response with a fixed body.
pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    full(status, "application/json", value.to_string())
}

/// A JSON error in the shape Dapr uses: `{"errorCode": ..., "message": ...}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json(
        status,
        &serde_json::json!({ "errorCode": code, "message": message.into() }),
    )
}

/// The most bytes a request body may have, as the router puts it in every
/// request's extensions for the endpoint that reads the body.
#[derive(Debug, Clone)]
pub struct BodyLimit {
    pub max: usize,
    /// Where a body over the limit is counted.
    metrics: Arc<Metrics>,
}

/// daprd's own default for `--max-body-size`.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit of {limit} bytes (--max-body-size)")]
    TooLarge { limit: usize },
    #[error("cannot read the body: {0}")]
    Broken(String),
}

impl BodyError {
    /// The answer for a caller that can retry or fix its request: 413 or 400.
    pub fn response(&self) -> Response {
        match self {
            BodyError::TooLarge { .. } => unread_body(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR_BODY_TOO_LARGE",
                self.to_string(),
            )),
            BodyError::Broken(_) => error(StatusCode::BAD_REQUEST, "ERR_BODY", self.to_string()),
        }
    }
}

/// Marks `response` as the answer to a request whose body was not read to
/// its end. The connection cannot carry another request after it (the rest
/// of the body is still on the wire), so it closes; `Connection: close`
/// tells the client, which would otherwise send its next request on a
/// pooled connection that is going away.
pub fn unread_body(mut response: Response) -> Response {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// The limit of `request`'s body (the router's, else the default).
pub fn body_limit<B>(request: &http::Request<B>) -> usize {
    request
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_MAX_BODY, |l| l.max)
}

/// Refuses, before a byte is read, a request whose declared
/// `Content-Length` is over its [`BodyLimit`].
pub fn check_declared_length<B>(request: &http::Request<B>) -> Result<(), BodyError> {
    let limit = body_limit(request);
    if content_length(request).is_some_and(|n| n > limit as u64) {
        return Err(too_large(request.extensions(), request.uri(), limit));
    }
    Ok(())
}

/// Reads a whole request body, but never more than its [`BodyLimit`]: a
/// `Content-Length` over it is refused before a byte is read.
pub async fn read_body(request: Request) -> Result<(http::request::Parts, Bytes), BodyError> {
    check_declared_length(&request)?;
    let limit = body_limit(&request);
    let (parts, body) = request.into_parts();
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(body) => Ok((parts, body.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(&parts.extensions, &parts.uri, limit))
        }
        Err(e) => Err(BodyError::Broken(e.to_string())),
    }
}

/// Counts and logs a body over the limit.
fn too_large(extensions: &http::Extensions, uri: &http::Uri, limit: usize) -> BodyError {
    if let Some(l) = extensions.get::<BodyLimit>() {
        Metrics::inc(&l.metrics.bodies_too_large);
    }
    tracing::warn!(
        path = uri.path(),
        "a body over --max-body-size ({limit} bytes) was refused"
    );
    BodyError::TooLarge { limit }
}

/// The request's `Content-Length`, when it has a valid one.
fn content_length<B>(request: &http::Request<B>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Decides which endpoint answers a request.
pub struct Router {
    endpoints: OnceLock<Vec<Arc<dyn Endpoint>>>,
    /// Signalled when `endpoints` is set.
    ready: tokio::sync::Notify,
    metrics: Arc<Metrics>,
    /// `APP_API_TOKEN`: when set, every request but `/healthz` must carry it.
    app_token: Option<String>,
    /// `--max-body-size`.
    max_body: usize,
}

/// How long a request that arrives during startup waits for the app to be ready.
pub const STARTUP_WAIT: Duration = Duration::from_secs(120);

/// The header daprd and apps authenticate each other with.
pub const TOKEN_HEADER: &str = "dapr-api-token";

/// Compares a token in constant time, so its value cannot be learned from
/// how long a refusal takes.
pub fn token_matches(expected: &str, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())))
}

impl Router {
    pub fn new(metrics: Arc<Metrics>, app_token: Option<String>, max_body: usize) -> Arc<Router> {
        Arc::new(Router {
            endpoints: OnceLock::new(),
            ready: tokio::sync::Notify::new(),
            metrics,
            app_token,
            max_body,
        })
    }

    /// Mounts the endpoints and turns `/healthz` to 200. Called once, when
    /// every component is compiled and every trigger is serving.
    pub fn set_ready(&self, endpoints: Vec<Arc<dyn Endpoint>>) {
        let _ = self.endpoints.set(endpoints);
        self.ready.notify_waiters();
    }

    /// The endpoints, waiting up to [`STARTUP_WAIT`] for them to be mounted.
    ///
    /// A request that arrives while components compile waits rather than
    /// failing: daprd asks for `/dapr/subscribe` only once, as soon as the
    /// port answers, and a 503 there would leave the app with no
    /// subscriptions. Only `/healthz` answers at once.
    async fn endpoints(&self) -> Option<&[Arc<dyn Endpoint>]> {
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        loop {
            let notified = self.ready.notified();
            if let Some(endpoints) = self.endpoints.get() {
                return Some(endpoints);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.endpoints.get().map(Vec::as_slice);
            }
        }
    }

    async fn route(&self, mut request: Request) -> Response {
        request.extensions_mut().insert(BodyLimit {
            max: self.max_body,
            metrics: self.metrics.clone(),
        });
        let path = request.uri().path();
        let method = request.method();
        if let Some(expected) = &self.app_token
            && path != "/healthz"
        {
            let given = request
                .headers()
                .get(TOKEN_HEADER)
                .and_then(|v| v.to_str().ok());
            if !token_matches(expected, given) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "ERR_UNAUTHORIZED",
                    "missing or wrong dapr-api-token",
                );
            }
        }
        if path == "/healthz" && self.endpoints.get().is_none() {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "starting" }),
            );
        }
        let Some(endpoints) = self.endpoints().await else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_NOT_READY",
                "host-bridge is still starting: components are compiling",
            );
        };
        match (method, path) {
            (&Method::GET, "/healthz") => {
                return json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
            }
            (&Method::GET, "/metrics") => {
                return full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                );
            }
            _ => {}
        }
        match endpoints.iter().find(|e| e.serves(method, path)) {
            Some(endpoint) => endpoint.clone().serve(request).await,
            None => error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no route for {method} {path}"),
            ),
        }
    }
}

/// Accepts connections until `shutdown` resolves; each connection is served
/// on its own task, with `TCP_NODELAY` set.
///
/// On shutdown the listener closes, so new connections (daprd's health
/// probes among them) are refused, and every open connection is shut down
/// gracefully: a request it is serving runs to its end and is answered,
/// then the connection closes instead of reading another request. So
/// nothing new comes in while the backend drains what is in flight.
pub async fn serve(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let (stopping, stop) = tokio::sync::watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => {
                let _ = stopping.send(true);
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: pause rather than
                    // spin on an error that only time (closed sockets) fixes.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A response leaves in several writes (headers, then body chunks as
        // a component streams them). With Nagle's algorithm on, a small
        // write waits for the ACK of the previous one, which a keep-alive
        // client delays by up to 40 ms: every request after the first on a
        // connection would stall. Replies here are latency-bound, never
        // bulk, so every accepted socket sends at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let router = router.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request| {
                let router = router.clone();
                request.extensions_mut().insert(peer);
                async move { Ok::<_, Infallible>(router.route(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = async { stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3cre")));
        assert!(!token_matches("s3cret", Some("s3cret!")));
        assert!(!token_matches("s3cret", Some("")));
        assert!(!token_matches("s3cret", None));
    }
}
