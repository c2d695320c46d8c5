//! wasmCloud's messaging capability, `wasmcloud:messaging@0.2.0`: the
//! `handler` export gets a `broker-message` (subject, body, reply-to) and
//! answers `result<_, string>`; the `consumer` import publishes.

wasmtime::component::bindgen!({
    path: "../wit/compat",
    world: "wasmcloud-subscriber",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use wasmcloud::messaging::types::BrokerMessage;

/// The export a subscriber of this world has.
pub const SUBSCRIBER_EXPORT: &str = "wasmcloud:messaging/handler@0.2.";
