//! `hostbridge:pubsub/publisher`: a guest's publishes go to the broker.
//!
//! The one thing the host adds is trace context: a message published while
//! handling a delivery carries that delivery's `traceparent` and
//! `tracestate`, unless the guest set its own, so a trace follows an event
//! through every component it passes.

use crate::engine::HostState;
use crate::host::bindings::hostbridge::pubsub::publisher::Host;
use crate::host::bindings::{BulkEntry, FailedEntry, Message, PublishError};

impl HostState {
    /// Fills in the current delivery's trace context where the guest left it open.
    fn with_trace_context(&self, mut message: Message) -> Message {
        if let Some(trace) = &self.trace {
            let overrides = &mut message.metadata.cloudevent;
            if overrides.traceparent.is_none() {
                overrides.traceparent = trace.traceparent.clone();
            }
            if overrides.tracestate.is_none() {
                overrides.tracestate = trace.tracestate.clone();
            }
        }
        message
    }
}

impl Host for HostState {
    async fn publish(
        &mut self,
        pubsubname: String,
        topic: String,
        message: Message,
    ) -> wasmtime::Result<Result<(), PublishError>> {
        let message = self.with_trace_context(message);
        let result = self.broker.publish(&pubsubname, &topic, message).await;
        if let Err(e) = &result {
            tracing::warn!(component = %self.component, %pubsubname, %topic, "publish failed: {e:?}");
        }
        Ok(result)
    }

    async fn publish_bulk(
        &mut self,
        pubsubname: String,
        topic: String,
        entries: Vec<BulkEntry>,
    ) -> wasmtime::Result<Result<(), Vec<FailedEntry>>> {
        let entries = entries
            .into_iter()
            .map(|e| BulkEntry {
                message: self.with_trace_context(e.message),
                entry_id: e.entry_id,
            })
            .collect();
        Ok(self.broker.publish_bulk(&pubsubname, &topic, entries).await)
    }
}
