//! Spin's Redis trigger as spin-sdk 7 exports it:
//! `spin:redis/inbound-redis@3.0.0`, an `async func` that gets the
//! message's bytes and answers `result<_, error>`.

wasmtime::component::bindgen!({
    path: "../wit/compat",
    world: "spin-redis-subscriber",
});

pub use exports::spin::redis::inbound_redis::Error;

/// The export a subscriber of this world has.
pub const SUBSCRIBER_EXPORT: &str = "spin:redis/inbound-redis@3.";
