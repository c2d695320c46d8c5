//! `host-bridge up`: load the manifest, compile, start the triggers, serve.
//!
//! The order matters and is the readiness contract:
//!
//! 1. the manifest loads and every component's `.wasm` exists (or `--build`
//!    builds them), else nothing starts;
//! 2. the listener binds, so `/healthz` answers 503 `starting` at once;
//! 3. every component used by a trigger compiles (from the cache when it can),
//!    all at once on blocking threads,
//!    and links, with a line of progress each;
//! 4. the triggers are built and the broker starts delivering;
//! 5. only then does `/healthz` answer 200 and the summary print.
//!
//! On Ctrl-C or SIGTERM the listener stops accepting, and deliveries in
//! flight get `shutdown_grace` to finish before the process exits.

use crate::broker::dapr::{DaprSidecar, SidecarConfig};
use crate::broker::embedded::{DurableStateStore, EmbeddedBroker, MemoryStateStore};
use crate::broker::journal::Journal;
use crate::broker::{Broker, Capabilities, Metrics, StateStore};
use crate::deploy::{AdminApi, Deployer};
use crate::engine::{Engine, EngineOptions, LoadedComponent};
use crate::manifest::Manifest;
use crate::server::{self, Router};
use crate::triggers::http::HttpTrigger;
use crate::triggers::pubsub::PubsubTrigger;
use anyhow::Context as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Options of `host-bridge up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    /// Run the components' build commands first.
    pub build: bool,
    pub engine: EngineOptions,
    /// How long deliveries in flight may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Which backend carries the messages.
    pub broker: BrokerChoice,
    /// How long the first call to the Dapr sidecar waits for it to be ready.
    pub dapr_ready_timeout: Duration,
    /// The largest request or delivery body read (`--max-body-size`).
    pub max_body: usize,
    /// Where the embedded broker keeps messages and state.
    pub embedded_data: EmbeddedData,
    /// Where components with a `{ url, digest }` source are downloaded to.
    pub download_dir: PathBuf,
    /// The admin API (live deploys), if enabled: where, and its token.
    pub admin: Option<(SocketAddr, String)>,
    /// `--watch`: rebuild and redeploy components when their sources change.
    pub watch: bool,
}

/// The largest `.wasm` the admin API takes.
const ADMIN_MAX_BODY: usize = 512 << 20;

/// `--data-dir` and `--in-memory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddedData {
    /// On disk, in `$XDG_DATA_HOME/host-bridge/{app}` (else
    /// `~/.local/share/host-bridge/{app}`).
    DefaultDir,
    /// On disk, in this directory.
    Dir(PathBuf),
    /// In memory only: gone when the process exits.
    InMemory,
}

impl EmbeddedData {
    /// The directory, if on disk, for the app named `app`.
    fn dir(&self, app: &str) -> Option<PathBuf> {
        match self {
            EmbeddedData::InMemory => None,
            EmbeddedData::Dir(dir) => Some(dir.clone()),
            EmbeddedData::DefaultDir => Some(
                std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share"))
                    })
                    .unwrap_or_else(std::env::temp_dir)
                    .join("host-bridge")
                    .join(app),
            ),
        }
    }
}

/// `--broker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerChoice {
    /// Dapr when `DAPR_HTTP_PORT` is set (as `dapr run` sets it), else embedded.
    Auto,
    /// The broker and state store inside host-bridge (on disk, or in memory).
    Embedded,
    /// The Dapr sidecar at `127.0.0.1:$DAPR_HTTP_PORT` (default 3500).
    Dapr,
}

impl BrokerChoice {
    fn use_dapr(self) -> bool {
        match self {
            BrokerChoice::Auto => std::env::var_os("DAPR_HTTP_PORT").is_some(),
            BrokerChoice::Embedded => false,
            BrokerChoice::Dapr => true,
        }
    }
}

