//! Components written for other hosts, run unchanged: a Spin Redis-trigger
//! app built with spin-sdk 7 (async `spin:redis/inbound-redis@3.0.0`,
//! `spin:key-value`, `spin:variables`), the same app built with spin-sdk 3
//! for `wasm32-wasip1` (a core module exporting `fermyon:spin/inbound-redis`,
//! with `fermyon:spin/key-value` and `variables`), a WASI messaging handler
//! and a wasmCloud messaging handler. Each runs from its own manifest on the
//! embedded broker and under a real daprd and Redis.

mod common;

use common::dapr::{Backing, DaprApp, wait_until};
use common::{Host, free_port, guests, wasm, workspace};
use serde_json::Value;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(60);

const RETRIES: &str = "host_bridge_deliveries_total{outcome=\"retry\"}";

/// Builds the other hosts' guests once: three components for
/// `wasm32-wasip2` and the spin-sdk 3 app for `wasm32-wasip1`.
fn build_guests() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        guests();
        for (target, packages) in [
            (
                "wasm32-wasip2",
                &[
                    "spin-redis-app",
                    "wasi-messaging-subscriber",
                    "wasmcloud-subscriber",
                ][..],
            ),
            ("wasm32-wasip1", &["legacy-spin-redis"][..]),
        ] {
            let mut command = Command::new(env!("CARGO"));
            command
                .current_dir(workspace())
                .args(["build", "--release", "--target", target]);
            for p in packages {
                command.args(["-p", p]);
            }
            let status = command.status().expect("cannot run cargo");
            assert!(
                status.success(),
                "building {packages:?} for {target} failed"
            );
        }
    });
}

/// A Spin app's own manifest (`handler/{dir}/spin.toml`), unchanged but for
/// its source path made absolute and a short retry policy added.
fn spin_manifest(dir: &str) -> String {
    build_guests();
    let text =
        std::fs::read_to_string(workspace().join("handler").join(dir).join("spin.toml")).unwrap();
    let target = workspace().join("target");
    let text = text.replace(
        "source = \"../../target/",
        &format!("source = \"{}/", target.display()),
    );
    format!("{text}\n{}", fast_retries(3))
}

fn fast_retries(max_attempts: u32) -> String {
    format!(
        "[application.trigger.pubsub]\nmax_attempts = {max_attempts}\ninitial_backoff_ms = 20\nmax_backoff_ms = 100\n"
    )
}

