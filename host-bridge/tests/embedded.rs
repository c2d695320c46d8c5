//! End to end on the embedded broker: the example app and the delivery
//! contract, against a real `host-bridge up` process.

mod common;

use common::{Host, client, orders_manifest, test_subscriber_manifest};
use serde_json::Value;
use std::time::Duration;

const ORDER: &str =
    r#"{"orderId":"o-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#;

#[test]
fn an_order_is_accepted_processed_and_shown() {
    let mut host = Host::start(&orders_manifest());
    assert_eq!(host.get("/healthz").status(), 200);

    let response = host.post("/orders", "application/json", ORDER);
    assert_eq!(response.status(), 202);
    let body: Value = response.json().unwrap();
    assert_eq!(body["orderId"], "o-1");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let order: Value = loop {
        let response = host.get("/orders/o-1");
        match response.status().as_u16() {
            200 => break response.json().unwrap(),
            404 => {}
            other => panic!("GET /orders/o-1 answered {other}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order never processed:\n{}",
            host.drain_log()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert_eq!(order["status"], "processed");
    assert_eq!(order["total"], 25.0);
    assert_eq!(order["customer"], "ada");
    // The processor is granted the clock, so the time is real, not the epoch.
    let processed_at = order["processedAt"].as_str().unwrap();
    assert!(
        processed_at.starts_with("20") && !processed_at.starts_with("1970"),
        "{processed_at}"
    );
    assert_eq!(host.get("/orders/o-unknown").status(), 404);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"success\"}"),
        1
    );
}

#[test]
fn an_invalid_order_is_refused_and_nothing_is_published() {
    let host = Host::start(&orders_manifest());
    let cases = [
        (r#"{"orderId":"o-2","customer":"ada","items":[]}"#, "items"),
        (
            r#"{"orderId":"o-2","customer":"ada","items":[{"sku":"book","qty":0,"price":1}]}"#,
            "items[0].qty",
        ),
        (r#"{"orderId":"o-2","items":[]}"#, "customer"),
        ("not json", "not a valid order"),
    ];
    for (body, field) in cases {
        let response = host.post("/orders", "application/json", body);
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(field), "{message:?} should name {field}");
    }
    assert_eq!(host.metric("host_bridge_messages_published_total"), 0);
    assert_eq!(host.get("/orders/o-2").status(), 404);
}

#[test]
fn a_malformed_order_is_dropped_to_the_dead_letter_component() {
    let mut host = Host::start(&orders_manifest());
    host.publish(
        "orders",
        "bad-1",
        "application/json",
        r#"{"orderId":"bad 1","sku":"?"}"#,
    );
    let record = host.wait_for_state("deadletter-bad-1", Duration::from_secs(20), |_| true);
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["id"], "bad-1");
    assert_eq!(record["data"], r#"{"orderId":"bad 1","sku":"?"}"#);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"drop\"}"),
        1
    );
    assert_eq!(host.metric("host_bridge_messages_dead_lettered_total"), 1);
    // DROP is final: the processor saw it once.
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        0
    );
}

#[test]
fn a_guest_answering_retry_twice_is_delivered_three_times() {
    let mut host = Host::start(&test_subscriber_manifest(&["flaky"], 5, "", ""));
    host.publish("flaky", "f-1", "text/plain", "hello");
    host.wait_for_state("attempts-f-1", Duration::from_secs(20), |v| v == "3");
    // Wait out several backoffs: a fourth delivery would show by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(host.state("attempts-f-1").as_deref(), Some("3"));
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        2
    );
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"success\"}"),
        1
    );
}

