//! Spin's key-value API, both generations: `spin:key-value@3.0.0` (async
//! functions) and `fermyon:spin/key-value@2.0.0`, on the app's state
//! store.
//!
//! - `open(label)` succeeds only for a label in the component's
//!   `key_value_stores`; any other is `access-denied`. The store behind the
//!   label comes from `[application.tool.host-bridge.key_value_stores]`
//!   (`default` is `statestore`).
//! - `get`, `set`, `delete` and `exists` are the state store's get, save
//!   and delete; a failure of the store is `other`, with its reason.
//! - `get-keys` lists the embedded store's keys. Dapr's state API cannot
//!   list keys, so under Dapr it fails with `other`, saying so.

use crate::contract::StateError;
use crate::contract::spin_apis::KeyValueStore;
use crate::contract::spin_apis::fermyon::spin2_0_0::key_value as v2;
use crate::contract::spin_apis::spin::key_value::key_value as v3;
use crate::engine::HostState;
use std::sync::Arc;
use wasmtime::component::{Accessor, FutureReader, HasSelf, Resource, StreamReader};

/// Why a key-value call failed, in either generation's terms.
enum Failure {
    AccessDenied,
    Other(String),
}

impl From<StateError> for Failure {
    fn from(e: StateError) -> Failure {
        Failure::Other(match e {
            StateError::UnknownStore(reason)
            | StateError::InvalidRequest(reason)
            | StateError::Unavailable(reason) => reason,
        })
    }
}

impl From<Failure> for v3::Error {
    fn from(f: Failure) -> v3::Error {
        match f {
            Failure::AccessDenied => v3::Error::AccessDenied,
            Failure::Other(reason) => v3::Error::Other(reason),
        }
    }
}

impl From<Failure> for v2::Error {
    fn from(f: Failure) -> v2::Error {
        match f {
            Failure::AccessDenied => v2::Error::AccessDenied,
            Failure::Other(reason) => v2::Error::Other(reason),
        }
    }
}

/// One call on an open store, with what it needs from the host, so that an
/// async function can let go of the store while it waits.
struct Call {
    state_store: Arc<dyn crate::broker::StateStore>,
    store: String,
    /// For the call's span.
    component: Arc<str>,
    trace: Option<crate::telemetry::TraceContext>,
}

impl Call {
    async fn traced<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        crate::telemetry::state_call(
            operation,
            &self.store,
            &self.component,
            self.trace.as_ref(),
            call,
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        Ok(self
            .traced("get", self.state_store.get(&self.store, key))
            .await?)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), Failure> {
        Ok(self
            .traced("save", self.state_store.save(&self.store, key, value))
            .await?)
    }

    async fn delete(&self, key: &str) -> Result<(), Failure> {
        Ok(self
            .traced("delete", self.state_store.delete(&self.store, key))
            .await?)
    }

    async fn exists(&self, key: &str) -> Result<bool, Failure> {
        Ok(self.get(key).await?.is_some())
    }

    async fn keys(&self) -> Result<Vec<String>, Failure> {
        Ok(self.state_store.keys(&self.store).await?)
    }
}

impl HostState {
    /// Opens `label` if the component was granted it.
    fn open_key_value(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<KeyValueStore>, Failure>> {
        let Some(store) = self.sandbox.key_value_store(&label) else {
            tracing::warn!(component = %self.component, %label, "key-value store refused: not in key_value_stores");
            return Ok(Err(Failure::AccessDenied));
        };
        let opened = KeyValueStore {
            state_store: store.to_owned(),
            label,
        };
        Ok(Ok(self.table.push(opened)?))
    }

    fn key_value_call(&self, store: &Resource<KeyValueStore>) -> wasmtime::Result<Call> {
        Ok(Call {
            state_store: self.state_store.clone(),
            store: self.table.get(store)?.state_store.clone(),
            component: self.component.clone(),
            trace: self.trace.clone(),
        })
    }
}

// ---- spin:key-value@3.0.0 ----

impl v3::Host for HostState {}

impl v3::HostStore for HostState {
    async fn drop(&mut self, store: Resource<KeyValueStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

/// The host's half of one v3 call: what it needs, read from the store.
fn v3_call<T>(
    accessor: &Accessor<T, HasSelf<HostState>>,
    store: &Resource<KeyValueStore>,
) -> wasmtime::Result<Call> {
    accessor.with(|mut access| access.get().key_value_call(store))
}

impl<T> v3::HostStoreWithStore<T> for HasSelf<HostState> {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<KeyValueStore>, v3::Error>> {
        let opened = accessor.with(|mut access| access.get().open_key_value(label))?;
        Ok(opened.map_err(Into::into))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v3::Error>> {
        let call = v3_call(accessor, &store)?;
        Ok(call.get(&key).await.map_err(Into::into))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<KeyValueStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let call = v3_call(accessor, &store)?;
        Ok(call.set(&key, value).await.map_err(Into::into))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let call = v3_call(accessor, &store)?;
        Ok(call.delete(&key).await.map_err(Into::into))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v3::Error>> {
        let call = v3_call(accessor, &store)?;
        Ok(call.exists(&key).await.map_err(Into::into))
    }

    /// The keys are listed before the stream is made, so the stream is
    /// a list already in memory and the future is already settled.
    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<KeyValueStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let call = v3_call(accessor, &store)?;
        let (keys, outcome) = match call.keys().await {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(v3::Error::from(e))),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let future =
                FutureReader::new(
                    &mut access,
                    async move { wasmtime::Result::<_>::Ok(outcome) },
                )?;
            Ok((stream, future))
        })
    }
}

// ---- fermyon:spin/key-value@2.0.0 ----

impl v2::Host for HostState {}

impl v2::HostStore for HostState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<KeyValueStore>, v2::Error>> {
        Ok(self.open_key_value(label)?.map_err(Into::into))
    }

    async fn get(
        &mut self,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v2::Error>> {
        let call = self.key_value_call(&store)?;
        Ok(call.get(&key).await.map_err(Into::into))
    }

    async fn set(
        &mut self,
        store: Resource<KeyValueStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        let call = self.key_value_call(&store)?;
        Ok(call.set(&key, value).await.map_err(Into::into))
    }

    async fn delete(
        &mut self,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        let call = self.key_value_call(&store)?;
        Ok(call.delete(&key).await.map_err(Into::into))
    }

    async fn exists(
        &mut self,
        store: Resource<KeyValueStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v2::Error>> {
        let call = self.key_value_call(&store)?;
        Ok(call.exists(&key).await.map_err(Into::into))
    }

    async fn get_keys(
        &mut self,
        store: Resource<KeyValueStore>,
    ) -> wasmtime::Result<Result<Vec<String>, v2::Error>> {
        let call = self.key_value_call(&store)?;
        Ok(call.keys().await.map_err(Into::into))
    }

    async fn drop(&mut self, store: Resource<KeyValueStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}
