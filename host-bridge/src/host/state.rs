//! `hostbridge:pubsub/state`: a guest's key/value calls go to the state
//! store, each in its own span below the call the instance is handling.

use crate::contract::StateError;
use crate::contract::hostbridge::hostbridge::pubsub::state::Host;
use crate::engine::HostState;
use crate::telemetry::state_call;

impl Host for HostState {
    async fn get(
        &mut self,
        store: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, StateError>> {
        let call = self.state_store.get(&store, &key);
        Ok(state_call("get", &store, &self.component, self.trace.as_ref(), call).await)
    }

    async fn save(
        &mut self,
        store: String,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StateError>> {
        let call = self.state_store.save(&store, &key, value);
        Ok(state_call("save", &store, &self.component, self.trace.as_ref(), call).await)
    }

    async fn delete(
        &mut self,
        store: String,
        key: String,
    ) -> wasmtime::Result<Result<(), StateError>> {
        let call = self.state_store.delete(&store, &key);
        Ok(state_call("delete", &store, &self.component, self.trace.as_ref(), call).await)
    }
}
