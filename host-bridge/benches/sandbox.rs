//! Micro-benchmarks of the sandbox: what one delivery and one HTTP request
//! cost inside host-bridge, with no network in the way.
//!
//! - `delivery/order-processor`: one delivery through the pub/sub trigger,
//!   exactly as a backend makes it: a fresh store, instantiation from the
//!   `InstancePre`, the guest's `handle` (which parses, totals and saves the
//!   order through the `state` import, answered in-process by the in-memory
//!   store), and dropping the instance.
//! - `delivery/store+instantiate`: the same without the call, to see how
//!   much of the cost is the sandbox itself and how much the guest's work.
//! - `delivery/store`: only the fresh store with its WASI context.
//! - `http/order-api POST /orders`: one request through the HTTP trigger,
//!   the order published into the in-memory embedded broker.
//! - `tracing/off: a delivery's spans`: the span calls one delivery makes
//!   when nothing records spans (tracing off, the default), to set against
//!   `delivery/order-processor`, which includes them.
//! - `tracing/order-processor, spans recorded`: `delivery/order-processor`
//!   with an OpenTelemetry layer building every span (not exporting them;
//!   the harness's `tracing` section measures export end to end).
//!
//! Run with `make bench` (all of the harness) or
//! `cargo bench -p host-bridge --bench sandbox`.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use host_bridge::broker::embedded::{EmbeddedBroker, MemoryStateStore};
use host_bridge::broker::{Capabilities, DeliveryTarget, Metrics, StateStore};
use host_bridge::contract::{Event, Status};
use host_bridge::engine::{Engine, EngineOptions, LoadedComponent};
use host_bridge::manifest::Manifest;
use host_bridge::triggers::http::{GuestBody, HttpTrigger};
use host_bridge::triggers::pubsub::PubsubTrigger;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Arc;

/// The app under test: the example app of `spin.toml`, as the tests run it.
fn manifest(dir: &std::path::Path) -> Manifest {
    let path = dir.join("spin.toml");
    std::fs::write(&path, common::orders_manifest()).expect("cannot write the bench manifest");
    Manifest::load(&path).expect("the bench manifest is valid")
}

/// The event daprd would deliver for one order.
fn order_event(n: u64) -> Event {
    let data = format!(
        r#"{{"orderId":"o-{n}","customer":"ada","items":[{{"sku":"book","qty":2,"price":12.5}}]}}"#
    );
    Event {
        id: format!("e-{n}"),
        source: "bench".into(),
        type_: "com.dapr.event.sent".into(),
        specversion: "1.0".into(),
        topic: "orders".into(),
        pubsubname: "pubsub".into(),
        datacontenttype: "application/json".into(),
        subject: None,
        time: None,
        traceparent: None,
        tracestate: None,
        metadata: Vec::new(),
        data: data.into_bytes(),
    }
}

struct Fixture {
    engine: Arc<Engine>,
    components: HashMap<String, LoadedComponent>,
    pubsub: PubsubTrigger,
    http: HttpTrigger,
    _dir: tempfile::TempDir,
}

fn fixture(runtime: &tokio::runtime::Runtime) -> Fixture {
    let dir = tempfile::tempdir().expect("cannot make a temporary directory");
    let manifest = manifest(dir.path());
    let metrics = Arc::new(Metrics::default());
    let state_store: Arc<dyn StateStore> = Arc::new(MemoryStateStore::default());
    let broker = Arc::new(EmbeddedBroker::new(
        "bench",
        manifest.application.delivery,
        metrics.clone(),
        None,
    ));
    let capabilities = Capabilities {
        messaging_pubsubname: "pubsub".into(),
        broker,
        state_store,
        metrics: metrics.clone(),
    };
    let _guard = runtime.enter();
    let engine = Arc::new(
        Engine::new(
            &EngineOptions {
                cache_dir: None,
                max_instances: 1000,
                guest_output: host_bridge::engine::GuestOutput::Host,
            },
            capabilities,
            host_bridge::host::add_to_linker,
        )
        .expect("the engine starts"),
    );
    let mut components = HashMap::new();
    for (id, component) in &manifest.components {
        let loaded = engine.load(component).expect("the component compiles");
        components.insert(id.clone(), loaded);
    }
    let pubsub = PubsubTrigger::new(&engine, &manifest, &components, metrics)
        .expect("the pub/sub trigger builds");
    let http =
        HttpTrigger::new(&engine, &manifest, &mut components).expect("the HTTP trigger builds");
    Fixture {
        engine,
        components,
        pubsub,
        http,
        _dir: dir,
    }
}

