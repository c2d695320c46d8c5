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

/// What host-bridge provides to guests, by interface name and version. It
/// describes `host::add_to_linker` and the WASI linkers of `Engine::new`,
/// and is named in the error for a component that imports anything else.
pub const PROVIDED: &[&str] = &[
    "wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets @0.2.* and @0.3.*",
    "wasi:http/types and wasi:http/outgoing-handler @0.2.*, wasi:http @0.3.*",
    "hostbridge:pubsub/publisher@0.1.0",
    "hostbridge:pubsub/state@0.1.0",
    "spin:key-value/key-value@3.0.0",
    "spin:variables/variables@3.0.0",
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "wasi:messaging/producer@0.2.0-draft",
    "wasmcloud:messaging/consumer@0.2.0",
];

/// Whether an import named `name` is one host-bridge provides, going by
/// its name (its shape is the linker's to check). Interfaces imported only
/// for their types (like `spin:redis/redis@3.0.0` by a Redis subscriber)
/// pass too, since they need nothing from the host.
pub fn provides(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:io/",
        "wasi:random/",
        "wasi:sockets/",
        "wasi:http/",
        "hostbridge:pubsub/",
        "spin:key-value/key-value@3.0.0",
        "spin:variables/variables@3.0.0",
        "fermyon:spin/key-value@2.0.0",
        "fermyon:spin/variables@2.0.0",
        "fermyon:spin/redis-types",
        "spin:redis/redis@3.0.0",
        "wasi:messaging/types@0.2.0-draft",
        "wasi:messaging/producer@0.2.0-draft",
        "wasmcloud:messaging/types@0.2.0",
        "wasmcloud:messaging/consumer@0.2.0",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

impl Status {
    /// The answer as Dapr's app protocol spells it (case sensitive).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Retry => "RETRY",
            Status::Drop => "DROP",
        }
    }
}
