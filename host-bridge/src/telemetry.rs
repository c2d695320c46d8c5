//! Traces and logs: how host-bridge tells the outside what it does.
//!
//! **Spans.** host-bridge records its own work as `tracing` spans, made in
//! one place ([`spans`](self#functions)) so their names and attributes follow
//! OpenTelemetry's semantic conventions: a delivery (`process {topic}`, with
//! its `instantiate` and `handle` below it and the answer as an attribute),
//! an HTTP request to a component, each publish and state call a guest
//! makes, each pull and each deploy. Messaging spans carry
//! `messaging.system`, `messaging.destination.name`, `messaging.message.id`
//! and `messaging.operation.type`; every guest span carries the component's
//! name and digest.
//!
//! **Export.** Spans go out over OTLP (http/protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, and the exporter reads the other standard variables (headers,
//! timeout, compression; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`). `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turn it off. A setting host-bridge cannot
//! honour (gRPC, http/json, TLS to the collector) is refused at start-up,
//! naming the variable, rather than silently exporting nothing.
//!
//! **Off costs nothing.** With no endpoint and text logs, no layer of the
//! subscriber wants a span, so `tracing` never builds one: a span macro is a
//! check of its call site's cached interest, and [`context_of`] answers
//! `None` at once. With JSON logs, spans are built (for their ids) but not
//! exported.
//!
//! **Context.** A delivery's span continues the CloudEvent's `traceparent`,
//! an HTTP request's span the request's header. What a guest does while
//! handling either (publish, state calls) is a child of that span, and a
//! publish carries the publish span's context on to the broker: the guest
//! never sees or handles any of it. Without spans, the incoming context is
//! passed on unchanged, as before.
//!
//! **Logs.** Text by default; `--log-format json` writes one JSON object per
//! line with the keys daprd's own JSON logs use (`time`, `level`, `type`,
//! `msg`, `scope`, `ver`), the event's fields, and `trace_id` and `span_id`
//! of the span it happened in, so a log stack that already parses daprd's
//! logs can join them to traces.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::Write as _;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// What is logged when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,wasmtime=warn,cranelift=warn";

/// The W3C trace context a call continues, and that a guest's publish
/// carries on: the `traceparent` and `tracestate` headers' values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

impl TraceContext {
    /// The `traceparent` and `tracestate` headers of a request.
    pub fn from_headers(headers: &http::HeaderMap) -> TraceContext {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        TraceContext {
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the trace and span ids.
    Json,
}

/// The log format in use, for [`say`]; text until [`Telemetry::init`].
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Where a [`say`] line goes in text mode.
#[derive(Debug, Clone, Copy)]
pub enum Said {
    /// stderr, after `host-bridge: `.
    Note,
    /// stderr, as it is (progress lines that carry their own prefix).
    Plain,
    /// stdout, as it is (the summary `up` prints once it is serving).
    Out,
}

/// A line for the person running host-bridge (progress, the start-up
/// summary): as it always was in text mode, and an `info` event, which the
/// log filter and the JSON format apply to, with `--log-format json`, so
/// that every line a log stack reads is JSON. Use [`say!`](crate::say).
pub fn say(how: Said, line: std::fmt::Arguments<'_>) {
    match (FORMAT.get().copied().unwrap_or_default(), how) {
        (LogFormat::Json, _) => tracing::info!(target: "host_bridge", "{line}"),
        (LogFormat::Text, Said::Note) => eprintln!("host-bridge: {line}"),
        (LogFormat::Text, Said::Plain) => eprintln!("{line}"),
        (LogFormat::Text, Said::Out) => println!("{line}"),
    }
}

/// `say!("...")` writes a note to the person running host-bridge (see
/// [`telemetry::say`](crate::telemetry::say)); `say!(plain: ...)` and
/// `say!(out: ...)` choose where it goes in text mode.
#[macro_export]
macro_rules! say {
    (plain: $($arg:tt)*) => { $crate::telemetry::say($crate::telemetry::Said::Plain, format_args!($($arg)*)) };
    (out: $($arg:tt)*) => { $crate::telemetry::say($crate::telemetry::Said::Out, format_args!($($arg)*)) };
    ($($arg:tt)*) => { $crate::telemetry::say($crate::telemetry::Said::Note, format_args!($($arg)*)) };
}

/// Why the `OTEL_*` settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTEL_TRACES_EXPORTER={0}: host-bridge exports traces over OTLP only; set it to `otlp`, or `none` for no export"
    )]
    Exporter(String),
    #[error(
        "{var}={value}: host-bridge exports OTLP as http/protobuf only; unset it or set it to `http/protobuf`, \
         and point the endpoint at the collector's OTLP/HTTP port (4318 by default)"
    )]
    Protocol { var: &'static str, value: String },
    #[error(
        "{var}={value}: host-bridge exports OTLP over plain HTTP; run an OpenTelemetry Collector beside it \
         (on loopback, or in the same pod) and let that forward over TLS"
    )]
    Tls { var: &'static str, value: String },
    #[error("{var}={value}: cannot make an OTLP exporter for it: {reason}")]
    Build {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// The installed logging and tracing; [`Telemetry::shutdown`] sends the
/// spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: logs in `format` to stderr, filtered
    /// by `RUST_LOG`, and spans exported over OTLP if the environment asks
    /// for it (see the module's docs).
    pub fn init(format: LogFormat) -> Result<Telemetry, TelemetryError> {
        Self::init_from(format, |name| std::env::var(name).ok())
    }

    fn init_from(
        format: LogFormat,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Telemetry, TelemetryError> {
        let exporter = exporter_from(&env)?;
        let _ = FORMAT.set(format);
        let provider = match (exporter, format) {
            (None, LogFormat::Text) => None,
            (exporter, _) => Some(provider(exporter, &env)),
        };
        let logs = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
        subscriber(format, provider.as_ref(), logs).init();
        Ok(Telemetry { provider })
    }

    /// Sends what is still buffered and stops the exporter. Called once,
    /// as the process ends.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            say(
                Said::Note,
                format_args!("could not send the last spans: {e}"),
            );
        }
    }
}

