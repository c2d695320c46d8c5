//! `hostbridge:pubsub/publisher`: a guest's publishes go to the broker.
//! The other worlds' publishes (WASI messaging's `send`, wasmCloud's
//! `publish`) go the same way, through `HostState::publish_checked`.
//!
//! Two things happen on the way:
//!
//! - **The grant is checked.** A component publishes only to the topics its
//!   manifest lists in `tool.host-bridge.allowed_publish_topics`; anything
//!   else is the typed `forbidden` error, logged and counted in `/metrics`,
//!   and never reaches the broker.
//! - **Trace context is added.** Each publish is a `send {topic}` span
//!   below the call the instance is handling (a delivery or a request), and
//!   the broker carries that span's context on (without spans, the message
//!   carries the call's own), unless the guest set its own: a trace follows
//!   an event through every component it passes, and the guest does nothing
//!   for it.

use crate::broker::Metrics;
use crate::contract::hostbridge::hostbridge::pubsub::publisher::Host;
use crate::contract::{BulkEntry, FailedEntry, Message, PublishError};
use crate::engine::HostState;
use crate::telemetry;
use tracing::Instrument as _;

impl HostState {
    /// The message as it goes to the broker. With spans on, the broker
    /// takes the trace context from `span`, the publish's (see
    /// `telemetry`): daprd continues it from the request's headers, so its
    /// own publish span comes between ours and the delivery, and the
    /// embedded broker puts it in the event. Without spans, the message
    /// carries the call's context, where the guest left it open.
    fn with_call_context(&self, span: &tracing::Span, mut message: Message) -> Message {
        if telemetry::context_of(span).is_some() {
            return message;
        }
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

    /// The span of one publish, below the call the instance is handling.
    fn publish_span(&self, pubsubname: &str, topic: &str) -> tracing::Span {
        let system = telemetry::messaging_system(self.broker.name());
        telemetry::publish_span(
            system,
            pubsubname,
            topic,
            &self.component,
            self.trace.as_ref(),
        )
    }

    /// The `forbidden` error for a publish the manifest does not grant.
    fn check_publish_grant(&self, pubsubname: &str, topic: &str) -> Result<(), PublishError> {
        if self.sandbox.may_publish(pubsubname, topic) {
            return Ok(());
        }
        Metrics::inc(&self.metrics.publishes_forbidden);
        let component = &self.component;
        tracing::warn!(%component, %pubsubname, %topic, "publish refused: not in allowed_publish_topics");
        Err(PublishError::Forbidden(format!(
            "component `{component}` may not publish to {pubsubname}/{topic}: add \"{pubsubname}/{topic}\" to \
             allowed_publish_topics in [component.{component}.tool.host-bridge]"
        )))
    }
}

impl HostState {
    /// Publishes one message for the guest, as every world's publish does:
    /// the grant is checked, the trace context added, a failure logged.
    pub(crate) async fn publish_checked(
        &mut self,
        pubsubname: &str,
        topic: &str,
        message: Message,
    ) -> Result<(), PublishError> {
        self.check_publish_grant(pubsubname, topic)?;
        let span = self.publish_span(pubsubname, topic);
        let message = self.with_call_context(&span, message);
        let result = self
            .broker
            .publish(pubsubname, topic, message)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            telemetry::failed(&span, &format!("{e:?}"));
            tracing::warn!(component = %self.component, %pubsubname, %topic, "publish failed: {e:?}");
        }
        result
    }
}

impl Host for HostState {
    async fn publish(
        &mut self,
        pubsubname: String,
        topic: String,
        message: Message,
    ) -> wasmtime::Result<Result<(), PublishError>> {
        Ok(self.publish_checked(&pubsubname, &topic, message).await)
    }

    async fn publish_bulk(
        &mut self,
        pubsubname: String,
        topic: String,
        entries: Vec<BulkEntry>,
    ) -> wasmtime::Result<Result<(), Vec<FailedEntry>>> {
        if let Err(error) = self.check_publish_grant(&pubsubname, &topic) {
            let failed = entries
                .into_iter()
                .map(|e| FailedEntry {
                    entry_id: e.entry_id,
                    error: error.clone(),
                })
                .collect();
            return Ok(Err(failed));
        }
        let span = self.publish_span(&pubsubname, &topic);
        let entries = entries
            .into_iter()
            .map(|e| BulkEntry {
                message: self.with_call_context(&span, e.message),
                entry_id: e.entry_id,
            })
            .collect();
        Ok(self
            .broker
            .publish_bulk(&pubsubname, &topic, entries)
            .instrument(span)
            .await)
    }
}
