//! The contract: the WIT worlds host-bridge speaks, as generated bindings,
//! and the types every layer shares. This is the bottom floor: it imports
//! nothing from the rest of the crate, and everything else may import it.
//!
//! One file per world:
//!
//! | file | world | a subscriber exports |
//! |---|---|---|
//! | [`hostbridge`] | `hostbridge:pubsub` (`wit/pubsub.wit`), this project's own | `subscriber.handle` |
//! | [`spin_redis`] | Spin's Redis trigger, spin-sdk 7 | `spin:redis/inbound-redis@3.0.0` |
//! | [`spin_legacy_redis`] | Spin's Redis trigger, spin-sdk 2 to 5 | `fermyon:spin/inbound-redis` |
//! | [`wasi_messaging`] | WASI messaging 0.2.0-draft | `wasi:messaging/incoming-handler` |
//! | [`wasmcloud`] | wasmCloud messaging 0.2.0 | `wasmcloud:messaging/handler` |
//! | [`spin_apis`] | Spin's key-value and variables imports | (imports only) |
//!
//! The other hosts' WIT is in `wit/compat`, written from their published
//! definitions.

pub mod hostbridge;
pub mod spin_apis;
pub mod spin_legacy_redis;
pub mod spin_redis;
pub mod wasi_messaging;
pub mod wasmcloud;

pub use hostbridge::{
    BulkEntry, CloudeventOverrides, Event, FailedEntry, Message, MessageMetadata, PublishError,
    StateError, Status,
};