/// The subscriber: the logs in `format`, filtered by `logs`, and the spans
/// when there is a `provider`. With neither JSON logs nor a provider, no
/// layer wants a span, so none is built. (No span layer at all, rather
/// than an absent `Option` one, which counts as wanting every span.)
fn subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
    logs: EnvFilter,
) -> tracing::Dispatch {
    let registry = tracing_subscriber::registry();
    match (format, provider) {
        (LogFormat::Text, None) => tracing::Dispatch::new(registry.with(text_logs(logs))),
        (LogFormat::Text, Some(provider)) => {
            tracing::Dispatch::new(registry.with(span_layer(provider)).with(text_logs(logs)))
        }
        (LogFormat::Json, None) => {
            tracing::Dispatch::new(registry.with(JsonLines::default().with_filter(logs)))
        }
        (LogFormat::Json, Some(provider)) => tracing::Dispatch::new(
            registry
                .with(span_layer(provider))
                .with(JsonLines::default().with_filter(logs)),
        ),
    }
}

/// The layer that turns host-bridge's spans (and the events in them) into
/// OpenTelemetry spans of `provider`; nothing of wasmtime's or the other
/// crates'.
pub fn span_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("host-bridge"))
        // Contexts go on explicitly (`pass_on`); making each span's current
        // on every enter would cost every poll of a traced call.
        .with_context_activation(false)
        .with_filter(Targets::new().with_target("host_bridge", tracing::Level::INFO))
}

/// Text log lines, as they always read: events only, spans are for traces.
fn text_logs<S>(filter: EnvFilter) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter.and(filter_fn(|meta| meta.is_event())))
}

/// The variable naming the traces endpoint, and its value, if export is on.
fn endpoint_from(env: &impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|var| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
}

/// The OTLP exporter the environment asks for, `None` when it asks for none.
fn exporter_from(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<opentelemetry_otlp::SpanExporter>, TelemetryError> {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("" | "otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => return Err(TelemetryError::Exporter(other.to_owned())),
    }
    let Some((var, endpoint)) = endpoint_from(env) else {
        return Ok(None);
    };
    for protocol_var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(value) = env(protocol_var).filter(|v| !v.trim().is_empty()) {
            if value.trim() != "http/protobuf" {
                return Err(TelemetryError::Protocol {
                    var: protocol_var,
                    value,
                });
            }
            break;
        }
    }
    if endpoint.trim().to_ascii_lowercase().starts_with("https:") {
        return Err(TelemetryError::Tls {
            var,
            value: endpoint,
        });
    }
    if !endpoint.trim().to_ascii_lowercase().starts_with("http://") {
        return Err(TelemetryError::Build {
            var,
            value: endpoint,
            reason: "it is not an http:// URL".into(),
        });
    }
    // The exporter's HTTP client is reqwest's, built with rustls but
    // without a crypto provider of its own: the process's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The builder reads the endpoint (adding `/v1/traces` to the generic
    // one), the headers, the timeout and the compression itself.
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map(Some)
        .map_err(|e| TelemetryError::Build {
            var,
            value: endpoint,
            reason: e.to_string(),
        })
}

