//! The order processor written in Python (componentize-py) and in
//! JavaScript (componentize-js), and the JavaScript order API, built from
//! source with the build commands of their manifests, end to end on the
//! embedded broker and under a real daprd and Redis: an order accepted,
//! processed and shown, an invalid one refused, a malformed one dropped to
//! the dead-letter topic, and a guest failure answered as RETRY and
//! redelivered.

mod common;

use common::dapr::{Backing, DaprApp, Redis, wait_until};
use common::{Host, polyglot_manifest};
use serde_json::Value;
use std::time::Duration;

/// Long enough for the first start, which compiles an 18 MB component.
const SLOW: Duration = Duration::from_secs(60);

fn order(id: &str) -> String {
    format!(
        r#"{{"orderId":"{id}","customer":"ada","items":[{{"sku":"book","qty":2,"price":12.5}},{{"sku":"pen","qty":3,"price":0.105}}]}}"#
    )
}

/// Checks the record the Rust processor would have written for [`order`].
fn check_processed(record: &Value, id: &str) {
    assert_eq!(record["orderId"], id, "{record}");
    assert_eq!(record["status"], "processed", "{record}");
    // 2 × 12.50 + 3 × 0.11 (each price rounded to cents first, half up).
    assert_eq!(record["total"].as_f64(), Some(25.33), "{record}");
    assert_eq!(record["customer"], "ada", "{record}");
    assert_eq!(
        record["items"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    assert!(
        record["eventId"].as_str().is_some_and(|id| !id.is_empty()),
        "{record}"
    );
    // The processor is granted the clock, so the time is real, not the epoch.
    let at = record["processedAt"].as_str().unwrap_or_default();
    assert!(
        at.starts_with("20") && at.ends_with('Z') && at.len() == 24,
        "{record}"
    );
}

/// An order far larger than the processor's memory grant lets it parse.
fn huge_order(id: &str) -> String {
    let items = vec![r#"{"sku":"a","qty":1,"price":1}"#; 110_000].join(",");
    format!(r#"{{"orderId":"{id}","customer":"ada","items":[{items}]}}"#)
}

fn on_the_embedded_broker(lang: &str) {
    // The manifest as written (instance reuse on), plus a 24 MiB memory
    // grant: enough for an order, not for parsing a 3.4 MB one.
    let manifest = polyglot_manifest(lang).replace(
        "max_instances = 4\n",
        "max_instances = 4\nmax_memory_mb = 24\n",
    );
    let mut host = Host::start(&manifest);

    let response = host.post("/orders", "application/json", order("p-1"));
    assert_eq!(response.status(), 202);
    check_processed(&host.wait_for_json("order-p-1", SLOW), "p-1");
    let shown: Value = host.get("/orders/p-1").json().unwrap();
    check_processed(&shown, "p-1");
    assert_eq!(host.get("/orders/p-unknown").status(), 404);
    assert_eq!(host.get("/orders/not%20an%20id").status(), 404);

    // The API refuses an invalid order, naming the field, and publishes nothing.
    let response = host.post(
        "/orders",
        "application/json",
        r#"{"orderId":"p-9","customer":"ada","items":[{"sku":"pen","qty":0,"price":1}]}"#,
    );
    assert_eq!(response.status(), 400);
    let error: Value = response.json().unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("items[0].qty"),
        "{error}"
    );
    assert_eq!(
        host.post("/orders/p-1", "application/json", "{}").status(),
        405
    );

    // DROP: the processor refuses a malformed order once, and it is dead-lettered.
    host.publish(
        "orders",
        "bad-1",
        "application/json",
        r#"{"orderId":"bad 1"}"#,
    );
    let record = host.wait_for_json("deadletter-bad-1", SLOW);
    assert_eq!(record["data"], r#"{"orderId":"bad 1"}"#);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"drop\"}"),
        1
    );
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        0
    );

    // RETRY: the guest runs out of memory on every attempt (a trap), so the
    // broker redelivers it up to max_attempts (5) and then dead-letters it.
    host.publish("orders", "huge-1", "application/json", huge_order("huge-1"));
    host.wait_for_state("deadletter-huge-1", SLOW, |_| true);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        5
    );
    assert!(host.state("order-huge-1").is_none());

    // A trapped instance is dropped, not reused: the next order is fine.
    host.post("/orders", "application/json", order("p-2"));
    check_processed(&host.wait_for_json("order-p-2", SLOW), "p-2");
    // The guest saves the order before it answers, and the answer is
    // counted after: the count may trail the saved state for a moment.
    let success = "host_bridge_deliveries_total{outcome=\"success\"}";
    let deadline = std::time::Instant::now() + SLOW;
    while host.metric(success) < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(host.metric(success), 4);

    // Reuse is real: deliveries one after another land on a kept instance.
    let reused = host.metric(REUSED);
    for n in 0..5 {
        let id = format!("r-{n}");
        host.post("/orders", "application/json", order(&id));
        check_processed(&host.wait_for_json(&format!("order-{id}"), SLOW), &id);
    }
    assert!(host.metric(REUSED) >= reused + 5, "{}", host.metric(REUSED));
}

const REUSED: &str = "host_bridge_deliveries_on_reused_instances_total";

fn with_a_fresh_instance_per_delivery(lang: &str) {
    let manifest = polyglot_manifest(lang)
        .replace("instance_reuse = 1000\n", "")
        .replace("max_instances = 4\n", "");
    assert!(!manifest.contains("instance_reuse"), "{manifest}");
    let mut host = Host::start(&manifest);
    for n in 0..3 {
        let id = format!("f-{n}");
        host.post("/orders", "application/json", order(&id));
        check_processed(&host.wait_for_json(&format!("order-{id}"), SLOW), &id);
    }
    host.publish("orders", "bad-2", "application/json", "[1,2]");
    host.wait_for_state("deadletter-bad-2", SLOW, |_| true);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"drop\"}"),
        1
    );
    assert_eq!(host.metric(REUSED), 0);
}

