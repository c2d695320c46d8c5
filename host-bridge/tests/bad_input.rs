//! Bad input at every door, against a real `host-bridge up`: each gets the
//! answer Dapr's semantics call for, with a log line saying why, and the host
//! keeps serving.
//!
//! Deliveries are posted the way daprd posts them, to a host in Dapr mode
//! whose sidecar is not running: a malformed delivery never reaches a guest,
//! so no sidecar is needed to judge it. DROP (which daprd dead-letters) is
//! the answer only for what can never be processed.

mod common;

use common::{Host, client, free_port, test_subscriber_manifest};
use serde_json::{Value, json};
use std::time::Duration;

/// A host in Dapr mode with single (`relay`) and bulk (`relay-bulk`)
/// subscriptions, and no sidecar behind it.
fn dapr_mode_host(extra_env: &[(&'static str, String)]) -> Host {
    let manifest = test_subscriber_manifest(&["relay", "relay-bulk"], 5, "", "").replace(
        "topic = \"relay-bulk\"\n",
        "topic = \"relay-bulk\"\nbulk_subscribe = { max_messages_count = 10, max_await_duration_ms = 100 }\n",
    );
    let mut env = vec![
        ("DAPR_HTTP_PORT", free_port().to_string()),
        ("DAPR_GRPC_PORT", free_port().to_string()),
        ("HOST_BRIDGE_DAPR_READY_TIMEOUT", "1".to_owned()),
    ];
    env.extend(extra_env.iter().cloned());
    Host::start_with(
        tempfile::tempdir().unwrap(),
        &manifest,
        free_port(),
        &env,
        None,
    )
}

fn deliver(
    host: &Host,
    route: &str,
    content_type: &str,
    body: impl Into<reqwest::blocking::Body>,
) -> (u16, Value) {
    let response = client()
        .post(format!("{}{route}", host.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

const SINGLE: &str = "/dapr/pubsub/pubsub/relay";
const BULK: &str = "/dapr/pubsub/pubsub/relay-bulk";
const CE: &str = "application/cloudevents+json";

#[test]
fn malformed_deliveries_are_dropped_with_a_reason_and_the_host_keeps_serving() {
    let mut host = dapr_mode_host(&[]);
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let deep_attribute = format!(r#"{{"id":"deep","specversion":"1.0","subject":{nested}}}"#);
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            CE,
            br#"{"id": "m-1", "data": "#.to_vec(),
            "not a CloudEvent",
        ),
        (
            "wrong field type",
            CE,
            br#"{"id": 5, "specversion": "1.0"}"#.to_vec(),
            "`id` must be a string",
        ),
        (
            "no id",
            CE,
            br#"{"specversion": "1.0", "data": "x"}"#.to_vec(),
            "has no `id`",
        ),
        (
            "unknown specversion",
            CE,
            br#"{"id": "v-1", "specversion": "0.3"}"#.to_vec(),
            "specversion \"0.3\"",
        ),
        (
            "bad data_base64",
            CE,
            br#"{"id": "b-1", "specversion": "1.0", "data_base64": "%%%"}"#.to_vec(),
            "not valid base64",
        ),
        (
            "invalid UTF-8",
            CE,
            b"{\"id\": \"\xff\xfe\"}".to_vec(),
            "not a CloudEvent",
        ),
        (
            "deep nesting where a string belongs",
            CE,
            deep_attribute.into_bytes(),
            "`subject` must be a string",
        ),
        (
            "wrong content type",
            "text/plain",
            b"hello".to_vec(),
            "content_type=text/plain",
        ),
        ("empty body", CE, Vec::new(), "not a CloudEvent"),
    ];
    for (what, content_type, body, logged) in cases {
        let (status, reply) = deliver(&host, SINGLE, content_type, body);
        assert_eq!(
            (status, &reply),
            (200, &json!({"status": "DROP"})),
            "{what}"
        );
        host.wait_for_line(logged, Duration::from_secs(5));
    }
    // Deeply nested data is valid JSON, and opaque to the host: it reaches
    // the guest (whose publish fails here, with no sidecar: RETRY).
    let deep_data = format!(r#"{{"id":"deep-data","specversion":"1.0","data":{nested}}}"#);
    let (status, reply) = deliver(&host, SINGLE, CE, deep_data);
    assert_eq!((status, reply), (200, json!({"status": "RETRY"})));
    // A route no subscription has: 404, which daprd treats as a drop.
    let (status, _) = deliver(&host, "/dapr/pubsub/pubsub/nobody", CE, "{}");
    assert_eq!(status, 404);
    let (status, _) = deliver(&host, "/no/such/route", CE, "{}");
    assert_eq!(status, 404);
    // Only the deeply nested data reached a guest, and the host is fine.
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"retry\"}"),
        1
    );
    assert_eq!(host.get("/healthz").status(), 200);
    assert!(host.is_running());
}

#[test]
fn bulk_envelopes_empty_or_with_repeated_ids_are_answered_once_per_entry() {
    let mut host = dapr_mode_host(&[]);
    let bulk = |entries: Value| {
        json!({"id": "batch", "type": "com.dapr.event.sent.bulk", "topic": "relay-bulk",
               "pubsubname": "pubsub", "metadata": {}, "entries": entries})
        .to_string()
    };
    let (status, reply) = deliver(&host, BULK, "application/json", bulk(json!([])));
    assert_eq!((status, reply), (200, json!({"statuses": []})));

    let event = |id: &str| json!({"id": id, "specversion": "1.0", "datacontenttype": "text/plain", "data": "x"});
    let entries = json!([
        {"entryId": "same", "event": event("e-1"), "contentType": "text/plain"},
        {"entryId": "same", "event": {"id": 7}, "contentType": "text/plain"},
        {"entryId": "bad", "event": {"specversion": "1.0"}, "contentType": "text/plain"},
    ]);
    let (status, reply) = deliver(&host, BULK, "application/json", bulk(entries));
    assert_eq!(status, 200);
    // `same`: the valid copy's guest could not publish (no sidecar): RETRY
    // wins over the malformed copy's DROP. `bad` has no id: DROP.
    assert_eq!(
        reply,
        json!({"statuses": [{"entryId": "same", "status": "RETRY"}, {"entryId": "bad", "status": "DROP"}]})
    );
    host.wait_for_line("repeats an entryId", Duration::from_secs(5));
}

#[test]
fn bodies_over_the_limit_are_refused_unread_everywhere() {
    // A delivery over the limit can never be read: DROP, so daprd
    // dead-letters it (a 413 would be retried, then acked and lost).
    let mut host = dapr_mode_host(&[("HOST_BRIDGE_MAX_BODY_SIZE", "64Ki".to_owned())]);
    let big = vec![b'x'; 65 * 1024];
    let (status, reply) = deliver(&host, SINGLE, CE, big.clone());
    assert_eq!((status, reply), (200, json!({"status": "DROP"})));
    host.wait_for_line("over --max-body-size (65536 bytes)", Duration::from_secs(5));
    assert_eq!(host.metric("host_bridge_bodies_too_large_total"), 1);

    // On the embedded broker: the sidecar API and the HTTP trigger answer 413,
    // whether the length is declared or the body is chunked.
    let env = [("HOST_BRIDGE_MAX_BODY_SIZE", "64Ki".to_owned())];
    let host = Host::start_with(
        tempfile::tempdir().unwrap(),
        &common::orders_manifest(),
        free_port(),
        &env,
        None,
    );
    let publish = format!("{}/v1.0/publish/pubsub/orders", host.api_url);
    let declared = client().post(&publish).body(big.clone()).send().unwrap();
    assert_eq!(declared.status(), 413);
    // The rest of the body is still on the wire: the connection closes, and
    // says so, so the client does not send its next request on it.
    assert_eq!(declared.headers()["connection"], "close");
    let body: Value = declared.json().unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("65536 bytes"),
        "{body}"
    );
    let chunked = client()
        .post(&publish)
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            big.clone(),
        )))
        .send()
        .unwrap();
    assert_eq!(chunked.status(), 413);
    let order = client()
        .post(format!("{}/orders", host.url))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(order.status(), 413);
    // Under the limit, all is as usual; nothing over it was published.
    let small = client().post(&publish).body("hello").send().unwrap();
    assert_eq!(small.status(), 204);
    assert_eq!(host.metric("host_bridge_bodies_too_large_total"), 3);
    assert_eq!(host.metric("host_bridge_messages_published_total"), 1);
}

#[test]
fn a_full_embedded_queue_refuses_publishes_with_503_and_counts_them() {
    // One slot, and a subscriber that takes half a second per message.
    let manifest = test_subscriber_manifest(&["slow"], 5, "clock = true", "").replace(
        "max_backoff_ms = 100\n",
        "max_backoff_ms = 100\nmax_queued = 1\n",
    );
    let host = Host::start(&manifest);
    let publish = |id: &str| {
        client()
            .post(format!(
                "{}/v1.0/publish/pubsub/slow?metadata.cloudevent.id={id}",
                host.api_url
            ))
            .body("x")
            .send()
            .unwrap()
    };
    let answers: Vec<(u16, String)> = (0..40)
        .map(|i| {
            let response = publish(&format!("q-{i}"));
            (response.status().as_u16(), response.text().unwrap())
        })
        .collect();
    let refused: Vec<&String> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, body)| body)
        .collect();
    assert!(
        answers.iter().any(|(status, _)| *status == 204) && !refused.is_empty(),
        "{answers:?}"
    );
    assert!(refused[0].contains("is full"), "{}", refused[0]);
    assert_eq!(
        host.metric("host_bridge_publishes_refused_total{reason=\"queue_full\"}"),
        refused.len() as u64
    );
}