fn order_request(n: u64) -> http::Request<GuestBody> {
    let body = format!(
        r#"{{"orderId":"o-{n}","customer":"ada","items":[{{"sku":"book","qty":2,"price":12.5}}]}}"#
    );
    http::Request::post("/orders")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("a valid request")
}

fn benches(c: &mut Criterion) {
    // As host-bridge's `main` does: errors wasmtime makes on every store
    // drop must not capture backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread reads the environment yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let f = fixture(&runtime);
    let processor = &f.components["order-processor"];
    let pre = processor.pre.clone();

    // Check once, outside the timing, that each path does its whole job,
    // so a broken path cannot pass for a fast one.
    runtime.block_on(async {
        assert_eq!(f.pubsub.deliver(0, order_event(0)).await, Status::Success);
        let response = f.http.handle(order_request(0)).await;
        assert_eq!(response.status(), http::StatusCode::ACCEPTED);
    });

    let mut group = c.benchmark_group("delivery");
    group.bench_function("store", |b| {
        b.to_async(&runtime)
            .iter(|| async { f.engine.store(&processor.sandbox, None).await.unwrap() })
    });
    group.bench_function("store+instantiate", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut store = f.engine.store(&processor.sandbox, None).await.unwrap();
            pre.instantiate_async(&mut store).await.unwrap();
            store
        })
    });
    let mut n = 0;
    group.bench_function("order-processor", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let event = order_event(n);
            let pubsub = &f.pubsub;
            async move { assert_eq!(pubsub.deliver(0, event).await, Status::Success) }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("tracing");
    group.bench_function("off: a delivery's spans", |b| {
        let given = host_bridge::telemetry::TraceContext {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        };
        b.iter(|| {
            use host_bridge::telemetry::*;
            let given = std::hint::black_box(&given);
            let delivery = delivery_span(
                "host-bridge",
                "pubsub",
                "orders",
                "id",
                "order-processor",
                "sha256:0",
                Some(given),
            );
            let handle = handle_span("order-processor", "sha256:0");
            let passed = pass_on(&handle, Some(given.clone()));
            let instantiate = instantiate_span("order-processor");
            delivery.record("host_bridge.answer", "SUCCESS");
            (delivery, handle, instantiate, passed)
        })
    });
    // As `up` records them with an exporter set, less the export.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let recording = {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing::Dispatch::new(
            tracing_subscriber::registry().with(host_bridge::telemetry::span_layer(&provider)),
        )
    };
    group.bench_function("order-processor, spans recorded", |b| {
        use tracing::instrument::WithSubscriber as _;
        b.to_async(&runtime).iter(|| {
            n += 1;
            let event = order_event(n);
            let pubsub = &f.pubsub;
            async move { assert_eq!(pubsub.deliver(0, event).await, Status::Success) }
                .with_subscriber(recording.clone())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("http");
    let mut n = 0;
    group.bench_function("order-api POST /orders", |b| {
        b.to_async(&runtime).iter(|| {
            n += 1;
            let request = order_request(n);
            let http = &f.http;
            async move {
                let response = http.handle(request).await;
                assert_eq!(response.status(), http::StatusCode::ACCEPTED);
                // Read the answer to its end, as a client would.
                response.into_body().collect().await.unwrap()
            }
        })
    });
    group.finish();
}

criterion_group!(sandbox, benches);
criterion_main!(sandbox);
