//! The HTTP trigger: `[[trigger.http]]` routes served by `wasi:http` components.
//!
//! Both handler generations are served: `wasi:http/incoming-handler@0.2`
//! and the WASI 0.3 `wasi:http/handler@0.3.0` that `spin-sdk` 7 exports.
//! wasmtime-wasi-http's `ProxyHandler` drives the guest; this trigger tells it
//! to use each instance for exactly one request, so every request gets a
//! fresh instance, and to give up on a request after the component's
//! `timeout`.
//!
//! A component whose manifest sets `instance_reuse = N` opts out of that
//! isolation for speed, under the rules subscribers follow
//! (`triggers/pubsub.rs`): an instance is kept, idle, for the next request
//! only once it has answered and its response has ended cleanly (see
//! `EndWatch`), up to N requests. One that trapped, ran out of time,
//! answered an error code, never answered, or whose body failed or was not
//! sent to its end, is dropped with its store. Idle instances are bounded
//! by the component's `max_instances` (two per core without it), a request
//! holds a place under `max_instances` only while it runs, and a live
//! deploy drops the old version's idle instances. Such a component is
//! served by `Reuse::call` rather than by `ProxyHandler`, one request at
//! a time per instance, with wasmtime-wasi-http's `Prepared` calling the
//! guest's handler again on the same instance (`ProxyHandler` can reuse
//! instances too, but keeps an idle one waiting on its queue with its place
//! under `max_instances`, and cannot tell how a response's body ended).
//!
//! Requests carry Spin's routing headers (`spin-full-url`, `spin-path-info`,
//! `spin-matched-route`, `spin-component-route`, `spin-raw-component-route`,
//! `spin-base-path`, `spin-client-addr` and `spin-path-match-NAME`), so a
//! component written for Spin sees what it expects.

use crate::broker::Metrics;
use crate::engine::{Engine, HostState, LoadedComponent, Sandbox, TraceContext, set_deadline};
use crate::manifest::route::{Route, best_match};
use crate::manifest::{HttpTrigger as HttpTriggerConfig, Manifest};
use crate::server::{self, Endpoint, Request, Response};
use crate::telemetry;
use anyhow::bail;
use async_trait::async_trait;
use bytes::Bytes;
use futures::channel::oneshot;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use wasmtime::component::GuestTaskId;
use wasmtime::{AsContextMut, Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Prepared, Proxy, ProxyHandler,
    ProxyPre, ShouldAccept, TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};

/// How long a spare worker waits for a queued request before it exits.
const IDLE_WORKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Extra time a request on a kept instance gets, past its timeout, before
/// the host stops waiting for its instance. The epoch deadline stops a
/// guest that computes; this stops one stuck waiting on a host call.
const HOST_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// The routes of the app and the components behind them.
pub struct HttpTrigger {
    routes: Vec<Route>,
    /// The component of each route, by the route's index.
    handlers: Vec<(String, ProxyHandler<ComponentHttp>)>,
}

impl HttpTrigger {
    /// Swaps in a new version of component `id` for every route it serves,
    /// after checking that it exports a `wasi:http` handler; a version that
    /// does not leaves the old one serving. Requests in flight finish on
    /// the old version. Returns how many routes now use it.
    pub fn replace(&self, id: &str, loaded: &mut LoadedComponent) -> anyhow::Result<usize> {
        let routes = self.routes_of(id);
        if routes == 0 {
            return Ok(0);
        }
        let Some(pre) = loaded.http.take() else {
            bail!(
                "component `{id}` serves HTTP routes, but the new version exports no wasi:http handler; it exports: {}",
                loaded.exports.join(", ")
            );
        };
        // Routes of one component share one handler, so one swap serves all.
        if let Some((_, handler)) = self.handlers.iter().find(|(c, _)| c == id) {
            let state = handler.state();
            {
                let mut current = state.current.write().unwrap_or_else(|e| e.into_inner());
                *current = (Arc::new(pre), current.1 + 1);
                *state.digest.write().unwrap_or_else(|e| e.into_inner()) = loaded.digest.clone();
            }
            if let Some(reuse) = &state.reuse {
                // Dropped outside the lock: dropping a store frees its memory.
                let stale =
                    std::mem::take(&mut *reuse.idle.lock().unwrap_or_else(|e| e.into_inner()));
                drop(stale);
            }
        }
        Ok(routes)
    }

