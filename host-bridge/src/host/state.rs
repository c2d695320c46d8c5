//! `hostbridge:pubsub/state`: a guest's key/value calls go to the state store.

use crate::contract::StateError;
use crate::contract::hostbridge::hostbridge::pubsub::state::Host;
use crate::engine::HostState;

impl Host for HostState {
    async fn get(
        &mut self,
        store: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StateError>> {
        Ok(self.state_store.get(&store, &key).await)
    }

    async fn save(
        &mut self,
        store: String,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StateError>> {
        Ok(self.state_store.save(&store, &key, value).await)
    }

    async fn delete(
        &mut self,
        store: String,
        key: String,
    ) -> wasmtime::Result<Result<(), StateError>> {
        Ok(self.state_store.delete(&store, &key).await)
    }
}