fn under_dapr(lang: &str) {
    // The orders go through one Redis and the state store is another, so
    // the state store can fail while messages still flow.
    let backing = Backing::start();
    let mut state_redis = Redis::start();
    let statestore = backing.resources.join("statestore.yaml");
    let yaml = std::fs::read_to_string(&statestore).unwrap().replace(
        &format!("127.0.0.1:{}", backing.redis.port),
        &format!("127.0.0.1:{}", state_redis.port),
    );
    std::fs::write(&statestore, yaml).unwrap();
    let mut app = DaprApp::start(
        &format!("orders-{lang}"),
        &polyglot_manifest(lang),
        &backing.resources,
        &["orders", "orders-deadletter"],
    );

    let response = app.host.post("/orders", "application/json", order("d-1"));
    assert_eq!(response.status(), 202);
    check_processed(&app.host.wait_for_json("order-d-1", SLOW), "d-1");

    // DROP: dead-lettered by daprd.
    app.host
        .publish("orders", "bad-d-1", "application/json", r#"{"nope":true}"#);
    let record = app
        .host
        .wait_for_state("deadletter-bad-d-1", SLOW, |_| true);
    assert!(record.contains("nope"), "{record}");

    // RETRY: with the state store down the guest cannot save, answers RETRY,
    // and daprd redelivers until the store is back. daprd's Redis client
    // itself retries a save for about 3 s before it fails, so the store
    // stays down longer than that.
    let down = std::thread::spawn(move || {
        state_redis.crash_and_restart(Duration::from_secs(8));
        state_redis
    });
    std::thread::sleep(Duration::from_millis(300));
    let response = app.host.post("/orders", "application/json", order("d-2"));
    assert_eq!(response.status(), 202);
    wait_until(SLOW, "a RETRY from the guest", || {
        app.host
            .metric("host_bridge_deliveries_total{outcome=\"retry\"}")
            > 0
    });
    let _state_redis = down.join().unwrap();
    check_processed(&app.host.wait_for_json("order-d-2", SLOW), "d-2");
    let log = app.host.drain_log();
    assert!(
        log.contains(&format!(
            "order-processor-{lang}: saving order-d-2 failed, will retry"
        )),
        "{log}"
    );
}

#[test]
fn the_python_processor_on_the_embedded_broker() {
    on_the_embedded_broker("py");
}

#[test]
fn the_javascript_processor_on_the_embedded_broker() {
    on_the_embedded_broker("js");
}

#[test]
fn the_python_processor_with_a_fresh_instance_per_delivery() {
    with_a_fresh_instance_per_delivery("py");
}

#[test]
fn the_javascript_processor_with_a_fresh_instance_per_delivery() {
    with_a_fresh_instance_per_delivery("js");
}

#[test]
fn the_python_processor_under_daprd_and_redis() {
    under_dapr("py");
}

#[test]
fn the_javascript_processor_under_daprd_and_redis() {
    under_dapr("js");
}
