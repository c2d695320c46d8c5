//! The HTTP trigger: `[[trigger.http]]` routes served by `wasi:http` components.
//!
//! Both handler generations are served: `wasi:http/incoming-handler@0.2`
//! and the WASI 0.3 `wasi:http/handler@0.3.0` that `spin-sdk` 7 exports.
//! wasmtime-wasi-http's `ProxyHandler` drives the guest; this trigger tells it
//! to use each instance for exactly one request, so every request gets a
//! fresh instance, and to give up on a request after the component's
//! `timeout`.
//!
//! Requests carry Spin's routing headers (`spin-full-url`, `spin-path-info`,
//! `spin-matched-route`, `spin-component-route`, `spin-raw-component-route`,
//! `spin-base-path`, `spin-client-addr` and `spin-path-match-NAME`), so a
//! component written for Spin sees what it expects.

use crate::engine::{Engine, HostState, LoadedComponent, Sandbox};
use crate::manifest::route::{Route, best_match};
use crate::manifest::{HttpTrigger as HttpTriggerConfig, Manifest};
use crate::server::{self, Endpoint, Request, Response};
use anyhow::bail;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::StoreContextMut;
use wasmtime::component::GuestTaskId;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, ProxyHandler, ProxyPre,
    ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

/// How long a spare worker waits for a queued request before it exits.
const IDLE_WORKER_TIMEOUT: Duration = Duration::from_secs(5);

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
            *handler
                .state()
                .pre
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Arc::new(pre);
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
                    let handler = ProxyHandler::new(ComponentHttp {
                        engine: engine.clone(),
                        sandbox: loaded.sandbox.clone(),
                        pre: RwLock::new(Arc::new(pre)),
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
    /// instance of its component, with Spin's routing headers added.
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
        let request = http::Request::from_parts(parts, body);

        let started = Instant::now();
        match handler.handle((), request).await {
            Ok(response) => {
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
            Err(e) if e.is::<InstantiationError<()>>() => {
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
    /// The current version; a live deploy swaps it.
    pre: RwLock<Arc<ProxyPre<HostState>>>,
}

impl HandlerState for ComponentHttp {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = OneRequest;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiration, OneRequest>> {
        let mut store = self.engine.store(&self.sandbox, None).await?;
        let pre = self.pre.read().unwrap_or_else(|e| e.into_inner()).clone();
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
    type RequestData = ();

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        if total == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::Never
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, HostState>,
        _data: (),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
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