/// Runs the app until `shutdown` resolves.
pub async fn up(options: UpOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut manifest = Manifest::load(&options.manifest)?;
    manifest.resolve_variables(|name| std::env::var(name).ok())?;
    if options.build {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || crate::build::run(&manifest, &[])).await??;
    }
    crate::registry::fetch_sources(&mut manifest, &options.download_dir).await?;
    manifest.check_sources()?;

    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let app_token = std::env::var("APP_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let router = Router::new(metrics.clone(), app_token, options.max_body);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(listener, router.clone(), async {
        let _ = stop_rx.await;
    }));
    eprintln!("host-bridge: listening on http://{address} (starting)");

    let (broker, state_store): (Arc<dyn Broker>, Arc<dyn StateStore>) = if options.broker.use_dapr()
    {
        check_one_subscription_per_topic(&manifest)?;
        let sidecar = Arc::new(DaprSidecar::new(
            SidecarConfig::from_env(options.dapr_ready_timeout),
            metrics.clone(),
        )?);
        (sidecar.clone(), sidecar)
    } else {
        let journal = match options.embedded_data.dir(&manifest.application.name) {
            Some(dir) => {
                let journal = Arc::new(Journal::open(&dir)?);
                eprintln!(
                    "host-bridge: the embedded broker keeps messages and state in {}",
                    journal.path().display()
                );
                Some(journal)
            }
            None => None,
        };
        let state_store: Arc<dyn StateStore> = match &journal {
            Some(journal) => Arc::new(DurableStateStore::new(journal.clone())),
            None => Arc::new(MemoryStateStore::default()),
        };
        let broker = EmbeddedBroker::new(
            &manifest.application.name,
            manifest.application.delivery,
            metrics.clone(),
            state_store.clone(),
            journal,
        );
        (Arc::new(broker), state_store)
    };
    let capabilities = Capabilities {
        messaging_pubsubname: manifest.application.pubsubname.clone(),
        broker: broker.clone(),
        state_store,
        metrics: metrics.clone(),
    };
    let engine = Arc::new(Engine::new(
        &options.engine,
        capabilities,
        crate::host::add_to_linker,
    )?);

    let mut components = compile(&engine, &manifest).await?;
    let http = Arc::new(HttpTrigger::new(&engine, &manifest, &mut components)?);
    let pubsub = Arc::new(PubsubTrigger::new(
        &engine,
        &manifest,
        &components,
        metrics.clone(),
    )?);
    let deployer = Arc::new(Deployer::new(
        engine.clone(),
        manifest.clone(),
        http.clone(),
        pubsub.clone(),
    ));
    let admin = match options.admin {
        Some((listen, token)) => {
            let api = Arc::new(AdminApi::new(deployer.clone(), token)?);
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for the admin API"))?;
            let admin_router = Router::new(metrics.clone(), None, ADMIN_MAX_BODY);
            admin_router.set_ready(vec![api]);
            eprintln!(
                "host-bridge: admin API on http://{listen}/admin/components/NAME (PUT, token required)"
            );
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server::serve(listener, admin_router, async {
                let _ = rx.await;
            }));
            Some((tx, task))
        }
        None => None,
    };
    let watcher = options
        .watch
        .then(|| tokio::spawn(crate::deploy::watch(deployer.clone())));
    let mut endpoints = broker.clone().start(pubsub.subscriptions(), pubsub.clone());
    endpoints.push(http.clone());
    router.set_ready(endpoints);
    print_summary(&manifest, address, broker.as_ref(), &http);

    shutdown.await;
    eprintln!(
        "host-bridge: shutting down; waiting up to {:?} for deliveries in flight",
        options.shutdown_grace
    );
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some((stop, task)) = admin {
        let _ = stop.send(());
        let _ = task.await;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let left = broker.shutdown(options.shutdown_grace).await;
    if left > 0 {
        eprintln!(
            "host-bridge: {left} deliveries were still in flight at exit: daprd redelivers them, and so does the embedded broker after a restart, unless it runs --in-memory"
        );
    }
    Ok(())
}

