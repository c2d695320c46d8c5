//! WASI messaging 0.2.0-draft: `handle` of a `message` resource, which the
//! host makes for the delivery. The guest reads:
//!
//! - `topic()`: the topic;
//! - `content-type()`: the CloudEvent's `datacontenttype`;
//! - `data()`: the payload's bytes;
//! - `metadata()`: the CloudEvent's `id`, `source`, `type`, `specversion`,
//!   `pubsubname`, and `subject`, `time`, `traceparent` and `tracestate`
//!   when set, then every other attribute and delivery metadata entry.

use super::{Answer, SubscriberInstance, answer};
use crate::contract::Event;
use crate::contract::wasi_messaging::{
    HostMessage, WasiMessagingSubscriber, WasiMessagingSubscriberPre,
};
use crate::engine::HostState;
use async_trait::async_trait;
use wasmtime::Store;

subscriber_pre!(WasiMessagingSubscriberPre);

#[async_trait]
impl SubscriberInstance for WasiMessagingSubscriber {
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer> {
        let message = store.data_mut().table.push(message_of(event))?;
        let result = self
            .wasi_messaging_incoming_handler()
            .call_handle(store, message)
            .await?;
        Ok(answer(result))
    }
}

/// The `message` a guest receives for `event`.
fn message_of(event: &Event) -> HostMessage {
    let mut metadata = vec![
        ("id".to_owned(), event.id.clone()),
        ("source".to_owned(), event.source.clone()),
        ("type".to_owned(), event.type_.clone()),
        ("specversion".to_owned(), event.specversion.clone()),
        ("pubsubname".to_owned(), event.pubsubname.clone()),
    ];
    let optional = [
        ("subject", &event.subject),
        ("time", &event.time),
        ("traceparent", &event.traceparent),
        ("tracestate", &event.tracestate),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            metadata.push((name.to_owned(), value.clone()));
        }
    }
    metadata.extend(event.metadata.iter().cloned());
    HostMessage {
        topic: Some(event.topic.clone()),
        content_type: Some(event.datacontenttype.clone()),
        data: event.data.clone(),
        metadata,
    }
}
