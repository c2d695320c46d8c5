//! The engine: compile components, cache the machine code, pre-instantiate,
//! and make a fresh sandboxed store for every call.
//!
//! - **Compile once.** [`Engine::load`] compiles a component's `.wasm` with
//!   Cranelift, one component at a time. The machine code is cached on disk
//!   (keyed by the component's bytes and the compiler's settings) and mapped
//!   from there, so the next start of an unchanged app skips compilation
//!   and keeps only the code it runs resident ([`compiled`]).
//! - **Link once.** Each component is linked against WASI 0.2 and 0.3,
//!   `wasi:http` 0.2 and 0.3 and this project's WIT into an `InstancePre`, so
//!   a missing import is an error at startup, not at the first request.
//! - **Instantiate per call.** Every delivery and every HTTP request gets a
//!   new `Store` and instance from the pooling allocator, so no state leaks
//!   between messages.
//! - **Bounded calls.** A store gets an epoch deadline of its component's
//!   `timeout` (checked every [`EPOCH_TICK`]) and a memory limiter of its
//!   `max_memory`. Running past either traps the guest, which the triggers
//!   turn into RETRY or a 5xx; the host itself is untouched.

pub mod cache_dir;
pub mod compiled;
pub mod core_module;
pub mod guest_output;
mod outbound_http;
pub mod sandbox;
mod state;

pub use guest_output::GuestOutput;
pub use sandbox::Sandbox;
pub use state::{HostState, TraceContext};

use crate::broker::Capabilities;
use crate::manifest;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{
    Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::ProxyPre;

/// How much of each freed linear memory stays resident for the next
/// instance in its slot (see [`Engine::new`]). Only pages a guest touched
/// are resident, so this bounds memory kept per warm slot, not memory used.
const KEEP_RESIDENT: usize = 8 << 20;

/// How often the epoch advances; the granularity of guest timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled code is cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    /// The most guest instances alive at once, across all components.
    pub max_instances: u32,
    /// Where guests' stdout and stderr go (`--guest-output`).
    pub guest_output: GuestOutput,
}

/// A compiled, linked component, ready to instantiate.
pub struct LoadedComponent {
    pub id: String,
    pub sandbox: Arc<Sandbox>,
    /// Set when the component exports a `wasi:http` handler (0.2 or 0.3).
    pub http: Option<ProxyPre<HostState>>,
    /// The component linked against everything host-bridge provides; the
    /// pub/sub trigger finds its subscriber world from [`Self::exports`].
    pub pre: InstancePre<HostState>,
    /// What the component exports, for error messages.
    pub exports: Vec<String>,
    /// How long compiling (or loading from the cache) took.
    pub compile_time: Duration,
    /// The version that runs: `sha256:` and the hex SHA-256 of the
    /// component's bytes, as a registry names a layer. Traces and the
    /// admin page show it.
    pub digest: Arc<str>,
}

/// The wasmtime engine, its linker, and the capabilities guests reach.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    capabilities: Capabilities,
    guest_output: GuestOutput,
    /// Where compiled code is cached and mapped from; `None` with `--no-cache`.
    cache: Option<compiled::CompiledCache>,
    /// Compiles what is not in the cache, one component at a time.
    compiler: compiled::Compiler,
    _ticker: EpochTicker,
}

impl Engine {
    /// `add_imports` links what host-bridge provides beyond WASI
    /// (`host::add_to_linker`); it is passed in so that the engine, below
    /// the host functions, does not depend on them.
    pub fn new(
        options: &EngineOptions,
        capabilities: Capabilities,
        add_imports: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
    ) -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_component_model_async(true)
            .epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(options.max_instances)
            .total_core_instances(options.max_instances * 4)
            .total_memories(options.max_instances * 2)
            .total_tables(options.max_instances * 4)
            .max_memories_per_component(4)
            .max_tables_per_component(8);
        // A fresh instance per call is only cheap if giving its memory back
        // is. By default a freed linear memory is reset with `madvise`, and
        // the next instance in the slot page-faults on every page it touches
        // again. Keeping up to `KEEP_RESIDENT` of it resident and resetting
        // only the pages the guest dirtied (found with Linux's PAGEMAP_SCAN,
        // 6.7+; elsewhere a `memset` of the low addresses) halves a
        // delivery's cost. Measured in BENCHMARKS.md (`cargo bench --bench
        // sandbox`).
        //
        // Decommits are not batched (`decommit_batch_size` stays 1): a
        // freed slot waiting in a batch cannot be reused, so the next
        // instance takes a slot never used, and every slot used keeps its
        // resident pages. With a batch of 32, the Python orders processor
        // (`instance_reuse`, 4 instances) spread over 20-odd slots of about
        // 6.7 MB each, 200 MB; unbatched it stays in 6 or 7, and the
        // delivery path of the small Rust guests was no slower.
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // wasmtime runs what it finds there: the directory must be the
        // user's own and closed to others (see `cache_dir`).
        let cache = options
            .cache_dir
            .as_deref()
            .map(compiled::CompiledCache::open)
            .transpose()?;
        let compiler = compiled::Compiler::new(&config);
        let engine = wasmtime::Engine::new(&config).context("cannot configure wasmtime")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        add_imports(&mut linker)?;