#[test]
fn traps_panics_loops_and_oom_are_retried_and_the_host_keeps_serving() {
    let manifest = test_subscriber_manifest(
        &["trap", "panic", "loop", "oom", "record"],
        3,
        "timeout_ms = 300\nmax_memory_mb = 16",
        "",
    );
    let mut host = Host::start(&manifest);
    for topic in ["trap", "panic", "loop", "oom"] {
        host.publish(topic, &format!("{topic}-1"), "text/plain", "boom");
    }
    for topic in ["trap", "panic", "loop", "oom"] {
        // The guest counts each delivery before it crashes: all three happen.
        host.wait_for_state(
            &format!("attempts-{topic}-1"),
            Duration::from_secs(30),
            |v| v == "3",
        );
    }
    // No dead-letter topic: each is given up on and counted, not lost silently.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.metric("host_bridge_messages_discarded_total{reason=\"max_attempts\"}") < 4 {
        assert!(std::time::Instant::now() < deadline, "{}", host.drain_log());
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        12
    );
    assert!(host.is_running());
    assert_eq!(host.get("/healthz").status(), 200);
    host.publish("record", "after-1", "text/plain", "still here");
    let record = host.wait_for_state("received-after-1", Duration::from_secs(10), |_| true);
    assert!(record.contains("7374696c6c2068657265"), "{record}"); // "still here" in hex
    let log = host.drain_log();
    for needle in ["unreachable", "panicked", "interrupt", "counts as RETRY"] {
        assert!(
            log.contains(needle),
            "the log should mention {needle:?}:\n{log}"
        );
    }
}

#[test]
fn every_subscription_on_a_topic_gets_every_message() {
    let manifest = format!(
        "{}\n[[trigger.pubsub]]\ncomponent = \"second\"\npubsubname = \"pubsub\"\ntopic = \"record\"\nroute = \"/second\"\n[component.second]\nsource = \"{}\"\n",
        test_subscriber_manifest(&["record"], 3, "", ""),
        common::wasm("test_subscriber")
    );
    let mut host = Host::start(&manifest);
    host.publish("record", "fan-1", "text/plain", "x");
    // One message published, two subscriptions: two successful deliveries,
    // one to each component. (The guest's attempt counter cannot show this:
    // the two deliveries run at once and race on it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.metric("host_bridge_deliveries_total{outcome=\"success\"}") < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", host.drain_log());
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(host.metric("host_bridge_messages_published_total"), 1);
    let log = host.drain_log();
    for component in ["test-subscriber", "second"] {
        assert!(
            log.lines().any(|l| l.contains("delivered")
                && l.contains("id=fan-1")
                && l.contains(&format!("component={component}"))),
            "no delivery of fan-1 to {component}:\n{log}"
        );
    }
}

#[test]
fn a_guest_sees_only_what_its_manifest_grants() {
    // No grants: no environment, no files, a clock stuck at zero.
    let mut host = Host::start(&test_subscriber_manifest(&["probe"], 1, "", ""));
    host.publish("probe", "p-1", "text/plain", "");
    let seen: Value = host.wait_for_json("probe-p-1", Duration::from_secs(10));
    assert_eq!(seen["env"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["root"], Value::Null, "{seen}");
    assert_eq!(seen["data"], Value::Null, "{seen}");
    assert_eq!(seen["wall_clock_secs"], 0, "{seen}");
    drop(host);

    // Grants: one variable, one read-only directory, the clock.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/hello.txt"), "hi from the host").unwrap();
    let manifest = test_subscriber_manifest(
        &["probe"],
        1,
        "clock = true",
        "environment = { GREETING = \"hello\" }\nfiles = [{ source = \"data\", destination = \"/data\" }]",
    );
    let mut host = Host::start_in(dir, &manifest);
    host.publish("probe", "p-2", "text/plain", "");
    let seen: Value = host.wait_for_json("probe-p-2", Duration::from_secs(10));
    assert_eq!(
        seen["env"],
        serde_json::json!([["GREETING", "hello"]]),
        "{seen}"
    );
    assert_eq!(seen["data"], serde_json::json!(["hello.txt"]), "{seen}");
    assert_eq!(seen["hello"], "hi from the host", "{seen}");
    assert_eq!(seen["write_denied"], true, "{seen}");
    assert!(
        seen["wall_clock_secs"].as_u64().unwrap() > 1_700_000_000,
        "{seen}"
    );
}

#[test]
fn match_rules_route_each_event_to_one_component() {
    let mut host = Host::start(&common::routed_manifest());
    common::check_routing(&mut host);
}

#[test]
fn a_guest_publish_carries_the_delivery_trace_context() {
    let mut host = Host::start(&test_subscriber_manifest(
        &["forward", "record-forwarded"],
        3,
        "",
        "",
    ));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = client()
        .post(format!(
            "{}/v1.0/publish/pubsub/forward?metadata.cloudevent.id=t-1&metadata.cloudevent.traceparent={traceparent}",
            host.api_url
        ))
        .header("content-type", "text/plain")
        .body("follow me")
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let record: Value = host.wait_for_json("received-fwd-t-1", Duration::from_secs(10));
    assert_eq!(record["traceparent"], traceparent, "{record}");
    assert_eq!(record["data_hex"], "666f6c6c6f77206d65"); // "follow me"
}

/// Every request on a kept-alive connection answers at once. Without
/// `TCP_NODELAY` on accepted sockets, a component's streamed response left
/// in several small writes and each request after the first waited for the
/// client's delayed ACK: a flat ~40 ms. The bound below is half of that
/// stall, far above what a request costs even in a debug build on a busy
/// machine, so it catches the stall and not noise.
#[test]
fn kept_alive_requests_do_not_stall() {
    let host = Host::start(&orders_manifest());
    // One client, one connection: requests run one after another, so the
    // pool hands the same connection back each time.
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut post = |n: usize| {
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{}/orders", host.url))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"orderId":"ka-{n}","customer":"ada","items":[{{"sku":"book","qty":1,"price":1}}]}}"#
            ))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202);
        response.bytes().unwrap();
        started.elapsed()
    };
    post(0);
    let mut times: Vec<Duration> = (1..=21).map(&mut post).collect();
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "kept-alive POST /orders took {median:?} at the median (all: {times:?}): the delayed-ACK stall is back"
    );
}

