//! The admin listener (`up --admin`): live deploys, and a live page that
//! shows what the host runs and what became of its messages.
//!
//! - `GET /` and its assets (`page.rs`): one HTML page with its CSS and
//!   JavaScript, compiled into the binary, loading nothing from outside.
//!   They hold no data, so they are served without the token; the page asks
//!   for the token once and sends it with every call below.
//! - `GET /admin/overview` (`api.rs`): the components (world, digest,
//!   grants), routes and subscriptions.
//! - `GET /admin/dead-letters`, `POST /admin/dead-letters/{id}/replay`,
//!   `DELETE /admin/dead-letters/{id}` (`api.rs`): the backend's
//!   [`DeadLetters`].
//! - `GET /admin/events` (`events.rs`): a `text/event-stream` with the
//!   per-subscription statistics every second.
//! - `GET` and `PUT /admin/components/{name}`: live deploys ([`Deployer`]).
//!
//! **Who may call.** Every `/admin/` path needs `Authorization: Bearer
//! $HOST_BRIDGE_ADMIN_TOKEN`, compared in constant time
//! ([`server::token_matches`]); the listener is loopback unless TLS is
//! configured (`deploy::AdminOptions`). The page is served with a
//! Content-Security-Policy that allows only its own script and style, and
//! it writes every value it shows as text, never as HTML, so a payload in a
//! dead letter cannot run in the operator's browser.

mod api;
mod events;
mod page;

use crate::broker::dead_letters::DeadLetters;
use crate::broker::stats::SubscriptionStats;
use crate::deploy::{ADMIN_BODY_READ_TIMEOUT, AdminError, AdminOptions, Deployer, check_token};
use crate::manifest::Manifest;
use crate::server::{self, Endpoint, Request, Response};
use async_trait::async_trait;
use http::{Method, StatusCode};
use std::sync::Arc;

pub use events::MAX_STREAMS;

/// What the page shows besides deploys: wired by `up` from the manifest,
/// the triggers and the broker backend.
pub struct Observed {
    /// The backend's name (`embedded` or `dapr`).
    pub broker: &'static str,
    pub manifest: Manifest,
    /// Each HTTP route and its component.
    pub routes: Vec<(String, String)>,
    /// Per subscription, by its index in the manifest.
    pub stats: Arc<SubscriptionStats>,
    pub dead_letters: Arc<dyn DeadLetters>,
}

/// The admin API, served on its own listener (`up --admin`, loopback by
/// default), never on the app's.
pub struct AdminApi {
    deployer: Arc<Deployer>,
    token: String,
    max_component_size: usize,
    observed: Observed,
    streams: events::Streams,
}

/// The prefix of the deploy resource.
const COMPONENTS: &str = "/admin/components/";

impl AdminApi {
    /// Fails as [`AdminOptions::check`] does on the token: the admin API
    /// is never open, nor guarded by a guessable token.
    pub fn new(
        deployer: Arc<Deployer>,
        options: &AdminOptions,
        observed: Observed,
    ) -> Result<AdminApi, AdminError> {
        check_token(&options.token)?;
        Ok(AdminApi {
            deployer,
            token: options.token.clone(),
            max_component_size: options.max_component_size,
            observed,
            streams: events::Streams::new(),
        })
    }

    /// The limits of the admin API's listener: `up`'s, with time for an
    /// upload as large as `--max-component-size`.
    pub fn limits(base: &server::Limits) -> server::Limits {
        server::Limits {
            body_read_timeout: base.body_read_timeout.max(ADMIN_BODY_READ_TIMEOUT),
            ..*base
        }
    }

    /// Ends every live stream, so that the listener's graceful shutdown,
    /// which waits for every response to finish, is not held up by them.
    /// Called by `up` before it stops the listener.
    pub fn close_streams(&self) {
        self.streams.close();
    }

    fn authorized(&self, request: &Request) -> bool {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        server::token_matches(&self.token, given)
    }

    fn too_large(&self) -> Response {
        server::unread_body(server::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ERR_BODY_TOO_LARGE",
            format!(
                "the upload is larger than the limit of {} bytes (--max-component-size); the old version keeps serving",
                self.max_component_size
            ),
        ))
    }

    /// `GET` or `PUT /admin/components/{id}`.
    async fn component(&self, id: String, request: Request) -> Response {
        if request.method() == Method::GET {
            return match self.deployer.roles(&id) {
                Ok((routes, subscriptions)) => server::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "component": id,
                        "routes": routes,
                        "subscriptions": subscriptions,
                        // So a client can refuse a larger upload before
                        // sending a byte of it.
                        "maxComponentSize": self.max_component_size,
                    }),
                ),
                Err(e) => e.response(),
            };
        }
        if request.method() != Method::PUT {
            return server::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "ERR_METHOD_NOT_ALLOWED",
                format!("{COMPONENTS}{id} takes GET, or PUT with the new .wasm as the body"),
            );
        }
        // The router's body limit is --max-component-size: a declared
        // length over it is refused before a byte is read, and a chunked
        // upload is read no further than it.
        let body = match server::read_body(request).await {
            Ok((_, body)) => body,
            Err(server::BodyError::TooLarge { .. }) => {
                crate::say!(
                    "deploy of `{id}` refused; the old version keeps serving: the upload is over --max-component-size ({} bytes)",
                    self.max_component_size
                );
                return self.too_large();
            }
            Err(e) => return e.response(),
        };
        match self.deployer.deploy(&id, body.to_vec()).await {
            Ok(d) => server::json(
                StatusCode::OK,
                &serde_json::json!({
                    "component": d.component,
                    "digest": d.digest,
                    "compileMs": d.compile_time.as_millis() as u64,
                    "routes": d.routes,
                    "subscriptions": d.subscriptions,
                    "kept": self.deployer.kept_dir().map(|d| d.display().to_string()),
                }),
            ),
            Err(e) => {
                crate::say!("deploy of `{id}` refused; the old version keeps serving: {e}");
                e.response()
            }
        }
    }
}

#[async_trait]
impl Endpoint for AdminApi {
    fn serves(&self, method: &Method, path: &str) -> bool {
        path.starts_with("/admin/") || (method == Method::GET && page::serves(path))
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        // The page and its assets: static, with no data, so no token.
        if let Some(response) = page::asset(&path) {
            return response;
        }
        if !self.authorized(&request) {
            return server::error(
                StatusCode::UNAUTHORIZED,
                "ERR_UNAUTHORIZED",
                "the admin API needs `Authorization: Bearer <HOST_BRIDGE_ADMIN_TOKEN>`",
            );
        }
        let method = request.method().clone();
        if let Some(id) = path.strip_prefix(COMPONENTS).filter(|id| !id.contains('/')) {
            return self.component(id.to_owned(), request).await;
        }
        match (&method, path.as_str()) {
            (&Method::GET, "/admin/overview") => api::overview(self),
            (&Method::GET, "/admin/events") => self.streams.open(
                self.observed.stats.clone(),
                self.observed.dead_letters.clone(),
                self.deployer.clone(),
            ),
            (&Method::GET, "/admin/dead-letters") => {
                api::dead_letters(self.observed.dead_letters.as_ref()).await
            }
            _ => match api::dead_letter_action(&method, &path) {
                Some(action) => action.run(self.observed.dead_letters.as_ref()).await,
                None => server::error(
                    StatusCode::NOT_FOUND,
                    "ERR_NOT_FOUND",
                    format!(
                        "no admin resource {method} {path}; see GET /admin/overview, /admin/events, \
                         /admin/dead-letters, or deploy with PUT {COMPONENTS}NAME"
                    ),
                ),
            },
        }
    }
}
