//! OpenTelemetry traces, read back from a real trace backend (Jaeger v2,
//! built from Go modules by `make setup-jaeger`): one `POST /orders` is one
//! trace, from the HTTP request through the publish and the delivery to the
//! processor's state save, with each span's parent the span before it. On
//! the embedded broker host-bridge's spans are all of it; under Dapr,
//! daprd's own spans (exported to the same Jaeger through a `Configuration`
//! with tracing) sit between the publish and the delivery, and below the
//! state save.

mod common;

use common::dapr::{Backing, DaprApp, wait_until};
use common::jaeger::{Jaeger, Span, Trace};
use common::{Host, free_port, orders_manifest};
use serde_json::Value;
use std::time::Duration;

/// What makes host-bridge export to `jaeger`, quickly.
fn otel_env(jaeger: &Jaeger) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

/// Posts order `id` and waits until the processor has saved it.
fn post_order(host: &mut Host, id: &str) {
    let response = host.post(
        "/orders",
        "application/json",
        format!(
            r#"{{"orderId":"{id}","customer":"ada","items":[{{"sku":"pen","qty":2,"price":1.5}}]}}"#
        ),
    );
    assert_eq!(response.status(), 202);
    wait_until(Duration::from_secs(30), "the order to be processed", || {
        host.get(&format!("/orders/{id}")).status() == 200
    });
}

/// The trace of the `POST /orders` for order `id`, once Jaeger has all of
/// it: the request's span and the processor's state save.
fn order_trace(jaeger: &Jaeger, id: &str, complete: impl Fn(&Trace) -> bool) -> Trace {
    let mut found = None;
    wait_until(
        Duration::from_secs(30),
        "the order's trace in Jaeger",
        || {
            found = jaeger.traces("host-bridge").into_iter().find(|t| {
                t.spans
                    .iter()
                    .any(|s| s.name == "process orders" && tag(s, "messaging.message.id").is_some())
                    && t.spans.iter().any(|s| s.name == "POST /orders/...")
                    && complete(t)
            });
            found.is_some()
        },
    );
    let trace = found.unwrap();
    assert!(
        trace
            .spans
            .iter()
            .filter(|s| s.name == "POST /orders/...")
            .count()
            == 1,
        "order {id}: one request, one trace:\n{}",
        trace.tree()
    );
    trace
}

fn tag<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.tags.get(key)
}

fn tag_str<'a>(span: &'a Span, key: &str) -> &'a str {
    tag(span, key).and_then(Value::as_str).unwrap_or_else(|| {
        panic!(
            "span {:?} has no string tag {key}; it has {:?}",
            span.name, span.tags
        )
    })
}

/// host-bridge's spans of one order, checked the same way under both
/// brokers: the request is the root, the publish its child, the delivery's
/// `instantiate` and `handle` below `process orders` with the semantic
/// conventions' attributes, and the state save below `handle`. Returns the
/// publish, delivery and state-save spans, whose links to the broker's
/// spans the caller checks.
fn host_spans<'a>(trace: &'a Trace, system: &str) -> (&'a Span, &'a Span, &'a Span) {
    let request = trace.one("host-bridge", "POST /orders/...");
    assert_eq!(request.kind, "server");
    assert_eq!(tag_str(request, "http.request.method"), "POST");
    assert_eq!(
        tag(request, "http.response.status_code"),
        Some(&Value::from(202))
    );
    assert_eq!(tag_str(request, "host_bridge.component"), "order-api");
    assert!(tag_str(request, "host_bridge.component.digest").starts_with("sha256:"));

    let send = trace.one("host-bridge", "send orders");
    assert_eq!(send.kind, "producer");
    assert_eq!(trace.parent_of(send).id, request.id, "{}", trace.tree());
    assert_eq!(tag_str(send, "messaging.system"), system);
    assert_eq!(tag_str(send, "messaging.destination.name"), "orders");
    assert_eq!(tag_str(send, "messaging.operation.type"), "send");

    let process = trace.one("host-bridge", "process orders");
    assert_eq!(process.kind, "consumer");
    assert_eq!(tag_str(process, "messaging.system"), system);
    assert_eq!(tag_str(process, "messaging.destination.name"), "orders");
    assert_eq!(tag_str(process, "messaging.operation.type"), "process");
    assert!(!tag_str(process, "messaging.message.id").is_empty());
    assert_eq!(tag_str(process, "host_bridge.component"), "order-processor");
    assert!(tag_str(process, "host_bridge.component.digest").starts_with("sha256:"));
    assert_eq!(tag_str(process, "host_bridge.answer"), "SUCCESS");

    let handle = trace.one("host-bridge", "handle");
    assert_eq!(trace.parent_of(handle).id, process.id, "{}", trace.tree());
    let instantiate = trace.one("host-bridge", "instantiate");
    assert_eq!(
        trace.parent_of(instantiate).id,
        process.id,
        "{}",
        trace.tree()
    );

    let save = trace
        .spans
        .iter()
        .find(|s| s.service == "host-bridge" && s.name.starts_with("state save "))
        .unwrap_or_else(|| panic!("no state save in the trace:\n{}", trace.tree()));
    assert_eq!(save.kind, "client");
    assert_eq!(trace.parent_of(save).id, handle.id, "{}", trace.tree());
    (send, process, save)
}

