//! `host-bridge up`: load the manifest, compile, start the triggers, serve.
//!
//! The order matters and is the readiness contract:
//!
//! 1. an admin API that would be unsafe (a short token, no TLS off
//!    loopback) is refused; the manifest loads and every component's
//!    `.wasm` exists (or `--build` builds them), else nothing starts;
//! 2. the listener binds, so `/healthz` answers 503 `starting` at once;
//! 3. every component used by a trigger compiles (from the cache when it can),
//!    all at once on blocking threads,
//!    and links, with a line of progress each;
//! 4. the triggers are built, every version kept by a deploy through the
//!    admin API is swapped in again (or dropped, by name, with why; see
//!    `deploy::kept`), and the broker starts delivering;
//! 5. only then does `/healthz` answer 200 and the summary print.
//!
//! On Ctrl-C or SIGTERM the listener stops accepting, and deliveries in
//! flight get `shutdown_grace` to finish before the process exits.

use crate::admin::{AdminApi, Observed};
use crate::broker::dapr::{DaprSidecar, SidecarConfig};
use crate::broker::dapr_dead_letters::Answered;
use crate::broker::dead_letters::DeadLetters;
use crate::broker::embedded::{DurableStateStore, EmbeddedBroker, MemoryStateStore};
use crate::broker::journal::Journal;
use crate::broker::sidecar_api::SidecarApi;
use crate::broker::{Broker, Capabilities, DeliveryTarget, Metrics, StateStore};
use crate::deploy::kept::Kept;
use crate::deploy::{AdminOptions, Deployer};
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
    /// Where the embedded broker serves daprd's HTTP API (`--sidecar-listen`);
    /// unused under Dapr, where daprd serves it.
    pub sidecar_listen: SocketAddr,
    /// What every listener bounds (connections, headers, bodies' time).
    pub limits: server::Limits,
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
    /// Where components with a `{ url, digest }` source are downloaded to;
    /// `None` without a cache directory, and then such a source is refused.
    pub download_dir: Option<PathBuf>,
    /// How large, and how long, a download may be (`--max-component-size`,
    /// `--download-timeout`).
    pub downloads: crate::registry::DownloadLimits,
    /// The app pulled with `--from`, which replaces `manifest`: its
    /// manifest, parsed as a registry's, and its checked bytes.
    pub pulled: Option<crate::registry::PulledApp>,
    /// The admin API (live deploys), if enabled (`--admin`).
    pub admin: Option<AdminOptions>,
    /// `--watch`: rebuild and redeploy components when their sources change.
    pub watch: bool,
}

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
    /// The directory, if on disk, for the app named `app`. There is no
    /// fallback to a shared temporary directory, where others could read or
    /// plant messages and state: without a home, the user says where.
    fn dir(&self, app: &str) -> anyhow::Result<Option<PathBuf>> {
        match self {
            EmbeddedData::InMemory => Ok(None),
            EmbeddedData::Dir(dir) => Ok(Some(dir.clone())),
            EmbeddedData::DefaultDir => crate::engine::cache_dir::user_dir(
                "XDG_DATA_HOME",
                ".local/share",
            )
            .map(|dir| Some(dir.join("host-bridge").join(app)))
            .context(
                "no data directory for the embedded broker: neither XDG_DATA_HOME nor HOME is set, \
                 and host-bridge does not keep messages in a shared directory such as /tmp. \
                 Pass --data-dir DIR, or --in-memory",
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
pub async fn up(mut options: UpOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // An admin API that would be open to guessing or eavesdropping is
    // refused before anything starts (its token, TLS off loopback).
    let admin_tls = match &options.admin {
        Some(admin) => admin.check()?,
        None => None,
    };
    // A pulled app's components are loaded from the bytes that were
    // checked against their digests, never read again from disk.
    let (mut manifest, mut checked) = match options.pulled.take() {
        Some(pulled) => (pulled.manifest, pulled.components),
        None => (Manifest::load(&options.manifest)?, BTreeMap::new()),
    };
    manifest.resolve_variables(|name| std::env::var(name).ok())?;
    if manifest.origin == crate::manifest::Origin::Registry {
        // Before anything runs: what the registry's app will be allowed.
        eprint!("{}", manifest.grants());
    }
    if options.build {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || crate::build::run(&manifest, &[])).await??;
    }
    checked.extend(
        crate::registry::fetch_sources(
            &mut manifest,
            options.download_dir.as_deref(),
            options.downloads,
        )
        .await?,
    );
    manifest.check_sources()?;

    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let app_token = std::env::var("APP_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let router = Router::new(
        metrics.clone(),
        app_token,
        options.max_body,
        &options.limits,
    );
    let server = Served::spawn(listener, router.clone(), &options);
    crate::say!("listening on http://{address} (starting)");
    // The embedded broker's sidecar API, on a listener of its own.
    let mut sidecar = None;
    // The embedded broker's dead-letter list (none under Dapr).
    let mut embedded_dead_letters = None;

    let (broker, state_store): (Arc<dyn Broker>, Arc<dyn StateStore>) = if options.broker.use_dapr()
    {
        check_one_subscription_per_topic(&manifest)?;
        let sidecar = Arc::new(DaprSidecar::new(
            SidecarConfig::from_env(options.dapr_ready_timeout),
            metrics.clone(),
        )?);
        (sidecar.clone(), sidecar)
    } else {
        let journal = match options.embedded_data.dir(&manifest.application.name)? {
            Some(dir) => {
                let journal = Arc::new(Journal::open(&dir)?);
                crate::say!(
                    "the embedded broker keeps messages and state in {}",
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
        let embedded = Arc::new(EmbeddedBroker::new(
            &manifest.application.name,
            manifest.application.delivery,
            metrics.clone(),
            journal,
        ));
        embedded_dead_letters = Some(embedded.dead_letters());
        let broker: Arc<dyn Broker> = embedded;
        let listen = options.sidecar_listen;
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!(
                "cannot listen on {listen} for the sidecar API (--sidecar-listen): is daprd or another \
                 host-bridge using it? Give another address, e.g. --sidecar-listen 127.0.0.1:3501"
            )
        })?;
        let address = listener.local_addr()?;
        // As daprd: when DAPR_API_TOKEN is set, every call but the health
        // check must carry it.
        let token = std::env::var("DAPR_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let router = Router::new(metrics.clone(), token, options.max_body, &options.limits);
        router.set_ready(vec![Arc::new(SidecarApi {
            broker: broker.clone(),
            state_store: state_store.clone(),
        })]);
        sidecar = Some((address, Served::spawn(listener, router, &options)));
        (broker, state_store)
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

    let mut components = compile(&engine, &manifest, checked).await?;
    let http = Arc::new(HttpTrigger::new(&engine, &manifest, &mut components)?);
    let pubsub = Arc::new(PubsubTrigger::new(
        &engine,
        &manifest,
        &components,
        metrics.clone(),
    )?);
    // Deploys are kept in the data dir, under Dapr as on the embedded
    // broker; with --in-memory (or no data dir under Dapr), nowhere.
    let kept = options
        .embedded_data
        .dir(&manifest.application.name)
        .ok()
        .flatten()
        .map(|dir| Kept::new(dir.join("deployed")));
    // Where the admin page's dead letters come from: the embedded broker
    // keeps them; under Dapr, with an admin page to show them, the trigger
    // is wrapped to remember what it answered DROP or RETRY (without one,
    // nothing would read it, so no delivery pays for it).
    let (target, dead_letters): (Arc<dyn DeliveryTarget>, Option<Arc<dyn DeadLetters>>) =
        match embedded_dead_letters {
            Some(dead_letters) => (pubsub.clone(), Some(dead_letters)),
            None if options.admin.is_some() => {
                let answered = Answered::new(pubsub.clone(), pubsub.subscriptions());
                (answered.clone(), Some(answered))
            }
            None => (pubsub.clone(), None),
        };
    let deployer = Arc::new(Deployer::new(
        engine.clone(),
        manifest.clone(),
        http.clone(),
        pubsub.clone(),
        kept,
        &components,
    ));
    // Before anything is served: what was deployed runs again.
    deployer.apply_kept().await;
    let admin = match (&options.admin, dead_letters) {
        (Some(admin), Some(dead_letters)) => {
            let observed = Observed {
                broker: broker.name(),
                manifest: manifest.clone(),
                routes: http.describe(),
                stats: pubsub.stats(),
                dead_letters,
            };
            let api = Arc::new(AdminApi::new(deployer.clone(), admin, observed)?);
            let listen = admin.listen;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for the admin API"))?;
            let limits = AdminApi::limits(&options.limits);
            let admin_router =
                Router::new(metrics.clone(), None, admin.max_component_size, &limits);
            admin_router.set_ready(vec![api.clone()]);
            crate::say!(
                "admin API on {}://{listen}/admin/components/NAME (PUT, token required; {})",
                admin.scheme(),
                deployer.keeps()
            );
            crate::say!(
                "admin page on {}://{listen}/ (asks for the token)",
                admin.scheme()
            );
            let served = match admin_tls {
                Some(tls) => Served::spawn_with(listener, admin_router, &options, move |socket| {
                    tls.accept(socket)
                }),
                None => Served::spawn(listener, admin_router, &options),
            };
            Some((api, served))
        }
        _ => None,
    };
    let watcher = options
        .watch
        .then(|| tokio::spawn(crate::deploy::watch(deployer.clone())));
    let mut endpoints = broker.clone().start(pubsub.subscriptions(), target);
    endpoints.push(http.clone());
    router.set_ready(endpoints);
    print_summary(
        &manifest,
        address,
        sidecar.as_ref().map(|(address, _)| *address),
        broker.as_ref(),
        &http,
    );

    shutdown.await;
    crate::say!(
        "shutting down; waiting up to {:?} for deliveries in flight",
        options.shutdown_grace
    );
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some((api, served)) = admin {
        // Live streams never end by themselves; the listener's graceful
        // shutdown would wait for them.
        api.close_streams();
        served.stop().await;
    }
    // HTTP requests in flight are answered first (a publish they make
    // still reaches the broker), then the broker drains its deliveries.
    // Both listeners drain at once, within one grace.
    let sidecar = async {
        match sidecar {
            Some((_, sidecar)) => sidecar.stop().await,
            None => 0,
        }
    };
    let (open, _) = tokio::join!(server.stop(), sidecar);
    if open > 0 {
        crate::say!(
            "{open} connections to the app's port were still open after {:?}",
            options.shutdown_grace
        );
    }
    let left = broker.shutdown(options.shutdown_grace).await;
    if left > 0 {
        crate::say!(
            "{left} deliveries were still in flight at exit: daprd redelivers them, and so does the embedded broker after a restart, unless it runs --in-memory"
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
/// `checked` holds the bytes of components that were downloaded or pulled,
/// checked against their digests: those are loaded, not their files.
async fn compile(
    engine: &Arc<Engine>,
    manifest: &Manifest,
    mut checked: BTreeMap<String, Vec<u8>>,
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
            crate::say!("component `{id}` is not used by any trigger; not loaded");
        }
    }
    // Components load from the cache at once, each on a blocking thread;
    // those not cached compile one at a time (`engine::compiled`), which
    // bounds the compiler's memory to the largest component's.
    let started = Instant::now();
    let mut jobs = Vec::new();
    for (n, id) in used.iter().enumerate() {
        let component = manifest.components[*id].clone();
        let bytes = checked.remove(*id);
        let size = match &bytes {
            Some(bytes) => bytes.len() as u64,
            None => std::fs::metadata(&component.source)
                .map(|m| m.len())
                .unwrap_or(0),
        };
        crate::say!(
            "[{}/{}] compiling `{id}` ({} KiB)",
            n + 1,
            used.len(),
            size / 1024
        );
        let engine = engine.clone();
        jobs.push(tokio::task::spawn_blocking(move || match bytes {
            Some(bytes) => engine.load_checked(&component, bytes),
            None => engine.load(&component),
        }));
    }
    let mut loaded = HashMap::new();
    for (n, (id, job)) in used.iter().zip(jobs).enumerate() {
        let component = job.await??;
        crate::say!(
            "[{}/{}] `{id}` ready in {:.2?}",
            n + 1,
            used.len(),
            component.compile_time
        );
        loaded.insert((*id).to_owned(), component);
    }
    crate::say!(
        "{} component(s) compiled in {:.2?}",
        loaded.len(),
        started.elapsed()
    );
    Ok(loaded)
}

fn print_summary(
    manifest: &Manifest,
    address: SocketAddr,
    sidecar: Option<SocketAddr>,
    broker: &dyn Broker,
    http: &HttpTrigger,
) {
    let app = &manifest.application;
    crate::say!(out:
        "host-bridge: app `{}`{} is ready on http://{address}",
        app.name,
        app.version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    crate::say!(out: "  broker: {}", broker.name());
    crate::say!(out: "  HTTP routes:");
    for (route, component) in http.describe() {
        crate::say!(out: "    {route:<24} -> {component}");
    }
    if manifest.pubsub_triggers.is_empty() {
        crate::say!(out: "  subscriptions: none");
    } else {
        crate::say!(out: "  subscriptions:");
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
        crate::say!(out:
            "    {}/{:<18} -> {}{route}{dead_letter}",
            t.pubsubname, t.topic, t.component
        );
    }
    if dapr {
        crate::say!(out: "  host endpoints: /healthz /metrics /dapr/subscribe");
    } else {
        crate::say!(out: "  host endpoints: /healthz /metrics");
    }
    if let Some(sidecar) = sidecar {
        crate::say!(out:
            "  sidecar API: http://{sidecar} (/v1.0/publish/{{pubsubname}}/{{topic}}, \
             /v1.0-alpha1/publish/bulk/{{pubsubname}}/{{topic}}, /v1.0/state/{{store}}[/{{key}}])"
        );
    }
}

/// A listener serving on its own task, and how to stop it.
struct Served {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<usize>,
}

impl Served {
    /// Serves `router` on `listener` with `up`'s limits and grace.
    fn spawn(listener: TcpListener, router: Arc<Router>, options: &UpOptions) -> Served {
        Served::spawn_with(
            listener,
            router,
            options,
            |stream| async move { Ok(stream) },
        )
    }

    /// Like [`Served::spawn`], with `handshake` (TLS) run on each accepted
    /// socket before HTTP is spoken on it.
    fn spawn_with<Io, H, F>(
        listener: TcpListener,
        router: Arc<Router>,
        options: &UpOptions,
        handshake: H,
    ) -> Served
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Fn(tokio::net::TcpStream) -> F + Send + 'static,
        F: Future<Output = std::io::Result<Io>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            router,
            options.limits,
            options.shutdown_grace,
            async {
                let _ = stopped.await;
            },
            handshake,
        ));
        Served { stop, task }
    }

    /// Stops accepting and waits for open connections to finish (at most
    /// the grace); returns how many were still open.
    async fn stop(self) -> usize {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}
