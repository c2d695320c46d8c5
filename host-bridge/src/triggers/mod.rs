//! Triggers: what makes a guest run.
//!
//! - [`http`] runs `wasi:http` components for the app's HTTP routes.
//! - [`pubsub`] runs subscriber components for deliveries; it is the
//!   [`DeliveryTarget`](crate::broker::DeliveryTarget) a broker backend
//!   delivers to. `[[trigger.redis]]` subscriptions are pub/sub ones.
//! - [`subscriber`] holds the subscriber worlds, one file each: this
//!   project's, Spin's Redis trigger, WASI messaging and wasmCloud.
//!
//! Adding a trigger is adding a file here that builds itself from the
//! manifest and the loaded components, and mounts an
//! [`Endpoint`](crate::server::Endpoint) or registers with the broker.

pub mod http;
pub mod pubsub;
pub mod subscriber;
