//! Spin's Redis trigger, spin-sdk 6 and later: `handle-message` is an
//! `async func` of the message's bytes, so it is called inside
//! `Store::run_concurrent`, through the generated `call_*` that takes an
//! accessor. The guest sees the data only: not the topic, the content
//! type or any CloudEvent attribute.

use super::{Answer, SubscriberInstance, answer};
use crate::contract::Event;
use crate::contract::spin_redis::{SpinRedisSubscriber, SpinRedisSubscriberPre};
use crate::engine::HostState;
use async_trait::async_trait;
use wasmtime::Store;

subscriber_pre!(SpinRedisSubscriberPre);

#[async_trait]
impl SubscriberInstance for SpinRedisSubscriber {
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer> {
        let data = event.data.clone();
        let handler = self.spin_redis_inbound_redis();
        let result = store
            .run_concurrent(async move |accessor| handler.call_handle_message(accessor, data).await)
            .await??;
        Ok(answer(result))
    }
}