#[test]
fn state_values_are_exact_bytes() {
    let mut host = Host::start(&test_subscriber_manifest(&["store"], 5, "", ""));
    common::check_state_is_bytes(&mut host);
}

/// The embedded broker is durable: every publish that was acknowledged
/// survives a `kill -9` and is processed after the restart, and a processed
/// order is still there.
#[test]
fn accepted_messages_survive_a_kill_9_and_are_processed_after_restart() {
    const COUNT: usize = 200;
    // Each delivery takes half a second, so most are still queued at the kill.
    let mut manifest = test_subscriber_manifest(&["slow"], 5, "clock = true", "");
    manifest.push_str(&orders_manifest_tail());
    let mut host = Host::start(&manifest);
    let response = host.post("/orders", "application/json", ORDER);
    assert_eq!(response.status(), 202);
    host.wait_for_state("order-o-1", Duration::from_secs(20), |v| {
        v.contains("processed")
    });
    for i in 0..COUNT {
        host.publish("slow", &format!("k-{i}"), "text/plain", format!("m{i}"));
    }
    host.kill_and_restart();
    host.wait_for_line("delivered again", Duration::from_secs(5));
    for i in 0..COUNT {
        host.wait_for_state(&format!("received-k-{i}"), Duration::from_secs(60), |_| {
            true
        });
    }
    let order: Value = host.get_json("/orders/o-1");
    assert_eq!(order["status"], "processed");
}

/// What the orders app adds to a test manifest: its triggers and components.
fn orders_manifest_tail() -> String {
    let orders = orders_manifest();
    let start = orders
        .find("\n[[trigger.")
        .expect("the orders manifest has triggers");
    orders[start..].to_owned()
}

/// Delivery counts and dead letters survive a restart: a message that
/// always answers RETRY gets exactly `max_attempts` deliveries in all, one
/// before the kill and the rest after, then reaches the dead-letter topic.
#[test]
fn redelivery_counts_survive_a_restart() {
    let manifest = common::poison_manifest(3)
        .replace("initial_backoff_ms = 20", "initial_backoff_ms = 1000")
        .replace("max_backoff_ms = 100", "max_backoff_ms = 1000");
    let mut host = Host::start(&manifest);
    host.publish("poison", "p-1", "text/plain", "never");
    host.wait_for_state("attempts-p-1", Duration::from_secs(10), |v| v == "1");
    // The count is written right after the guest answers, without waiting
    // on the disk; the next delivery is a second away.
    std::thread::sleep(Duration::from_millis(300));
    host.kill_and_restart();
    host.wait_for_state("deadletter-p-1", Duration::from_secs(30), |_| true);
    assert_eq!(host.state("attempts-p-1").as_deref(), Some("3"));
}

