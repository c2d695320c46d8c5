//! The pub/sub trigger: `[[trigger.pubsub]]` subscriptions served by
//! subscriber components.
//!
//! Each delivery runs in a fresh instance of the subscription's component:
//! a new store, a new instance from the pre-instantiated component, one call
//! to `handle`, and the store is dropped. The guest's answer is returned to
//! the broker backend, which acks, redelivers or dead-letters.
//!
//! A component whose manifest sets `instance_reuse = N` opts out of that
//! isolation for speed: an instance that answered is kept, idle, for the
//! next delivery, up to N deliveries. Only an instance that answered is
//! kept; one that trapped or ran out of time is dropped with its store.
//! Idle instances are bounded by the component's `max_instances` (by
//! [`default_idle_cap`] without it), and a new instance is made only when
//! none is idle, so with `max_instances` set no more than that many are
//! ever alive.
//!
//! Invariant: every failure to get an answer from the guest is RETRY, never
//! SUCCESS or DROP. A trap, a panic, the epoch deadline (a guest in a loop),
//! the memory limit, an instantiation failure (for example a full instance
//! pool) and the host-side timeout all leave the message to be redelivered,
//! so a crash can delay a message but never lose it.

use super::subscriber::{self, Answer, SubscriberInstance, SubscriberPre};
use crate::broker::stats::SubscriptionStats;
use crate::broker::{DeliveryTarget, Metrics, Subscription};
use crate::contract::{Event, Status};
use crate::engine::{Engine, HostState, LoadedComponent, Sandbox, TraceContext, set_deadline};
use crate::manifest::{Manifest, OnError, PubsubTrigger as PubsubTriggerConfig};
use crate::telemetry;
use anyhow::{Context as _, bail};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use wasmtime::Store;

/// Extra time a call gets, past its epoch deadline, before the host stops
/// waiting for it. The epoch deadline stops a guest that computes; this
/// stops one stuck waiting on a host call.
const HOST_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// The subscriptions of the app and their components.
pub struct PubsubTrigger {
    engine: Arc<Engine>,
    targets: Vec<Target>,
    metrics: Arc<Metrics>,
    /// Per subscription, for the admin page.
    stats: Arc<SubscriptionStats>,
}

struct Target {
    config: PubsubTriggerConfig,
    /// The component's current version: a live deploy
    /// ([`PubsubTrigger::replace`]) swaps it, and deliveries already in
    /// flight finish on the version they started with.
    current: RwLock<Version>,
    sandbox: Arc<Sandbox>,
    /// Instances kept for their next delivery (`instance_reuse` > 1).
    idle: Mutex<Vec<Warm>>,
    idle_cap: usize,
}

/// An instance that answered its last delivery and may take another.
struct Warm {
    store: Store<HostState>,
    instance: Box<dyn SubscriberInstance>,
    /// How many deliveries it has answered.
    served: u32,
    /// The generation of the version it is an instance of; an instance of
    /// a version since replaced is never kept.
    generation: u64,
}

/// One version of a subscription's component.
#[derive(Clone)]
struct Version {
    pre: Arc<dyn SubscriberPre>,
    /// Counts the live deploys: an instance of an older generation is
    /// never reused.
    generation: u64,
    /// The version's digest, for its spans.
    digest: Arc<str>,
}

