//! The delivery and fault scenarios every broker must pass under daprd,
//! written once: `tests/dapr.rs` and `tests/dapr_faults.rs` run them on
//! Redis, `tests/brokers.rs` on Kafka, RabbitMQ, NATS JetStream and MQTT.

use super::client;
use super::dapr::{Backing, DaprApp, wait_until};
use super::{orders_manifest, test_subscriber_manifest, wasm};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `bytes` in lower-case hex, as the test subscriber records a payload.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test subscriber on every topic the Dapr tests use.
pub fn subscriber_manifest() -> String {
    let mut manifest = test_subscriber_manifest(
        &["record", "flaky", "bulk", "record-py", "store"],
        5,
        "",
        "",
    );
    manifest.push_str(&format!(
        r#"
[[trigger.pubsub]]
component = "raw-recorder"
pubsubname = "pubsub"
topic = "record-raw"
metadata = {{ rawPayload = "true" }}

[[trigger.pubsub]]
component = "raw-recorder"
pubsubname = "pubsub"
topic = "drop"
dead_letter_topic = "dead-letters"

[[trigger.pubsub]]
component = "dead-letter"
pubsubname = "pubsub"
topic = "dead-letters"

[[trigger.pubsub]]
component = "breaker"
pubsubname = "pubsub"
topic = "trap-d"
dead_letter_topic = "dead-letters"

[[trigger.pubsub]]
component = "breaker"
pubsubname = "pubsub"
topic = "loop-d"
dead_letter_topic = "dead-letters"

[component.breaker]
source = "{}"
[component.breaker.tool.host-bridge]
timeout_ms = 300

[component.dead-letter]
source = "{}"

[component.raw-recorder]
source = "{}"
"#,
        wasm("test_subscriber"),
        wasm("dead_letter"),
        wasm("test_subscriber")
    ));
    manifest.replace(
        "topic = \"bulk\"\n",
        "topic = \"bulk\"\nbulk_subscribe = { max_messages_count = 50, max_await_duration_ms = 200 }\n",
    )
}

pub const TOPICS: &[&str] = &[
    "record",
    "store",
    "flaky",
    "bulk",
    "record-py",
    "record-raw",
    "drop",
    "dead-letters",
    "trap-d",
    "loop-d",
];

