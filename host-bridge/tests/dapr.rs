//! End to end under Dapr: a real daprd (built from Go modules by
//! `scripts/install-dapr.sh`) and a real Redis, with host-bridge as the app.
//! Publishes go to daprd's HTTP API, never to host-bridge directly.

mod common;

use common::dapr::{Backing, DaprApp, Redis, resources, wait_until};
use common::scenarios::{self, TOPICS, hex, subscriber_manifest};
use common::{client, orders_manifest};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn the_orders_app_runs_under_daprd_and_redis() {
    scenarios::the_orders_app_runs(&Backing::start());
}

#[test]
fn payloads_arrive_byte_for_byte_whatever_their_content_type() {
    let backing = Backing::start();
    let mut app = DaprApp::start(
        "contents",
        &subscriber_manifest(),
        &backing.resources,
        TOPICS,
    );
    scenarios::payloads_arrive_byte_for_byte(&mut app);
}

#[test]
fn a_raw_payload_subscription_gets_the_raw_bytes() {
    let backing = Backing::start();
    let mut app = DaprApp::start("raw", &subscriber_manifest(), &backing.resources, TOPICS);
    let payload: Vec<u8> = vec![0, 1, 2, 255, b'{', b'x'];
    let response = client()
        .post(format!(
            "{}/v1.0/publish/pubsub/record-raw?metadata.rawPayload=true",
            app.daprd.url
        ))
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let record: Value = app
        .host
        .wait_for_json("last-record-raw", Duration::from_secs(30));
    assert_eq!(record["data_hex"], hex(&payload), "{record}");
}

#[test]
fn retry_is_redelivered_and_drop_is_dead_lettered_by_daprd() {
    let backing = Backing::start();
    let mut app = DaprApp::start(
        "retries",
        &subscriber_manifest(),
        &backing.resources,
        TOPICS,
    );
    scenarios::retry_is_redelivered_and_drop_is_dead_lettered(&mut app, true);
    scenarios::traps_and_loops_are_retried_then_dead_lettered(&mut app);
}

#[test]
fn bulk_deliveries_come_in_batches_and_retry_only_the_failed_entry() {
    let backing = Backing::start();
    let mut app = DaprApp::start("bulk", &subscriber_manifest(), &backing.resources, TOPICS);
    scenarios::bulk_deliveries_come_in_batches(&mut app, true);
}

#[test]
fn two_replicas_share_the_work_and_lose_nothing() {
    scenarios::two_replicas_share_the_work(&Backing::start(), "replicated");
}

#[test]
fn tokens_are_required_in_both_directions() {
    let backing = Backing::start();
    let env = [
        ("APP_API_TOKEN", "app-secret".to_owned()),
        ("DAPR_API_TOKEN", "sidecar-secret".to_owned()),
    ];
    // daprd only subscribes the app if its calls carry APP_API_TOKEN...
    let mut app = DaprApp::start_with_env(
        "tokens",
        &orders_manifest(),
        &backing.resources,
        &["orders"],
        &env,
    );
    // ...and host-bridge refuses every other caller, except on /healthz.
    assert_eq!(app.host.get("/healthz").status(), 200);
    assert_eq!(app.host.get("/orders/t-1").status(), 401);
    assert_eq!(app.host.get("/dapr/subscribe").status(), 401);
    assert_eq!(
        app.host.get_with_token("/orders/t-1", "wrong").status(),
        401
    );
    assert_eq!(
        app.host
            .get_with_token("/orders/t-1", "app-secret")
            .status(),
        404
    );
    // The guest's publish reaches daprd only because host-bridge sends DAPR_API_TOKEN.
    let response = client()
        .post(format!("{}/orders", app.host.url))
        .header("dapr-api-token", "app-secret")
        .header("content-type", "application/json")
        .body(r#"{"orderId":"t-1","customer":"ada","items":[{"sku":"a","qty":1,"price":2}]}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_until(Duration::from_secs(30), "the order to be processed", || {
        app.host
            .get_with_token("/orders/t-1", "app-secret")
            .status()
            == 200
    });
    let _ = app.host.drain_log();
}

