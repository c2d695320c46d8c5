//! The embedded broker's sidecar API is not on the app's port.
//!
//! It takes any topic and any key: on the port that serves `/orders`, it
//! let anyone who could place an order also publish to a topic no
//! component is granted, forge an order past `order-api`'s checks, and
//! read any key of any store. Now it has its own listener
//! (`--sidecar-listen`, loopback), behind `DAPR_API_TOKEN` when set.

use crate::common::{Host, client, free_port, orders_manifest};
use std::time::Duration;

/// Row 1: a publish to a topic no component is granted, on the app's port.
#[test]
fn the_apps_port_does_not_publish_to_any_topic() {
    let host = Host::start(&orders_manifest());
    let on_app_port = client()
        .post(format!(
            "{}/v1.0/publish/pubsub/not-granted-topic",
            host.url
        ))
        .header("content-type", "application/json")
        .body(r#"{"x":1}"#)
        .send()
        .unwrap();
    assert_eq!(on_app_port.status(), 404, "the app's port published");
    let bulk = client()
        .post(format!(
            "{}/v1.0-alpha1/publish/bulk/pubsub/not-granted-topic",
            host.url
        ))
        .body(r#"[{"entryId":"1","event":"x","contentType":"text/plain"}]"#)
        .send()
        .unwrap();
    assert_eq!(bulk.status(), 404, "the app's port bulk-published");
    // The same call on the sidecar API, where it belongs, is taken.
    let on_sidecar = client()
        .post(format!(
            "{}/v1.0/publish/pubsub/not-granted-topic",
            host.api_url
        ))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(on_sidecar.status(), 204);
}

/// Row 2: a forged order published and its state read back, on the app's port.
#[test]
fn the_apps_port_neither_takes_forged_orders_nor_reads_state() {
    let host = Host::start(&orders_manifest());
    let forged =
        r#"{"orderId":"evil","customer":"mallory","items":[{"sku":"x","qty":1,"price":-1000}]}"#;
    let published = client()
        .post(format!("{}/v1.0/publish/pubsub/orders", host.url))
        .header("content-type", "application/json")
        .body(forged)
        .send()
        .unwrap();
    assert_eq!(
        published.status(),
        404,
        "the app's port took a forged order"
    );
    for (method, path) in [
        (reqwest::Method::GET, "/v1.0/state/statestore/order-evil"),
        (reqwest::Method::DELETE, "/v1.0/state/statestore/order-evil"),
        (reqwest::Method::POST, "/v1.0/state/statestore"),
    ] {
        let answer = client()
            .request(method.clone(), format!("{}{path}", host.url))
            .body(r#"[{"key":"order-evil","value":{"forged":true}}]"#)
            .send()
            .unwrap();
        assert_eq!(answer.status(), 404, "{method} {path} on the app's port");
    }
    // Nothing reached the store through the app's port.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(host.state("order-evil"), None);
}

/// The sidecar API serves what daprd's does, state included, on its own port.
#[test]
fn the_sidecar_api_saves_reads_and_deletes_state() {
    let host = Host::start(&orders_manifest());
    let saved = client()
        .post(format!("{}/v1.0/state/statestore", host.api_url))
        .body(r#"[{"key":"k-1","value":{"a":1}},{"key":"k-2","value":"text"}]"#)
        .send()
        .unwrap();
    assert_eq!(saved.status(), 204);
    assert_eq!(host.state("k-1").as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(host.state("k-2").as_deref(), Some(r#""text""#));
    let deleted = client()
        .delete(format!("{}/v1.0/state/statestore/k-1", host.api_url))
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(host.state("k-1"), None);
    let health = client()
        .get(format!("{}/v1.0/healthz", host.api_url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 204);
}

/// With `DAPR_API_TOKEN` set, the sidecar API wants it, as daprd does; its
/// health check does not.
#[test]
fn the_sidecar_api_requires_dapr_api_token_when_set() {
    let token = "sidecar-token-for-tests".to_owned();
    let host = Host::start_with(
        tempfile::tempdir().unwrap(),
        &orders_manifest(),
        free_port(),
        &[("DAPR_API_TOKEN", token.clone())],
        None,
    );
    let url = format!("{}/v1.0/publish/pubsub/orders", host.api_url);
    let order =
        r#"{"orderId":"t-1","customer":"ada","items":[{"sku":"book","qty":1,"price":1.0}]}"#;
    let without = client().post(&url).body(order).send().unwrap();
    assert_eq!(without.status(), 401);
    let wrong = client()
        .post(&url)
        .header("dapr-api-token", "not-it")
        .body(order)
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let state = client()
        .get(format!("{}/v1.0/state/statestore/order-t-1", host.api_url))
        .send()
        .unwrap();
    assert_eq!(state.status(), 401);
    let health = client()
        .get(format!("{}/v1.0/healthz", host.api_url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 204);
    let with = client()
        .post(&url)
        .header("dapr-api-token", &token)
        .header("content-type", "application/json")
        .body(order)
        .send()
        .unwrap();
    assert_eq!(with.status(), 204);
    // host.state carries the token (the harness reads DAPR_API_TOKEN).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while host.state("order-t-1").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the order published with the token was never processed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