impl Target {
    /// The current version.
    fn current(&self) -> Version {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How many idle instances a reusing component keeps when its manifest
/// sets no `max_instances`: two per core, enough to keep the cores busy
/// while some instances wait on host calls.
fn default_idle_cap() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl PubsubTrigger {
    /// Builds the trigger from `[[trigger.pubsub]]`. Fails, naming the
    /// component, if a subscribed component does not export the subscriber
    /// interface.
    pub fn new(
        engine: &Arc<Engine>,
        manifest: &Manifest,
        components: &HashMap<String, LoadedComponent>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<PubsubTrigger> {
        let mut targets = Vec::new();
        for config in &manifest.pubsub_triggers {
            let id = &config.component;
            let loaded = components.get(id).with_context(|| {
                format!("component `{id}` of subscription {config} was not loaded")
            })?;
            let pre = subscriber::subscriber_of(id, loaded).with_context(|| {
                format!(
                    "component `{id}` subscribes to {}/{} in {}",
                    config.pubsubname,
                    config.topic,
                    manifest.path.display()
                )
            })?;
            let sandbox = loaded.sandbox.clone();
            let idle_cap = sandbox
                .limits
                .max_instances
                .map_or_else(default_idle_cap, |n| n as usize);
            targets.push(Target {
                config: config.clone(),
                current: RwLock::new(Version {
                    pre,
                    generation: 0,
                    digest: loaded.digest.clone(),
                }),
                sandbox,
                idle: Mutex::new(Vec::new()),
                idle_cap,
            });
        }
        Ok(PubsubTrigger {
            engine: engine.clone(),
            stats: Arc::new(SubscriptionStats::new(targets.len())),
            targets,
            metrics,
        })
    }

    /// Swaps in a new version of component `id` for every subscription it
    /// serves, after checking that it exports a subscriber world; a version
    /// that does not leaves the old one serving. Deliveries in flight
    /// finish on the old version, and its kept instances are dropped.
    /// Returns how many subscriptions now use it.
    pub fn replace(&self, id: &str, loaded: &LoadedComponent) -> anyhow::Result<usize> {
        let targets: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.config.component == id)
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let pre = subscriber::subscriber_of(id, loaded)
            .context("it serves subscriptions, so the new version must be a subscriber")?;
        for target in &targets {
            {
                let mut current = target.current.write().unwrap_or_else(|e| e.into_inner());
                *current = Version {
                    pre: pre.clone(),
                    generation: current.generation + 1,
                    digest: loaded.digest.clone(),
                };
            }
            // Dropped outside the lock: dropping a store frees its memory.
            let stale = std::mem::take(&mut *target.idle.lock().unwrap_or_else(|e| e.into_inner()));
            drop(stale);
        }
        Ok(targets.len())
    }

    /// Each subscription's delivery statistics.
    pub fn stats(&self) -> Arc<SubscriptionStats> {
        self.stats.clone()
    }

    /// The subscriptions, as the broker backend takes them.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.targets
            .iter()
            .enumerate()
            .map(|(index, t)| Subscription {
                index,
                trigger: t.config.clone(),
            })
            .collect()
    }

    /// One delivery: on an idle instance if the component reuses them and
    /// one is idle, else on a fresh instance, which is kept afterwards only
    /// if the component reuses instances and this one answered (see the
    /// module's docs). With `instance_reuse` at 1, the default, nothing is
    /// ever kept and the idle list is never touched. `version` is the
    /// component's current version, read once by the caller for its span.
    async fn call(
        &self,
        target: &Target,
        version: Version,
        given: TraceContext,
        event: Event,
    ) -> anyhow::Result<Answer> {
        let component = &target.config.component;
        let limits = target.sandbox.limits;
        let limit = limits.timeout + HOST_TIMEOUT_SLACK;
        let reuses = limits.instance_reuse > 1;
        let admission = target.sandbox.admit().await;
        let Version {
            pre,
            generation,
            digest,
        } = version;
        let idle = if reuses {
            let mut idle = target.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|w| w.generation == generation);
            idle.pop()
        } else {
            None
        };
        // What the guest's publishes and state calls continue: the handle
        // span when spans are on, else the event's own context.
        let handle_span = telemetry::handle_span(component, &digest);
        let trace = telemetry::pass_on(&handle_span, Some(given));
        let call = async {
            let mut warm = match idle {
                Some(mut warm) => {
                    Metrics::inc(&self.metrics.deliveries_on_reused_instances);
                    warm.store.data_mut().admission = admission;
                    warm.store.data_mut().trace = trace;
                    set_deadline(&mut warm.store, limits.timeout);
                    warm
                }
                None => {
                    let fresh = async {
                        let mut store =
                            self.engine
                                .admitted_store(&target.sandbox, trace, admission)?;
                        let instance = pre.instantiate(&mut store).await?;
                        wasmtime::Result::<_>::Ok((store, instance))
                    };
                    let (store, instance) = fresh
                        .instrument(telemetry::instantiate_span(component))
                        .await?;
                    Warm {
                        store,
                        instance,
                        served: 0,
                        generation,
                    }
                }
            };
            let answer = warm
                .instance
                .handle(&mut warm.store, &event)
                .instrument(handle_span)
                .await?;
            Ok::<_, wasmtime::Error>((answer, warm))
        };
        let (answer, mut warm) = match tokio::time::timeout(limit, call).await {
            Ok(result) => result?,
            Err(_) => bail!("no answer within {limit:?}"),
        };
        warm.served += 1;
        if reuses && warm.served < limits.instance_reuse {
            let state = warm.store.data_mut();
            state.admission = None;
            state.trace = None;
            let mut idle = target.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < target.idle_cap && warm.generation == target.current().generation {
                idle.push(warm);
            }
        }
        Ok(answer)
    }
}

#[async_trait]
impl DeliveryTarget for PubsubTrigger {
    async fn deliver(&self, subscription: usize, event: Event) -> Status {
        let Some(target) = self.targets.get(subscription) else {
            tracing::error!(
                subscription,
                "delivery for an unknown subscription; asking for redelivery"
            );
            return Status::Retry;
        };
        let _in_flight = self.stats.enter(subscription);
        let (component, topic, id) = (
            &target.config.component,
            &target.config.topic,
            event.id.clone(),
        );
        let started = Instant::now();
        let version = target.current();
        let given = TraceContext {
            traceparent: event.traceparent.clone(),
            tracestate: event.tracestate.clone(),
        };
        let span = telemetry::delivery_span(
            self.engine.messaging_system(),
            &target.config.pubsubname,
            topic,
            &id,
            component,
            &version.digest,
            Some(&given),
        );
        let handled = async {
            match self.call(target, version, given, event).await {
                Ok(Answer::Status(status)) => {
                    tracing::debug!(%component, %topic, %id, ?status, elapsed = ?started.elapsed(), "delivered");
                    status
                }
                Ok(Answer::Error(error)) => {
                    let status = match target.sandbox.limits.on_error {
                        OnError::Retry => Status::Retry,
                        OnError::Drop => Status::Drop,
                    };
                    tracing::warn!(%component, %topic, %id, elapsed = ?started.elapsed(), "the handler returned an error, so the delivery counts as {status:?} (on_error): {error}");
                    status
                }
                Err(e) => {
                    tracing::warn!(%component, %topic, %id, elapsed = ?started.elapsed(), "the guest failed, so the delivery counts as RETRY: {e:?}");
                    telemetry::failed(&tracing::Span::current(), &format!("{e:#}"));
                    Status::Retry
                }
            }
        };
        let status = handled.instrument(span.clone()).await;
        // The answer that goes back to the broker.
        span.record("host_bridge.answer", status.as_str());
        self.stats.record(subscription, status, started.elapsed());
        Metrics::inc(match status {
            Status::Success => &self.metrics.deliveries_success,
            Status::Retry => &self.metrics.deliveries_retry,
            Status::Drop => &self.metrics.deliveries_drop,
        });
        status
    }
}