#[test]
fn the_official_python_sdk_publishes_to_a_wasm_subscriber() {
    let backing = Backing::start();
    let mut app = DaprApp::start("python", &subscriber_manifest(), &backing.resources, TOPICS);
    let script = r#"
from dapr.clients import DaprClient
with DaprClient() as client:
    client.publish_event(pubsub_name="pubsub", topic_name="record-py", data=b"hello from python", data_content_type="text/plain")
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .env("DAPR_GRPC_PORT", app.daprd.grpc_port.to_string())
        .env("DAPR_HTTP_PORT", app.daprd.http_port.to_string())
        .output()
        .expect("cannot run python3");
    assert!(
        output.status.success(),
        "the Dapr Python SDK failed (make test installs it with pip):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let record: Value = app
        .host
        .wait_for_json("last-record-py", Duration::from_secs(30));
    assert_eq!(record["data_hex"], hex(b"hello from python"), "{record}");
}

/// The README's command, literally (with free ports): `dapr run --app-id
/// orders --app-port P --resources-path ./components -- host-bridge up`.
#[test]
fn the_documented_dapr_run_command_serves_the_orders_app() {
    use std::os::unix::process::CommandExt as _;
    // The README's command carries the same app health check flags as this test.
    let readme = std::fs::read_to_string(common::workspace().join("README.md")).unwrap();
    let flags = common::dapr::APP_HEALTH_FLAGS;
    for documented in [flags[..3].join(" "), flags[3..].join(" ")] {
        assert!(
            readme.contains(&documented),
            "the README's dapr run command lacks `{documented}`"
        );
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    resources(dir.path(), &redis);
    std::fs::write(dir.path().join("spin.toml"), orders_manifest()).unwrap();
    let (app_port, http_port) = (common::free_port(), common::free_port());
    let dapr = std::env::var("DAPR_CLI").unwrap_or_else(|_| "dapr".into());
    let log = std::fs::File::create(dir.path().join("dapr-run.log")).unwrap();
    let _log_entry = common::logs::register("dapr run", &dir.path().join("dapr-run.log"));
    let child = std::process::Command::new(&dapr)
        .current_dir(dir.path())
        .args([
            "run",
            "--app-id",
            "orders",
            "--app-port",
            &app_port.to_string(),
        ])
        .args(["--resources-path", "./components"])
        .args(common::dapr::APP_HEALTH_FLAGS)
        .args([
            "--dapr-http-port",
            &http_port.to_string(),
            "--dapr-grpc-port",
            &common::free_port().to_string(),
            "--dapr-internal-grpc-port",
            &common::free_port().to_string(),
            "--metrics-port",
            &common::free_port().to_string(),
        ])
        .args(["--placement-host-address", ""])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_host-bridge"))
        .args(["up", "--cache-dir"])
        .arg(common::workspace().join("target/host-bridge-test-cache"))
        .env_remove("DAPR_HTTP_PORT")
        .env_remove("APP_PORT")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{dapr}` (make test installs the Dapr CLI): {e}"));
    let _group = ProcessGroup(child);
    let app = format!("http://127.0.0.1:{app_port}");
    let run_log = || std::fs::read_to_string(dir.path().join("dapr-run.log")).unwrap_or_default();
    wait_until(
        Duration::from_secs(90),
        "the app to be healthy under dapr run",
        || {
            client()
                .get(format!("{app}/healthz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        },
    );
    let metadata = format!("http://127.0.0.1:{http_port}/v1.0/metadata");
    wait_until(
        Duration::from_secs(60),
        "daprd to subscribe the app",
        || {
            client()
                .get(&metadata)
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|m| {
                    m["subscriptions"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["topic"] == "orders"))
                })
        },
    );
    let response = client()
        .post(format!("{app}/orders"))
        .header("content-type", "application/json")
        .body(
            r#"{"orderId":"run-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#,
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 202, "{}", run_log());
    wait_until(Duration::from_secs(30), "the order to be processed", || {
        client()
            .get(format!("{app}/orders/run-1"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let order: Value = client()
        .get(format!("{app}/orders/run-1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(order["total"], 25.0);
    assert!(
        run_log().contains("broker: dapr"),
        "host-bridge did not pick the Dapr backend:\n{}",
        run_log()
    );
}

/// Kills a whole process group (the Dapr CLI, its daprd and the app) on drop.
struct ProcessGroup(std::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn match_rules_become_dapr_routes() {
    let backing = Backing::start();
    let mut app = DaprApp::start(
        "routed",
        &common::routed_manifest(),
        &backing.resources,
        &["record-routed"],
    );
    let subscribe = app.host.get_json("/dapr/subscribe");
    assert_eq!(
        subscribe,
        json!([{
            "pubsubname": "pubsub", "topic": "record-routed", "metadata": {},
            "routes": {"rules": [{"match": "event.type == \"widget\"", "path": "/widgets"}], "default": "/others"}
        }])
    );
    common::check_routing(&mut app.host);
}

#[test]
fn a_publish_before_the_sidecar_is_ready_fails_clearly_after_its_bound() {
    // Nothing listens on this "sidecar" port.
    let sidecar_port = common::free_port();
    let host = common::Host::start_with(
        tempfile::tempdir().unwrap(),
        &orders_manifest(),
        common::free_port(),
        &[
            ("DAPR_HTTP_PORT", sidecar_port.to_string()),
            ("HOST_BRIDGE_DAPR_READY_TIMEOUT", "2".to_owned()),
        ],
        None,
    );
    let started = std::time::Instant::now();
    let response = host.post(
        "/orders",
        "application/json",
        r#"{"orderId":"early","customer":"ada","items":[{"sku":"a","qty":1,"price":1}]}"#,
    );
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("127.0.0.1:{sidecar_port}"))
            && error.contains("not ready within 2s"),
        "{error}"
    );
    // It waited for the sidecar (with backoff) up to the bound, not longer.
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

/// Over daprd's gRPC state API, a guest's state is its exact bytes.
#[test]
fn state_values_are_exact_bytes_under_dapr() {
    let backing = Backing::start();
    let mut app = DaprApp::start("bytes", &subscriber_manifest(), &backing.resources, TOPICS);
    common::check_state_is_bytes(&mut app.host);
}