/// Two hosts cannot share a data directory: the second is refused at
/// startup with the path, and the first keeps serving.
#[test]
fn a_data_dir_in_use_is_refused_by_name() {
    let host = Host::start(&test_subscriber_manifest(&["record"], 5, "", ""));
    let data_dir = host.dir.path().join("broker-data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .arg("up")
        .arg("--manifest")
        .arg(host.dir.path().join("spin.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("DAPR_HTTP_PORT")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&data_dir.join("embedded.redb").display().to_string())
            && stderr.contains("open in another host-bridge"),
        "{stderr}"
    );
    assert_eq!(host.get("/healthz").status(), 200);
}

/// `max_instances` bounds how many instances of a component run at once:
/// ten deliveries of half a second each, two at a time, cannot all be done
/// in less than two and a half seconds (with no bound, 32 run at once).
#[test]
fn max_instances_bounds_a_components_concurrency() {
    let mut host = Host::start(&test_subscriber_manifest(
        &["slow"],
        5,
        "clock = true\nmax_instances = 2",
        "",
    ));
    let started = std::time::Instant::now();
    for i in 0..10 {
        host.publish("slow", &format!("c-{i}"), "text/plain", "x");
    }
    for i in 0..10 {
        host.wait_for_state(&format!("received-c-{i}"), Duration::from_secs(30), |_| {
            true
        });
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "10 deliveries of 0.5 s took only {took:?}: more than 2 ran at once"
    );
}

/// A component publishes only where its manifest allows: elsewhere its
/// publish fails with `forbidden` (here the guest then answers RETRY), the
/// broker never sees it, and `/metrics` counts it.
#[test]
fn a_publish_the_manifest_does_not_grant_is_forbidden() {
    let manifest = test_subscriber_manifest(&["forward", "record-forwarded"], 2, "", "").replace(
        common::TEST_SUBSCRIBER_PUBLISHES,
        r#"allowed_publish_topics = ["pubsub/elsewhere"]"#,
    );
    let mut host = Host::start(&manifest);
    host.publish("forward", "f-1", "text/plain", "hello");
    // The guest prints the error's Debug form, so its quotes come as `\"`,
    // and the host logs a guest's backslash as `\\`.
    host.wait_for_line(
        r#"may not publish to pubsub/record-forwarded: add \\"pubsub/record-forwarded\\" to allowed_publish_topics in [component.test-subscriber.tool.host-bridge]"#,
        Duration::from_secs(10),
    );
    common::dapr::wait_until(Duration::from_secs(10), "both attempts", || {
        host.metric("host_bridge_publishes_refused_total{reason=\"forbidden\"}") == 2
    });
    assert_eq!(host.state("received-fwd-f-1"), None);
    // Only the test's own publish reached the broker.
    assert_eq!(host.metric("host_bridge_messages_published_total"), 1);
}

#[test]
fn a_cloudevent_pushed_to_a_route_is_delivered_without_the_queues() {
    let host = Host::start(&orders_manifest());
    let event = |id: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"curl","type":"com.dapr.event.sent","datacontenttype":"application/json","topic":"orders","pubsubname":"pubsub","data":{data}}}"#
        )
    };
    let status = |body: String| -> Value {
        let response = host.post("/orders-events", "application/cloudevents+json", body);
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };

    // Answered once the guest has answered: the order is saved by then.
    let order =
        r#"{"orderId":"o-9","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#;
    assert_eq!(status(event("e-9", order))["status"], "SUCCESS");
    let saved: Value = serde_json::from_str(&host.state("order-o-9").unwrap()).unwrap();
    assert_eq!(saved["eventId"], "e-9");
    assert_eq!(saved["total"], 25.0);

    // An order the processor can never handle is answered DROP, and, the
    // caller being in charge of what happens next, nothing is dead-lettered.
    assert_eq!(status(event("e-10", r#"{"orderId":""}"#))["status"], "DROP");
    assert_eq!(host.metric("host_bridge_messages_published_total"), 0);
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"success\"}"),
        1
    );
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"drop\"}"),
        1
    );
}