/// The example app: an order posted to the API is processed and saved,
/// and a malformed one is dropped and dead-lettered.
pub fn the_orders_app_runs(backing: &Backing) {
    let mut app = DaprApp::start(
        "orders",
        &orders_manifest(),
        &backing.resources,
        &["orders", "orders-deadletter"],
    );
    let subscribe = app.host.get_json("/dapr/subscribe");
    assert_eq!(
        subscribe,
        json!([
            {"pubsubname": "pubsub", "topic": "orders", "route": "/orders-events", "metadata": {}, "deadLetterTopic": "orders-deadletter"},
            {"pubsubname": "pubsub", "topic": "orders-deadletter", "route": "/orders-deadletter", "metadata": {}}
        ])
    );

    let response = app.host.post(
        "/orders",
        "application/json",
        r#"{"orderId":"d-1","customer":"grace","items":[{"sku":"pen","qty":4,"price":1.25}]}"#,
    );
    assert_eq!(response.status(), 202);
    let mut order = Value::Null;
    wait_until(Duration::from_secs(30), "the order to be processed", || {
        let response = app.host.get("/orders/d-1");
        if response.status() == 200 {
            order = response.json().unwrap();
            true
        } else {
            false
        }
    });
    assert_eq!(order["status"], "processed");
    assert_eq!(order["total"], 5.0);
    // The processed order is in Redis, through daprd's state API.
    let stored: Value = serde_json::from_str(&app.host.state("order-d-1").unwrap()).unwrap();
    assert_eq!(stored["orderId"], "d-1");

    // A malformed order is dropped by the processor and dead-lettered by daprd.
    app.host
        .publish("orders", "bad-d-1", "application/json", r#"{"nope":true}"#);
    if backing.kind().dead_letters_a_drop() {
        let record = app
            .host
            .wait_for_state("deadletter-bad-d-1", Duration::from_secs(30), |_| true);
        assert!(record.contains("nope"), "{record}");
    } else {
        dead_letter_is_lost(&mut app, "bad-d-1");
    }
}

/// What RELIABILITY.md says of JetStream's catch-all stream: daprd
/// publishes a DROP's dead letter with the original's CloudEvent id, which
/// the component makes the Nats-MsgId, and the stream drops it as a
/// duplicate of the original.
fn dead_letter_is_lost(app: &mut DaprApp, id: &str) {
    wait_until(Duration::from_secs(30), "the DROP", || {
        app.host
            .metric("host_bridge_deliveries_total{outcome=\"drop\"}")
            > 0
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(app.host.state(&format!("deadletter-{id}")), None);
}

/// JSON, text, all 256 byte values and a structured CloudEvent arrive as
/// published, and the delivery's trace context reaches the guest.
pub fn payloads_arrive_byte_for_byte(app: &mut DaprApp) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        // Compact, with sorted keys: the form daprd itself writes JSON in.
        (
            "ct-json",
            "application/json",
            br#"{"a":[true,null,"x\"y"],"b":{"c":1.5}}"#.to_vec(),
        ),
        // Any other JSON text: daprd decodes it into its envelope and
        // re-encodes it, so the value arrives, not the spelling.
        (
            "ct-json-loose",
            "application/json",
            br#"{"b": 1,  "a": [true, null, "x"]}"#.to_vec(),
        ),
        (
            "ct-text",
            "text/plain",
            "héllo\nwörld \"quoted\"".as_bytes().to_vec(),
        ),
        ("ct-binary", "application/octet-stream", all_bytes.clone()),
    ];
    for (id, content_type, body) in &cases {
        app.host.publish("record", id, content_type, body.clone());
    }
    for (id, content_type, body) in &cases {
        let record: Value = app
            .host
            .wait_for_json(&format!("received-{id}"), Duration::from_secs(30));
        assert_eq!(record["datacontenttype"], *content_type, "{record}");
        let got = record["data_hex"].as_str().unwrap();
        if *id == "ct-json-loose" {
            let got_bytes: Vec<u8> = (0..got.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&got[i..i + 2], 16).unwrap())
                .collect();
            let got_json: Value = serde_json::from_slice(&got_bytes).unwrap();
            assert_eq!(got_json, serde_json::from_slice::<Value>(body).unwrap());
        } else {
            assert_eq!(got, hex(body), "{id}: the payload changed on the way");
        }
    }

    // A structured CloudEvent published as such keeps its id, type and data.
    let event = json!({
        "specversion": "1.0", "id": "ct-ce", "source": "tests", "type": "test.kind",
        "datacontenttype": "text/plain", "data": "inside a cloudevent"
    });
    app.host.publish(
        "record",
        "ignored",
        "application/cloudevents+json",
        event.to_string(),
    );
    let record: Value = app
        .host
        .wait_for_json("received-ct-ce", Duration::from_secs(30));
    assert_eq!(record["type"], "test.kind");
    assert_eq!(record["data_hex"], hex(b"inside a cloudevent"));

    // The delivery's trace context reaches the guest.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = client()
        .post(format!(
            "{}/v1.0/publish/pubsub/record?metadata.cloudevent.id=traced",
            app.daprd.url
        ))
        .header("content-type", "text/plain")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body("traced")
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let record: Value = app
        .host
        .wait_for_json("received-traced", Duration::from_secs(30));
    assert!(
        record["traceparent"]
            .as_str()
            .unwrap_or_default()
            .contains(trace_id),
        "{record}"
    );
}

/// A RETRY is delivered again (the third attempt succeeds, and there is
/// no fourth), and a DROP reaches the dead-letter topic after one attempt.
pub fn retry_is_redelivered_and_drop_is_dead_lettered(
    app: &mut DaprApp,
    dead_letters_a_drop: bool,
) {
    app.host
        .publish("flaky", "dapr-flaky-1", "text/plain", "again");
    app.host
        .wait_for_state("attempts-dapr-flaky-1", Duration::from_secs(60), |v| {
            v == "3"
        });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        app.host.state("attempts-dapr-flaky-1").as_deref(),
        Some("3")
    );

    app.host
        .publish("drop", "dapr-drop-1", "text/plain", "unwanted");
    if !dead_letters_a_drop {
        dead_letter_is_lost(app, "dapr-drop-1");
        return;
    }
    // The dead-letter component records what it got, under the original id.
    let record = app
        .host
        .wait_for_state("deadletter-dapr-drop-1", Duration::from_secs(60), |_| true);
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["data"], "unwanted", "{record}");
    assert_eq!(app.host.state("attempts-dapr-drop-1").as_deref(), Some("1"));
}

