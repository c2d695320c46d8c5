//! The HTTP listeners, and what is mounted on them.
//!
//! host-bridge listens on up to three addresses, each with its own
//! [`Router`]: the app's port (`--listen`, the app port under Dapr), which
//! serves the components' routes and Dapr's app protocol; the embedded
//! broker's sidecar API (`--sidecar-listen`), which serves what daprd's
//! HTTP port would; and the admin API (`--admin`). They are apart so that
//! whoever can reach the app's routes cannot publish to any topic or read
//! any key, as under Dapr.
//!
//! The app's listener is bound before any component compiles, so a caller
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
//! **Bounded everything.** Every listener keeps the same [`Limits`]: a cap
//! on open connections (at the cap it stops accepting), a deadline for a
//! request's headers (which is also the idle keep-alive timeout), a cap on
//! their size, and a deadline for a body. No body is read past
//! `--max-body-size` (daprd's default, 4 MiB). The router puts the limit in
//! every request's extensions, and endpoints read bodies only through
//! [`read_body`]: a `Content-Length` over the limit is refused without
//! reading a byte, and a chunked body is read up to the limit and no
//! further. The sidecar API answers `413`; a delivery from daprd answers
//! DROP (see `dapr_app`).

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
    /// How long the whole body may take to arrive ([`Limits::body_read_timeout`]).
    pub timeout: Duration,
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
    #[error("the body did not arrive within {0:?}")]
    TimedOut(Duration),
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
            BodyError::TimedOut(_) => unread_body(error(
                StatusCode::REQUEST_TIMEOUT,
                "ERR_BODY_TIMEOUT",
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
/// `Content-Length` over it is refused before a byte is read, and a body
/// that takes longer than the limit's timeout to arrive is refused too.
pub async fn read_body(request: Request) -> Result<(http::request::Parts, Bytes), BodyError> {
    check_declared_length(&request)?;
    let limit = body_limit(&request);
    let timeout = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(Limits::default().body_read_timeout, |l| l.timeout);
    let (parts, body) = request.into_parts();
    let collected =
        tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await;
    match collected {
        Ok(Ok(body)) => Ok((parts, body.to_bytes())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(&parts.extensions, &parts.uri, limit))
        }
        Ok(Err(e)) => Err(BodyError::Broken(e.to_string())),
        Err(_) => {
            tracing::warn!(
                path = parts.uri.path(),
                "a request body did not arrive within {timeout:?}; refused"
            );
            Err(BodyError::TimedOut(timeout))
        }
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
    /// When set (`APP_API_TOKEN` on the app's port, `DAPR_API_TOKEN` on
    /// the sidecar API's), every request but `/healthz` must carry it.
    app_token: Option<String>,
    /// `--max-body-size`.
    max_body: usize,
    /// [`Limits::body_read_timeout`].
    body_read_timeout: Duration,
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
    /// A router whose requests must carry `token` (but for `/healthz`),
    /// if one is given, and whose bodies are bounded by `max_body` and
    /// `limits`' body timeout.
    pub fn new(
        metrics: Arc<Metrics>,
        token: Option<String>,
        max_body: usize,
        limits: &Limits,
    ) -> Arc<Router> {
        Arc::new(Router {
            endpoints: OnceLock::new(),
            ready: tokio::sync::Notify::new(),
            metrics,
            app_token: token,
            max_body,
            body_read_timeout: limits.body_read_timeout,
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
            timeout: self.body_read_timeout,
            metrics: self.metrics.clone(),
        });
        let path = request.uri().path();
        let method = request.method();
        if let Some(expected) = &self.app_token
            && path != "/healthz"
            && path != "/v1.0/healthz"
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

/// The bounds every listener keeps, whoever connects (SECURITY.md lists
/// them). They are set where a listener is made, from the CLI's options,
/// and hold for the app's port, the sidecar API and the admin API alike.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most connections open at once. At the cap the listener stops
    /// accepting: new clients wait in the kernel's backlog until one
    /// closes, and the process never runs out of file descriptors.
    pub max_connections: usize,
    /// How long a request's line and headers may take to arrive. hyper
    /// starts this clock when a connection begins waiting for its next
    /// request, so it is the idle keep-alive timeout too: a connection that
    /// sends nothing, or half a header, is closed when it runs out.
    pub header_read_timeout: Duration,
    /// The most bytes of request line and headers; past it, `431`.
    pub max_header_bytes: usize,
    /// How long a whole request body may take to arrive once its headers
    /// have ([`read_body`]); a body that trickles in is refused with `408`.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

/// How often a listener at its connection cap says so.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// A listener's connections, counted against [`Limits::max_connections`].
///
/// The same semaphore is how shutdown drains: every open connection holds
/// one permit, so when all permits are back, every request in flight
/// (an HTTP trigger's, a delivery's) has been answered.
struct Connections {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Connections {
    fn new(max: usize) -> Connections {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Connections {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Waits at most `grace` for every connection to close; returns how
    /// many were still open.
    async fn drain(&self, grace: Duration) -> usize {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.permits.acquire_many(all)).await {
            Ok(_) => 0,
            Err(_) => self.max - self.permits.available_permits(),
        }
    }
}

/// Accepts connections until `shutdown` resolves, within `limits`; each
/// connection is served on its own task, with `TCP_NODELAY` set.
///
/// On shutdown the listener closes, so new connections (daprd's health
/// probes among them) are refused, and every open connection is shut down
/// gracefully: a request it is serving runs to its end and is answered,
/// then the connection closes instead of reading another request. `serve`
/// returns once every connection has closed, or after `grace`, with how
/// many were still open: so an HTTP request in flight on SIGTERM is
/// answered, as a delivery is, before the process exits.
///
/// `handshake` runs on each accepted socket before HTTP is spoken on it
/// (TLS, for the admin API; nothing, for the others). A failed handshake
/// closes that connection only.
pub async fn serve<Io, H, F>(
    listener: TcpListener,
    router: Arc<Router>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
    handshake: H,
) -> usize
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(tokio::net::TcpStream) -> F,
    F: Future<Output = std::io::Result<Io>> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let connections = Connections::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let http = Arc::new(http);
    let mut last_full_warning = None;
    loop {
        // Backpressure: a connection is accepted only when it can be served.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        // At the cap, said at most once a minute: a client holding the
        // listener full would otherwise write a line per connection.
        if connections.permits.available_permits() == 0
            && last_full_warning
                .is_none_or(|at: tokio::time::Instant| at.elapsed() >= FULL_WARNING_EVERY)
        {
            last_full_warning = Some(tokio::time::Instant::now());
            tracing::warn!(
                "{} connections are open, the most --max-connections allows: new ones wait until one closes",
                connections.max
            );
        }
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
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
        let local = stream.local_addr().ok().map(LocalAddr);
        let handshake = handshake(stream);
        let router = router.clone();
        let http = http.clone();
        let mut stop = stop.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            // The handshake is bounded like a header: a client that opens a
            // TLS connection and says nothing is closed as one that opens a
            // plain one would be.
            let io = match tokio::time::timeout(header_read_timeout, handshake).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return tracing::debug!(%peer, "handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "handshake timed out"),
            };
            let service = hyper::service::service_fn(move |mut request: Request| {
                let router = router.clone();
                request.extensions_mut().insert(peer);
                if let Some(local) = local {
                    request.extensions_mut().insert(local);
                }
                async move { Ok::<_, Infallible>(router.route(request).await) }
            });
            let connection = http.serve_connection(TokioIo::new(io), service);
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
    drop(listener);
    let _ = stopping.send(true);
    connections.drain(grace).await
}

/// The address a request came in on (the listener's side of the socket),
/// in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

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
