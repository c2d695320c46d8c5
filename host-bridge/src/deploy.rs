//! Live deploys: a new version of one component, swapped into the running
//! host with no restart, from the admin API ([`AdminApi`]) or from
//! `up --watch`.
//!
//! A deploy is all or nothing:
//!
//! 1. the new bytes compile and link away from the request and delivery
//!    paths (on a blocking thread): every import must be one the host
//!    grants, as at startup;
//! 2. the new version must fit every role the component has: a `wasi:http`
//!    handler if it serves routes, a subscriber world if it serves
//!    subscriptions;
//! 3. only then is it swapped in, one deploy at a time.
//!
//! A failure at any step leaves the old version serving and says why.
//! Requests and deliveries in flight finish on the version they started
//! with; the next ones get the new version.
//!
//! A deploy replaces a component's code, never the manifest: the routes,
//! subscriptions and grants stay as they are. Under Dapr that matters,
//! since daprd reads the subscriptions once, at startup.

use crate::engine::{Engine, core_module};
use crate::manifest::Manifest;
use crate::registry::digest;
use crate::server::{self, Endpoint, Request, Response};
use crate::triggers::http::HttpTrigger;
use crate::triggers::pubsub::PubsubTrigger;
use anyhow::bail;
use async_trait::async_trait;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Swaps components of a running app.
pub struct Deployer {
    engine: Arc<Engine>,
    manifest: Manifest,
    http: Arc<HttpTrigger>,
    pubsub: Arc<PubsubTrigger>,
    /// One deploy at a time, so two deploys of one component cannot
    /// interleave their checks and swaps.
    lock: tokio::sync::Mutex<()>,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub component: String,
    pub digest: String,
    pub compile_time: Duration,
    pub routes: usize,
    pub subscriptions: usize,
}

/// Why a deploy was refused; the old version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the manifest has no component `{0}`")]
    Unknown(String),
    #[error("component `{0}` is not used by any trigger, so nothing would run it")]
    Unused(String),
    #[error("{0:#}")]
    Invalid(anyhow::Error),
}

impl Deployer {
    pub fn new(
        engine: Arc<Engine>,
        manifest: Manifest,
        http: Arc<HttpTrigger>,
        pubsub: Arc<PubsubTrigger>,
    ) -> Deployer {
        Deployer {
            engine,
            manifest,
            http,
            pubsub,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// How many routes and subscriptions component `id` serves; an error
    /// if it is unknown or serves none.
    pub fn roles(&self, id: &str) -> Result<(usize, usize), DeployError> {
        if !self.manifest.components.contains_key(id) {
            return Err(DeployError::Unknown(id.to_owned()));
        }
        let routes = self.http.routes_of(id);
        let subscriptions = self
            .manifest
            .pubsub_triggers
            .iter()
            .filter(|t| t.component == id)
            .count();
        if routes == 0 && subscriptions == 0 {
            return Err(DeployError::Unused(id.to_owned()));
        }
        Ok((routes, subscriptions))
    }

    /// Deploys `bytes` (a component, or a `wasm32-wasip1` core module) as
    /// the new version of component `id`.
    pub async fn deploy(&self, id: &str, bytes: Vec<u8>) -> Result<Deployed, DeployError> {
        let (routes, _) = self.roles(id)?;
        let _one_at_a_time = self.lock.lock().await;
        let new_digest = digest(&bytes);
        let started = Instant::now();
        let engine = self.engine.clone();
        let component = self.manifest.components[id].clone();
        let what = format!("the new version of `{id}` ({new_digest})");
        let mut loaded = tokio::task::spawn_blocking(move || {
            let bytes = core_module::component_bytes_of(bytes, &what)?;
            engine.load_bytes(&component, bytes)
        })
        .await
        .map_err(|e| DeployError::Invalid(e.into()))?
        .map_err(|e| DeployError::Invalid(anyhow::anyhow!("{e:#}")))?;
        if routes > 0 && loaded.http.is_none() {
            return Err(DeployError::Invalid(anyhow::anyhow!(
                "component `{id}` serves HTTP routes, but the new version exports no wasi:http handler; it exports: {}",
                loaded.exports.join(", ")
            )));
        }
        // The subscriber check can fail, so it runs (and swaps) first; the
        // HTTP swap cannot fail any more, having been checked above.
        let subscriptions = self
            .pubsub
            .replace(id, &loaded)
            .map_err(DeployError::Invalid)?;
        let routes = self
            .http
            .replace(id, &mut loaded)
            .map_err(DeployError::Invalid)?;
        let deployed = Deployed {
            component: id.to_owned(),
            digest: new_digest,
            compile_time: started.elapsed(),
            routes,
            subscriptions,
        };
        eprintln!(
            "host-bridge: deployed `{id}` {} (compiled in {:.1?}; {routes} route(s), {subscriptions} subscription(s))",
            deployed.digest, deployed.compile_time
        );
        Ok(deployed)
    }
}

/// The admin API: `PUT /admin/components/{name}` with the new `.wasm` as
/// the body and `Authorization: Bearer {token}`. It is served on its own
/// listener (`up --admin`, localhost by default), never on the app's.
pub struct AdminApi {
    deployer: Arc<Deployer>,
    token: String,
}

/// The prefix of the admin API's one resource.
const COMPONENTS: &str = "/admin/components/";

impl AdminApi {
    /// Fails if `token` is empty: the admin API is never open.
    pub fn new(deployer: Arc<Deployer>, token: String) -> anyhow::Result<AdminApi> {
        if token.is_empty() {
            bail!("the admin API needs a token: set HOST_BRIDGE_ADMIN_TOKEN");
        }
        Ok(AdminApi { deployer, token })
    }
}

#[async_trait]
impl Endpoint for AdminApi {
    fn serves(&self, _method: &Method, path: &str) -> bool {
        path.starts_with("/admin/")
    }

    async fn serve(&self, request: Request) -> Response {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !server::token_matches(&self.token, given) {
            return server::error(
                StatusCode::UNAUTHORIZED,
                "ERR_UNAUTHORIZED",
                "the admin API needs `Authorization: Bearer <HOST_BRIDGE_ADMIN_TOKEN>`",
            );
        }
        let path = request.uri().path().to_owned();
        let Some(id) = path.strip_prefix(COMPONENTS).filter(|id| !id.contains('/')) else {
            return server::error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no admin resource {path}; deploy with PUT {COMPONENTS}NAME"),
            );
        };
        let id = id.to_owned();
        if request.method() == Method::GET {
            return match self.deployer.roles(&id) {
                Ok((routes, subscriptions)) => server::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "component": id,
                        "routes": routes,
                        "subscriptions": subscriptions,
                    }),
                ),
                Err(e) => e.response(),
            };
        }
        if request.method() != Method::PUT {
            return server::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "ERR_METHOD_NOT_ALLOWED",
                format!("{path} takes GET, or PUT with the new .wasm as the body"),
            );
        }
        let body = match server::read_body(request).await {
            Ok((_, body)) => body,
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
                }),
            ),
            Err(e) => {
                eprintln!(
                    "host-bridge: deploy of `{id}` refused; the old version keeps serving: {e}"
                );
                e.response()
            }
        }
    }
}

