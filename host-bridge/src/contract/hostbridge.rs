//! `hostbridge:pubsub`, this project's own world (`wit/pubsub.wit`): guests
//! import `publisher` and `state`, subscribers export `subscriber`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "subscriber-component",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
});

pub use hostbridge::pubsub::types::{
    BulkEntry, CloudeventOverrides, Event, FailedEntry, Message, MessageMetadata, PublishError,
    StateError, Status,
};

/// The export a subscriber of this world has.
pub const SUBSCRIBER_EXPORT: &str = "hostbridge:pubsub/subscriber@";

impl Message {
    /// A message of `data` with no publishing options: the CloudEvent
    /// attributes are the host's defaults.
    pub fn new(data: Vec<u8>, content_type: Option<String>) -> Message {
        Message {
            data,
            content_type,
            metadata: MessageMetadata {
                ttl_seconds: None,
                raw_payload: false,
                cloudevent: CloudeventOverrides {
                    id: None,
                    source: None,
                    type_: None,
                    subject: None,
                    traceparent: None,
                    tracestate: None,
                },
                extra: Vec::new(),
            },
        }
    }
}