        Ok(Engine {
            _ticker: EpochTicker::start(engine.clone())
                .context("cannot start the epoch ticker thread")?,
            engine,
            linker,
            capabilities,
            guest_output: options.guest_output,
            cache,
            compiler,
        })
    }

    /// Compiles (or loads from the cache) and links one component. This is
    /// CPU-bound; call it from a blocking thread.
    pub fn load(&self, component: &manifest::Component) -> wasmtime::Result<LoadedComponent> {
        let bytes = core_module::component_bytes(&component.source).with_context(|| {
            format!(
                "component `{}`: cannot compile {}",
                component.id,
                component.source.display()
            )
        })?;
        self.load_bytes(component, bytes)
    }

    /// Like [`Engine::load`], from bytes already read and checked against a
    /// digest (a download's, a pulled layer's): the file they came from is
    /// not read again, so what was checked is what runs.
    pub fn load_checked(
        &self,
        component: &manifest::Component,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<LoadedComponent> {
        let what = format!(
            "component `{}` ({})",
            component.id,
            component.source.display()
        );
        let bytes = core_module::component_bytes_of(bytes, &what)?;
        self.load_bytes(component, bytes)
    }

    /// Like [`Engine::load`], for a component's bytes (a component, or a
    /// core module made one with [`core_module::component_bytes_of`]).
    pub fn load_bytes(
        &self,
        component: &manifest::Component,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<LoadedComponent> {
        let id = &component.id;
        let path = &component.source;
        let started = Instant::now();
        let what = format!("component `{id}` ({})", path.display());
        let compiled = match &self.cache {
            Some(cache) => cache
                .load(&self.engine, &self.compiler, &bytes, &what)
                .map(|(component, _)| component),
            None => self
                .compiler
                .compile(&bytes, || None::<Component>)
                .and_then(|serialized| match serialized {
                    Ok(component) => Ok(component),
                    // SAFETY: wasmtime made these bytes just now, for an
                    // engine configured like this one.
                    Err(serialized) => unsafe { Component::deserialize(&self.engine, &serialized) },
                }),
        }
        .with_context(|| format!("component `{id}`: cannot compile {}", path.display()))?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        )
        .into();
        drop(bytes);
        let compile_time = started.elapsed();
        let exports: Vec<String> = compiled
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let pre = self.linker.instantiate_pre(&compiled).map_err(|e| {
            let imports: Vec<String> = compiled
                .component_type()
                .imports(&self.engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            let unknown: Vec<&str> = imports
                .iter()
                .filter(|name| !crate::contract::provides(name))
                .map(String::as_str)
                .collect();
            let what = if unknown.is_empty() {
                "an import in a shape host-bridge does not provide".to_owned()
            } else {
                format!(
                    "`{}`, which host-bridge does not provide",
                    unknown.join("`, `")
                )
            };
            wasmtime::format_err!(
                "component `{id}` ({}) imports {what}. host-bridge provides: {}. ({e:#})",
                path.display(),
                crate::contract::PROVIDED.join(", ")
            )
        })?;
        let exports_any = |prefix: &str| exports.iter().any(|e| e.starts_with(prefix));
        let http = if exports_any("wasi:http/handler@0.3") {
            Some(ProxyPre::P3(
                wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone())?,
            ))
        } else if exports_any("wasi:http/incoming-handler@0.2") {
            Some(ProxyPre::P2(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone())?,
            ))
        } else {
            None
        };
        Ok(LoadedComponent {
            id: id.clone(),
            sandbox: Arc::new(Sandbox::new(component)),
            http,
            pre,
            exports,
            compile_time,
            digest,
        })
    }

    /// The `messaging.system` of the guests' spans.
    pub fn messaging_system(&self) -> &'static str {
        crate::telemetry::messaging_system(self.capabilities.broker.name())
    }

    /// A fresh store for one call into a component, sandboxed and bounded.
    /// Waits first while the component has `max_instances` alive.
    pub async fn store(
        &self,
        sandbox: &Arc<Sandbox>,
        trace: Option<TraceContext>,
    ) -> wasmtime::Result<Store<HostState>> {
        let admission = sandbox.admit().await;
        self.admitted_store(sandbox, trace, admission)
    }

    /// A fresh store holding `admission`, its place under `max_instances`
    /// (see [`Sandbox::admit`]).
    pub fn admitted_store(
        &self,
        sandbox: &Arc<Sandbox>,
        trace: Option<TraceContext>,
        admission: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> wasmtime::Result<Store<HostState>> {
        let limits = sandbox.limits;
        let state = HostState {
            admission,
            component: sandbox.component.clone(),
            wasi: sandbox.wasi_ctx(self.guest_output, &self.capabilities.metrics)?,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory)
                .instances(64)
                .build(),
            outbound: state::OutboundHttp {
                sandbox: sandbox.clone(),
            },
            broker: self.capabilities.broker.clone(),
            state_store: self.capabilities.state_store.clone(),
            sandbox: sandbox.clone(),
            metrics: self.capabilities.metrics.clone(),
            messaging_pubsubname: self.capabilities.messaging_pubsubname.clone(),
            trace,
            deadline: std::time::Instant::now() + limits.timeout,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        set_deadline(&mut store, limits.timeout);
        // A guest that computes for longer than a tick yields its thread
        // at every tick, so a loop shares the runtime's workers with
        // everything else (other requests, the signal that stops the host)
        // until its deadline, where it traps.
        store.epoch_deadline_callback(|store| {
            if std::time::Instant::now() >= store.data().deadline {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        Ok(store)
    }
}

/// Gives the next call into `store` `timeout` to run, from now.
pub fn set_deadline(store: &mut Store<HostState>, timeout: Duration) {
    store.data_mut().deadline = std::time::Instant::now() + timeout;
    store.set_epoch_deadline(1);
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
