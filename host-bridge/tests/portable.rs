//! The same components on another runtime: the orders app composed with the
//! two adapter components (`make compose`) and served by `wasmtime serve`,
//! with no host-bridge anywhere, each next to its own real daprd, on a real
//! Redis.
//!
//! `wasmtime serve` is wasmtime-cli 48.0.8 from crates.io, the wasmtime
//! version host-bridge embeds (`make setup-wasmtime` installs it; `WASMTIME`
//! names another). `make compose` installs wac if it is missing.

mod common;

use common::dapr::{Backing, Daprd, wait_until};
use common::{Process, client, free_port, workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn wasmtime() -> PathBuf {
    common::wasmtime_cli().expect(
        "wasmtime-cli 48.0.8 is missing: run `make test` (or `make setup-wasmtime`), which installs it",
    )
}

/// Runs the README's composition command, once per test run, and returns
/// `target/composed`.
fn compose() -> &'static Path {
    static COMPOSED: OnceLock<PathBuf> = OnceLock::new();
    COMPOSED.get_or_init(|| {
        let root = workspace();
        let status = Command::new("make")
            .current_dir(&root)
            .arg("compose")
            .status()
            .expect("cannot run make");
        assert!(status.success(), "`make compose` failed");
        root.join("target/composed")
    })
}

/// `wasmtime serve` of `wasm` on `port`, as the README runs it: `-Scli` for
/// the environment and stderr, a fresh instance per request, as host-bridge
/// gives every delivery, and host-bridge's limits of the orders app (5 s
/// per call, 64 MiB of memory).
fn serve(wasm: &Path, port: u16, env: &[(&str, String)], log_dir: &Path) -> Process {
    let mut command = Command::new(wasmtime());
    command
        .arg("serve")
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .arg("-Scli")
        .args(["--max-instance-reuse-count", "1"])
        .args(["-W", "timeout=5s", "-W", "max-memory-size=67108864"]);
    for (name, value) in env {
        command.args(["--env", &format!("{name}={value}")]);
    }
    command.arg(wasm);
    let name = format!(
        "wasmtime serve {} on port {port}",
        wasm.file_name().unwrap().to_string_lossy()
    );
    let mut process = Process::spawn(command, name, &log_dir.join(format!("wasmtime-{port}.log")));
    process.wait_for_line("Serving HTTP on", Duration::from_secs(60));
    process
}