/// A guest that traps, or loops past its `timeout_ms`, is a RETRY: daprd
/// delivers it again under its resiliency policy (nine attempts), then
/// dead-letters it, and the host serves on.
pub fn traps_and_loops_are_retried_then_dead_lettered(app: &mut DaprApp) {
    let retries_before = app
        .host
        .metric("host_bridge_deliveries_total{outcome=\"retry\"}");
    app.host
        .publish("trap-d", "trapped-1", "text/plain", "boom");
    app.host.publish("loop-d", "looped-1", "text/plain", "spin");
    for id in ["trapped-1", "looped-1"] {
        let record: Value = app
            .host
            .wait_for_json(&format!("deadletter-{id}"), Duration::from_secs(120));
        assert_eq!(record["id"], id, "{record}");
    }
    let retries = app
        .host
        .metric("host_bridge_deliveries_total{outcome=\"retry\"}")
        - retries_before;
    assert!(retries >= 18, "two poison messages, {retries} RETRYs");
    assert_eq!(app.host.get("/healthz").status(), 200);
}

/// 500 messages to a bulk subscription, one of which answers RETRY once:
/// they come in batches, each entry is answered on its own, and with
/// `only_the_failed_entry_is_retried` no other entry is delivered twice.
pub fn bulk_deliveries_come_in_batches(app: &mut DaprApp, only_the_failed_entry_is_retried: bool) {
    let retry = "host_bridge_deliveries_total{outcome=\"retry\"}";
    let (retries_before, batches_before) = (
        app.host.metric(retry),
        app.host.metric("host_bridge_bulk_batches_total"),
    );
    for i in 0..500 {
        let body = if i == 250 {
            "retry-once".to_owned()
        } else {
            format!("message {i}")
        };
        app.host
            .publish("bulk", &format!("bulk-{i}"), "text/plain", body);
    }
    app.host
        .wait_for_state("attempts-bulk-250", Duration::from_secs(120), |v| v == "2");
    for i in 0..500 {
        let key = format!("attempts-bulk-{i}");
        let value = app
            .host
            .wait_for_state(&key, Duration::from_secs(60), |_| true);
        if only_the_failed_entry_is_retried {
            let expected = if i == 250 { "2" } else { "1" };
            assert_eq!(value, expected, "{key}");
        }
    }
    let batches = app.host.metric("host_bridge_bulk_batches_total") - batches_before;
    assert!(
        batches > 0 && batches < 500,
        "500 messages came in {batches} batches"
    );
    if only_the_failed_entry_is_retried {
        assert_eq!(app.host.metric(retry) - retries_before, 1);
    }
}

/// Two replicas of one app id split 1,000 messages, and none is lost.
pub fn two_replicas_share_the_work(backing: &Backing, app_id: &str) {
    let manifest = test_subscriber_manifest(&["record"], 5, "", "");
    let a = DaprApp::start(app_id, &manifest, &backing.resources, &["record"]);
    let mut b = DaprApp::start(app_id, &manifest, &backing.resources, &["record"]);
    for i in 0..1000 {
        a.host
            .publish("record", &format!("r-{i}"), "text/plain", format!("m{i}"));
    }
    for i in 0..1000 {
        b.host
            .wait_for_state(&format!("received-r-{i}"), Duration::from_secs(120), |_| {
                true
            });
    }
    let handled_a = a
        .host
        .metric("host_bridge_deliveries_total{outcome=\"success\"}");
    let handled_b = b
        .host
        .metric("host_bridge_deliveries_total{outcome=\"success\"}");
    assert!(
        handled_a > 0 && handled_b > 0,
        "one replica did everything: {handled_a} / {handled_b}"
    );
    assert!(
        handled_a + handled_b >= 1000,
        "{handled_a} + {handled_b} < 1000"
    );
}

