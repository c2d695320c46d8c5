//! The host side of the WIT imports: what a guest's calls do.
//!
//! Each file implements one world's imports on
//! [`HostState`](crate::engine::HostState), handing each call to the
//! configured broker backend or state store. The host functions are `async`
//! on this side (they may wait on the network) and synchronous on the
//! guest's, unless the WIT function is itself `async`: the calling guest
//! waits on its fiber, which both plain WASI 0.2 guests and WASI 0.3 async
//! guests can do.

pub mod publisher;
pub mod spin_key_value;
pub mod spin_variables;
pub mod state;
pub mod wasi_messaging;
pub mod wasmcloud;

use crate::engine::HostState;
use wasmtime::component::{HasSelf, Linker};

/// Adds every import host-bridge provides beyond WASI to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use crate::contract::hostbridge::hostbridge::pubsub;
    pubsub::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    pubsub::publisher::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    pubsub::state::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;

    use crate::contract::spin_apis::{fermyon, spin};
    spin::key_value::key_value::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    spin::variables::variables::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    fermyon::spin2_0_0::key_value::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    fermyon::spin2_0_0::variables::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;

    use crate::contract::wasi_messaging::wasi::messaging;
    messaging::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    messaging::producer::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;

    use crate::contract::wasmcloud::wasmcloud::messaging as wasmcloud;
    wasmcloud::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wasmcloud::consumer::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

impl crate::contract::hostbridge::hostbridge::pubsub::types::Host for HostState {}
