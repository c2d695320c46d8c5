//! `spin.toml`: the application manifest.
//!
//! The format is Spin's manifest version 2, plus a `[[trigger.pubsub]]`
//! trigger and three host-bridge tables (`[application.trigger.pubsub]` for
//! the embedded broker's delivery policy, `[application.tool.host-bridge]`
//! for what Spin's keys map to on Dapr, `[component.NAME.tool.host-bridge]`
//! for a component's sandbox limits). Spin's own `[[trigger.redis]]`,
//! `[variables]`, `key_value_stores` and `[component.NAME.variables]` are
//! read as Spin reads them. The README documents every key.
//!
//! Loading is all or nothing: [`Manifest::load`] either returns a manifest in
//! which every trigger names a defined component, every route parses and
//! every path exists, or an error that names the file, the table and the
//! key. Unknown keys are errors, so a typo never silently does nothing.

mod dead_letters;
pub mod outbound;
pub mod route;
pub mod trust;
pub mod variables;

use outbound::OutboundHost;
use route::Route;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use trust::Origin;
use variables::{Template, Variable};

/// Paths the host serves itself; no HTTP trigger may claim them.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/metrics", "/dapr", "/v1.0", "/v1.0-alpha1"];

/// A manifest that loaded and passed validation.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The directory relative paths in the manifest are resolved against.
    pub dir: PathBuf,
    /// Who wrote it: the user, or a registry (see [`trust`]).
    pub origin: Origin,
    /// `[application]`.
    pub application: Application,
    /// `[[trigger.http]]`, in file order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.pubsub]]`, in file order, then `[[trigger.redis]]` as
    /// subscriptions on [`Application::pubsubname`].
    pub pubsub_triggers: Vec<PubsubTrigger>,
    /// `[component.NAME]`, by name.
    pub components: BTreeMap<String, Component>,
    /// `[variables]`: the application's variables, by name.
    pub variables: BTreeMap<String, Variable>,
}

/// `[application]`.
#[derive(Debug, Clone)]
pub struct Application {
    /// The app's name; it is the CloudEvent `source` of what the app publishes.
    pub name: String,
    /// The app's version, if given.
    pub version: Option<String>,
    /// How the embedded broker redelivers (`[application.trigger.pubsub]`).
    pub delivery: DeliveryPolicy,
    /// The pub/sub component that other hosts' messaging maps to
    /// (`[application.tool.host-bridge] pubsubname`, default `pubsub`):
    /// `[[trigger.redis]]` channels and wasmCloud subjects are its topics.
    pub pubsubname: String,
    /// The state store behind each key-value label
    /// (`[application.tool.host-bridge.key_value_stores]`; `default` is
    /// `statestore` unless mapped).
    pub key_value_stores: BTreeMap<String, String>,
}

/// The pub/sub component `[[trigger.redis]]` channels and wasmCloud
/// subjects are topics of, by default.
pub const DEFAULT_PUBSUBNAME: &str = "pubsub";

/// The state store Spin's `default` key-value label is backed by, unless
/// `[application.tool.host-bridge.key_value_stores]` says otherwise.
pub const DEFAULT_KEY_VALUE_STORE: &str = "statestore";

/// How the embedded broker retries a message whose guest did not succeed.
/// Under Dapr, the sidecar's resiliency policy decides instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Deliveries of one message before it is given up on, counting the first.
    pub max_attempts: u32,
    /// The wait before the first redelivery; each next wait doubles.
    pub initial_backoff: Duration,
    /// The longest wait between two deliveries.
    pub max_backoff: Duration,
    /// How many messages may wait in one subscription's queue; a publish
    /// that would go past it is refused as `unavailable`.
    pub max_queued: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_queued: 10_000,
        }
    }
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: Route,
    pub component: String,
}

/// One `[[trigger.pubsub]]`: a subscription of a component to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubTrigger {
    pub component: String,
    pub pubsubname: String,
    pub topic: String,
    /// The app path daprd delivers to. Defaults to `/dapr/pubsub/{pubsubname}/{topic}`.
    pub route: String,
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata passed to Dapr unchanged, such as `rawPayload`.
    pub metadata: BTreeMap<String, String>,
    pub bulk_subscribe: Option<BulkSubscribe>,
    /// `match`: a CEL expression over `event`. Triggers on one topic that use
    /// it form one routed subscription (Dapr's `routes.rules`): each event
    /// goes to the first trigger whose rule holds, else to the one trigger
    /// without a rule (the `default`), if any.
    pub rule: Option<String>,
}