/// Dapr gives an app one subscription per pub/sub and topic, so two
/// triggers on the same topic (fan-out inside the app, which the embedded
/// broker does) cannot be expressed under Dapr.
fn check_one_subscription_per_topic(manifest: &Manifest) -> anyhow::Result<()> {
    let mut topics: BTreeMap<(&str, &str), Vec<&crate::manifest::PubsubTrigger>> = BTreeMap::new();
    for t in &manifest.pubsub_triggers {
        topics.entry((&t.pubsubname, &t.topic)).or_default().push(t);
    }
    // A topic routed with `match` is one subscription by design (the
    // manifest checked it has at most one default).
    for ((pubsubname, topic), group) in topics {
        if let [first, second, ..] = group[..]
            && group.iter().all(|t| t.rule.is_none())
        {
            anyhow::bail!(
                "{}: components `{}` and `{}` both subscribe to {pubsubname}/{topic}; under Dapr an app has one \
                 subscription per topic, so give each its own topic, route them with `match`, or run on the \
                 embedded broker, which fans out",
                manifest.path.display(),
                first.component,
                second.component,
            );
        }
    }
    Ok(())
}

/// Compiles every component a trigger uses, one progress line each.
async fn compile(
    engine: &Arc<Engine>,
    manifest: &Manifest,
) -> anyhow::Result<HashMap<String, LoadedComponent>> {
    let used: BTreeSet<&str> = manifest
        .http_triggers
        .iter()
        .map(|t| t.component.as_str())
        .chain(
            manifest
                .pubsub_triggers
                .iter()
                .map(|t| t.component.as_str()),
        )
        .collect();
    for id in manifest.components.keys() {
        if !used.contains(id.as_str()) {
            eprintln!("host-bridge: component `{id}` is not used by any trigger; not loaded");
        }
    }
    // Components compile (or load from the cache) at once, each on a
    // blocking thread: start-up takes as long as the slowest, not the sum.
    let started = Instant::now();
    let mut jobs = Vec::new();
    for (n, id) in used.iter().enumerate() {
        let component = manifest.components[*id].clone();
        let size = std::fs::metadata(&component.source)
            .map(|m| m.len())
            .unwrap_or(0);
        eprintln!(
            "host-bridge: [{}/{}] compiling `{id}` ({} KiB)",
            n + 1,
            used.len(),
            size / 1024
        );
        let engine = engine.clone();
        jobs.push(tokio::task::spawn_blocking(move || engine.load(&component)));
    }
    let mut loaded = HashMap::new();
    for (n, (id, job)) in used.iter().zip(jobs).enumerate() {
        let component = job.await??;
        eprintln!(
            "host-bridge: [{}/{}] `{id}` ready in {:.2?}",
            n + 1,
            used.len(),
            component.compile_time
        );
        loaded.insert((*id).to_owned(), component);
    }
    eprintln!(
        "host-bridge: {} component(s) compiled in {:.2?}",
        loaded.len(),
        started.elapsed()
    );
    Ok(loaded)
}

fn print_summary(
    manifest: &Manifest,
    address: SocketAddr,
    broker: &dyn Broker,
    http: &HttpTrigger,
) {
    let app = &manifest.application;
    println!(
        "host-bridge: app `{}`{} is ready on http://{address}",
        app.name,
        app.version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    println!("  broker: {}", broker.name());
    println!("  HTTP routes:");
    for (route, component) in http.describe() {
        println!("    {route:<24} -> {component}");
    }
    if manifest.pubsub_triggers.is_empty() {
        println!("  subscriptions: none");
    } else {
        println!("  subscriptions:");
    }
    let dapr = broker.name() == "dapr";
    for t in &manifest.pubsub_triggers {
        let dead_letter = t
            .dead_letter_topic
            .as_deref()
            .map(|d| format!(" (dead letters to {d})"))
            .unwrap_or_default();
        // Under Dapr, daprd delivers to the subscription's route.
        let route = if dapr {
            format!(" at {}", t.route)
        } else {
            String::new()
        };
        println!(
            "    {}/{:<18} -> {}{route}{dead_letter}",
            t.pubsubname, t.topic, t.component
        );
    }
    if dapr {
        println!("  host endpoints: /healthz /metrics /dapr/subscribe");
    } else {
        println!(
            "  host endpoints: /healthz /metrics /v1.0/publish/{{pubsubname}}/{{topic}} /v1.0/state/{{store}}/{{key}}"
        );
    }
}