#[test]
fn one_order_is_one_trace_on_the_embedded_broker() {
    let jaeger = Jaeger::start();
    let env = otel_env(&jaeger);
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut host = Host::start_with(
        tempfile::tempdir().unwrap(),
        &orders_manifest(),
        free_port(),
        &env,
        None,
    );
    post_order(&mut host, "trace-e-1");
    let trace = order_trace(&jaeger, "trace-e-1", |t| {
        t.spans.iter().any(|s| s.name.starts_with("state save "))
    });
    let (send, process, _) = host_spans(&trace, "host-bridge");
    // No broker of its own between them: the delivery continues the publish.
    assert_eq!(trace.parent_of(process).id, send.id, "{}", trace.tree());
    assert!(
        trace.spans.iter().all(|s| s.service == "host-bridge"),
        "{}",
        trace.tree()
    );
}

#[test]
fn one_order_is_one_trace_through_daprd() {
    let jaeger = Jaeger::start();
    let backing = Backing::start();
    let config = backing.dir.path().join("tracing.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tracing\nspec:\n  tracing:\n    samplingRate: \"1\"\n    otel:\n      endpointAddress: \"{}\"\n      isSecure: false\n      protocol: http\n",
            jaeger.otlp_address
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut app = DaprApp::start_with_daprd_args(
        "orders",
        &orders_manifest(),
        &backing.resources,
        &["orders", "orders-deadletter"],
        &otel_env(&jaeger),
        &["--config", &config],
    );
    post_order(&mut app.host, "trace-d-1");
    let trace = order_trace(&jaeger, "trace-d-1", |t| {
        // daprd's span of the state save, below ours.
        t.spans.iter().any(|save| {
            save.name.starts_with("state save ")
                && t.spans
                    .iter()
                    .any(|s| s.service == "orders" && s.parent.as_deref() == Some(&save.id))
        })
    });
    let (send, process, save) = host_spans(&trace, "dapr");

    // daprd's publish continues ours, and its delivery continues its
    // publish: walking up from the delivery's span goes through daprd's
    // spans only, and reaches the publish.
    let mut daprd_spans = Vec::new();
    let mut at = trace.parent_of(process);
    while at.id != send.id {
        assert_eq!(
            at.service,
            "orders",
            "between the publish and the delivery, only daprd's spans:\n{}",
            trace.tree()
        );
        daprd_spans.push(at.name.clone());
        at = trace.parent_of(at);
    }
    assert!(
        daprd_spans.len() >= 2,
        "daprd's publish and its delivery sit between host-bridge's publish and delivery:\n{}",
        trace.tree()
    );
    let below_save: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|s| s.parent.as_deref() == Some(&save.id))
        .collect();
    assert!(
        below_save.iter().any(|s| s.service == "orders"),
        "daprd's state span continues host-bridge's state save:\n{}",
        trace.tree()
    );
    eprintln!("the order's trace:\n{}", trace.tree());
}

/// `--log-format json`: every line host-bridge writes is a JSON object with
/// daprd's keys, and a line logged during a delivery carries the trace and
/// span ids Jaeger has for that delivery.
#[test]
fn json_logs_carry_the_trace_and_span_ids() {
    let jaeger = Jaeger::start();
    let env = otel_env(&jaeger);
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut host = Host::start_with_args(
        tempfile::tempdir().unwrap(),
        &orders_manifest(),
        free_port(),
        &env,
        None,
        &["--log-format", "json"],
    );
    post_order(&mut host, "trace-j-1");
    let trace = order_trace(&jaeger, "trace-j-1", |t| {
        t.spans.iter().any(|s| s.name.starts_with("state save "))
    });
    let process = trace.one("host-bridge", "process orders");
    let log = host.drain_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
        })
        .collect();
    for line in &lines {
        for key in ["time", "level", "type", "msg", "scope", "ver"] {
            assert!(line.get(key).is_some(), "no {key:?} in {line}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["msg"].as_str().is_some_and(|m| m.contains("is ready on"))),
        "the start-up notes are JSON lines too:\n{log}"
    );
    let delivered = lines
        .iter()
        .find(|l| {
            l["msg"] == "delivered"
                && l["id"].as_str() == tag(process, "messaging.message.id").and_then(Value::as_str)
        })
        .unwrap_or_else(|| panic!("no `delivered` line for the order:\n{log}"));
    assert_eq!(
        delivered["trace_id"].as_str(),
        Some(trace.id.as_str()),
        "{delivered}"
    );
    assert_eq!(
        delivered["span_id"].as_str(),
        Some(process.id.as_str()),
        "{delivered}"
    );
}