/// `bulk_subscribe` of a pub/sub trigger, as in Dapr's `bulkSubscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkSubscribe {
    /// The most messages in one batch.
    #[serde(default = "default_bulk_max_messages")]
    pub max_messages_count: u32,
    /// The longest wait for a batch to fill, in milliseconds.
    #[serde(default = "default_bulk_max_await_ms")]
    pub max_await_duration_ms: u32,
}

fn default_bulk_max_messages() -> u32 {
    100
}

fn default_bulk_max_await_ms() -> u32 {
    1000
}

/// One `[component.NAME]`, with its paths resolved.
#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// The component's `.wasm` file. For a `{ url, digest }` source, where
    /// it is once downloaded (see [`Component::download`]).
    pub source: PathBuf,
    /// Set for a `source = { url = "…", digest = "sha256:…" }`: where to
    /// download the component from, and the digest it must have.
    pub download: Option<Download>,
    pub build: Option<Build>,
    pub allowed_outbound_hosts: Vec<OutboundHost>,
    pub environment: BTreeMap<String, String>,
    pub files: Vec<FileMount>,
    pub sandbox: SandboxLimits,
    /// `tool.host-bridge.allowed_publish_topics`: where the component may
    /// publish. Empty: nowhere.
    pub allowed_publish_topics: Vec<TopicPattern>,
    /// Spin's `key_value_stores`: the labels the component may open, each
    /// with the state store behind it.
    pub key_value_stores: BTreeMap<String, String>,
    /// Spin's `[component.NAME.variables]`: the component's variables, as
    /// templates over the application's.
    pub variables: BTreeMap<String, Template>,
    /// The component's variables' values, once
    /// [`Manifest::resolve_variables`] ran; empty before.
    pub variable_values: BTreeMap<String, String>,
}

/// A component source to download, as Spin's `{ url, digest }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub url: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
}

/// One entry of `allowed_publish_topics`: `"pubsub/orders"` (that topic),
/// `"pubsub/*"` (any topic of that pub/sub) or `"*"` (anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    /// `None` matches any pub/sub.
    pub pubsubname: Option<String>,
    /// `None` matches any topic.
    pub topic: Option<String>,
}

impl TopicPattern {
    pub fn parse(text: &str) -> Result<TopicPattern, String> {
        if text == "*" {
            return Ok(TopicPattern {
                pubsubname: None,
                topic: None,
            });
        }
        match text.split_once('/') {
            Some((pubsubname, topic))
                if !pubsubname.is_empty() && pubsubname != "*" && !topic.is_empty() =>
            {
                Ok(TopicPattern {
                    pubsubname: Some(pubsubname.to_owned()),
                    topic: (topic != "*").then(|| topic.to_owned()),
                })
            }
            _ => Err(format!(
                "{text:?} is not \"PUBSUBNAME/TOPIC\", \"PUBSUBNAME/*\" or \"*\""
            )),
        }
    }

    pub fn allows(&self, pubsubname: &str, topic: &str) -> bool {
        self.pubsubname.as_deref().is_none_or(|p| p == pubsubname)
            && self.topic.as_deref().is_none_or(|t| t == topic)
    }
}

/// `[component.NAME.build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub command: String,
    /// Where the command runs: the manifest's directory unless `workdir` says otherwise.
    pub workdir: PathBuf,
    /// Glob patterns, relative to `workdir`, of the files whose change
    /// `up --watch` rebuilds the component for.
    pub watch: Vec<String>,
}

/// A host directory a component may read, and where it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub source: PathBuf,
    pub destination: String,
}

/// `[component.NAME.tool.host-bridge]`: the component's sandbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// How long one call into the guest may run before it is stopped.
    pub timeout: Duration,
    /// The most linear memory the guest may grow to, in bytes.
    pub max_memory: usize,
    /// Whether the guest sees the real clocks. Without it, both clocks read zero.
    pub clock: bool,
    /// The most instances of the component alive at once; more calls wait.
    /// `None`: only the engine-wide `--max-instances` bounds them.
    pub max_instances: Option<u32>,
    /// How many calls (deliveries to a subscriber, or requests to an HTTP
    /// component) one instance may handle, one after another, before it is
    /// dropped. 1, the default, gives every call a fresh instance; more is
    /// an opt-in for guests whose authors accept that memory left by one
    /// call is seen by the next.
    pub instance_reuse: u32,
    /// What an error a subscriber returns becomes, in worlds whose handler
    /// answers `result<_, error>` rather than a status.
    pub on_error: OnError,
}

