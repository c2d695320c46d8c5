//! Live deploys: a new version of one component, swapped into the running
//! host with no restart, from the admin API ([`crate::admin::AdminApi`])
//! or from `up --watch`.
//!
//! A deploy is all or nothing:
//!
//! 1. the new bytes compile and link away from the request and delivery
//!    paths (on a blocking thread): every import must be one the host
//!    grants, as at startup;
//! 2. the new version must fit every role the component has: a `wasi:http`
//!    handler if it serves routes, a subscriber world if it serves
//!    subscriptions;
//! 3. a deploy through the admin API is kept in the data dir ([`kept`]),
//!    so a restart runs it again;
//! 4. only then is it swapped in, one deploy at a time.
//!
//! A failure at any step leaves the old version serving and says why.
//! Requests and deliveries in flight finish on the version they started
//! with; the next ones get the new version.
//!
//! A deploy replaces a component's code, never the manifest: the routes,
//! subscriptions and grants stay as they are. Under Dapr that matters,
//! since daprd reads the subscriptions once, at startup.
//!
//! **Who may deploy.** The admin API takes new code for the app, so it is
//! the host's most trusted listener: off unless `--admin` is given,
//! loopback by default, TLS ([`tls`]) on any other address, a bearer token
//! of at least [`MIN_TOKEN_BYTES`] bytes, and uploads no larger than
//! `--max-component-size`. [`AdminOptions::check`] refuses, before
//! anything starts, an admin API that would break one of these.

pub mod kept;
pub mod tls;

use crate::engine::{Engine, LoadedComponent, core_module};
use crate::manifest::Manifest;
use crate::registry::digest;
use crate::server::{self, Response};
use crate::triggers::http::HttpTrigger;
use crate::triggers::pubsub::PubsubTrigger;
use anyhow::Context as _;
use http::StatusCode;
use kept::{Kept, Record};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tls::{TlsAcceptor, TlsError, TlsFiles};

/// Refuses an empty token, or one shorter than [`MIN_TOKEN_BYTES`].
pub fn check_token(token: &str) -> Result<(), AdminError> {
    match token.len() {
        0 => Err(AdminError::NoToken),
        n if n < MIN_TOKEN_BYTES => Err(AdminError::ShortToken(n)),
        _ => Ok(()),
    }
}

/// How the admin API is served (`up --admin` and the flags beside it).
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// `--admin`: `127.0.0.1:3001` when given without an address.
    pub listen: SocketAddr,
    /// `HOST_BRIDGE_ADMIN_TOKEN`.
    pub token: String,
    /// `--admin-tls-cert` and `--admin-tls-key`.
    pub tls: Option<TlsFiles>,
    /// `--max-component-size`: the largest upload taken.
    pub max_component_size: usize,
}

/// The shortest admin token taken, in bytes: 32 hex digits carry 128
/// random bits, past guessing (`openssl rand -hex 32` makes 64).
pub const MIN_TOKEN_BYTES: usize = 32;