/// The tracer provider: batched export when there is an exporter, ids
/// only (for JSON logs) when there is none.
fn provider(
    exporter: Option<opentelemetry_otlp::SpanExporter>,
    env: &impl Fn(&str) -> Option<String>,
) -> SdkTracerProvider {
    let named = env("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if !named {
        resource = resource.with_service_name("host-bridge");
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    match exporter {
        Some(exporter) => builder.with_batch_exporter(exporter),
        None => builder,
    }
    .build()
}

/// Parents `span` on `parent`, the trace context the work continues (a
/// CloudEvent's or a request's). Does nothing when spans are off or there
/// is no parent; a malformed `traceparent` starts a new trace.
pub fn continue_trace(span: &Span, parent: Option<&TraceContext>) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = parent.filter(|p| p.traceparent.is_some()) {
        let cx = TraceContextPropagator::new().extract(parent);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// The W3C trace context of `span`, to pass on: `None` when spans are off.
pub fn context_of(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = TraceContext::default();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.traceparent.is_some().then_some(carrier)
}

/// What a call passes on: its own span's context when spans are on, else
/// the context it was given, unchanged.
pub fn pass_on(span: &Span, given: Option<TraceContext>) -> Option<TraceContext> {
    context_of(span).or(given)
}

/// The `messaging.system` of a broker backend (`Broker::name`): `dapr`
/// under Dapr, `host-bridge` for the embedded broker.
pub fn messaging_system(broker: &str) -> &'static str {
    match broker {
        "dapr" => "dapr",
        _ => "host-bridge",
    }
}

/// The span of one delivery to a subscription, continuing the event's
/// trace: `process {topic}`. Its `host_bridge.answer` is set once the guest
/// answered (SUCCESS, RETRY or DROP) and the answer goes back to the broker.
pub fn delivery_span(
    system: &str,
    pubsubname: &str,
    topic: &str,
    id: &str,
    component: &str,
    digest: &str,
    parent: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.message.id = id,
        messaging.consumer.group.name = component,
        dapr.pubsubname = pubsubname,
        host_bridge.component = component,
        host_bridge.component.digest = digest,
        host_bridge.answer = Empty,
    );
    continue_trace(&span, parent);
    span
}

/// Making a fresh instance for a call (below its delivery or request).
pub fn instantiate_span(component: &str) -> Span {
    tracing::info_span!("instantiate", host_bridge.component = component)
}

/// The guest's `handle` export running (below its delivery).
pub fn handle_span(component: &str, digest: &str) -> Span {
    tracing::info_span!(
        "handle",
        host_bridge.component = component,
        host_bridge.component.digest = digest,
    )
}

/// One HTTP request to a component's route, continuing the request's
/// `traceparent`: `{method} {route}`.
pub fn http_span(
    method: &str,
    route: &str,
    path: &str,
    component: &str,
    digest: &str,
    parent: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        url.path = path,
        http.response.status_code = Empty,
        host_bridge.component = component,
        host_bridge.component.digest = digest,
    );
    continue_trace(&span, parent);
    span
}

/// A guest's publish: `send {topic}`, below the call that made it.
pub fn publish_span(
    system: &str,
    pubsubname: &str,
    topic: &str,
    component: &str,
    parent: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = topic,
        dapr.pubsubname = pubsubname,
        host_bridge.component = component,
    );
    continue_trace(&span, parent);
    span
}

/// A guest's state call (`get`, `save`, `delete`) on state store `store`.
pub fn state_span(
    operation: &'static str,
    store: &str,
    component: &str,
    parent: Option<&TraceContext>,
) -> Span {
    let span = tracing::info_span!(
        "state",
        otel.name = format!("state {operation} {store}"),
        otel.kind = "client",
        otel.status_code = Empty,
        db.operation.name = operation,
        db.collection.name = store,
        host_bridge.component = component,
    );
    continue_trace(&span, parent);
    span
}

/// Runs a guest's state call in its span ([`state_span`]), marked failed
/// if the call fails. The state store reads the span as the current one, to
/// pass its context on (daprd's state span is its child).
pub async fn state_call<T, E: std::fmt::Display>(
    operation: &'static str,
    store: &str,
    component: &str,
    parent: Option<&TraceContext>,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument as _;
    let span = state_span(operation, store, component, parent);
    let result = call.instrument(span.clone()).await;
    if let Err(e) = &result {
        failed(&span, e);
    }
    result
}

