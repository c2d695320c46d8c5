//! wasmCloud messaging 0.2: `handle-message` of a `broker-message`. Its
//! `subject` is the topic, its `body` the data, and `reply-to` is always
//! empty: Dapr's pub/sub has no reply subjects. CloudEvent attributes,
//! the content type and the trace context have no place in the record.

use super::{Answer, SubscriberInstance, answer};
use crate::contract::Event;
use crate::contract::wasmcloud::{BrokerMessage, WasmcloudSubscriber, WasmcloudSubscriberPre};
use crate::engine::HostState;
use async_trait::async_trait;
use wasmtime::Store;

subscriber_pre!(WasmcloudSubscriberPre);

#[async_trait]
impl SubscriberInstance for WasmcloudSubscriber {
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer> {
        let message = BrokerMessage {
            subject: event.topic.clone(),
            body: event.data.clone(),
            reply_to: None,
        };
        let result = self
            .wasmcloud_messaging_handler()
            .call_handle_message(store, &message)
            .await?;
        Ok(answer(result))
    }
}
