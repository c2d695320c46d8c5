//! WASI messaging, `wasi:messaging@0.2.0-draft`: the `incoming-handler`
//! export gets a `message` resource and answers `result<_, error>`; the
//! `producer` import sends messages through a `client` resource.
//!
//! Both resources live in the host: [`HostMessage`] holds a message's
//! bytes and attributes, [`HostClient`] names the pub/sub component that a
//! `client.connect(name)` opened.

wasmtime::component::bindgen!({
    path: "../wit/compat",
    world: "wasi-messaging-subscriber",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:messaging/types.message": HostMessage,
        "wasi:messaging/types.client": HostClient,
    },
});

pub use wasi::messaging::types::Error;

/// The export a subscriber of this world has.
pub const SUBSCRIBER_EXPORT: &str = "wasi:messaging/incoming-handler@0.2.0-draft";

/// A `message` resource: what the guest reads, or builds to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMessage {
    /// Where it was received from; `None` for a message the guest made.
    pub topic: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    pub metadata: Vec<(String, String)>,
}

/// A `client` resource: a connection to one pub/sub component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostClient {
    pub pubsubname: String,
}