/// How long an upload to the admin API may take to arrive: longer than a
/// request body on the app's port may, as a component is larger.
pub const ADMIN_BODY_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the admin API cannot be served as asked; `up` does not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the admin API (--admin) needs a token: set HOST_BRIDGE_ADMIN_TOKEN to at least {MIN_TOKEN_BYTES} \
         random bytes, e.g. `export HOST_BRIDGE_ADMIN_TOKEN=$(openssl rand -hex 32)`"
    )]
    NoToken,
    #[error(
        "HOST_BRIDGE_ADMIN_TOKEN is {0} bytes long; the admin API needs at least {MIN_TOKEN_BYTES}: make one \
         with `openssl rand -hex 32`"
    )]
    ShortToken(usize),
    #[error(
        "--admin {0} is not a loopback address, so the admin API must speak TLS: give --admin-tls-cert FILE \
         and --admin-tls-key FILE (PEM), or serve it on 127.0.0.1 and reach it through a tunnel"
    )]
    NeedsTls(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl AdminOptions {
    /// Checks that the admin API may be served as asked, before anything
    /// starts: a token of at least [`MIN_TOKEN_BYTES`], and TLS on any
    /// address but loopback. Returns the TLS acceptor, if TLS is asked for
    /// (on loopback too), with the certificate and key read.
    pub fn check(&self) -> Result<Option<TlsAcceptor>, AdminError> {
        check_token(&self.token)?;
        // `::ffff:127.0.0.1` is loopback too.
        let loopback = self.listen.ip().to_canonical().is_loopback();
        match &self.tls {
            Some(files) => Ok(Some(files.acceptor()?)),
            None if loopback => Ok(None),
            None => Err(AdminError::NeedsTls(self.listen)),
        }
    }

    /// `https` or `http`, for the line that says where the API listens.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Swaps components of a running app.
pub struct Deployer {
    engine: Arc<Engine>,
    manifest: Manifest,
    http: Arc<HttpTrigger>,
    pubsub: Arc<PubsubTrigger>,
    /// Where deploys through the admin API are kept; `None` with
    /// `--in-memory`, when nothing outlives the process.
    kept: Option<Kept>,
    /// One deploy at a time, so two deploys of one component cannot
    /// interleave their checks and swaps.
    lock: tokio::sync::Mutex<()>,
    /// What runs as each component, for the admin page.
    versions: std::sync::RwLock<BTreeMap<String, Version>>,
    /// Bumped on every swap, so a live view knows to read the versions again.
    generation: AtomicU64,
}

/// What runs as a component: the worlds it was matched as, and its digest.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub worlds: Vec<String>,
    pub digest: String,
    /// When it was deployed (RFC 3339), or `None` for the version `up`
    /// started with.
    pub deployed_at: Option<String>,
}

impl Version {
    fn of(loaded: &LoadedComponent, deployed_at: Option<String>) -> Version {
        let exports = &loaded.exports;
        let subscriber = crate::triggers::subscriber::WORLDS
            .iter()
            .find(|w| exports.iter().any(|e| e.starts_with(w.export)))
            .map(|w| w.name.to_owned());
        let http = exports
            .iter()
            .filter(|e| e.starts_with("wasi:http/"))
            .map(|e| format!("wasi:http ({e})"));
        Version {
            worlds: subscriber.into_iter().chain(http).collect(),
            digest: loaded.digest.to_string(),
            deployed_at,
        }
    }
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
    #[error("{0}; it was not deployed, as a restart would lose it")]
    NotKept(kept::KeptError),
}

/// Whether a deploy is kept for the next restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A deploy through the admin API: its bytes exist nowhere else.
    Yes,
    /// A rebuild by `--watch` (the manifest's own source, which a restart
    /// loads anyway), or a kept version applied again at startup.
    No,
}

impl Deployer {
    /// `components` are the versions `up` started with.
    pub fn new(
        engine: Arc<Engine>,
        manifest: Manifest,
        http: Arc<HttpTrigger>,
        pubsub: Arc<PubsubTrigger>,
        kept: Option<Kept>,
        components: &HashMap<String, LoadedComponent>,
    ) -> Deployer {
        let versions = components
            .iter()
            .map(|(id, loaded)| (id.clone(), Version::of(loaded, None)))
            .collect();
        Deployer {
            engine,
            manifest,
            http,
            pubsub,
            kept,
            lock: tokio::sync::Mutex::new(()),
            versions: std::sync::RwLock::new(versions),
            generation: AtomicU64::new(0),
        }
    }