    /// How many routes component `id` serves.
    pub fn routes_of(&self, id: &str) -> usize {
        self.handlers.iter().filter(|(c, _)| c == id).count()
    }
}

impl HttpTrigger {
    /// Builds the trigger from the manifest's `[[trigger.http]]` and the
    /// loaded components, taking their HTTP pre-instances. Fails, naming the
    /// component, if a routed component exports no `wasi:http` handler.
    pub fn new(
        engine: &Arc<Engine>,
        manifest: &Manifest,
        components: &mut HashMap<String, LoadedComponent>,
    ) -> anyhow::Result<HttpTrigger> {
        let mut per_component: HashMap<String, ProxyHandler<ComponentHttp>> = HashMap::new();
        let mut routes = Vec::new();
        let mut handlers = Vec::new();
        for HttpTriggerConfig { route, component } in &manifest.http_triggers {
            let handler = match per_component.get(component) {
                Some(handler) => handler.clone(),
                None => {
                    let Some(loaded) = components.get_mut(component) else {
                        bail!("component `{component}` of route {route} was not loaded");
                    };
                    let Some(pre) = loaded.http.take() else {
                        bail!(
                            "component `{component}` is routed from {route} in {} but exports no wasi:http handler \
                             (wasi:http/handler@0.3.0 or wasi:http/incoming-handler@0.2.x); it exports: {}",
                            manifest.path.display(),
                            loaded.exports.join(", ")
                        );
                    };
                    let limits = loaded.sandbox.limits;
                    let handler = ProxyHandler::new(ComponentHttp {
                        engine: engine.clone(),
                        sandbox: loaded.sandbox.clone(),
                        current: RwLock::new((Arc::new(pre), 0)),
                        digest: RwLock::new(loaded.digest.clone()),
                        reuse: (limits.instance_reuse > 1).then(|| Reuse {
                            idle: Mutex::new(Vec::new()),
                            idle_cap: limits.idle_instances(),
                        }),
                    });
                    per_component.insert(component.clone(), handler.clone());
                    handler
                }
            };
            routes.push(route.clone());
            handlers.push((component.clone(), handler));
        }
        Ok(HttpTrigger { routes, handlers })
    }

    /// `(route, component)` pairs, for the startup summary.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.routes
            .iter()
            .zip(&self.handlers)
            .map(|(r, (c, _))| (r.to_string(), c.clone()))
            .collect()
    }
}

#[async_trait]
impl Endpoint for HttpTrigger {
    fn serves(&self, _method: &Method, path: &str) -> bool {
        best_match(&self.routes, path).is_some()
    }

    async fn serve(&self, request: Request) -> Response {
        // The guest streams the body as it reads it; it never sees more
        // than the limit. A declared length over it is refused up front.
        let limit = server::body_limit(&request);
        if let Err(e) = server::check_declared_length(&request) {
            return e.response();
        }
        let request = request.map(|body| {
            http_body_util::Limited::new(body, limit)
                // Past the limit the guest's body stream fails with WASI's own
                // `HTTP-request-body-size` error.
                .map_err(move |e| match e.downcast::<hyper::Error>() {
                    Ok(e) => wasmtime_wasi_http::Error::from(*e),
                    Err(_) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit as u64)),
                })
                .boxed_unsync()
        });
        self.handle(request).await
    }
}

/// The authority `spin-full-url` and the guest's URI are built from: the
/// `Host` header if it is a plain `host[:port]` (no user info, path or
/// other characters a URL would read differently), else the address the
/// request came in on. `None` when the header is there but is not that.
fn request_authority(parts: &http::request::Parts) -> Option<String> {
    let Some(host) = parts.headers.get(http::header::HOST) else {
        return Some(
            parts
                .extensions
                .get::<server::LocalAddr>()
                .map_or_else(|| "localhost".to_owned(), |a| a.0.to_string()),
        );
    };
    let host = host.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    let plain = authority.as_str() == host
        && !host.contains('@')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    plain.then(|| host.to_owned())
}

