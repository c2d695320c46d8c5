//! A subscriber written for WASI messaging (`wasi:messaging@0.2.0-draft`),
//! with plain wit-bindgen. host-bridge runs it to check that a message
//! delivered to `incoming-handler.handle`, and the `producer.send` it makes
//! back through a client, map onto Dapr pub/sub.
//!
//! Its behaviour is chosen by the message's data:
//!
//! | data    | behaviour |
//! |---|---|
//! | `fail`  | returns `error::other("asked to fail")` |
//! | `panic` | panics |
//! | anything else | connects the client `pubsub` and sends to `record-wasi` the message it received as JSON, `{"topic", "content_type", "data", "metadata"}`, with content type `application/json` and metadata `handled-by: wasi-messaging-subscriber`; returns the error of the connect or the send, if any |
//!
//! It keeps no state of its own: what it saw is reported by sending, so a
//! test reads it off the `record-wasi` topic.

// `generate_all`: the world names its `types` interface only through the
// interfaces that use it, and wit-bindgen generates it only when told to.
wit_bindgen::generate!({
    path: "../../wit/compat",
    world: "wasi-messaging-subscriber",
    generate_all,
});

use exports::wasi::messaging::incoming_handler::Guest;
use wasi::messaging::producer;
use wasi::messaging::types::{Client, Error, Message};

/// The client, as named in the component's grants, that it sends through.
const CLIENT: &str = "pubsub";

struct WasiMessagingSubscriber;

impl Guest for WasiMessagingSubscriber {
    fn handle(message: Message) -> Result<(), Error> {
        match message.data().as_slice() {
            b"fail" => Err(Error::Other("asked to fail".to_string())),
            b"panic" => panic!("asked to panic"),
            _ => record(&message),
        }
    }
}

/// Sends the message it received, as JSON, to `record-wasi`.
fn record(message: &Message) -> Result<(), Error> {
    let client = Client::connect(CLIENT)?;
    let metadata = message.metadata().map(|pairs| {
        pairs
            .into_iter()
            .map(|(key, value)| (key, serde_json::Value::String(value)))
            .collect::<serde_json::Map<_, _>>()
    });
    let received = serde_json::json!({
        "topic": message.topic(),
        "content_type": message.content_type(),
        "data": String::from_utf8_lossy(&message.data()),
        "metadata": metadata,
    });
    let report = Message::new(received.to_string().as_bytes());
    report.set_content_type("application/json");
    report.add_metadata("handled-by", "wasi-messaging-subscriber");
    producer::send(&client, "record-wasi", report)
}

export!(WasiMessagingSubscriber);