/// What the Spin app (either generation) does, checked through its
/// key-value writes, which land in the state store `statestore`. `prefix`
/// keeps two apps sharing one store apart, and `round` is how many apps
/// have been through this check on that store (the control bodies'
/// counts); `greeting` is the variable's expected value; `dapr` says
/// whether listing keys must fail.
fn check_spin_app(
    host: &mut Host,
    channel: &str,
    prefix: &str,
    greeting: &str,
    dapr: bool,
    round: u32,
) {
    let word = format!("{prefix}world");
    host.publish(channel, &format!("{prefix}1"), "text/plain", word.clone());
    let expected = format!("{greeting}, {word}");
    host.wait_for_state(&format!("msg-{word}"), SLOW, |v| v == expected);
    assert_eq!(host.state(&format!("count-{word}")).as_deref(), Some("1"));

    // The control bodies write fixed keys; their counts show that this
    // app's delivery happened, whatever an earlier app left there.
    let round = round.to_string();
    let mut control = |id: &str, body: &str, key: &str, check: &dyn Fn(&str) -> bool| {
        host.publish(
            channel,
            &format!("{prefix}{id}"),
            "text/plain",
            body.to_owned(),
        );
        host.wait_for_state(&format!("count-{body}"), SLOW, |v| v == round);
        host.wait_for_state(key, SLOW, check)
    };
    // A label the manifest does not grant is access-denied.
    control("2", "denied", "denied", &|v| v.contains("AccessDenied"));
    control("3", "exists", "exists", &|v| v == "true,false");
    let keys = control("4", "keys", "keys", &|_| true);
    if dapr {
        assert!(
            keys.starts_with("error:")
                && keys.contains("Dapr's state API has no call that lists keys"),
            "{keys}"
        );
    } else {
        let keys: Vec<&str> = keys.split(',').collect();
        for key in [format!("msg-{word}").as_str(), "count-keys", "denied"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }
}

/// An `Err` from the handler, and a panic, are RETRY: each is delivered
/// `max_attempts` times (counted by the guest before it fails).
fn check_spin_failures(host: &mut Host, channel: &str, max_attempts: u32) {
    let expected = max_attempts.to_string();
    for body in ["fail", "panic"] {
        host.publish(channel, &format!("f-{body}"), "text/plain", body);
        host.wait_for_state(&format!("count-{body}"), SLOW, |v| v == expected);
    }
    let log = host.drain_log();
    assert!(log.contains("the handler returned an error"), "{log}");
}

fn spin_app_on_the_embedded_broker(dir: &str) {
    let manifest = spin_manifest(dir);
    // SPIN_VARIABLE_GREETING overrides the manifest's default, as in Spin.
    let env = [("SPIN_VARIABLE_GREETING", "bonjour".to_owned())];
    let mut host = Host::start_with(
        tempfile::tempdir().unwrap(),
        &manifest,
        free_port(),
        &env,
        None,
    );
    check_spin_app(&mut host, "messages", "", "bonjour", false, 1);
    check_spin_failures(&mut host, "messages", 3);
    assert!(host.metric(RETRIES) >= 4);
}

#[test]
fn a_spin_sdk_7_redis_app_runs_unchanged_on_the_embedded_broker() {
    spin_app_on_the_embedded_broker("spin-redis-app");
}

#[test]
fn a_spin_sdk_3_wasip1_redis_app_runs_unchanged_on_the_embedded_broker() {
    spin_app_on_the_embedded_broker("legacy-spin-redis");
}

/// A manifest with the WASI messaging handler on `wasi-in`, the wasmCloud
/// handler on `wasmcloud-in` (errors dropped to `wasmcloud-dead`, which
/// the dead-letter component records), and the test subscriber recording
/// what they publish.
fn messaging_manifest(extra: &str) -> String {
    build_guests();
    let mut text = format!(
        r#"spin_manifest_version = 2
[application]
name = "messaging"
{retries}
[[trigger.pubsub]]
component = "wasi-handler"
pubsubname = "pubsub"
topic = "wasi-in"

[[trigger.pubsub]]
component = "wasmcloud-handler"
pubsubname = "pubsub"
topic = "wasmcloud-in"
dead_letter_topic = "wasmcloud-dead"

[component.wasi-handler]
source = "{wasi}"
[component.wasi-handler.tool.host-bridge]
allowed_publish_topics = ["pubsub/record-wasi"]

[component.wasmcloud-handler]
source = "{wasmcloud}"
[component.wasmcloud-handler.tool.host-bridge]
allowed_publish_topics = ["pubsub/record-wasmcloud", "pubsub/record-wasmcloud-request"]
on_error = "drop"

[[trigger.pubsub]]
component = "dead-letter"
pubsubname = "pubsub"
topic = "wasmcloud-dead"

[component.dead-letter]
source = "{dead_letter}"

[component.test-subscriber]
source = "{recorder}"
{extra}
"#,
        dead_letter = wasm("dead_letter"),
        retries = fast_retries(3),
        wasi = wasm("wasi_messaging_subscriber"),
        wasmcloud = wasm("wasmcloud_subscriber"),
        recorder = wasm("test_subscriber"),
    );
    for topic in [
        "record-wasi",
        "record-wasmcloud",
        "record-wasmcloud-request",
    ] {
        text.push_str(&format!(
            "[[trigger.pubsub]]\ncomponent = \"test-subscriber\"\npubsubname = \"pubsub\"\ntopic = \"{topic}\"\n"
        ));
    }
    text
}

/// The data of the last event the test subscriber recorded on `topic`.
fn recorded(host: &mut Host, topic: &str, check: impl Fn(&Value) -> bool) -> (Value, Value) {
    let key = format!("last-{topic}");
    let mut last = (Value::Null, Value::Null);
    wait_until(SLOW, &format!("a record on {topic}"), || {
        let Some(text) = host.state(&key) else {
            return false;
        };
        let record: Value = serde_json::from_str(&text).unwrap();
        let hex = record["data_hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let data = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let ok = check(&data);
        last = (record, data);
        ok
    });
    last
}

fn check_messaging(host: &mut Host) {
    // WASI messaging: the guest reads the topic, content type, data and the
    // CloudEvent attributes as metadata, and sends a message of its own.
    host.publish("wasi-in", "w-1", "text/plain", "hello");
    let (record, data) = recorded(host, "record-wasi", |d| d["data"] == "hello");
    assert_eq!(data["topic"], "wasi-in", "{data}");
    assert_eq!(data["content_type"], "text/plain", "{data}");
    assert_eq!(data["metadata"]["id"], "w-1", "{data}");
    assert_eq!(data["metadata"]["pubsubname"], "pubsub", "{data}");
    assert_eq!(record["datacontenttype"], "application/json", "{record}");

    // wasmCloud: the subject is the topic, the body the data; a publish
    // goes to the subject as a topic of `pubsub`.
    host.publish("wasmcloud-in", "c-1", "text/plain", "hi");
    let (_, data) = recorded(host, "record-wasmcloud", |d| d["body"] == "hi");
    assert_eq!(data["subject"], "wasmcloud-in", "{data}");
    assert_eq!(data["reply_to"], Value::Null, "{data}");

    // `request` has no Dapr counterpart, and says so.
    host.publish("wasmcloud-in", "c-2", "text/plain", "request");
    let (_, data) = recorded(host, "record-wasmcloud-request", |_| true);
    let text = data.as_str().unwrap_or_default();
    assert!(
        text.contains("Dapr's pub/sub has no request-reply"),
        "{data}"
    );

    // on_error = "drop": the wasmCloud handler's Err dead-letters at once
    // (the event keeps its id and its original topic).
    let retries = host.metric(RETRIES);
    host.publish("wasmcloud-in", "c-fail", "text/plain", "fail");
    let record = host.wait_for_state("deadletter-c-fail", SLOW, |_| true);
    assert!(record.contains("fail"), "{record}");
    assert_eq!(host.metric(RETRIES), retries, "dropped, not retried");
    assert!(host.metric("host_bridge_deliveries_total{outcome=\"drop\"}") >= 1);
}

#[test]
fn wasi_messaging_and_wasmcloud_handlers_on_the_embedded_broker() {
    let mut host = Host::start(&messaging_manifest(""));
    check_messaging(&mut host);

    // on_error defaults to RETRY: the WASI handler's Err is redelivered.
    let retries = host.metric(RETRIES);
    host.publish("wasi-in", "w-fail", "text/plain", "fail");
    wait_until(SLOW, "three attempts of w-fail", || {
        host.metric(RETRIES) >= retries + 3
    });
    // A trap is RETRY, whatever on_error says (DROP here).
    host.publish("wasmcloud-in", "c-panic", "text/plain", "panic");
    wait_until(SLOW, "three attempts of c-panic", || {
        host.metric(RETRIES) >= retries + 6
    });
    let log = host.drain_log();
    assert!(
        log.contains("the guest failed, so the delivery counts as RETRY")
            && log.contains("id=c-panic"),
        "{log}"
    );
}

#[test]
fn every_world_under_daprd_and_redis() {
    build_guests();
    let backing = Backing::start();
    let target = workspace().join("target");
    // One app: both Spin apps (on their own channels), both messaging
    // handlers and the recorder.
    let mut manifest = messaging_manifest("[variables]\ngreeting = { default = \"hello\" }\n");
    manifest.push_str(&format!(
        r#"
[[trigger.redis]]
channel = "messages"
component = "spin-app"

[[trigger.redis]]
channel = "legacy-messages"
component = "legacy-spin-app"

[component.spin-app]
source = "{target}/wasm32-wasip2/release/spin_redis_app.wasm"
key_value_stores = ["default"]
[component.spin-app.variables]
greeting = "{{{{ greeting }}}}"

[component.legacy-spin-app]
source = "{target}/wasm32-wasip1/release/legacy_spin_redis.wasm"
key_value_stores = ["default"]
[component.legacy-spin-app.variables]
greeting = "{{{{ greeting }}}} from spin-sdk 3"
"#,
        target = target.display()
    ));
    let mut app = DaprApp::start(
        "other-hosts",
        &manifest,
        &backing.resources,
        &[
            "messages",
            "legacy-messages",
            "wasi-in",
            "wasmcloud-in",
            "record-wasi",
        ],
    );
    check_messaging(&mut app.host);
    check_spin_app(&mut app.host, "messages", "", "hello", true, 1);
    check_spin_app(
        &mut app.host,
        "legacy-messages",
        "legacy-",
        "hello from spin-sdk 3",
        true,
        2,
    );
}

fn up_fails(manifest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "-f",
        ])
        .arg(&path)
        .env_remove("DAPR_HTTP_PORT")
        .env_remove("DAPR_GRPC_PORT")
        .env_remove("SPIN_VARIABLE_API_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success(), "up should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_required_variable_without_a_value_stops_startup_naming_it() {
    // The Spin app's manifest, with its greeting made of a required
    // variable that nothing sets.
    let manifest = spin_manifest("spin-redis-app")
        .replace(
            "greeting = { default = \"hello\" }",
            "api_key = { required = true }",
        )
        .replace("{{ greeting }}", "{{ api_key }}");
    let stderr = up_fails(&manifest);
    assert!(
        stderr
            .contains("[variables] api_key: required, but has no value; set SPIN_VARIABLE_API_KEY"),
        "{stderr}"
    );
}

#[test]
fn an_import_host_bridge_does_not_provide_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A component importing Spin's SQLite API, which host-bridge does not
    // provide, in the text format wasmtime also reads.
    let wasm = dir.path().join("sqlite-user.wasm");
    std::fs::write(
        &wasm,
        r#"(component
             (import "spin:sqlite/sqlite@3.1.0" (instance (export "open" (func))))
           )"#,
    )
    .unwrap();
    let manifest = format!(
        "spin_manifest_version = 2\n[application]\nname = \"t\"\n[[trigger.pubsub]]\ncomponent = \"user\"\npubsubname = \"pubsub\"\ntopic = \"t\"\n[component.user]\nsource = \"{}\"\n",
        wasm.display()
    );
    let stderr = up_fails(&manifest);
    assert!(
        stderr.contains("component `user`")
            && stderr
                .contains("imports `spin:sqlite/sqlite@3.1.0`, which host-bridge does not provide")
            && stderr.contains("spin:key-value/key-value@3.0.0"),
        "{stderr}"
    );
}

#[test]
fn the_spin_apps_own_manifest_runs_unchanged_under_daprd_and_redis() {
    let backing = Backing::start();
    let mut app = DaprApp::start(
        "spin-redis-app",
        &spin_manifest("spin-redis-app"),
        &backing.resources,
        &["messages"],
    );
    check_spin_app(&mut app.host, "messages", "", "hello", true, 1);
}
