//! host-bridge runs Dapr publish/subscribe applications as sandboxed
//! WebAssembly components.
//!
//! [`contract`] is the bottom floor: the generated bindings of every WIT
//! world host-bridge speaks, and the types all layers share. It imports
//! nothing from the crate. Above it, the data flows through the modules in
//! this order:
//!
//! 1. [`manifest`] reads and validates `spin.toml`.
//! 2. [`engine`] compiles each component (caching the machine code),
//!    links it into an `InstancePre`, and makes a fresh sandboxed store
//!    for every call.
//! 3. [`triggers`] turn HTTP requests and pub/sub deliveries into calls on
//!    fresh instances.
//! 4. [`broker`] backends carry messages: [`broker::embedded`] in memory.
//! 5. [`host`] implements the WIT imports that guests call (`publisher`,
//!    `state`, and Spin's, WASI messaging's and wasmCloud's), on top of the
//!    broker backend.
//!
//! [`server`] is the HTTP listeners (the app's port, the embedded broker's
//! sidecar API, the admin API) and the limits each keeps, and [`app`] wires
//! the pieces together for `host-bridge up`. [`telemetry`] is the logs and
//! the OpenTelemetry spans every floor records its work in. SECURITY.md says who is
//! trusted at each of those edges, and which test shows it.

pub mod admin;
pub mod app;
pub mod broker;
pub mod build;
pub mod check;
pub mod contract;
pub mod deploy;
pub mod engine;
pub mod host;
pub mod manifest;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod triggers;