/// Marks `span` as failed, with `error` as its status message.
pub fn failed(span: &Span, error: &dyn std::fmt::Display) {
    if !span.is_disabled() {
        span.record("otel.status_code", "ERROR");
        span.set_status(opentelemetry::trace::Status::error(error.to_string()));
    }
}

/// Log lines as JSON objects, one per line (see the module's docs).
#[derive(Default)]
struct JsonLines {
    /// The subscriber it is part of, to ask the span layer for ids (the
    /// spans' OpenTelemetry contexts are not made current on entry: that
    /// would cost every poll of a traced call).
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> Layer<S> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "time".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert(
            "level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        line.insert("type".into(), "log".into());
        let mut fields = JsonFields(&mut line);
        event.record(&mut fields);
        line.insert("scope".into(), meta.target().into());
        line.insert("ver".into(), env!("CARGO_PKG_VERSION").into());
        if let Some(span) = ctx.event_span(event) {
            line.insert("span".into(), span.name().into());
            // The ids of the nearest span that has them (host-bridge's).
            let dispatch = self
                .dispatch
                .get()
                .and_then(tracing::dispatcher::WeakDispatch::upgrade);
            let ids = dispatch.and_then(|dispatch| {
                span.scope().find_map(|s| {
                    let cx = tracing_opentelemetry::get_otel_context(&s.id(), &dispatch)?;
                    let ids = cx.span().span_context().clone();
                    ids.is_valid().then_some(ids)
                })
            });
            if let Some(ids) = ids {
                line.insert("trace_id".into(), ids.trace_id().to_string().into());
                line.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so lines from different threads never mix.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Records an event's fields into a JSON object; `message` becomes `msg`.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        let name = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_turned_off() {
        assert!(exporter_from(&env_of(&[])).unwrap().is_none());
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(
            exporter_from(&env_of(&[endpoint, ("OTEL_SDK_DISABLED", "true")]))
                .unwrap()
                .is_none()
        );
        assert!(
            exporter_from(&env_of(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn settings_it_cannot_honour_are_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let grpc = exporter_from(&env_of(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            grpc.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc:"),
            "{grpc}"
        );
        let zipkin = exporter_from(&env_of(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]))
            .unwrap_err()
            .to_string();
        assert!(
            zipkin.starts_with("OTEL_TRACES_EXPORTER=zipkin:"),
            "{zipkin}"
        );
        let tls = exporter_from(&env_of(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector:4318",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            tls.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://collector:4318:"),
            "{tls}"
        );
        let junk = exporter_from(&env_of(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4318",
        )]))
        .unwrap_err()
        .to_string();
        assert!(junk.contains("not an http:// URL"), "{junk}");
    }

    #[test]
    fn spans_are_not_built_when_nothing_wants_them() {
        // Text logs (at the most verbose) and no export: what `init` installs then.
        let text = subscriber(LogFormat::Text, None, EnvFilter::new("trace"));
        tracing::dispatcher::with_default(&text, || {
            let span = delivery_span("dapr", "pubsub", "orders", "1", "c", "sha256:0", None);
            assert!(span.is_disabled());
            assert!(handle_span("c", "sha256:0").is_disabled());
            assert_eq!(context_of(&span), None);
            let given = TraceContext {
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                tracestate: None,
            };
            assert_eq!(pass_on(&span, Some(given.clone())), Some(given));
        });
    }

    #[test]
    fn a_span_continues_the_trace_it_is_given_and_passes_its_own_on() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let given = TraceContext {
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                tracestate: Some("vendor=x".into()),
            };
            let span = delivery_span("dapr", "pubsub", "orders", "1", "c", "d", Some(&given));
            let passed = context_of(&span).expect("a context");
            let traceparent = passed.traceparent.unwrap();
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c", "same trace");
            assert_ne!(parts[2], "b7ad6b7169203331", "its own span id");
            assert_eq!(passed.tracestate.as_deref(), Some("vendor=x"));
            // A malformed parent starts a new trace instead of failing.
            let bad = TraceContext {
                traceparent: Some("00-zz-yy-01".into()),
                tracestate: None,
            };
            let fresh = delivery_span("dapr", "pubsub", "orders", "2", "c", "d", Some(&bad));
            let fresh = context_of(&fresh).expect("a context").traceparent.unwrap();
            assert!(!fresh.contains("0af7651916cd43dd8448eb211c80319c"));
        });
    }
}
