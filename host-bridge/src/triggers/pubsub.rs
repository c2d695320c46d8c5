//! The pub/sub trigger: `[[trigger.pubsub]]` subscriptions served by
//! subscriber components.
//!
//! Each delivery runs in a fresh instance of the subscription's component:
//! a new store, a new instance from the pre-instantiated component, one call
//! to `handle`, and the store is dropped. The guest's answer is returned to
//! the broker backend, which acks, redelivers or dead-letters.
//!
//! Invariant: every failure to get an answer from the guest is RETRY, never
//! SUCCESS or DROP. A trap, a panic, the epoch deadline (a guest in a loop),
//! the memory limit, an instantiation failure (for example a full instance
//! pool) and the host-side timeout all leave the message to be redelivered,
//! so a crash can delay a message but never lose it.

use crate::broker::{DeliveryTarget, Metrics, Subscription};
use crate::engine::{Engine, HostState, LoadedComponent, Sandbox, TraceContext};
use crate::host::bindings::{Event, Status, SubscriberComponentPre};
use crate::manifest::{Manifest, PubsubTrigger as PubsubTriggerConfig};
use anyhow::{Context as _, bail};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra time a call gets, past its epoch deadline, before the host stops
/// waiting for it. The epoch deadline stops a guest that computes; this
/// stops one stuck waiting on a host call.
const HOST_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// The subscriptions of the app and their components.
pub struct PubsubTrigger {
    engine: Arc<Engine>,
    targets: Vec<Target>,
    metrics: Arc<Metrics>,
}

struct Target {
    config: PubsubTriggerConfig,
    pre: SubscriberComponentPre<HostState>,
    sandbox: Arc<Sandbox>,
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
            let Some(pre) = loaded.subscriber.clone() else {
                bail!(
                    "component `{id}` subscribes to {}/{} in {} but does not export hostbridge:pubsub/subscriber; it exports: {}",
                    config.pubsubname,
                    config.topic,
                    manifest.path.display(),
                    loaded.exports.join(", ")
                );
            };
            targets.push(Target {
                config: config.clone(),
                pre,
                sandbox: loaded.sandbox.clone(),
            });
        }
        Ok(PubsubTrigger {
            engine: engine.clone(),
            targets,
            metrics,
        })
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

    async fn call(&self, target: &Target, event: Event) -> anyhow::Result<Status> {
        let trace = TraceContext {
            traceparent: event.traceparent.clone(),
            tracestate: event.tracestate.clone(),
        };
        let mut store = self.engine.store(&target.sandbox, Some(trace)).await?;
        let limit = target.sandbox.limits.timeout + HOST_TIMEOUT_SLACK;
        let call = async {
            let instance = target.pre.instantiate_async(&mut store).await?;
            instance
                .hostbridge_pubsub_subscriber()
                .call_handle(&mut store, &event)
                .await
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => bail!("no answer within {limit:?}"),
        }
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
        let (component, topic, id) = (
            &target.config.component,
            &target.config.topic,
            event.id.clone(),
        );
        let started = Instant::now();
        let status = match self.call(target, event).await {
            Ok(status) => {
                tracing::debug!(%component, %topic, %id, ?status, elapsed = ?started.elapsed(), "delivered");
                status
            }
            Err(e) => {
                tracing::warn!(%component, %topic, %id, elapsed = ?started.elapsed(), "the guest failed, so the delivery counts as RETRY: {e:?}");
                Status::Retry
            }
        };
        Metrics::inc(match status {
            Status::Success => &self.metrics.deliveries_success,
            Status::Retry => &self.metrics.deliveries_retry,
            Status::Drop => &self.metrics.deliveries_drop,
        });
        status
    }
}
