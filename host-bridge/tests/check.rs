//! `host-bridge check`, run as a user runs it: the built binary, on the
//! resources folders this repository ships and on broken ones made here.
//!
//! Every folder under `components/` that holds YAML must pass (exit 0), on
//! its own and with the app's `spin.toml`, and every run must end with the
//! app health-check flags `dapr run` needs. A broken folder must exit 1 with
//! the exact finding, and an unreadable one exit 2 naming the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLAGS: &str = "--enable-app-health-check --app-health-check-path /healthz \
                     --app-health-probe-interval 1 --app-health-threshold 1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host-bridge/ has a parent")
        .to_path_buf()
}

/// Runs `host-bridge check` in `cwd` with `args`.
fn check(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .arg("check")
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("host-bridge runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every folder at or under `dir` with a `.yaml` or `.yml` file in it.
fn folders_with_yaml(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut has_yaml = false;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            folders_with_yaml(&path, found);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        {
            has_yaml = true;
        }
    }
    if has_yaml {
        found.push(dir.to_path_buf());
    }
}

/// The folder's path relative to the repository, as a user would type it.
fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn assert_ends_with_flags(output: &Output) {
    let out = stdout(output);
    let reminder = out
        .rfind("dapr run also needs the app health check")
        .unwrap_or_else(|| panic!("no health-check reminder in:\n{out}"));
    assert!(
        out[reminder..].contains(FLAGS),
        "the reminder lacks the flags:\n{out}"
    );
    assert!(
        out[reminder..].contains("When host-bridge is down"),
        "the reminder lacks why:\n{out}"
    );
}

#[test]
fn every_shipped_folder_passes_and_names_the_health_check_flags() {
    let mut folders = Vec::new();
    folders_with_yaml(&repo().join("components"), &mut folders);
    assert!(
        folders.len() >= 2,
        "components/ and components/in-memory at least: {folders:?}"
    );
    let mut failed = Vec::new();
    for folder in &folders {
        let dir = relative(folder);
        for manifest in [None, Some("spin.toml")] {
            let mut args = vec!["--resources-path", dir.as_str()];
            args.extend(manifest.iter().flat_map(|m| ["--manifest", *m]));
            let output = check(&repo(), &args);
            assert_ends_with_flags(&output);
            let out = stdout(&output);
            if output.status.code() != Some(0)
                || !out.contains(&format!("no settings that lose messages in {dir}"))
            {
                failed.push(format!(
                    "host-bridge check {} exited {:?}:\n{out}{}",
                    args.join(" "),
                    output.status.code(),
                    stderr(&output)
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A temporary working directory with one resources folder, `dir`, holding
/// `files`.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("dir")).unwrap();
    for (name, text) in files {
        std::fs::write(cwd.path().join("dir").join(name), text).unwrap();
    }
    cwd
}

/// Runs `host-bridge check --resources-path dir` on a folder of `files`.
fn check_folder(files: &[(&str, &str)]) -> Output {
    let cwd = folder(files);
    check(cwd.path(), &["--resources-path", "dir"])
}

const RESILIENCY: &str = "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: r
spec:
  policies:
    retries:
      pubsubRetry:
        policy: constant
        duration: 1s
        maxRetries: 8
  targets:
    components:
      pubsub:
        inbound:
          retry: pubsubRetry
";

fn component(component_type: &str, metadata: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: {component_type}\n  version: v1\n  metadata:\n{metadata}"
    )
}

/// Asserts exit code 1, that stdout holds `block` exactly, and the summary.
fn assert_finding(output: &Output, block: &str, summary: &str) {
    let out = stdout(output);
    assert_eq!(output.status.code(), Some(1), "{out}{}", stderr(output));
    assert!(
        out.contains(block),
        "expected the block:\n{block}\nin:\n{out}"
    );
    assert!(out.contains(summary), "expected {summary:?} in:\n{out}");
    assert_ends_with_flags(output);
}

#[test]
fn rabbitmq_without_requeue_in_failure() {
    let pubsub = component(
        "pubsub.rabbitmq",
        "    - name: connectionString\n      value: amqp://localhost:5672\n\
         \x20   - name: deletedWhenUnused\n      value: \"false\"\n\
         \x20   - name: deliveryMode\n      value: 2\n",
    );
    assert_finding(
        &check_folder(&[("pubsub.yaml", &pubsub), ("resiliency.yaml", RESILIENCY)]),
        "dir/pubsub.yaml: component \"pubsub\" (pubsub.rabbitmq): requeueInFailure is not set (default false)\n  \
         a message whose delivery fails (the app answered RETRY, or could not be reached) is nacked without requeue and dropped\n  \
         and so is one in flight when daprd stops the subscription (the app health check pausing it, a shutdown)\n  \
         fix: requeueInFailure: \"true\"\n",
        "1 finding in dir (and 2 warnings)",
    );
}

#[test]
fn redis_redeliver_interval_as_a_duration_string() {
    let pubsub = component(
        "pubsub.redis",
        "    - name: redisHost\n      value: localhost:6379\n\
         \x20   - name: processingTimeout\n      value: 15s\n\
         \x20   - name: redeliverInterval\n      value: 2s\n",
    );
    assert_finding(
        &check_folder(&[("pubsub.yaml", &pubsub), ("resiliency.yml", RESILIENCY)]),
        "dir/pubsub.yaml: component \"pubsub\" (pubsub.redis): redeliverInterval \"2s\" is a duration string; \
         pubsub.redis reads this key only as a number of milliseconds\n  \
         components-contrib 1.18.4 drops it without a word and keeps the default, 15s\n  \
         fix: redeliverInterval: \"2000\"\n",
        "1 finding in dir\n",
    );
}

#[test]
fn redis_without_a_resiliency_and_with_retries_past_processing_timeout() {
    let pubsub = component(
        "pubsub.redis",
        "    - name: redisHost\n      value: localhost:6379\n\
         \x20   - name: processingTimeout\n      value: 15s\n",
    );
    assert_finding(
        &check_folder(&[("pubsub.yaml", &pubsub)]),
        "dir/pubsub.yaml: component \"pubsub\" (pubsub.redis): daprd does not retry a failed delivery: \
         no Resiliency daprd loads sets targets.components.pubsub.inbound.retry for it\n  \
         a delivery that fails once (the app answered RETRY, or was restarting) is not tried again: Redis acks it: it is lost\n",
        "1 finding in dir\n",
    );
    let long = RESILIENCY.replace("duration: 1s", "duration: 2s");
    assert_finding(
        &check_folder(&[("pubsub.yaml", &pubsub), ("resiliency.yaml", &long)]),
        "dir/pubsub.yaml: component \"pubsub\" (pubsub.redis): inbound retry policy \"pubsubRetry\" \
         (dir/resiliency.yaml, constant, 2s apart, 8 retries) retries for up to 16s, not less than processingTimeout (15s)\n",
        "1 finding in dir\n",
    );
}

#[test]
fn kafka_with_finite_retries_and_no_dead_letter_topic() {
    let pubsub = component(
        "pubsub.kafka",
        "    - name: brokers\n      value: localhost:9092\n\
         \x20   - name: authType\n      value: none\n\
         \x20   - name: initialOffset\n      value: oldest\n\
         \x20   - name: backOffMaxRetries\n      value: 3\n",
    );
    let subscription = "apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    default: /orders
";
    assert_finding(
        &check_folder(&[
            ("pubsub.yaml", &pubsub),
            ("resiliency.yaml", RESILIENCY),
            ("subscription.yaml", subscription),
        ]),
        "dir/pubsub.yaml: component \"pubsub\" (pubsub.kafka): backOffMaxRetries is \"3\": the component stops \
         retrying a failed message after 3 retries\n  \
         a message whose delivery still fails after daprd's retries is left uncommitted, and the commit of the next \
         message passes it: it is never read again (consumer.go, ConsumeClaim)\n  \
         no deadLetterTopic on: Subscription \"orders\" (pubsub \"pubsub\", topic \"orders\")\n  \
         fix: backOffMaxRetries: \"-1\"\n",
        "1 finding in dir\n",
    );
    // With a dead-letter topic that something reads, a message that fails
    // on "orders" is moved there, not lost; one that fails on the
    // dead-letter topic's own subscription, which has none, still is.
    let with_dlq = subscription.replace("  routes:", "  deadLetterTopic: orders-dlq\n  routes:");
    let dlq = subscription
        .replace("name: orders", "name: orders-dlq")
        .replace("topic: orders", "topic: orders-dlq");
    let output = check_folder(&[
        ("pubsub.yaml", &pubsub),
        ("resiliency.yaml", RESILIENCY),
        ("subscription.yaml", &with_dlq),
        ("dlq.yaml", &dlq),
    ]);
    assert_finding(
        &output,
        "  no deadLetterTopic on: Subscription \"orders-dlq\" (pubsub \"pubsub\", topic \"orders-dlq\")\n",
        "1 finding in dir\n",
    );
    assert!(!stdout(&output).contains("Subscription \"orders\" ("));
}

#[test]
fn a_dead_letter_topic_nothing_subscribes_to() {
    let pubsub = component(
        "pubsub.redis",
        "    - name: redisHost\n      value: localhost:6379\n",
    );
    let subscription = "apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: orders
  route: /orders
  deadLetterTopic: orders-dlq
";
    let cwd = folder(&[
        ("pubsub.yaml", &pubsub),
        ("resiliency.yaml", RESILIENCY),
        ("subscription.yaml", subscription),
    ]);
    assert_finding(
        &check(cwd.path(), &["--resources-path", "dir"]),
        "dir/subscription.yaml: Subscription \"orders\" (pubsub \"pubsub\", topic \"orders\"): deadLetterTopic \
         \"orders-dlq\" has no subscriber: nothing in dir subscribes to topic \"orders-dlq\" on pubsub \"pubsub\"\n",
        "1 finding in dir\n",
    );
    // The app's manifest subscribes to it: clean.
    std::fs::write(
        cwd.path().join("spin.toml"),
        "spin_manifest_version = 2\n\n[application]\nname = \"a\"\n\n\
         [[trigger.pubsub]]\ncomponent = \"dlq\"\npubsubname = \"pubsub\"\ntopic = \"orders-dlq\"\n\n\
         [component.dlq]\nsource = \"dlq.wasm\"\n",
    )
    .unwrap();
    let output = check(
        cwd.path(),
        &["--resources-path", "dir", "--manifest", "spin.toml"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn a_resiliency_that_is_not_first_in_its_file_counts_for_nothing() {
    let pubsub = component(
        "pubsub.mqtt3",
        "    - name: url\n      value: tcp://localhost:1883\n",
    );
    assert_finding(
        &check_folder(&[("all.yaml", &format!("{pubsub}---\n{RESILIENCY}"))]),
        "dir/all.yaml: Resiliency \"r\": is document 2 of its file, and daprd 1.18.3 reads only a file's first \
         document when it loads Resiliency at startup\n  \
         daprd never reads it: none of its retry policies or targets take effect\n  \
         fix: move it to a file of its own\n",
        "2 findings in dir (and 1 warning)",
    );
}

#[test]
fn unreadable_yaml_exits_2_naming_the_file_and_line() {
    let cwd = folder(&[(
        "pubsub.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.redis\n  metadata: [\n",
    )]);
    let output = check(cwd.path(), &["--resources-path", "dir"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let err = stderr(&output);
    assert!(
        err.contains("dir/pubsub.yaml: ") && err.contains("line 8"),
        "{err}"
    );
    assert_ends_with_flags(&output);
    let output = check(cwd.path(), &["--resources-path", "missing"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing: cannot read the folder"));
}

#[test]
fn sub_folders_and_other_files_are_not_read() {
    // daprd reads DIR's own .yaml/.yml files only: a broken file in a
    // sub-folder, or with another extension, is not its business.
    let pubsub = component(
        "pubsub.redis",
        "    - name: redisHost\n      value: localhost:6379\n",
    );
    let cwd = folder(&[
        ("pubsub.YAML", &pubsub),
        ("resiliency.yaml", RESILIENCY),
        ("notes.txt", "not: [yaml"),
    ]);
    std::fs::create_dir(cwd.path().join("dir/old")).unwrap();
    std::fs::write(cwd.path().join("dir/old/pubsub.yaml"), "not: [yaml").unwrap();
    let output = check(cwd.path(), &["--resources-path", "dir"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
}
