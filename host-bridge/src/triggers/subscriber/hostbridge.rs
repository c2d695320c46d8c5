//! This project's own world: `handle(event) -> status`, the whole
//! CloudEvent in, SUCCESS, RETRY or DROP out.

use super::{Answer, SubscriberInstance, SubscriberPre};
use crate::contract::Event;
use crate::contract::hostbridge::{SubscriberComponent, SubscriberComponentPre};
use crate::engine::HostState;
use async_trait::async_trait;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::InstancePre;

pub fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Arc<dyn SubscriberPre>> {
    Ok(Arc::new(SubscriberComponentPre::new(pre)?))
}

#[async_trait]
impl SubscriberPre for SubscriberComponentPre<HostState> {
    async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Box<dyn SubscriberInstance>> {
        Ok(Box::new(self.instantiate_async(store).await?))
    }
}

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
