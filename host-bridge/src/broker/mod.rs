//! Broker backends: where published messages go and where deliveries come from.
//!
//! A backend implements [`Broker`] (publish, and start delivering to the
//! subscriptions) and [`StateStore`]. Adding a backend is adding a file here
//! that implements both; nothing else in the host changes. The pub/sub
//! trigger is the other side of the seam: it implements [`DeliveryTarget`],
//! which runs one delivery in a fresh guest instance and says what became of
//! it. What happens next (ack, redeliver, dead-letter) is the backend's job,
//! because under Dapr it is the sidecar's.

pub mod cloudevent;
pub mod dapr;
pub mod dapr_app;
pub mod dapr_dead_letters;
pub mod dapr_state;
pub mod dead_letters;
pub mod embedded;
pub mod journal;
mod metrics;
mod routing;
pub mod sidecar_api;
pub mod stats;

pub use metrics::{InFlight, Metrics};

use crate::contract::{BulkEntry, Event, FailedEntry, Message, PublishError, StateError, Status};
use crate::manifest::PubsubTrigger;
use crate::server::Endpoint;
use async_trait::async_trait;
use std::sync::Arc;

/// A subscription, as the pub/sub trigger declares it to a backend.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Its index in the manifest's `[[trigger.pubsub]]` list, which is how
    /// the backend names it back to the [`DeliveryTarget`].
    pub index: usize,
    pub trigger: PubsubTrigger,
}

/// Where a backend publishes, and how it delivers.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A short name for logs and the startup summary.
    fn name(&self) -> &'static str;

    /// Publishes one message. Returns once the broker holds the message.
    async fn publish(
        &self,
        pubsubname: &str,
        topic: &str,
        message: Message,
    ) -> Result<(), PublishError>;

    /// Publishes many messages to one topic and reports those that failed.
    /// The default publishes them one by one.
    async fn publish_bulk(
        &self,
        pubsubname: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
    ) -> Result<(), Vec<FailedEntry>> {
        let mut failed = Vec::new();
        for entry in entries {
            if let Err(error) = self.publish(pubsubname, topic, entry.message).await {
                failed.push(FailedEntry {
                    entry_id: entry.entry_id,
                    error,
                });
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Starts delivering messages for `subscriptions` to `target`, and
    /// returns what the backend mounts on the app's listener: Dapr's
    /// app-side protocol (`/dapr/subscribe` and the delivery routes). The
    /// embedded broker's sidecar API is not among them: it takes any topic
    /// and key, so `up` serves it on a listener of its own
    /// ([`sidecar_api`]).
    fn start(
        self: Arc<Self>,
        subscriptions: Vec<Subscription>,
        target: Arc<dyn DeliveryTarget>,
    ) -> Vec<Arc<dyn Endpoint>>;

    /// Stops taking new work and waits, at most `grace`, for deliveries in
    /// flight to finish. Returns how many were still in flight.
    async fn shutdown(&self, grace: std::time::Duration) -> u64;
}

/// The pub/sub trigger, as a backend sees it.
#[async_trait]
pub trait DeliveryTarget: Send + Sync + 'static {
    /// Runs one delivery of `event` for subscription `subscription` in a
    /// fresh guest instance. A guest that traps, panics, runs out of time or
    /// memory, or cannot be instantiated yields [`Status::Retry`].
    async fn deliver(&self, subscription: usize, event: Event) -> Status;
}

/// Key/value state, as the `state` WIT interface offers it to guests.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError>;
    async fn delete(&self, store: &str, key: &str) -> Result<(), StateError>;
    /// Every key in `store`, for Spin's key-value `get-keys`. A backend
    /// that cannot list keys says so with an error naming itself.
    async fn keys(&self, store: &str) -> Result<Vec<String>, StateError>;
}

/// What guests reach through their imports.
#[derive(Clone)]
pub struct Capabilities {
    pub broker: Arc<dyn Broker>,
    pub state_store: Arc<dyn StateStore>,
    /// Where refusals of what the manifest does not grant are counted.
    pub metrics: Arc<Metrics>,
    /// The pub/sub component wasmCloud subjects are topics of
    /// ([`Application::pubsubname`](crate::manifest::Application::pubsubname)).
    pub messaging_pubsubname: String,
}