    /// What runs as each component now.
    pub fn versions(&self) -> BTreeMap<String, Version> {
        self.versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A number that changes on every swap.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Where deploys are kept, if anywhere.
    pub fn kept_dir(&self) -> Option<std::path::PathBuf> {
        self.kept.as_ref().map(|k| k.dir().to_path_buf())
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

    /// Where deploys are kept, for the line that says where the admin API
    /// listens.
    pub fn keeps(&self) -> String {
        match &self.kept {
            Some(kept) => format!("deploys are kept in {}", kept.dir().display()),
            None => {
                "deploys are not kept (no data dir, as with --in-memory): a restart runs the manifest's code".to_owned()
            }
        }
    }

    /// Deploys `bytes` (a component, or a `wasm32-wasip1` core module) as
    /// the new version of component `id`, and keeps it for the next
    /// restart (unless the host runs `--in-memory`).
    pub async fn deploy(&self, id: &str, bytes: Vec<u8>) -> Result<Deployed, DeployError> {
        self.swap(id, bytes, Keep::Yes).await
    }

    #[tracing::instrument(name = "deploy", skip_all, fields(
        otel.name = %format_args!("deploy {id}"),
        host_bridge.component = %id,
        host_bridge.component.digest = tracing::field::Empty,
    ))]
    async fn swap(&self, id: &str, bytes: Vec<u8>, keep: Keep) -> Result<Deployed, DeployError> {
        let (routes, subscriptions) = self.roles(id)?;
        let _one_at_a_time = self.lock.lock().await;
        let new_digest = digest(&bytes);
        tracing::Span::current().record("host_bridge.component.digest", new_digest.as_str());
        let started = Instant::now();
        let engine = self.engine.clone();
        let component = self.manifest.components[id].clone();
        let what = format!("the new version of `{id}` ({new_digest})");
        // The bytes stay here until they are kept; the compiler gets a copy
        // only when there is something to keep.
        let (for_compiler, to_keep) = match (keep, &self.kept) {
            (Keep::Yes, Some(_)) => (bytes.clone(), Some(bytes)),
            _ => (bytes, None),
        };
        let mut loaded = tokio::task::spawn_blocking(move || {
            let bytes = core_module::component_bytes_of(for_compiler, &what)?;
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
        if subscriptions > 0 {
            crate::triggers::subscriber::subscriber_of(id, &loaded)
                .context("it serves subscriptions, so the new version must be a subscriber")
                .map_err(DeployError::Invalid)?;
        }
        // Every check has passed: what is kept will run after a restart.
        if let (Some(kept), Some(bytes)) = (&self.kept, to_keep) {
            self.keep(kept, id, &new_digest, &bytes).await?;
        }
        // Checked above, so neither swap fails: the subscriber world was
        // found, and an HTTP handler is there if routes need one.
        let subscriptions = self
            .pubsub
            .replace(id, &loaded)
            .map_err(DeployError::Invalid)?;
        let version = Version {
            // The digest of the bytes deployed, as the answer names them.
            digest: new_digest.clone(),
            ..Version::of(
                &loaded,
                Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
            )
        };
        let routes = self
            .http
            .replace(id, &mut loaded)
            .map_err(DeployError::Invalid)?;
        self.versions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), version);
        self.generation.fetch_add(1, Ordering::Relaxed);
        let deployed = Deployed {
            component: id.to_owned(),
            digest: new_digest,
            compile_time: started.elapsed(),
            routes,
            subscriptions,
        };
        crate::say!(
            "deployed `{id}` {} (compiled in {:.1?}; {routes} route(s), {subscriptions} subscription(s))",
            deployed.digest,
            deployed.compile_time
        );
        Ok(deployed)
    }

    /// Keeps `bytes` as the deployed version of `id`, replacing the
    /// manifest's source; a deploy of the manifest's own bytes forgets
    /// what was kept, since a restart runs those anyway.
    async fn keep(
        &self,
        kept: &Kept,
        id: &str,
        new_digest: &str,
        bytes: &[u8],
    ) -> Result<(), DeployError> {
        let source = self.manifest.components[id].source.clone();
        let replaces = tokio::task::spawn_blocking(move || std::fs::read(&source).map(|b| digest(&b)))
            .await
            .map_err(|e| DeployError::Invalid(e.into()))?
            .map_err(|e| {
                DeployError::Invalid(anyhow::anyhow!(
                    "cannot read the manifest's source of `{id}`, {}, to record what the deploy replaces: {e}",
                    self.manifest.components[id].source.display()
                ))
            })?;
        if replaces == new_digest {
            return kept.forget(id).map_err(DeployError::NotKept);
        }
        let record = Record {
            component: id.to_owned(),
            digest: new_digest.to_owned(),
            replaces,
            deployed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
        };
        let (kept, bytes) = (kept.clone(), bytes.to_vec());
        tokio::task::spawn_blocking(move || kept.keep(&record, &bytes))
            .await
            .map_err(|e| DeployError::Invalid(e.into()))?
            .map_err(DeployError::NotKept)
    }

    /// At startup, before the app serves: runs again every version kept
    /// by a deploy, in place of the manifest's source, with a line each.
    /// A kept version that can no longer run (its bytes changed on disk,
    /// the manifest's source changed since, it no longer compiles, links
    /// or fits its role) is dropped, with a line naming the component and
    /// why, and the manifest's version runs.
    pub async fn apply_kept(&self) {
        let Some(kept) = &self.kept else {
            return;
        };
        for (id, record) in kept.records() {
            let applied = match &record {
                Ok(record) => match self.apply(kept, record).await {
                    Ok(deployed) => {
                        // It was deployed then, not now.
                        if let Some(version) = self
                            .versions
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_mut(&id)
                        {
                            version.deployed_at = Some(record.deployed_at.clone());
                        }
                        Ok((record, deployed))
                    }
                    Err(why) => Err(format!(
                        "the version deployed at {} ({}) {why}",
                        record.deployed_at, record.digest
                    )),
                },
                Err(e) => Err(format!("its record is unreadable: {e}")),
            };
            match applied {
                Ok((record, deployed)) => crate::say!(
                    "`{id}` runs the version deployed at {} ({}), kept in {}, instead of the manifest's source ({})",
                    record.deployed_at,
                    deployed.digest,
                    kept.dir().display(),
                    record.replaces
                ),
                Err(why) => {
                    crate::say!(
                        "`{id}`: dropped a deployed version: {why}; the manifest's version runs"
                    );
                    if let Err(e) = kept.forget(&id) {
                        crate::say!("`{id}`: {e}");
                    }
                }
            }
        }
    }

    /// Runs one kept version again; an error says why it cannot.
    async fn apply(&self, kept: &Kept, record: &Record) -> Result<Deployed, String> {
        let id = &record.component;
        let Some(component) = self.manifest.components.get(id) else {
            return Err("is of a component the manifest no longer has".to_owned());
        };
        let source = component.source.clone();
        let now = tokio::task::spawn_blocking(move || std::fs::read(&source).map(|b| digest(&b)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!(
                    "cannot be checked: the manifest's source {} cannot be read: {e}",
                    component.source.display()
                )
            })?;
        if now != record.replaces {
            return Err(format!(
                "replaced {}, but the manifest's source {} is now {now}: it changed since the deploy, so it is newer",
                record.replaces,
                component.source.display()
            ));
        }
        let bytes = kept
            .load(record)
            .map_err(|e| format!("cannot be used: {e}"))?;
        self.swap(id, bytes, Keep::No)
            .await
            .map_err(|e| format!("no longer fits: {e}"))
    }
}

