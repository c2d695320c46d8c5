//! Subscriber worlds: how the pub/sub trigger hands one event to a
//! component, whichever host it was written for.
//!
//! A component's world is found from what it exports (see [`WORLDS`]);
//! each world is one file here implementing [`SubscriberPre`] (make an
//! instance) and [`SubscriberInstance`] (hand it one event). Adding a world
//! is adding a file and a line to [`WORLDS`].
//!
//! Only this project's world answers SUCCESS, RETRY or DROP. The others
//! answer `Ok` or `Err`: `Ok` is SUCCESS, and `Err` is [`Answer::Error`],
//! which the trigger turns into RETRY or DROP by the component's
//! `on_error`. A trap is never an answer: the trigger makes it RETRY.

/// What every world's file shares: `pre`, which pre-instantiates a
/// component with bindgen's `{World}Pre`, and [`SubscriberPre`] for it.
/// Each file then implements [`SubscriberInstance`], the only part that
/// differs: how one event is handed to the world's export.
macro_rules! subscriber_pre {
    ($pre:ident) => {
        pub fn pre(
            pre: wasmtime::component::InstancePre<crate::engine::HostState>,
        ) -> wasmtime::Result<std::sync::Arc<dyn super::SubscriberPre>> {
            Ok(std::sync::Arc::new($pre::new(pre)?))
        }

        #[async_trait::async_trait]
        impl super::SubscriberPre for $pre<crate::engine::HostState> {
            async fn instantiate(
                &self,
                store: &mut wasmtime::Store<crate::engine::HostState>,
            ) -> wasmtime::Result<Box<dyn super::SubscriberInstance>> {
                Ok(Box::new(self.instantiate_async(store).await?))
            }
        }
    };
}

mod hostbridge;
mod spin_legacy_redis;
mod spin_redis;
mod wasi_messaging;
mod wasmcloud;

use crate::contract::{self, Event, Status};
use crate::engine::{HostState, LoadedComponent};
use async_trait::async_trait;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// What a guest made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This project's world says what to do itself.
    Status(Status),
    /// The handler returned an error, described for the log.
    Error(String),
}

/// A subscriber component of one world, pre-instantiated.
#[async_trait]
pub trait SubscriberPre: Send + Sync {
    /// Makes an instance in `store`.
    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Box<dyn SubscriberInstance>>;
}

/// An instance of a subscriber component.
#[async_trait]
pub trait SubscriberInstance: Send {
    /// Hands the instance one event.
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer>;
}

/// One subscriber world: the export that marks it, and how to
/// pre-instantiate a component of it.
pub struct World {
    /// A readable name, for logs and errors.
    pub name: &'static str,
    /// The start of the export's name, version included as far as it
    /// matters.
    pub export: &'static str,
    new: fn(InstancePre<HostState>) -> wasmtime::Result<Arc<dyn SubscriberPre>>,
}

/// Every subscriber world, tried in this order.
pub const WORLDS: &[World] = &[
    World {
        name: "hostbridge:pubsub subscriber",
        export: contract::hostbridge::SUBSCRIBER_EXPORT,
        new: hostbridge::pre,
    },
    World {
        name: "Spin Redis trigger (spin-sdk 6 and later)",
        export: contract::spin_redis::SUBSCRIBER_EXPORT,
        new: spin_redis::pre,
    },
    World {
        name: "Spin Redis trigger (spin-sdk 2 to 5)",
        export: contract::spin_legacy_redis::SUBSCRIBER_EXPORT,
        new: spin_legacy_redis::pre,
    },
    World {
        name: "WASI messaging 0.2.0-draft",
        export: contract::wasi_messaging::SUBSCRIBER_EXPORT,
        new: wasi_messaging::pre,
    },
    World {
        name: "wasmCloud messaging 0.2",
        export: contract::wasmcloud::SUBSCRIBER_EXPORT,
        new: wasmcloud::pre,
    },
];

/// The world of a component that exports `exports`, pre-instantiated, or
/// `None` if it exports no subscriber.
pub fn detect(
    pre: &InstancePre<HostState>,
    exports: &[String],
) -> Option<(&'static World, wasmtime::Result<Arc<dyn SubscriberPre>>)> {
    let world = WORLDS
        .iter()
        .find(|w| exports.iter().any(|e| e.starts_with(w.export)))?;
    Some((world, (world.new)(pre.clone())))
}

/// The subscriber world of `loaded`, pre-instantiated; an error naming
/// component `id` if it exports none, or exports one that does not match
/// that world's WIT.
pub fn subscriber_of(id: &str, loaded: &LoadedComponent) -> anyhow::Result<Arc<dyn SubscriberPre>> {
    let Some((world, pre)) = detect(&loaded.pre, &loaded.exports) else {
        anyhow::bail!(
            "component `{id}` exports no subscriber interface; it exports: {}; a subscriber exports one of: {}",
            loaded.exports.join(", "),
            known_exports()
        );
    };
    tracing::debug!(component = %id, world = world.name, "subscriber world");
    pre.map_err(|e| {
        anyhow::anyhow!(
            "component `{id}` exports the {} world, but its export does not match that world's WIT: {e:#}",
            world.name
        )
    })
}

/// The exports that make a component a subscriber, for error messages.
pub fn known_exports() -> String {
    WORLDS
        .iter()
        .map(|w| format!("{} ({})", w.export.trim_end_matches('@'), w.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ok` or `Err` of a world whose handler returns a result.
fn answer<E: std::fmt::Debug>(result: Result<(), E>) -> Answer {
    match result {
        Ok(()) => Answer::Status(Status::Success),
        Err(e) => Answer::Error(format!("{e:?}")),
    }
}
