//! `HostState`: the data of one guest instance's `Store`.
//!
//! It holds the instance's WASI context (built from its [`Sandbox`](super::Sandbox)), its
//! resource table, its memory limits, the outbound-HTTP policy, and the
//! capabilities its WIT imports reach. A store lives for one delivery or one
//! request and is dropped with the instance, so nothing outlives a call.

use crate::broker::{Broker, StateStore};
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use crate::telemetry::TraceContext;

pub struct HostState {
    /// The component this instance belongs to, for logs.
    pub component: Arc<str>,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) outbound: OutboundHttp,
    pub broker: Arc<dyn Broker>,
    pub state_store: Arc<dyn StateStore>,
    /// The component's grants, for the host functions that check them.
    pub sandbox: Arc<crate::engine::Sandbox>,
    pub metrics: Arc<crate::broker::Metrics>,
    /// The pub/sub component wasmCloud subjects are topics of.
    pub messaging_pubsubname: String,
    /// The trace context of the call the instance is handling (its
    /// delivery's or request's span), which the guest's publishes and
    /// state calls continue; see `telemetry`.
    pub trace: Option<TraceContext>,
    /// The call's place under its component's `max_instances`, given back
    /// when the store is dropped or, for a reused instance, when the call
    /// ends.
    pub(crate) admission: Option<tokio::sync::OwnedSemaphorePermit>,
    /// When the current call runs out of time ([`super::set_deadline`]).
    pub(crate) deadline: std::time::Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Outbound `wasi:http`: the component's grants, checked on the name and
/// on the resolved address (see [`super::outbound_http`]).
pub(crate) use super::outbound_http::OutboundHttp;
