//! Manifest parsing, with good and bad input. Every error must name the
//! file, the table and the key, so each case checks all three.

use super::*;
use std::fs;

const GOOD: &str = r#"
spin_manifest_version = 2

[application]
name = "orders"
version = "0.1.0"

[application.trigger.pubsub]
max_attempts = 3
initial_backoff_ms = 10
max_backoff_ms = 100

[[trigger.http]]
route = "/orders/..."
component = "order-api"

[[trigger.pubsub]]
component = "order-processor"
pubsubname = "pubsub"
topic = "orders"
dead_letter_topic = "orders-dead"
metadata = { rawPayload = "true" }
bulk_subscribe = { max_messages_count = 10 }

[component.order-api]
source = "api.wasm"
allowed_outbound_hosts = ["https://example.com"]
environment = { GREETING = "hi" }
files = [{ source = "static", destination = "/static" }]
[component.order-api.build]
command = "make api"

[component.order-processor]
source = "processor.wasm"
[component.order-processor.tool.host-bridge]
clock = true
timeout_ms = 500
max_memory_mb = 16
instance_reuse = 100
[component.order-processor.tool.other-tool]
anything = "goes"
"#;

/// A directory holding `spin.toml` with `text`, the `static` folder and,
/// when `with_wasm`, the two `.wasm` files.
fn app(text: &str, with_wasm: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("static")).unwrap();
    if with_wasm {
        fs::write(dir.path().join("api.wasm"), b"").unwrap();
        fs::write(dir.path().join("processor.wasm"), b"").unwrap();
    }
    let path = dir.path().join("spin.toml");
    fs::write(&path, text).unwrap();
    (dir, path)
}

fn load_err(text: &str) -> String {
    let (_dir, path) = app(text, true);
    let err = Manifest::load(&path)
        .expect_err("the manifest should be rejected")
        .to_string();
    assert!(
        err.contains("spin.toml"),
        "the error must name the file: {err}"
    );
    err
}

#[test]
fn loads_a_full_manifest() {
    let (dir, path) = app(GOOD, true);
    let m = Manifest::load(&path).unwrap();
    m.check_sources().unwrap();
    assert_eq!(m.application.name, "orders");
    assert_eq!(m.application.delivery.max_attempts, 3);
    assert_eq!(
        m.application.delivery.initial_backoff,
        Duration::from_millis(10)
    );
    assert_eq!(m.http_triggers[0].route.as_str(), "/orders/...");
    let sub = &m.pubsub_triggers[0];
    assert_eq!(sub.route, "/dapr/pubsub/pubsub/orders");
    assert_eq!(sub.dead_letter_topic.as_deref(), Some("orders-dead"));
    assert_eq!(sub.metadata["rawPayload"], "true");
    assert_eq!(sub.bulk_subscribe.unwrap().max_messages_count, 10);
    assert_eq!(sub.bulk_subscribe.unwrap().max_await_duration_ms, 1000);
    let api = &m.components["order-api"];
    assert_eq!(api.source, dir.path().join("api.wasm"));
    assert_eq!(api.build.as_ref().unwrap().workdir, dir.path());
    assert_eq!(api.files[0].destination, "/static");
    assert_eq!(api.environment["GREETING"], "hi");
    assert!(!api.sandbox.clock);
    assert_eq!(
        api.sandbox.instance_reuse, 1,
        "a fresh instance per call by default"
    );
    let processor = &m.components["order-processor"];
    assert!(processor.sandbox.clock);
    assert_eq!(processor.sandbox.timeout, Duration::from_millis(500));
    assert_eq!(processor.sandbox.max_memory, 16 << 20);
    assert_eq!(processor.sandbox.instance_reuse, 100);
}

#[test]
fn instance_reuse_of_zero_is_refused_by_name() {
    let err = load_err(&GOOD.replace("instance_reuse = 100", "instance_reuse = 0"));
    assert!(
        err.contains(
            "[component.order-processor].tool.host-bridge instance_reuse: must be at least 1"
        ),
        "{err}"
    );
}

