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

/// Decides which endpoint answers a request.
pub struct Router {
    endpoints: OnceLock<Vec<Arc<dyn Endpoint>>>,
    /// Signalled when `endpoints` is set.
    ready: tokio::sync::Notify,
    metrics: Arc<Metrics>,
    /// `APP_API_TOKEN`: when set, every request but `/healthz` must carry it.
    app_token: Option<String>,
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
    pub fn new(metrics: Arc<Metrics>, app_token: Option<String>) -> Arc<Router> {
        Arc::new(Router {
            endpoints: OnceLock::new(),
            ready: tokio::sync::Notify::new(),
            metrics,
            app_token,
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

    async fn route(&self, request: Request) -> Response {
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
/// on its own task.
pub async fn serve(listener: TcpListener, router: Arc<Router>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request| {
                let router = router.clone();
                request.extensions_mut().insert(peer);
                async move { Ok::<_, Infallible>(router.route(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
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