/// A request body as a guest reads it.
pub type GuestBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

impl HttpTrigger {
    /// Routes one request, whose body is already bounded, to a fresh
    /// instance of its component (or, with `instance_reuse`, a kept one),
    /// with Spin's routing headers added.
    pub async fn handle(&self, request: http::Request<GuestBody>) -> Response {
        let path = request.uri().path().to_owned();
        let Some((index, matched)) = best_match(&self.routes, &path) else {
            return server::error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no route for {path}"),
            );
        };
        let route = &self.routes[index];
        let (component, handler) = &self.handlers[index];
        let (mut parts, body) = request.into_parts();
        let Some(authority) = request_authority(&parts) else {
            return server::error(
                StatusCode::BAD_REQUEST,
                "ERR_BAD_HOST",
                "the Host header is not a host name or address with an optional port",
            );
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let full_url = format!("http://{authority}{path_and_query}");
        if let Ok(uri) = full_url.parse() {
            parts.uri = uri;
        }
        let raw_route = route.as_str();
        let component_route = raw_route.strip_suffix("/...").unwrap_or(raw_route);
        let client = parts
            .extensions
            .get::<SocketAddr>()
            .map(ToString::to_string);
        let mut spin_headers = vec![
            ("spin-full-url", full_url.clone()),
            ("spin-path-info", matched.path_info.clone()),
            ("spin-matched-route", raw_route.to_owned()),
            ("spin-raw-component-route", raw_route.to_owned()),
            ("spin-component-route", component_route.to_owned()),
            ("spin-base-path", "/".to_owned()),
        ];
        if let Some(client) = client {
            spin_headers.push(("spin-client-addr", client));
        }
        for (name, value) in spin_headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                parts.headers.insert(name, value);
            }
        }
        for (name, value) in &matched.params {
            let header = http::HeaderName::from_bytes(format!("spin-path-match-{name}").as_bytes());
            if let (Ok(header), Ok(value)) = (header, HeaderValue::from_str(value)) {
                parts.headers.insert(header, value);
            }
        }
        let given = TraceContext::from_headers(&parts.headers);
        let request = http::Request::from_parts(parts, body);

        let started = Instant::now();
        let digest = handler
            .state()
            .digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let span = telemetry::http_span(
            request.method().as_str(),
            raw_route,
            &path,
            component,
            &digest,
            Some(&given),
        );
        // What the guest's publishes and state calls continue.
        let trace = telemetry::pass_on(&span, Some(given));
        let result = match &handler.state().reuse {
            Some(reuse) => {
                reuse
                    .call(handler, request, trace)
                    .instrument(span.clone())
                    .await
            }
            None => {
                handler
                    .handle(trace, request)
                    .instrument(span.clone())
                    .await
            }
        };
        let _entered = span.enter();
        match result {
            Ok(response) => {
                span.record(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                );
                if response.status().is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                tracing::debug!(%component, %path, status = %response.status(), elapsed = ?started.elapsed(), "request handled");
                response
            }
            Err(e) if e.is::<ExpirationError>() => {
                tracing::warn!(%component, %path, "the component did not answer within its timeout");
                server::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "ERR_TIMEOUT",
                    format!("component `{component}` did not answer in time"),
                )
            }
            Err(e) if e.is::<InstantiationError<Option<TraceContext>>>() => {
                tracing::warn!(%component, %path, "cannot instantiate: {e:#}");
                server::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ERR_INSTANTIATE",
                    format!("component `{component}` cannot be started now"),
                )
            }
            Err(e) => {
                tracing::warn!(%component, %path, "the component failed: {e:?}");
                server::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_COMPONENT_FAILED",
                    format!("component `{component}` failed to handle the request"),
                )
            }
        }
    }
}

