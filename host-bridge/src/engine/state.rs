//! `HostState`: the data of one guest instance's `Store`.
//!
//! It holds the instance's WASI context (built from its [`Sandbox`]), its
//! resource table, its memory limits, the outbound-HTTP policy, and the
//! capabilities its WIT imports reach. A store lives for one delivery or one
//! request and is dropped with the instance, so nothing outlives a call.

use super::sandbox::Sandbox;
use crate::broker::{Broker, StateStore};
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The W3C trace context of the delivery an instance is handling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

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
    /// Set while handling a delivery; attached to the guest's publishes.
    pub trace: Option<TraceContext>,
    /// The call's place under its component's `max_instances`, given back
    /// when the store is dropped or, for a reused instance, when the call
    /// ends.
    pub(crate) admission: Option<tokio::sync::OwnedSemaphorePermit>,
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

/// Outbound `wasi:http` requests, allowed only to the component's
/// `allowed_outbound_hosts`. A denied request fails in the guest with
/// `HTTP-request-denied`; it never leaves the host.
pub(crate) struct OutboundHttp {
    pub(crate) sandbox: Arc<Sandbox>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.sandbox.allows_outbound(&scheme, &host, port) {
            tracing::warn!(
                component = %self.sandbox.component,
                "denied outbound request to {scheme}://{host}:{port}: not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
