//! Spin's first Redis trigger, spin-sdk 2 to 5: `handle-message` of the
//! message's bytes, answering `Ok` or a bare `Err`. The guest sees the
//! data only. Components of this world are usually `wasm32-wasip1` core
//! modules, made components when they load (see [`crate::engine`]).

use super::{Answer, SubscriberInstance, answer};
use crate::contract::Event;
use crate::contract::spin_legacy_redis::{SpinLegacyRedisSubscriber, SpinLegacyRedisSubscriberPre};
use crate::engine::HostState;
use async_trait::async_trait;
use wasmtime::Store;

subscriber_pre!(SpinLegacyRedisSubscriberPre);

#[async_trait]
impl SubscriberInstance for SpinLegacyRedisSubscriber {
    async fn handle(
        &mut self,
        store: &mut Store<HostState>,
        event: &Event,
    ) -> wasmtime::Result<Answer> {
        let result = self
            .fermyon_spin_inbound_redis()
            .call_handle_message(store, &event.data)
            .await?;
        Ok(answer(result))
    }
}