/// What `ProxyHandler` needs to make instances of one component.
struct ComponentHttp {
    engine: Arc<Engine>,
    sandbox: Arc<Sandbox>,
    /// The current version and its generation: a live deploy swaps it, and
    /// requests already in flight finish on the version they started with.
    current: RwLock<(Arc<ProxyPre<HostState>>, u64)>,
    /// The current version's digest, for the requests' spans.
    digest: RwLock<Arc<str>>,
    /// Set when the component reuses instances (`instance_reuse` > 1).
    reuse: Option<Reuse>,
}

impl ComponentHttp {
    /// The current version and its generation.
    fn current(&self) -> (Arc<ProxyPre<HostState>>, u64) {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The instances a reusing component keeps for its next requests.
struct Reuse {
    idle: Mutex<Vec<Kept>>,
    /// The most instances kept idle ([`SandboxLimits::idle_instances`](crate::manifest::SandboxLimits::idle_instances)).
    idle_cap: usize,
}

/// An instance that answered its last request cleanly and may take another.
struct Kept {
    store: Store<HostState>,
    proxy: Proxy,
    /// How many requests it has answered.
    served: u32,
    /// The generation of the version it is an instance of; an instance of
    /// a version since replaced is never kept.
    generation: u64,
}

impl Reuse {
    /// One request to `handler`'s component, which reuses instances: on an
    /// idle instance if there is one, else on a fresh one, under the rules
    /// of the module's docs. Fails with the errors `ProxyHandler::handle`
    /// fails with, so that [`HttpTrigger::handle`] answers both alike.
    async fn call(
        &self,
        handler: &ProxyHandler<ComponentHttp>,
        request: http::Request<GuestBody>,
        trace: Option<TraceContext>,
    ) -> wasmtime::Result<Response> {
        let component = handler.state();
        let limits = component.sandbox.limits;
        let head = request.method() == Method::HEAD;
        // A place under `max_instances`, held only while the request runs.
        let admission = component.sandbox.admit().await;
        let (pre, generation) = component.current();
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|k| k.generation == generation);
            idle.pop()
        };
        let mut kept = match idle {
            Some(mut kept) => {
                let state = kept.store.data_mut();
                state.admission = admission;
                state.trace = trace;
                Metrics::inc(&state.metrics.http_requests_on_reused_instances);
                kept
            }
            None => {
                let fresh = async {
                    let mut store =
                        component
                            .engine
                            .admitted_store(&component.sandbox, trace, admission)?;
                    let proxy = pre.instantiate_async(&mut store).await?;
                    wasmtime::Result::<_>::Ok((store, proxy))
                };
                match fresh.await {
                    Ok((store, proxy)) => Kept {
                        store,
                        proxy,
                        served: 0,
                        generation,
                    },
                    Err(error) => {
                        return Err(InstantiationError {
                            request_data: None::<TraceContext>,
                            request: Mutex::new(request),
                            error: Arc::new(error),
                        }
                        .into());
                    }
                }
            }
        };
        // The host's deadline first, so that the guest's epoch deadline is
        // never before it: a guest stopped in a loop is answered 504.
        let deadline = tokio::time::Instant::now() + limits.timeout;
        set_deadline(&mut kept.store, limits.timeout);
        let (response_tx, response_rx) = oneshot::channel();
        let (ended_tx, ended_rx) = oneshot::channel();
        // The instance runs on a task of its own: it goes on after the
        // response's head is out, writing the body, and is kept or dropped
        // once it is done.
        let handler = handler.clone();
        tokio::spawn(async move {
            let clean = run(&mut kept, request, response_tx, ended_rx, deadline).await;
            let component = handler.state();
            if let (true, Some(reuse)) = (clean, &component.reuse) {
                reuse.keep(component, kept);
            }
        });
        match response_rx.await {
            Ok(Ok(response)) => {
                let end = BodyEnd::of(head, &response);
                Ok(response.map(|body| EndWatch::new(body, end, ended_tx).boxed_unsync()))
            }
            Ok(Err(e)) => Err(e),
            // The instance ended without a word: a trap, or the host's
            // timeout (its task logged which).
            Err(oneshot::Canceled) if tokio::time::Instant::now() >= deadline => {
                Err(ExpirationError.into())
            }
            Err(oneshot::Canceled) => Err(TrapOrPanicError.into()),
        }
    }

