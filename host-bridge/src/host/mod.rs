//! The host side of the WIT contract (`wit/pubsub.wit`).
//!
//! [`bindings`] is generated from the WIT; [`publisher`] and [`state`]
//! implement its imports on [`HostState`](crate::engine::HostState) by
//! handing each call to the configured broker backend. The host functions
//! are `async` on this side (they may wait on the network) and synchronous on
//! the guest's: the calling guest waits on its fiber, which both plain
//! WASI 0.2 guests and WASI 0.3 async guests can do.

pub mod publisher;
pub mod state;

/// Types and glue generated from `wit/pubsub.wit`.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "subscriber-component",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq],
    });

    pub use hostbridge::pubsub::types::{
        BulkEntry, CloudeventOverrides, Event, FailedEntry, Message, MessageMetadata, PublishError,
        StateError, Status,
    };
}

use crate::engine::HostState;
use wasmtime::component::{HasSelf, Linker};

/// Adds the `publisher` and `state` imports to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use bindings::hostbridge::pubsub;
    pubsub::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    pubsub::publisher::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    pubsub::state::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

impl bindings::hostbridge::pubsub::types::Host for HostState {}