#[test]
fn the_composed_orders_app_runs_under_wasmtime_serve_next_to_daprd() {
    let composed = compose();
    let backing = Backing::start();
    let logs = tempfile::tempdir().unwrap();
    let (api_port, processor_port) = (free_port(), free_port());

    // Two replicas of one Dapr app, `orders`, as `dapr run` would start
    // them: one serves the API, the other subscribes. Sharing the app id
    // shares the state keys (`orders||order-{id}`), so the API reads what
    // the processor saved, as it does under host-bridge.
    let processor_daprd = Daprd::start(
        "orders",
        processor_port,
        &backing.resources,
        logs.path(),
        &[],
    );
    let mut processor = serve(
        &composed.join("order-processor.wasm"),
        processor_port,
        &[
            ("DAPR_HTTP_PORT", processor_daprd.http_port.to_string()),
            ("SUBSCRIBE_TOPICS", "orders".to_owned()),
            (
                "SUBSCRIBE_DEAD_LETTER_TOPIC",
                "orders-deadletter".to_owned(),
            ),
        ],
        logs.path(),
    );
    processor_daprd.wait_for_subscriptions(&["orders"]);
    let api_daprd = Daprd::start("orders", api_port, &backing.resources, logs.path(), &[]);
    let mut api = serve(
        &composed.join("order-api.wasm"),
        api_port,
        &[("DAPR_HTTP_PORT", api_daprd.http_port.to_string())],
        logs.path(),
    );
    let api_url = format!("http://127.0.0.1:{api_port}");

    // The composed API publishes through the plug and daprd...
    let order =
        r#"{"orderId":"w-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#;
    let response = client()
        .post(format!("{api_url}/orders"))
        .header("content-type", "application/json")
        .body(order)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text());

    // ...the composed processor receives it from its daprd, and saves the
    // processed order through the plug; the API reads it back through the
    // plug's `get`.
    let mut processed = Value::Null;
    wait_until(Duration::from_secs(30), "the order to be processed", || {
        let response = client()
            .get(format!("{api_url}/orders/w-1"))
            .send()
            .unwrap();
        if response.status() != 200 {
            return false;
        }
        processed = response.json().unwrap();
        true
    });
    assert_eq!(processed["orderId"], "w-1");
    assert_eq!(processed["status"], "processed");
    assert_eq!(processed["total"], 25.0);
    assert_eq!(processed["customer"], "ada");
    assert!(
        !processed["eventId"].as_str().unwrap_or_default().is_empty(),
        "{processed}"
    );
    // daprd holds what the API showed: the plug did not answer from anywhere else.
    let stored: Value = client()
        .get(format!(
            "{}/v1.0/state/statestore/order-w-1",
            processor_daprd.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored, processed);

    // An unknown order is a 404: daprd's 204 for a missing key is `none`.
    let missing = client()
        .get(format!("{api_url}/orders/w-404"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);

    // A payload the processor cannot read is DROPped by the adapter's
    // answer, and daprd sends it to the dead-letter topic.
    let published = client()
        .post(format!("{}/v1.0/publish/pubsub/orders", api_daprd.url))
        .header("content-type", "application/json")
        .body(r#"{"orderId":"w-bad"}"#)
        .send()
        .unwrap();
    assert_eq!(published.status(), 204);
    processor.wait_for_line("order-processor: dropping event", Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "the dropped event in orders-deadletter",
        || {
            let out = Command::new("redis-cli")
                .args(["-p", &backing.redis.port.to_string()])
                .args(["XRANGE", "orders-deadletter", "-", "+"])
                .output()
                .expect("cannot run redis-cli");
            String::from_utf8_lossy(&out.stdout).contains("w-bad")
        },
    );

    // Everything ran in the two wasmtime processes: both still serve.
    assert!(processor.is_running() && api.is_running());
    assert_eq!(
        client()
            .get(format!("{api_url}/orders/w-1"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

/// `wac plug`, as `make compose` runs it, for a composition of the test's own.
fn plug(socket: &Path, plug: &Path, out: &Path) {
    let wac = common::installed_tool("WAC", "wac-0.12.0", "wac")
        .expect("wac is missing: run `make test` (or `make setup-wac`), which installs it");
    let status = Command::new(&wac)
        .arg("plug")
        .arg(socket)
        .arg("--plug")
        .arg(plug)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", wac.display()));
    assert!(status.success(), "wac plug {} failed", socket.display());
}

/// The value daprd holds under `key`, as text, if any.
fn state_text(daprd: &Daprd, key: &str) -> Option<String> {
    let response = client()
        .get(format!("{}/v1.0/state/statestore/{key}", daprd.url))
        .send()
        .unwrap();
    (response.status() == 200).then(|| response.text().unwrap())
}

#[test]
fn under_wasmtime_serve_events_arrive_exact_and_retry_traps_and_loops_are_redelivered() {
    compose();
    let release = workspace().join("target/wasm32-wasip2/release");
    common::guests();
    let dir = tempfile::tempdir().unwrap();
    let plugged = dir.path().join("test-subscriber-plugged.wasm");
    let composed = dir.path().join("test-subscriber.wasm");
    plug(
        &release.join("test_subscriber.wasm"),
        &release.join("publisher_plug.wasm"),
        &plugged,
    );
    plug(
        &release.join("app_protocol_adapter.wasm"),
        &plugged,
        &composed,
    );

    let backing = Backing::start();
    let port = free_port();
    let daprd = Daprd::start("portable", port, &backing.resources, dir.path(), &[]);
    let mut app = serve(
        &composed,
        port,
        &[
            ("DAPR_HTTP_PORT", daprd.http_port.to_string()),
            (
                "SUBSCRIBE_TOPICS",
                "record-w,flaky-w,trap-w,loop-w,store-w".to_owned(),
            ),
        ],
        dir.path(),
    );
    daprd.wait_for_subscriptions(&["record-w", "flaky-w", "trap-w", "loop-w", "store-w"]);
    let publish = |topic: &str, id: &str, content_type: &str, body: Vec<u8>| {
        let response = client()
            .post(format!(
                "{}/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id={id}",
                daprd.url
            ))
            .header("content-type", content_type)
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 204, "publish to {topic}");
    };

    // Binary data crosses daprd (as `data_base64`) and the adapter byte for byte.
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    publish(
        "record-w",
        "bin-1",
        "application/octet-stream",
        bytes.clone(),
    );
    let mut record = Value::Null;
    wait_until(
        Duration::from_secs(30),
        "the binary event to be recorded",
        || match state_text(&daprd, "received-bin-1") {
            Some(text) => {
                record = serde_json::from_str(&text).unwrap();
                true
            }
            None => false,
        },
    );
    assert_eq!(record["data_hex"], hex_of(&bytes));
    assert_eq!(record["datacontenttype"], "application/octet-stream");
    assert_eq!(record["topic"], "record-w");
    assert_eq!(record["pubsubname"], "pubsub");
    assert_eq!(record["id"], "bin-1");
    assert!(
        record["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains("4bf92f3577b34da6a3ce929d0e0e4736")),
        "{record}"
    );

    // State goes through daprd's HTTP state API: a JSON value is saved as
    // daprd re-encodes it (spacing and `2.50` gone, keys in an order that
    // varies from run to run, so it is compared as JSON), and a value
    // that is not JSON is refused, never saved changed: the guest's RETRY
    // brings it back until daprd's retries run out.
    publish(
        "store-w",
        "json-1",
        "application/json",
        br#"{"b": 1, "a": [1, 2.50]}"#.to_vec(),
    );
    publish("store-w", "text-1", "text/plain", b"plain text".to_vec());
    wait_until(
        Duration::from_secs(30),
        "the JSON value to be saved",
        || state_text(&daprd, "stored-json-1").is_some(),
    );
    let stored: Value =
        serde_json::from_str(&state_text(&daprd, "stored-json-1").unwrap()).unwrap();
    assert_eq!(stored, serde_json::json!({"a": [1, 2.5], "b": 1}));
    wait_until(
        Duration::from_secs(30),
        "the text value to be retried",
        || {
            state_text(&daprd, "attempts-text-1")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        },
    );
    assert_eq!(state_text(&daprd, "stored-text-1"), None);

    // RETRY is redelivered by daprd (components/resiliency.yaml) until the
    // guest answers SUCCESS on its third attempt.
    publish("flaky-w", "flaky-1", "text/plain", b"again".to_vec());
    wait_until(
        Duration::from_secs(30),
        "three attempts of the flaky event",
        || state_text(&daprd, "attempts-flaky-1").as_deref() == Some("3"),
    );

    // A trap fails the request with a 500, which daprd redelivers: the
    // message is not lost, and wasmtime serve keeps serving.
    publish("trap-w", "trap-1", "text/plain", b"boom".to_vec());
    wait_until(
        Duration::from_secs(30),
        "the trapped event to be redelivered",
        || {
            state_text(&daprd, "attempts-trap-1")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        },
    );
    app.wait_for_line("wasm trap", Duration::from_secs(5));
    assert!(app.is_running());

    // So does a guest that loops forever, once `-W timeout` stops it.
    publish("loop-w", "loop-1", "text/plain", b"spin".to_vec());
    wait_until(
        Duration::from_secs(40),
        "the looping event to be redelivered",
        || {
            state_text(&daprd, "attempts-loop-1")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        },
    );
    assert!(app.is_running());
    publish(
        "record-w",
        "after-trap",
        "application/json",
        br#"{"ok":true}"#.to_vec(),
    );
    wait_until(Duration::from_secs(30), "an event after the traps", || {
        state_text(&daprd, "received-after-trap").is_some()
    });
    let after: Value =
        serde_json::from_str(&state_text(&daprd, "received-after-trap").unwrap()).unwrap();
    assert_eq!(after["data_hex"], hex_of(br#"{"ok":true}"#));

    // Straight to the adapter, as daprd would call it: an event that cannot
    // be read is DROP (it would not read better later), and a bulk delivery,
    // which the adapter does not serve, is a 500, so daprd retries its
    // entries instead of losing them.
    let app_url = format!("http://127.0.0.1:{port}");
    let deliver = |body: &str| {
        let response = client()
            .post(format!("{app_url}/events/record-w"))
            .header("content-type", "application/cloudevents+json")
            .body(body.to_owned())
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let (status, body) = deliver(r#"{"specversion":"1.0","data":"no id"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"DROP"}"#));
    let (status, body) =
        deliver(r#"{"id":"b","type":"com.dapr.event.sent.bulk","topic":"record-w","entries":[]}"#);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("bulkSubscribe"), "{body}");
    let health = client().get(format!("{app_url}/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