impl DeployError {
    fn response(&self) -> Response {
        let status = match self {
            DeployError::Unknown(_) => StatusCode::NOT_FOUND,
            DeployError::Unused(_) | DeployError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        server::error(status, "ERR_DEPLOY_REFUSED", self.to_string())
    }
}

/// How often `up --watch` looks at the watched files.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// `up --watch`: for every component with `build.watch` patterns, rebuilds
/// it when a watched file changes (is added, removed or modified) and
/// deploys the result, so nothing restarts. A failed build or deploy is
/// reported and the running version keeps serving. Runs until dropped.
pub async fn watch(deployer: Arc<Deployer>) {
    let watched: Vec<(String, Vec<String>)> = deployer
        .manifest
        .components
        .iter()
        .filter_map(|(id, c)| {
            let build = c.build.as_ref()?;
            let patterns: Vec<String> = build
                .watch
                .iter()
                .map(|p| build.workdir.join(p).display().to_string())
                .collect();
            (!patterns.is_empty()).then(|| (id.clone(), patterns))
        })
        .collect();
    if watched.is_empty() {
        eprintln!("host-bridge: --watch: no component has [component.NAME.build] watch patterns");
        return;
    }
    for (id, patterns) in &watched {
        eprintln!("host-bridge: watching `{id}`: {}", patterns.join(", "));
    }
    let mut seen: Vec<Fingerprint> = watched.iter().map(|(_, p)| fingerprint(p)).collect();
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        for ((id, patterns), seen) in watched.iter().zip(&mut seen) {
            let now = fingerprint(patterns);
            if now == *seen {
                continue;
            }
            *seen = now;
            eprintln!("host-bridge: `{id}` changed; rebuilding");
            if let Err(e) = rebuild_and_deploy(&deployer, id).await {
                eprintln!(
                    "host-bridge: `{id}` was not redeployed; the running version keeps serving: {e:#}"
                );
            }
        }
    }
}

/// What the watched files look like: each path with its size and
/// modification time.
type Fingerprint = Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>;

fn fingerprint(patterns: &[String]) -> Fingerprint {
    let mut files: Fingerprint = patterns
        .iter()
        .filter_map(|p| glob::glob(p).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file()
                .then(|| (path, meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

async fn rebuild_and_deploy(deployer: &Arc<Deployer>, id: &str) -> anyhow::Result<()> {
    let manifest = deployer.manifest.clone();
    let only = vec![id.to_owned()];
    tokio::task::spawn_blocking(move || crate::build::run(&manifest, &only)).await??;
    let source = &deployer.manifest.components[id].source;
    let bytes = tokio::fs::read(source).await?;
    deployer.deploy(id, bytes).await?;
    Ok(())
}