    /// Keeps `kept`, which answered its request cleanly, for the next
    /// request: if it may take one more, is of the current version, and
    /// there is room among the idle. Otherwise it is dropped, outside the
    /// lock (dropping a store frees its memory).
    fn keep(&self, component: &ComponentHttp, mut kept: Kept) {
        kept.served += 1;
        if kept.served >= component.sandbox.limits.instance_reuse {
            tracing::debug!(component = %component.sandbox.component, served = kept.served, "dropping the instance: it took all the requests instance_reuse allows");
            return;
        }
        // Its place under `max_instances` is given back once it is among
        // the idle, so that a request the place lets in finds it there.
        let admission = kept.store.data_mut().admission.take();
        kept.store.data_mut().trace = None;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = if idle.len() < self.idle_cap && kept.generation == component.current().1 {
            idle.push(kept);
            None
        } else {
            tracing::debug!(component = %component.sandbox.component, "dropping the instance: as many are idle as may be, or a deploy replaced its version");
            Some(kept)
        };
        drop(idle);
        drop(dropped);
        drop(admission);
    }
}

/// Runs `request` on `kept` and, once the guest answered, its response
/// body ended and the guest's work after it is done, says whether all of
/// it went cleanly: no trap, no timeout, an answer that was not an error,
/// and a body read to its end. `false` drops the instance.
async fn run(
    kept: &mut Kept,
    request: http::Request<GuestBody>,
    response_tx: oneshot::Sender<wasmtime::Result<Response>>,
    ended: oneshot::Receiver<bool>,
    deadline: tokio::time::Instant,
) -> bool {
    let component = kept.store.data().component.clone();
    let Kept { store, proxy, .. } = kept;
    let proxy = &*proxy;
    let run = store.run_concurrent(async |accessor| {
        let prepared = accessor.with(|mut store| {
            Prepared::new(
                store.as_context_mut(),
                proxy,
                request,
                WasiHttpView::http,
                response_tx,
            )
        })?;
        // `false`: the request expired before the guest answered.
        if !prepared
            .run(accessor, tokio::time::sleep_until(deadline))
            .await?
        {
            return wasmtime::Result::<_>::Ok(false);
        }
        // The body may still be on its way (a WASI 0.3 guest writes it
        // from a task of its own): the store runs until it has ended,
        // and until the guest's work after its answer is done.
        let clean = ended.await == Ok(true);
        std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
        Ok(clean)
    });
    match tokio::time::timeout_at(deadline + HOST_TIMEOUT_SLACK, run).await {
        Ok(Ok(Ok(true))) => true,
        Ok(Ok(Ok(false))) => {
            tracing::debug!(%component, "dropping the instance: it ran out of time, answered an error, or its body did not end cleanly");
            false
        }
        Ok(Ok(Err(e)) | Err(e)) => {
            tracing::warn!(%component, "instance ended with an error: {e:?}");
            false
        }
        Err(_) => {
            tracing::warn!(%component, "the instance did not finish within its timeout");
            false
        }
    }
}

/// A response body that reports, once, whether it ended cleanly: `true`
/// when it reached its end, `false` when it failed or was dropped before
/// its end (a client that hung up). An instance is kept only after `true`.
struct EndWatch {
    body: server::Body,
    end: BodyEnd,
    /// In a mutex only so that [`http_body::Body::is_end_stream`], which
    /// takes `&self`, can report too.
    ended: Mutex<Option<oneshot::Sender<bool>>>,
}

