//! Spin's key-value and variables APIs, in both generations:
//! `spin:key-value@3.0.0` and `spin:variables@3.0.0` (async, spin-sdk 6
//! and later), and their synchronous twins in `fermyon:spin@2.0.0`
//! (spin-sdk 2 to 5). Both generations' `store` resource is a
//! [`KeyValueStore`] in the host.

wasmtime::component::bindgen!({
    path: "../wit/compat",
    world: "spin-apis",
    imports: { default: async | trappable },
    with: {
        "spin:key-value/key-value.store": KeyValueStore,
        "fermyon:spin/key-value.store": KeyValueStore,
    },
});

/// An open key-value store: the label the guest opened, and the state
/// store that label is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueStore {
    pub label: String,
    pub state_store: String,
}