impl DeployError {
    /// The admin API's answer to a refused deploy.
    pub fn response(&self) -> Response {
        let status = match self {
            DeployError::Unknown(_) => StatusCode::NOT_FOUND,
            DeployError::Unused(_) | DeployError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::NotKept(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
        crate::say!("--watch: no component has [component.NAME.build] watch patterns");
        return;
    }
    for (id, patterns) in &watched {
        crate::say!("watching `{id}`: {}", patterns.join(", "));
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
            crate::say!("`{id}` changed; rebuilding");
            if let Err(e) = rebuild_and_deploy(&deployer, id).await {
                crate::say!("`{id}` was not redeployed; the running version keeps serving: {e:#}");
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
    // Not kept: a restart loads the manifest's source, which is this build.
    deployer.swap(id, bytes, Keep::No).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(listen: &str, token: &str) -> AdminOptions {
        AdminOptions {
            listen: listen.parse().unwrap(),
            token: token.to_owned(),
            tls: None,
            max_component_size: 1 << 20,
        }
    }

    fn refusal(options: &AdminOptions) -> String {
        match options.check() {
            Ok(_) => panic!("{options:?} was taken"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_admin_api_needs_a_long_token_and_tls_off_loopback() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(options("127.0.0.1:3001", token).check().is_ok());
        assert!(options("[::1]:3001", token).check().is_ok());
        assert!(options("[::ffff:127.0.0.1]:3001", token).check().is_ok());

        let short = refusal(&options("127.0.0.1:3001", &token[1..]));
        assert!(
            short.contains("HOST_BRIDGE_ADMIN_TOKEN is 31 bytes long")
                && short.contains("openssl rand -hex 32"),
            "{short}"
        );
        let none = refusal(&options("127.0.0.1:3001", ""));
        assert!(none.contains("set HOST_BRIDGE_ADMIN_TOKEN"), "{none}");

        for open in ["0.0.0.0:3001", "[::]:3001", "192.168.1.10:3001"] {
            let plain = refusal(&options(open, token));
            assert!(
                plain.contains(&format!("--admin {open} is not a loopback address"))
                    && plain.contains("--admin-tls-cert FILE and --admin-tls-key FILE"),
                "{plain}"
            );
        }
    }
}