/// Where a response's body ends, as hyper sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// When the body says so: hyper reads it to its end.
    Stream,
    /// After this many more bytes (`content-length`): hyper stops reading
    /// there, without waiting for the body to say it has ended.
    Length(u64),
    /// Nowhere: hyper sends no body (an answer to `HEAD`, a `1xx`, `204`
    /// or `304`, or `content-length: 0`) and drops it unread.
    None,
}

impl BodyEnd {
    fn of(head: bool, response: &Response) -> BodyEnd {
        let status = response.status();
        if head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return BodyEnd::None;
        }
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map_or(BodyEnd::Stream, |n| {
                if n == 0 {
                    BodyEnd::None
                } else {
                    BodyEnd::Length(n)
                }
            })
    }
}

impl EndWatch {
    fn new(body: server::Body, end: BodyEnd, ended: oneshot::Sender<bool>) -> EndWatch {
        EndWatch {
            body,
            end,
            ended: Mutex::new(Some(ended)),
        }
    }

    fn report(&self, clean: bool) {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(ended) = ended {
            let _ = ended.send(clean);
        }
    }
}

impl http_body::Body for EndWatch {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.report(true),
            Poll::Ready(Some(Err(_))) => this.report(false),
            Poll::Ready(Some(Ok(frame))) => {
                if let (BodyEnd::Length(left), Some(data)) = (&mut this.end, frame.data_ref()) {
                    *left = left.saturating_sub(data.len() as u64);
                    if *left == 0 {
                        this.report(true);
                    }
                }
            }
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        if end {
            self.report(true);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        // Dropped before its end: not clean, unless no body was to be
        // sent (nothing if it already reported).
        self.report(self.end == BodyEnd::None);
    }
}

impl HandlerState for ComponentHttp {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = OneRequest;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, OneRequest>> {
        let mut store = self.engine.store(&self.sandbox, None).await?;
        let (pre, _) = self.current();
        let proxy = pre.instantiate_async(&mut store).await?;
        let timeout = self.sandbox.limits.timeout;
        Ok(Instance {
            store,
            proxy,
            view: WasiHttpView::http,
            expiration: Expiration {
                timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX / 4)),
            },
            state: OneRequest {
                component: self.sandbox.component.clone(),
                timeout,
            },
        })
    }
}

/// Every instance handles exactly one request, then is dropped.
struct OneRequest {
    component: Arc<str>,
    timeout: Duration,
}

impl WorkerState for OneRequest {
    type StoreData = HostState;
    /// The trace context the request's span passes on to the guest's calls.
    type RequestData = Option<TraceContext>;

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        if total == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::Never
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        trace: Option<TraceContext>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.data_mut().trace = trace;
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, store: wasmtime::Store<HostState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            tracing::warn!(component = %self.component, "instance ended with an error: {e:?}");
        }
        drop(store);
    }
}

/// Expires a worker `timeout` after its request started (the second line of
/// defence next to the epoch deadline), or an idle one after a while.
struct Expiration {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let limit = match status {
            WorkerStatus::Idle => IDLE_WORKER_TIMEOUT,
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.timeout,
        };
        let Some(deadline) = start.checked_add(limit) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::request_authority;

    fn parts(host: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::builder().uri("/orders");
        if let Some(host) = host {
            request = request.header(http::header::HOST, host);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(crate::server::LocalAddr("127.0.0.1:3000".parse().unwrap()));
        parts
    }

    #[test]
    fn only_a_plain_host_header_builds_the_url() {
        let authority = |host| request_authority(&parts(host));
        assert_eq!(
            authority(Some("localhost:3000")).as_deref(),
            Some("localhost:3000")
        );
        assert_eq!(authority(Some("[::1]:3000")).as_deref(), Some("[::1]:3000"));
        assert_eq!(
            authority(Some("orders.example")).as_deref(),
            Some("orders.example")
        );
        assert_eq!(authority(None).as_deref(), Some("127.0.0.1:3000"));
        for forged in [
            "evil.example/admin?",
            "user@evil.example",
            "evil.example#",
            "a b",
            "",
            "evil.example:3000/../x",
        ] {
            assert_eq!(authority(Some(forged)), None, "{forged:?}");
        }
    }
}