/// `tool.host-bridge.on_error`: what becomes of a message whose handler
/// returned an error (Spin's, WASI messaging's and wasmCloud's handlers
/// answer `Ok` or `Err`, not SUCCESS, RETRY or DROP). A trap is RETRY
/// whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Deliver it again later: the error may pass.
    #[default]
    Retry,
    /// Dead-letter it: the component's errors are permanent.
    Drop,
}

impl SandboxLimits {
    /// How many idle instances a component that reuses them keeps: its
    /// `max_instances`, or without it two per core, enough to keep the
    /// cores busy while some instances wait on host calls.
    pub fn idle_instances(&self) -> usize {
        self.max_instances.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            |n| n as usize,
        )
    }
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            timeout: Duration::from_secs(30),
            max_memory: 64 << 20,
            clock: false,
            max_instances: None,
            instance_reuse: 1,
            on_error: OnError::Retry,
        }
    }
}

/// A manifest that could not be loaded. The message names the file and,
/// where there is one, the table and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {table}{message}")]
    Syntax {
        path: PathBuf,
        table: String,
        message: String,
    },
    #[error("{path} is not valid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

// ---- the file's shape, as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: String,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    trigger: RawAppTriggers,
    #[serde(default)]
    tool: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppHostBridgeTool {
    pubsubname: Option<String>,
    #[serde(default)]
    key_value_stores: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAppTriggers {
    http: Option<RawAppHttp>,
    pubsub: Option<RawDeliveryPolicy>,
    redis: Option<RawAppRedis>,
}

/// `[application.trigger.redis]`. Spin connects to `address`; here Dapr's
/// pub/sub component carries the messages, so it is accepted and unused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppRedis {
    #[allow(dead_code)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppHttp {
    base: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeliveryPolicy {
    max_attempts: Option<u32>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    max_queued: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    #[serde(default)]
    pubsub: Vec<RawPubsubTrigger>,
    #[serde(default)]
    redis: Vec<RawRedisTrigger>,
}

/// Spin's `[[trigger.redis]]`. `address` is Spin's; as with
/// `[application.trigger.redis]`, Dapr's pub/sub component replaces it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisTrigger {
    channel: String,
    component: String,
    #[allow(dead_code)]
    address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPubsubTrigger {
    component: String,
    pubsubname: String,
    topic: String,
    route: Option<String>,
    dead_letter_topic: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    bulk_subscribe: Option<BulkSubscribe>,
    #[serde(rename = "match")]
    rule: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: RawSource,
    description: Option<String>,
    build: Option<RawBuild>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<RawFileMount>,
    #[serde(default)]
    tool: BTreeMap<String, toml::Value>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: String,
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSource {
    Path(String),
    Url { url: String, digest: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFileMount {
    Directory(String),
    Mapping { source: String, destination: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostBridgeTool {
    timeout_ms: Option<u64>,
    max_memory_mb: Option<usize>,
    clock: Option<bool>,
    max_instances: Option<u32>,
    instance_reuse: Option<u32>,
    on_error: Option<OnError>,
    #[serde(default)]
    allowed_publish_topics: Vec<String>,
}

/// The name of this tool's table under `[component.NAME.tool]`.
const TOOL_NAME: &str = "host-bridge";

impl Manifest {
    /// Reads, parses and validates the manifest at `path`. Component sources
    /// are not required to exist yet; see [`Manifest::check_sources`].
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.into(),
            source,
        })?;
        Manifest::parse(path, &text)
    }

    /// Parses and validates manifest text; `path` names it in errors and
    /// anchors its relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_from(path, text, Origin::Local)
    }

    /// Parses and validates a manifest layer pulled from a registry, as
    /// untrusted input: on top of [`Manifest::parse`]'s checks, what it may
    /// ask for is confined as [`trust`] says, and its paths resolve inside
    /// `path`'s folder, the app's own.
    pub fn parse_pulled(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_from(path, text, Origin::Registry)
    }

    fn parse_from(path: &Path, text: &str, origin: Origin) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: path.into(),
            table: e
                .span()
                .and_then(|span| enclosing_table(text, span.start))
                .map(|t| format!("in {t}: "))
                .unwrap_or_default(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut problems = Problems::default();
        let manifest = Manifest::validate(path, &dir, origin, raw, &mut problems);
        if problems.0.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid {
                path: path.into(),
                problems: problems.0,
            })
        }
    }

    /// Checks that every component's `.wasm` file exists, with a hint to build
    /// the ones that do not.
    pub fn check_sources(&self) -> Result<(), ManifestError> {
        let problems: Vec<String> = self
            .components
            .values()
            .filter(|c| !c.source.is_file())
            .map(|c| {
                let hint = match &c.build {
                    Some(build) => format!(
                        "; build it with `host-bridge build` (runs `{}`), or start with `host-bridge up --build`",
                        build.command
                    ),
                    None => "; the component has no [build] command, so build it by hand".into(),
                };
                format!(
                    "[component.{}] source: {} does not exist{hint}",
                    c.id,
                    c.source.display()
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid {
                path: self.path.clone(),
                problems,
            })
        }
    }

    fn validate(
        path: &Path,
        dir: &Path,
        origin: Origin,
        raw: RawManifest,
        problems: &mut Problems,
    ) -> Manifest {
        if raw.spin_manifest_version != 2 {
            problems.push(format!(
                "spin_manifest_version: must be 2, found {}",
                raw.spin_manifest_version
            ));
        }
        let application = validate_application(raw.application, problems);
        let variables = validate_variables(raw.variables, problems);
        let declared: BTreeSet<String> = raw.component.keys().cloned().collect();
        let components: BTreeMap<String, Component> = raw
            .component
            .into_iter()
            .filter_map(|(id, c)| {
                validate_component(dir, origin, &id, c, &application, &variables, problems)
                    .map(|c| (id, c))
            })
            .collect();
        // Names that failed validation still count as defined, so a trigger
        // naming them reports only the component's own problem.
        let known = |id: &str| declared.contains(id);
        let defined = || declared.iter().cloned().collect::<Vec<_>>().join(", ");

        let mut http_triggers = Vec::new();
        let mut seen_routes = BTreeSet::new();
        for (index, t) in raw.trigger.http.into_iter().enumerate() {
            let here = format!("[[trigger.http]] #{} (route {:?})", index + 1, t.route);
            if !known(&t.component) {
                problems.push(format!(
                    "{here} component: `{}` is not defined; defined components: {}",
                    t.component,
                    defined()
                ));
            }
            match Route::parse(&t.route) {
                Ok(route) => {
                    let prefix = route.literal_prefix();
                    let reserved = RESERVED_PATHS
                        .iter()
                        .find(|r| prefix == **r || prefix.starts_with(&format!("{r}/")));
                    if let Some(reserved) = reserved {
                        problems.push(format!(
                            "{here} route: {reserved} is served by host-bridge itself and cannot be routed to a component"
                        ));
                    } else if !seen_routes.insert(route.as_str().to_owned()) {
                        problems.push(format!("{here} route: the same route is declared twice"));
                    } else {
                        http_triggers.push(HttpTrigger {
                            route,
                            component: t.component,
                        });
                    }
                }
                Err(e) => problems.push(format!("{here} route: {e}")),
            }
        }

        let mut pubsub_triggers = Vec::new();
        let mut seen_delivery_routes = BTreeSet::new();
        for (index, t) in raw.trigger.pubsub.into_iter().enumerate() {
            let here = format!(
                "[[trigger.pubsub]] #{} (component {:?}, topic {:?})",
                index + 1,
                t.component,
                t.topic
            );
            if !known(&t.component) {
                problems.push(format!(
                    "{here} component: `{}` is not defined; defined components: {}",
                    t.component,
                    defined()
                ));
            }
            for (key, value) in [("pubsubname", &t.pubsubname), ("topic", &t.topic)] {
                if !is_name(value) {
                    problems.push(format!(
                        "{here} {key}: {value:?} must be non-empty letters, digits, '-', '_' or '.'"
                    ));
                }
            }
            if let Some(dlt) = &t.dead_letter_topic
                && !is_name(dlt)
            {
                problems.push(format!(
                    "{here} dead_letter_topic: {dlt:?} must be non-empty letters, digits, '-', '_' or '.'"
                ));
            }
            if t.bulk_subscribe.is_some_and(|b| b.max_messages_count == 0) {
                problems.push(format!(
                    "{here} bulk_subscribe.max_messages_count: must be at least 1"
                ));
            }
            let route = t
                .route
                .unwrap_or_else(|| format!("/dapr/pubsub/{}/{}", t.pubsubname, t.topic));
            match Route::parse(&route) {
                Ok(parsed) if parsed.is_wildcard() || route.contains(':') => {
                    problems.push(format!(
                        "{here} route: {route:?} must be a plain path, without parameters or '...'"
                    ))
                }
                Ok(_)
                    if route == "/healthz" || route == "/metrics" || route.starts_with("/v1.0") =>
                {
                    problems.push(format!(
                        "{here} route: {route:?} is served by host-bridge itself"
                    ))
                }
                Ok(_) if !seen_delivery_routes.insert(route.clone()) => problems.push(format!(
                    "{here} route: {route:?} is already the route of another subscription"
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("{here} route: {e}")),
            }
            if let Some(rule) = &t.rule
                && let Err(e) = compile_cel(rule)
            {
                problems.push(format!("{here} match: {e}"));
            }
            pubsub_triggers.push(PubsubTrigger {
                component: t.component,
                pubsubname: t.pubsubname,
                topic: t.topic,
                route,
                dead_letter_topic: t.dead_letter_topic,
                metadata: t.metadata,
                bulk_subscribe: t.bulk_subscribe,
                rule: t.rule,
            });
        }
        for (index, t) in raw.trigger.redis.into_iter().enumerate() {
            let here = format!(
                "[[trigger.redis]] #{} (component {:?}, channel {:?})",
                index + 1,
                t.component,
                t.channel
            );
            if !known(&t.component) {
                problems.push(format!(
                    "{here} component: `{}` is not defined; defined components: {}",
                    t.component,
                    defined()
                ));
            }
            if !is_name(&t.channel) {
                problems.push(format!(
                    "{here} channel: {:?} must be non-empty letters, digits, '-', '_' or '.', as it becomes a topic of pub/sub component `{}`",
                    t.channel, application.pubsubname
                ));
            }
            let route = format!("/dapr/pubsub/{}/{}", application.pubsubname, t.channel);
            if !seen_delivery_routes.insert(route.clone()) {
                problems.push(format!(
                    "{here}: channel {:?} is already subscribed to on pub/sub component `{}`",
                    t.channel, application.pubsubname
                ));
            }
            pubsub_triggers.push(PubsubTrigger {
                component: t.component,
                pubsubname: application.pubsubname.clone(),
                topic: t.channel,
                route,
                dead_letter_topic: None,
                metadata: BTreeMap::new(),
                bulk_subscribe: None,
                rule: None,
            });
        }
        check_routed_topics(&pubsub_triggers, problems);
        problems.0.extend(dead_letters::loops(&pubsub_triggers));
        if http_triggers.is_empty() && pubsub_triggers.is_empty() && problems.0.is_empty() {
            problems.push(
                "the manifest has no [[trigger.http]], [[trigger.pubsub]] or [[trigger.redis]]: nothing would run"
                    .into(),
            );
        }

        Manifest {
            path: path.into(),
            dir: dir.into(),
            origin,
            application,
            http_triggers,
            pubsub_triggers,
            components,
            variables,
        }
    }

    /// Renders every component's variables into
    /// [`Component::variable_values`], from `[variables]` and the
    /// environment (`lookup`, `SPIN_VARIABLE_<NAME>`). Fails, naming each,
    /// if a required variable has no value.
    pub fn resolve_variables(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ManifestError> {
        let components = self
            .components
            .iter()
            .map(|(id, c)| (id.as_str(), &c.variables));
        let mut resolved =
            variables::resolve(&self.variables, components, lookup).map_err(|unset| {
                ManifestError::Invalid {
                    path: self.path.clone(),
                    problems: unset.iter().map(ToString::to_string).collect(),
                }
            })?;
        for (id, component) in &mut self.components {
            component.variable_values = resolved.remove(id).unwrap_or_default();
        }
        Ok(())
    }
}

fn validate_variables(
    raw: BTreeMap<String, RawVariable>,
    problems: &mut Problems,
) -> BTreeMap<String, Variable> {
    let mut variables = BTreeMap::new();
    for (name, v) in raw {
        if let Err(e) = variables::check_name(&name) {
            problems.push(format!("[variables] {e}"));
            continue;
        }
        if v.required && v.default.is_some() {
            problems.push(format!(
                "[variables] {name}: `required` and `default` exclude each other"
            ));
        }
        variables.insert(
            name,
            Variable {
                default: v.default,
                required: v.required,
                secret: v.secret,
            },
        );
    }
    variables
}

/// Compiles a `match` expression. The CEL parser panics on some malformed
/// input instead of returning an error, so the panic is caught and turned
/// into one: a typo in a manifest must never take the host down.
pub fn compile_cel(source: &str) -> Result<cel_interpreter::Program, String> {
    let compiled = std::panic::catch_unwind(|| cel_interpreter::Program::compile(source));
    match compiled {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(format!("{source:?} is not a valid CEL expression: {e}")),
        Err(_) => Err(format!(
            "{source:?} is not a valid CEL expression (the parser gave up)"
        )),
    }
}

/// Triggers on one topic either all go without `match` (each gets every
/// message), or form one routed subscription: rules, at most one default,
/// and the settings of one Dapr subscription (dead-letter topic, metadata,
/// bulk) shared by all.
fn check_routed_topics(triggers: &[PubsubTrigger], problems: &mut Problems) {
    let mut topics: BTreeMap<(&str, &str), Vec<&PubsubTrigger>> = BTreeMap::new();
    for t in triggers {
        topics.entry((&t.pubsubname, &t.topic)).or_default().push(t);
    }
    for ((pubsubname, topic), group) in topics {
        if group.iter().all(|t| t.rule.is_none()) {
            continue;
        }
        let here = format!("[[trigger.pubsub]] on {pubsubname}/{topic}");
        let defaults: Vec<&str> = group
            .iter()
            .filter(|t| t.rule.is_none())
            .map(|t| t.component.as_str())
            .collect();
        if defaults.len() > 1 {
            problems.push(format!(
                "{here}: some triggers use `match`, so at most one may go without it (the default); found {}",
                defaults.join(", ")
            ));
        }
        let first = group[0];
        if group.iter().any(|t| {
            t.dead_letter_topic != first.dead_letter_topic
                || t.metadata != first.metadata
                || t.bulk_subscribe != first.bulk_subscribe
        }) {
            problems.push(format!(
                "{here}: triggers routed with `match` form one subscription, so they must agree on dead_letter_topic, metadata and bulk_subscribe"
            ));
        }
    }
}

fn validate_application(raw: RawApplication, problems: &mut Problems) -> Application {
    // Spin's descriptive keys are accepted and have no effect here, and so
    // is Spin's Redis address: Dapr's pub/sub component replaces it.
    let _ = (raw.description, raw.authors, raw.trigger.redis);
    if !is_name(&raw.name) {
        problems.push(format!(
            "[application] name: {:?} must be non-empty letters, digits, '-', '_' or '.'",
            raw.name
        ));
    }
    if let Some(base) = raw.trigger.http.and_then(|h| h.base)
        && base != "/"
    {
        problems.push(format!(
            "[application.trigger.http] base: host-bridge serves routes from \"/\" only, found {base:?}"
        ));
    }
    let mut pubsubname = DEFAULT_PUBSUBNAME.to_owned();
    let mut key_value_stores =
        BTreeMap::from([("default".to_owned(), DEFAULT_KEY_VALUE_STORE.to_owned())]);
    for (tool, value) in raw.tool {
        if tool != TOOL_NAME {
            continue;
        }
        let here = format!("[application.tool.{TOOL_NAME}]");
        match value.try_into::<RawAppHostBridgeTool>() {
            Ok(t) => {
                if let Some(name) = t.pubsubname {
                    if !is_name(&name) {
                        problems.push(format!(
                            "{here} pubsubname: {name:?} must be non-empty letters, digits, '-', '_' or '.'"
                        ));
                    }
                    pubsubname = name;
                }
                for (label, store) in t.key_value_stores {
                    if !is_name(&store) {
                        problems.push(format!(
                            "{here} key_value_stores.{label}: {store:?} must be a state store name (letters, digits, '-', '_' or '.')"
                        ));
                    }
                    key_value_stores.insert(label, store);
                }
            }
            Err(e) => problems.push(format!("{here}: {}", e.message())),
        }
    }
    let mut delivery = DeliveryPolicy::default();
    if let Some(p) = raw.trigger.pubsub {
        let here = "[application.trigger.pubsub]";
        if let Some(n) = p.max_attempts {
            if n == 0 {
                problems.push(format!("{here} max_attempts: must be at least 1"));
            }
            delivery.max_attempts = n.max(1);
        }
        if let Some(ms) = p.initial_backoff_ms {
            delivery.initial_backoff = Duration::from_millis(ms);
        }
        if let Some(ms) = p.max_backoff_ms {
            delivery.max_backoff = Duration::from_millis(ms);
        }
        if let Some(n) = p.max_queued {
            if n == 0 {
                problems.push(format!("{here} max_queued: must be at least 1"));
            }
            delivery.max_queued = n.max(1);
        }
        if delivery.max_backoff < delivery.initial_backoff {
            problems.push(format!(
                "{here} max_backoff_ms: must not be below initial_backoff_ms"
            ));
        }
    }
    Application {
        name: raw.name,
        version: raw.version,
        delivery,
        pubsubname,
        key_value_stores,
    }
}

fn validate_component(
    dir: &Path,
    origin: Origin,
    id: &str,
    raw: RawComponent,
    application: &Application,
    app_variables: &BTreeMap<String, Variable>,
    problems: &mut Problems,
) -> Option<Component> {
    let here = format!("[component.{id}]");
    let before = problems.0.len();
    if !is_component_id(id) {
        problems.push(format!(
            "{here}: the name must be lowercase letters, digits and single '-' between words (like `order-api`)"
        ));
    }
    // A pulled manifest is confined before any of its paths is resolved
    // or looked at on this host.
    if origin == Origin::Registry {
        trust::check_pulled_component(id, &raw, problems);
        if problems.0.len() > before {
            return None;
        }
    }
    // Accepted for Spin compatibility; host-bridge does not use it.
    let _ = raw.description;
    let (source, download) = match raw.source {
        RawSource::Path(path) => {
            if !path.ends_with(".wasm") {
                problems.push(format!(
                    "{here} source: {path:?} must be a path to a .wasm file"
                ));
            }
            (dir.join(&path), None)
        }
        RawSource::Url { url, digest } => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(format!(
                    "{here} source.url: {url:?} must be an http:// or https:// URL"
                ));
            }
            let hex = digest.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                problems.push(format!(
                    "{here} source.digest: {digest:?} must be \"sha256:\" and 64 lowercase hex digits"
                ));
            }
            // Not downloaded yet: `registry::fetch_sources` sets the path.
            (PathBuf::new(), Some(Download { url, digest }))
        }
    };
    let build = raw.build.map(|b| Build {
        command: b.command,
        workdir: b.workdir.map_or_else(|| dir.to_path_buf(), |w| dir.join(w)),
        watch: b.watch,
    });
    let mut allowed_outbound_hosts = Vec::new();
    for entry in &raw.allowed_outbound_hosts {
        match OutboundHost::parse(entry) {
            Ok(host) => allowed_outbound_hosts.push(host),
            Err(e) => problems.push(format!("{here} allowed_outbound_hosts: {e}")),
        }
    }
    let mut files = Vec::new();
    for mount in raw.files {
        let (source, destination) = match mount {
            RawFileMount::Directory(path) => {
                let destination =
                    format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
                (path, destination)
            }
            RawFileMount::Mapping {
                source,
                destination,
            } => (source, destination),
        };
        if source.contains(['*', '?', '[']) {
            problems.push(format!(
                "{here} files: {source:?} is a glob; host-bridge mounts directories only, as {{ source = \"dir\", destination = \"/dir\" }}"
            ));
            continue;
        }
        let host_path = dir.join(&source);
        if !host_path.is_dir() {
            problems.push(format!(
                "{here} files: {} is not a directory (host-bridge mounts directories, read-only)",
                host_path.display()
            ));
        } else if !destination.starts_with('/') {
            problems.push(format!(
                "{here} files: destination {destination:?} must be an absolute path"
            ));
        } else {
            files.push(FileMount {
                source: host_path,
                destination,
            });
        }
    }
    let mut sandbox = SandboxLimits::default();
    let mut allowed_publish_topics = Vec::new();
    for (tool, value) in raw.tool {
        if tool != TOOL_NAME {
            // Settings for other tools are theirs to check.
            continue;
        }
        match value.try_into::<RawHostBridgeTool>() {
            Ok(t) => {
                if let Some(ms) = t.timeout_ms {
                    if ms == 0 {
                        problems.push(format!(
                            "{here}.tool.{TOOL_NAME} timeout_ms: must be at least 1"
                        ));
                    }
                    sandbox.timeout = Duration::from_millis(ms);
                }
                if let Some(mb) = t.max_memory_mb {
                    if mb == 0 || mb > 4096 {
                        problems.push(format!(
                            "{here}.tool.{TOOL_NAME} max_memory_mb: must be between 1 and 4096"
                        ));
                    }
                    sandbox.max_memory = mb << 20;
                }
                sandbox.clock = t.clock.unwrap_or(false);
                for pattern in &t.allowed_publish_topics {
                    match TopicPattern::parse(pattern) {
                        Ok(p) => allowed_publish_topics.push(p),
                        Err(e) => problems.push(format!(
                            "{here}.tool.{TOOL_NAME} allowed_publish_topics: {e}"
                        )),
                    }
                }
                if let Some(n) = t.max_instances {
                    if n == 0 {
                        problems.push(format!(
                            "{here}.tool.{TOOL_NAME} max_instances: must be at least 1"
                        ));
                    }
                    sandbox.max_instances = Some(n);
                }
                if let Some(on_error) = t.on_error {
                    sandbox.on_error = on_error;
                }
                if let Some(n) = t.instance_reuse {
                    if n == 0 {
                        problems.push(format!(
                            "{here}.tool.{TOOL_NAME} instance_reuse: must be at least 1 (1 is a fresh instance per delivery or request)"
                        ));
                    }
                    sandbox.instance_reuse = n;
                }
            }
            Err(e) => problems.push(format!("{here}.tool.{TOOL_NAME}: {}", e.message())),
        }
    }
    let mut key_value_stores = BTreeMap::new();
    for label in raw.key_value_stores {
        match application.key_value_stores.get(&label) {
            Some(store) => {
                key_value_stores.insert(label, store.clone());
            }
            None => problems.push(format!(
                "{here} key_value_stores: label {label:?} has no state store behind it; map it in [application.tool.{TOOL_NAME}.key_value_stores] (mapped: {})",
                application.key_value_stores.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    let mut variables = BTreeMap::new();
    for (name, text) in raw.variables {
        let template = variables::check_name(&name).and_then(|()| Template::parse(&text));
        match template {
            Ok(template) => {
                for reference in template.references() {
                    if !app_variables.contains_key(reference) {
                        problems.push(format!(
                            "{here}.variables {name}: refers to `{reference}`, which [variables] does not declare"
                        ));
                    }
                }
                variables.insert(name, template);
            }
            Err(e) => problems.push(format!("{here}.variables: {e}")),
        }
    }
    (problems.0.len() == before).then(|| Component {
        id: id.into(),
        source,
        download,
        build,
        allowed_outbound_hosts,
        environment: raw.environment,
        files,
        sandbox,
        allowed_publish_topics,
        key_value_stores,
        variables,
        variable_values: BTreeMap::new(),
    })
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, problem: String) {
        self.0.push(problem);
    }
}

/// Spin's rule for component ids: lowercase words of letters and digits
/// joined by single dashes.
fn is_component_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('-').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// A Dapr-safe name for a pub/sub component, topic or app.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The `[table]` or `[[array]]` header, as written, that encloses byte `offset` of `text`,
/// so an error deep inside a component names the component.
fn enclosing_table(text: &str, offset: usize) -> Option<String> {
    text.get(..offset)?.lines().rev().find_map(|line| {
        let line = line.trim();
        (line.starts_with('[') && line.ends_with(']')).then(|| line.to_owned())
    })
}

impl fmt::Display for PubsubTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.pubsubname, self.topic, self.component
        )
    }
}

#[cfg(test)]
mod tests;