#[test]
fn instance_reuse_is_taken_for_an_http_component_too() {
    let text = GOOD.replace(
        "[component.order-api.build]",
        "[component.order-api.tool.host-bridge]\ninstance_reuse = 50\nmax_instances = 3\n[component.order-api.build]",
    );
    let (_dir, path) = app(&text, true);
    let m = Manifest::load(&path).unwrap();
    let api = &m.components["order-api"].sandbox;
    assert_eq!(api.instance_reuse, 50);
    assert_eq!(api.idle_instances(), 3, "at most max_instances kept idle");
    let processor = &m.components["order-processor"].sandbox;
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        processor.idle_instances(),
        2 * cores,
        "two per core without max_instances"
    );
    let err = load_err(&text.replace("instance_reuse = 50", "instance_reuse = 0"));
    assert!(
        err.contains("[component.order-api].tool.host-bridge instance_reuse: must be at least 1"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_names_the_component_and_the_key() {
    let err = load_err(&GOOD.replace("source = \"api.wasm\"", "source = \"api.wasm\"\nsorce = 1"));
    assert!(err.contains("[component.order-api]"), "{err}");
    assert!(err.contains("unknown field `sorce`"), "{err}");
}

#[test]
fn an_unknown_trigger_key_names_the_trigger() {
    let err = load_err(&GOOD.replace(
        "topic = \"orders\"",
        "topic = \"orders\"\ndeadLetterTopic = \"x\"",
    ));
    assert!(err.contains("[[trigger.pubsub]]"), "{err}");
    assert!(err.contains("unknown field `deadLetterTopic`"), "{err}");
}

#[test]
fn an_unknown_tool_key_names_the_component() {
    let err = load_err(&GOOD.replace("clock = true", "clocks = true"));
    assert!(
        err.contains("[component.order-processor].tool.host-bridge"),
        "{err}"
    );
    assert!(err.contains("clocks"), "{err}");
}

#[test]
fn a_missing_component_is_named() {
    let err = load_err(&GOOD.replace("component = \"order-api\"", "component = \"order-apy\""));
    assert!(err.contains("[[trigger.http]] #1"), "{err}");
    assert!(err.contains("`order-apy` is not defined"), "{err}");
    assert!(err.contains("order-api, order-processor"), "{err}");
}

#[test]
fn a_missing_wasm_file_hints_at_the_build() {
    let (_dir, path) = app(GOOD, false);
    let m = Manifest::load(&path).unwrap();
    let err = m.check_sources().unwrap_err().to_string();
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("[component.order-api] source"), "{err}");
    assert!(err.contains("api.wasm does not exist"), "{err}");
    assert!(err.contains("host-bridge build"), "{err}");
    assert!(err.contains("make api"), "{err}");
    assert!(err.contains("no [build] command"), "{err}");
}

#[test]
fn a_bad_route_is_explained() {
    let err = load_err(&GOOD.replace("route = \"/orders/...\"", "route = \"/orders/.../x\""));
    assert!(err.contains("route \"/orders/.../x\""), "{err}");
    assert!(err.contains("'...' may only be the last segment"), "{err}");

    let err = load_err(&GOOD.replace("route = \"/orders/...\"", "route = \"orders\""));
    assert!(err.contains("must start with '/'"), "{err}");

    let err = load_err(&GOOD.replace("route = \"/orders/...\"", "route = \"/healthz\""));
    assert!(err.contains("/healthz is served by host-bridge"), "{err}");
}

#[test]
fn metadata_values_must_be_strings() {
    let err = load_err(&GOOD.replace("rawPayload = \"true\"", "rawPayload = true"));
    assert!(err.contains("[[trigger.pubsub]]"), "{err}");
    assert!(err.contains("expected a string"), "{err}");
}

#[test]
fn semantic_problems_are_all_reported_at_once() {
    let text = GOOD
        .replace(
            "dead_letter_topic = \"orders-dead\"",
            "dead_letter_topic = \"orders\"",
        )
        .replace("spin_manifest_version = 2", "spin_manifest_version = 1")
        .replace("\"https://example.com\"", "\"example.com\"")
        .replace("max_attempts = 3", "max_attempts = 0");
    let err = load_err(&text);
    assert!(err.contains("spin_manifest_version: must be 2"), "{err}");
    assert!(
        err.contains("dead_letter_topic: must differ from topic"),
        "{err}"
    );
    assert!(
        err.contains("[component.order-api] allowed_outbound_hosts"),
        "{err}"
    );
    assert!(
        err.contains("[application.trigger.pubsub] max_attempts"),
        "{err}"
    );
}

#[test]
fn globs_and_missing_directories_are_rejected() {
    let err = load_err(&GOOD.replace(
        "files = [{ source = \"static\", destination = \"/static\" }]",
        "files = [\"static/*.html\", \"nowhere\"]",
    ));
    assert!(err.contains("is a glob"), "{err}");
    assert!(err.contains("nowhere is not a directory"), "{err}");
}

#[test]
fn an_unreadable_file_is_named() {
    let err = Manifest::load(Path::new("/nonexistent/spin.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/spin.toml"), "{err}");
}

#[test]
fn match_rules_are_checked() {
    let routed = |second: &str| {
        GOOD.replace(
            "[component.order-api]",
            &format!(
                "[[trigger.pubsub]]\ncomponent = \"order-api\"\npubsubname = \"pubsub\"\ntopic = \"orders\"\nroute = \"/two\"\ndead_letter_topic = \"orders-dead\"\nmetadata = {{ rawPayload = \"true\" }}\nbulk_subscribe = {{ max_messages_count = 10 }}\n{second}\n[component.order-api]"
            ),
        )
    };
    let (_dir, path) = app(&routed("match = 'event.type == \"x\"'"), true);
    let m = Manifest::load(&path).unwrap();
    assert_eq!(
        m.pubsub_triggers[1].rule.as_deref(),
        Some("event.type == \"x\"")
    );

    // A routed trigger that disagrees on the shared subscription settings.
    let err = load_err(&routed("match = 'true'").replace(
        "route = \"/two\"\ndead_letter_topic = \"orders-dead\"",
        "route = \"/two\"\ndead_letter_topic = \"elsewhere\"",
    ));
    assert!(err.contains("must agree on dead_letter_topic"), "{err}");
    let err = load_err(&routed("match = 'event.type =='"));
    assert!(
        err.contains("match:") && err.contains("not a valid CEL expression"),
        "{err}"
    );
    // Both without a rule next to a routed one: which is the default?
    let three = routed("match = 'true'").replace(
        "[component.order-api]",
        "[[trigger.pubsub]]\ncomponent = \"order-api\"\npubsubname = \"pubsub\"\ntopic = \"orders\"\nroute = \"/three\"\n[component.order-api]",
    );
    let err = load_err(&three);
    assert!(err.contains("at most one may go without it"), "{err}");
}

#[test]
fn publish_grants_parse_and_match() {
    let exact = TopicPattern::parse("pubsub/orders").unwrap();
    assert!(exact.allows("pubsub", "orders"));
    assert!(!exact.allows("pubsub", "orders-deadletter"));
    assert!(!exact.allows("other", "orders"));
    let any_topic = TopicPattern::parse("pubsub/*").unwrap();
    assert!(any_topic.allows("pubsub", "anything"));
    assert!(!any_topic.allows("other", "anything"));
    assert!(TopicPattern::parse("*").unwrap().allows("x", "y"));
    for bad in ["orders", "/orders", "pubsub/", "*/orders", ""] {
        assert!(TopicPattern::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_bad_publish_grant_names_the_component() {
    let err = load_err(&GOOD.replace(
        "clock = true",
        "clock = true\nallowed_publish_topics = [\"orders\"]",
    ));
    assert!(
        err.contains("[component.order-processor].tool.host-bridge allowed_publish_topics"),
        "{err}"
    );
    assert!(err.contains("\"orders\" is not"), "{err}");
}

/// A Spin Redis app, as Spin's own manifest has it.
const SPIN_REDIS: &str = r#"
spin_manifest_version = 2
[application]
name = "spin-redis"
[application.trigger.redis]
address = "redis://localhost:6379"
[variables]
greeting = { default = "hello" }
token = { required = true, secret = true }
[[trigger.redis]]
channel = "messages"
component = "order-api"
[component.order-api]
source = "api.wasm"
key_value_stores = ["default"]
[component.order-api.variables]
greeting = "{{ greeting }}, {{ token }}!"
"#;

#[test]
fn spin_redis_triggers_become_subscriptions() {
    let (_dir, path) = app(SPIN_REDIS, true);
    let mut m = Manifest::load(&path).unwrap();
    let sub = &m.pubsub_triggers[0];
    assert_eq!(
        (
            sub.pubsubname.as_str(),
            sub.topic.as_str(),
            sub.component.as_str()
        ),
        ("pubsub", "messages", "order-api")
    );
    assert_eq!(sub.route, "/dapr/pubsub/pubsub/messages");
    let api = &m.components["order-api"];
    assert_eq!(api.key_value_stores["default"], "statestore");
    assert_eq!(api.sandbox.on_error, OnError::Retry);

    // A required variable with no value stops startup, naming it.
    let err = m.resolve_variables(|_| None).unwrap_err().to_string();
    assert!(
        err.contains("[variables] token: required, but has no value; set SPIN_VARIABLE_TOKEN"),
        "{err}"
    );
    m.resolve_variables(|name| (name == "SPIN_VARIABLE_TOKEN").then(|| "t0k".into()))
        .unwrap();
    assert_eq!(
        m.components["order-api"].variable_values["greeting"],
        "hello, t0k!"
    );
}

#[test]
fn host_bridge_maps_spin_names_in_its_own_table() {
    let text = SPIN_REDIS.replace(
        "[variables]",
        "[application.tool.host-bridge]\npubsubname = \"kafka\"\nkey_value_stores = { default = \"kv\", cache = \"redis-cache\" }\n[variables]",
    ).replace(r#"key_value_stores = ["default"]"#, r#"key_value_stores = ["default", "cache"]"#);
    let (_dir, path) = app(&text, true);
    let m = Manifest::load(&path).unwrap();
    assert_eq!(m.pubsub_triggers[0].pubsubname, "kafka");
    let api = &m.components["order-api"];
    assert_eq!(api.key_value_stores["default"], "kv");
    assert_eq!(api.key_value_stores["cache"], "redis-cache");
}

#[test]
fn spin_keys_that_cannot_work_are_named() {
    let err = load_err(
        &SPIN_REDIS
            .replace(
                r#"key_value_stores = ["default"]"#,
                r#"key_value_stores = ["cache"]"#,
            )
            .replace("{{ token }}", "{{ tokn }}")
            .replace(r#"channel = "messages""#, r#"channel = "orders:*""#),
    );
    for problem in [
        "[component.order-api] key_value_stores: label \"cache\" has no state store behind it; map it in [application.tool.host-bridge.key_value_stores] (mapped: default)",
        "[component.order-api].variables greeting: refers to `tokn`, which [variables] does not declare",
        "[[trigger.redis]] #1 (component \"order-api\", channel \"orders:*\") channel: \"orders:*\" must be non-empty letters",
    ] {
        assert!(err.contains(problem), "missing {problem:?} in:\n{err}");
    }
    let err = load_err(&SPIN_REDIS.replace(
        "token = { required = true, secret = true }",
        "token = { required = true, default = \"x\" }",
    ));
    assert!(
        err.contains("[variables] token: `required` and `default` exclude each other"),
        "{err}"
    );
    let err = load_err(&SPIN_REDIS.replace(
        "[component.order-api.variables]",
        "[component.order-api.tool.host-bridge]\non_error = \"ignore\"\n[component.order-api.variables]",
    ));
    assert!(
        err.contains("[component.order-api].tool.host-bridge") && err.contains("ignore"),
        "{err}"
    );
}

#[test]
fn url_sources_need_a_url_and_a_sha256_digest() {
    let good = GOOD.replace(
        "source = \"processor.wasm\"",
        &format!(
            "source = {{ url = \"https://example.com/p.wasm\", digest = \"sha256:{}\" }}",
            "ab".repeat(32)
        ),
    );
    let (_dir, path) = app(&good, true);
    let m = Manifest::load(&path).unwrap();
    let download = m.components["order-processor"].download.as_ref().unwrap();
    assert_eq!(download.url, "https://example.com/p.wasm");
    assert!(m.components["order-api"].download.is_none());

    let err = load_err(&GOOD.replace(
        "source = \"processor.wasm\"",
        "source = { url = \"ftp://example.com/p.wasm\", digest = \"sha256:AB\" }",
    ));
    for problem in [
        "[component.order-processor] source.url: \"ftp://example.com/p.wasm\" must be an http:// or https:// URL",
        "[component.order-processor] source.digest: \"sha256:AB\" must be \"sha256:\" and 64 lowercase hex digits",
    ] {
        assert!(err.contains(problem), "missing {problem:?} in:\n{err}");
    }
}
