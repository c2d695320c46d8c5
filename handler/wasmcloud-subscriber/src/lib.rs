//! A subscriber written for wasmCloud's messaging capability
//! (`wasmcloud:messaging@0.2.0`), with plain wit-bindgen as a wasmCloud user
//! would write it. host-bridge runs it to check that a message delivered to
//! `handler.handle-message` and the `consumer` calls it makes back map onto
//! Dapr pub/sub.
//!
//! Its behaviour is chosen by the message body:
//!
//! | body      | behaviour |
//! |---|---|
//! | `fail`    | returns `Err("asked to fail")` |
//! | `panic`   | panics |
//! | `request` | calls `consumer.request` on `anything`, then publishes to `record-wasmcloud-request` its error text, or `ok` |
//! | anything else | publishes to `record-wasmcloud` the message it received as JSON, `{"subject", "body", "reply_to"}`; fails with the publish error if that fails |
//!
//! It keeps no state of its own: what it saw is reported by publishing,
//! so a test reads it off the `record-*` topics.

// `generate_all`: the world names its `types` interface only through the
// interfaces that use it, and wit-bindgen generates it only when told to.
wit_bindgen::generate!({
    path: "../../wit/compat",
    world: "wasmcloud-subscriber",
    generate_all,
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer;
use wasmcloud::messaging::types::BrokerMessage;

/// How long `request` waits for a reply, in milliseconds.
const REQUEST_TIMEOUT_MS: u32 = 1000;

struct WasmcloudSubscriber;

impl Guest for WasmcloudSubscriber {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        match msg.body.as_slice() {
            b"fail" => Err("asked to fail".to_string()),
            b"panic" => panic!("asked to panic"),
            b"request" => request(),
            _ => record(&msg),
        }
    }
}

/// Makes a request and publishes how it went. The request's outcome is the
/// thing under test, so either outcome is a success of the handler.
fn request() -> Result<(), String> {
    let outcome = match consumer::request("anything", b"ping", REQUEST_TIMEOUT_MS) {
        Ok(_) => "ok".to_string(),
        Err(err) => err,
    };
    publish("record-wasmcloud-request", outcome.into_bytes())
}

/// Publishes the message it received, as JSON.
fn record(msg: &BrokerMessage) -> Result<(), String> {
    let received = serde_json::json!({
        "subject": msg.subject,
        "body": String::from_utf8_lossy(&msg.body),
        "reply_to": msg.reply_to,
    });
    publish("record-wasmcloud", received.to_string().into_bytes())
}

fn publish(subject: &str, body: Vec<u8>) -> Result<(), String> {
    consumer::publish(&BrokerMessage {
        subject: subject.to_string(),
        body,
        reply_to: None,
    })
}

export!(WasmcloudSubscriber);
