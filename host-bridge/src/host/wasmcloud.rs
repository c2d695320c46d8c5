//! `wasmcloud:messaging/consumer@0.2.0`: a wasmCloud component's publishes
//! go to the broker, on the app's messaging pub/sub component
//! (`[application.tool.host-bridge] pubsubname`), with the subject as the
//! topic.
//!
//! - `publish` is a publish, under the component's `allowed_publish_topics`.
//!   The body goes as `application/octet-stream`, since the record has no
//!   content type; `reply-to` has no place in a Dapr publish and is dropped.
//! - `request` fails with an explanation: Dapr's pub/sub has no
//!   request-reply.

use crate::contract::Message;
use crate::contract::wasmcloud::BrokerMessage;
use crate::contract::wasmcloud::wasmcloud::messaging::{consumer, types};
use crate::engine::HostState;

/// The content type of everything a wasmCloud component publishes.
const CONTENT_TYPE: &str = "application/octet-stream";

impl types::Host for HostState {}

impl consumer::Host for HostState {
    async fn request(
        &mut self,
        subject: String,
        _body: Vec<u8>,
        _timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        Ok(Err(format!(
            "wasmcloud:messaging/consumer.request to {subject:?} is not supported: Dapr's pub/sub has no request-reply; publish, and subscribe to a reply topic instead"
        )))
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        let message = Message::new(msg.body, Some(CONTENT_TYPE.to_owned()));
        let pubsubname = self.messaging_pubsubname.clone();
        let result = self
            .publish_checked(&pubsubname, &msg.subject, message)
            .await;
        Ok(result.map_err(|e| format!("{e:?}")))
    }
}
