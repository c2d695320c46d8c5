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

/// What host-bridge provides to guests, by interface name and version
/// (a trailing `*`: any interface or version that starts so). It is kept
/// beside [`add_to_linker`] and the WASI linkers of
/// [`crate::engine::Engine::new`], which it describes, and named in the
/// error for a component that imports anything else.
pub const PROVIDED: &[&str] = &[
    "wasi:cli, wasi:clocks, wasi:filesystem, wasi:io, wasi:random, wasi:sockets @0.2.* and @0.3.*",
    "wasi:http/types and wasi:http/outgoing-handler @0.2.*, wasi:http @0.3.*",
    "hostbridge:pubsub/publisher@0.1.0",
    "hostbridge:pubsub/state@0.1.0",
    "spin:key-value/key-value@3.0.0",
    "spin:variables/variables@3.0.0",
    "fermyon:spin/key-value@2.0.0",
    "fermyon:spin/variables@2.0.0",
    "wasi:messaging/producer@0.2.0-draft",
    "wasmcloud:messaging/consumer@0.2.0",
];

/// Whether an import named `name` is one host-bridge provides, going by
/// its name (its shape is the linker's to check). Interfaces imported only
/// for their types (like `spin:redis/redis@3.0.0` by a Redis subscriber)
/// pass too, since they need nothing from the host.
pub fn provides(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:io/",
        "wasi:random/",
        "wasi:sockets/",
        "wasi:http/",
        "hostbridge:pubsub/",
        "spin:key-value/key-value@3.0.0",
        "spin:variables/variables@3.0.0",
        "fermyon:spin/key-value@2.0.0",
        "fermyon:spin/variables@2.0.0",
        "fermyon:spin/redis-types",
        "spin:redis/redis@3.0.0",
        "wasi:messaging/types@0.2.0-draft",
        "wasi:messaging/producer@0.2.0-draft",
        "wasmcloud:messaging/types@0.2.0",
        "wasmcloud:messaging/consumer@0.2.0",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

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