/// Publishes `count` messages with ids `{prefix}{i}` to `topic` through
/// daprd at `url`, one after another, on another thread. A publish that is
/// not accepted (daprd or Redis is down) is tried again until it is: only
/// an accepted message has to be processed.
pub fn publish_stream(
    url: &str,
    topic: &str,
    prefix: &str,
    count: usize,
) -> std::thread::JoinHandle<()> {
    let (url, topic, prefix) = (url.to_owned(), topic.to_owned(), prefix.to_owned());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..count {
            loop {
                let response = client()
                    .post(format!(
                        "{url}/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id={prefix}{i}"
                    ))
                    .header("content-type", "text/plain")
                    .body(format!("m{i}"))
                    .send();
                if response.is_ok_and(|r| r.status() == 204) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "publishing {prefix}{i} was refused for 120 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Waits until every id `{prefix}0 .. {prefix}{count-1}` was recorded.
pub fn wait_all_processed(app: &mut DaprApp, prefix: &str, count: usize, timeout: Duration) {
    let missing = missing_after(app, prefix, count, timeout);
    assert!(
        missing.is_empty(),
        "{} of {count} messages were never processed within {timeout:?}, among them {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

/// The ids `{prefix}0 .. {prefix}{count-1}` not recorded once all were, or
/// once `timeout` is over.
pub fn missing_after(
    app: &mut DaprApp,
    prefix: &str,
    count: usize,
    timeout: Duration,
) -> Vec<usize> {
    let deadline = Instant::now() + timeout;
    let mut missing: Vec<usize> = (0..count).collect();
    loop {
        missing.retain(|i| app.host.state(&format!("received-{prefix}{i}")).is_none());
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Publishes `count` messages through daprd to the test subscriber, runs
/// `fault` one second into the stream, and checks that every message was
/// processed.
pub fn stream_through_a_fault(
    backing: &mut Backing,
    app_id: &str,
    count: usize,
    fault: impl FnOnce(&mut DaprApp, &mut Backing),
) {
    let mut app = start_record_app(backing, app_id);
    let prefix = format!("{app_id}-");
    let missing = count_lost_through_a_fault(
        &mut app,
        backing,
        &prefix,
        count,
        Duration::from_secs(180),
        fault,
    );
    assert!(
        missing.is_empty(),
        "{} of {count} messages were never processed, among them {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

/// The test subscriber on topic `record`, as the fault scenarios use it.
pub fn start_record_app(backing: &Backing, app_id: &str) -> DaprApp {
    let manifest = test_subscriber_manifest(&["record"], 5, "", "");
    DaprApp::start(app_id, &manifest, &backing.resources, &["record"])
}

/// Like [`stream_through_a_fault`], for a broker that may lose messages:
/// publishes ids `{prefix}0 ..` to `app`, and answers the ids not processed
/// within `timeout`.
pub fn count_lost_through_a_fault(
    app: &mut DaprApp,
    backing: &mut Backing,
    prefix: &str,
    count: usize,
    timeout: Duration,
    fault: impl FnOnce(&mut DaprApp, &mut Backing),
) -> Vec<usize> {
    let publisher = publish_stream(&app.daprd.url, "record", prefix, count);
    std::thread::sleep(Duration::from_secs(1));
    fault(app, backing);
    publisher.join().unwrap();
    missing_after(app, prefix, count, timeout)
}

/// host-bridge `kill -9`'d one second into the stream and down for 30 s.
pub fn host_down_30s(app: &mut DaprApp, _: &mut Backing) {
    app.host.kill();
    std::thread::sleep(Duration::from_secs(30));
    app.restart_host();
}

/// daprd `kill -9`'d one second into the stream and started again after 5 s.
pub fn daprd_killed(app: &mut DaprApp, _: &mut Backing) {
    app.daprd.kill();
    std::thread::sleep(Duration::from_secs(5));
    app.daprd.restart();
}

/// The broker `kill -9`'d one second into the stream and started again on
/// its data after 3 s.
pub fn broker_restarted(_: &mut DaprApp, backing: &mut Backing) {
    backing.crash_and_restart_broker(Duration::from_secs(3));
}
