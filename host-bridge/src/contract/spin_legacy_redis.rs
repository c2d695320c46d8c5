//! Spin's first Redis trigger, as spin-sdk 2 to 5 export it:
//! `fermyon:spin/inbound-redis`, a plain function that gets the message's
//! bytes and answers `result<_, error>`, the error carrying no reason.

wasmtime::component::bindgen!({
    path: "../wit/compat",
    world: "spin-legacy-redis-subscriber",
    exports: { default: async },
});

/// The export a subscriber of this world has (the package has no version).
pub const SUBSCRIBER_EXPORT: &str = "fermyon:spin/inbound-redis";
