//! This project's own world: `handle(event) -> status`, the whole
//! CloudEvent in, SUCCESS, RETRY or DROP out.

use super::{Answer, SubscriberInstance};
use crate::contract::Event;
use crate::contract::hostbridge::{SubscriberComponent, SubscriberComponentPre};
use crate::engine::HostState;
use async_trait::async_trait;
use wasmtime::Store;

subscriber_pre!(SubscriberComponentPre);

#[async_trait]
impl SubscriberInstance for SubscriberComponent {
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer> {
        let status = self
            .hostbridge_pubsub_subscriber()
            .call_handle(store, event)
            .await?;
        Ok(Answer::Status(status))
    }
}
