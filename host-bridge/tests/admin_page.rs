//! The admin page (`up --admin`, `GET /`) and the endpoints behind it: the
//! token, the overview, the live stream, and the dead letters of the
//! embedded broker (listed with their data, replayed to their subscription,
//! deleted, kept across a restart); then the same page in a real browser.
//!
//! The app: the test subscriber as `processor` on `drop-orders` (it answers
//! DROP on a topic starting with `drop`), and as `recorder` on `record-flow`
//! (it records and succeeds). The "fixed" processor deployed live is the
//! dead-letter recorder, which records each event as `deadletter-{id}` and
//! succeeds: so that key in the state store says the order was processed.

mod common;

use common::{Host, client, free_port, guests, wasm};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// 32 bytes at the least, or `up` refuses it.
const TOKEN: &str = "s3cret-admin-token-for-the-admin-page-tests";
const SLOW: Duration = Duration::from_secs(60);

fn manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "admin-page"
[application.trigger.pubsub]
max_attempts = 3
initial_backoff_ms = 20
max_backoff_ms = 100
[[trigger.pubsub]]
component = "processor"
pubsubname = "pubsub"
topic = "drop-orders"
[[trigger.pubsub]]
component = "recorder"
pubsubname = "pubsub"
topic = "record-flow"
[component.processor]
source = "processor.wasm"
[component.recorder]
source = "{}"
"#,
        wasm("test_subscriber")
    )
}

/// A host on `manifest()` with its admin API on `admin`.
fn start(admin: &str, more: &[&str]) -> Host {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        guests().join("test_subscriber.wasm"),
        dir.path().join("processor.wasm"),
    )
    .unwrap();
    let mut args = vec!["--admin", admin];
    args.extend_from_slice(more);
    let mut host = Host::start_with_args(
        dir,
        &manifest(),
        free_port(),
        &[("HOST_BRIDGE_ADMIN_TOKEN", TOKEN.to_owned())],
        None,
        &args,
    );
    host.wait_for_line("admin page on", SLOW);
    host
}

fn admin_get(admin: &str, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let request = client().get(format!("http://{admin}{path}"));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .unwrap()
}

fn admin_call(admin: &str, method: reqwest::Method, path: &str) -> reqwest::blocking::Response {
    client()
        .request(method, format!("http://{admin}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
}

fn dead_letters(admin: &str) -> serde_json::Value {
    let response = admin_get(admin, "/admin/dead-letters", Some(TOKEN));
    assert_eq!(response.status(), 200);
    response.json().unwrap()
}

/// Waits until the dead letter of event `event_id` is listed, and returns it.
fn wait_for_dead_letter(admin: &str, event_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + SLOW;
    loop {
        let listing = dead_letters(admin);
        if let Some(found) = listing["deadLetters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["eventId"] == event_id)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{event_id} never listed: {listing}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /admin/overview`, and the entry of component `name` in it.
fn overview(admin: &str, name: &str) -> (serde_json::Value, serde_json::Value) {
    let overview: serde_json::Value = admin_get(admin, "/admin/overview", Some(TOKEN))
        .json()
        .unwrap();
    let component = overview["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {overview}"))
        .clone();
    (overview, component)
}

fn decode(base64: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(base64)
            .unwrap(),
    )
    .unwrap()
}

/// Reads the first event of a `/admin/events` stream.
fn first_event(response: &mut reqwest::blocking::Response) -> serde_json::Value {
    let mut text = String::new();
    let mut buffer = [0u8; 4096];
    while !text.contains("\n\n") {
        let n = response.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {text}"));
    serde_json::from_str(data).unwrap()
}

#[test]
fn the_endpoints_need_the_token_and_a_dead_letter_replays_to_its_subscription() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut host = start(&admin, &[]);

    // The page is static and served without the token; the data is not.
    let page = admin_get(&admin, "/", None);
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.text().unwrap().contains("/page.js"));
    for path in [
        "/admin/overview",
        "/admin/dead-letters",
        "/admin/events",
        "/admin/components/processor",
    ] {
        assert_eq!(admin_get(&admin, path, None).status(), 401, "{path}");
        assert_eq!(
            admin_get(&admin, path, Some("wrong-token-wrong-token-wrong-token")).status(),
            401,
            "{path}"
        );
    }

    // The overview: components with their world, digest and grants.
    let (summary, processor) = overview(&admin, "processor");
    assert_eq!(processor["worlds"][0], "hostbridge:pubsub subscriber");
    assert!(processor["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(summary["subscriptions"][0]["topic"], "drop-orders");
    assert_eq!(summary["broker"], "embedded");

    // Two orders the processor DROPs: each is listed with its data.
    let order = r#"{"orderId":"o-drop-1","items":[{"sku":"book","qty":1}]}"#;
    host.publish("drop-orders", "o-drop-1", "application/json", order);
    host.publish("drop-orders", "o-drop-2", "text/plain", "second");
    let first = wait_for_dead_letter(&admin, "o-drop-1");
    assert_eq!(decode(first["dataBase64"].as_str().unwrap()), order);
    assert_eq!(first["reason"], "DROP");
    assert_eq!(first["topic"], "drop-orders");
    assert_eq!(first["component"], "processor");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["datacontenttype"], "application/json");
    wait_for_dead_letter(&admin, "o-drop-2");
    let log = host.drain_log();
    assert!(log.contains("kept in the dead-letter list"), "{log}");

    // Unknown ids: 404, naming the id.
    for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let path = if method == reqwest::Method::POST {
            "/admin/dead-letters/424242/replay"
        } else {
            "/admin/dead-letters/424242"
        };
        let response = admin_call(&admin, method, path);
        assert_eq!(response.status(), 404);
        assert!(response.text().unwrap().contains("424242"));
    }

    // Both survive a crash and a restart on the same data dir.
    host.kill_and_restart_with(&["--admin", &admin]);
    host.wait_for_line("admin page on", SLOW);
    let first = wait_for_dead_letter(&admin, "o-drop-1");
    let second = wait_for_dead_letter(&admin, "o-drop-2");

    // The processor is fixed, live; the page shows the new version.
    let fixed = std::fs::read(guests().join("dead_letter.wasm")).unwrap();
    let deployed = client()
        .put(format!("http://{admin}/admin/components/processor"))
        .bearer_auth(TOKEN)
        .body(fixed)
        .send()
        .unwrap();
    assert_eq!(deployed.status(), 200);
    let deployed: serde_json::Value = deployed.json().unwrap();
    let (_, processor) = overview(&admin, "processor");
    assert_eq!(processor["digest"], deployed["digest"]);
    assert!(processor["deployedAt"].is_string());

    // Replay: back to the processor's queue, and processed.
    let replayed = admin_call(
        &admin,
        reqwest::Method::POST,
        &format!(
            "/admin/dead-letters/{}/replay",
            first["id"].as_str().unwrap()
        ),
    );
    assert_eq!(replayed.status(), 200);
    let processed = host.wait_for_state("deadletter-o-drop-1", SLOW, |_| true);
    assert!(processed.contains("o-drop-1"), "{processed}");
    // A second replay of the same record: it is gone.
    let again = admin_call(
        &admin,
        reqwest::Method::POST,
        &format!(
            "/admin/dead-letters/{}/replay",
            first["id"].as_str().unwrap()
        ),
    );
    assert_eq!(again.status(), 404);

    // Delete: gone, and never delivered.
    let deleted = admin_call(
        &admin,
        reqwest::Method::DELETE,
        &format!("/admin/dead-letters/{}", second["id"].as_str().unwrap()),
    );
    assert_eq!(deleted.status(), 200);
    let listing = dead_letters(&admin);
    assert_eq!(
        listing["deadLetters"].as_array().unwrap().len(),
        0,
        "{listing}"
    );
    let actions: Vec<&str> = listing["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["delete", "replay"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.state("deadletter-o-drop-2"), None);
    let log = host.drain_log();
    assert!(
        log.contains("action=\"replay\"") && log.contains("action=\"delete\""),
        "{log}"
    );
}

#[test]
fn the_live_stream_counts_deliveries_is_bounded_and_ends_on_shutdown() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut host = start(&admin, &["--shutdown-grace", "30"]);
    for n in 0..5 {
        host.publish("record-flow", &format!("flow-{n}"), "text/plain", "hello");
    }
    host.wait_for_state("received-flow-4", SLOW, |_| true);

    let stream = |token: &str| {
        reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(format!("http://{admin}/admin/events"))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let mut first = stream(TOKEN);
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let event = first_event(&mut first);
    let recorder = &event["subscriptions"][1];
    assert_eq!(recorder["success"], 5, "{event}");
    assert_eq!(recorder["delivered"], 5, "{event}");
    assert!(recorder["p99Ms"].as_f64().unwrap() > 0.0, "{event}");

    // At most MAX_STREAMS (16) at once.
    let mut open: Vec<_> = (1..16).map(|_| stream(TOKEN)).collect();
    assert!(open.iter().all(|r| r.status() == 200));
    let refused = stream(TOKEN);
    assert_eq!(refused.status(), 429);
    // A client that goes away gives its place back.
    drop(open.pop());
    let deadline = Instant::now() + SLOW;
    loop {
        let retried = stream(TOKEN);
        if retried.status() == 200 {
            open.push(retried);
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Open streams do not hold up a shutdown (the grace is 30 s).
    let stopping = Instant::now();
    let status = host.terminate(Duration::from_secs(25));
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );
}

/// The page in headless Chromium, driven by Playwright for Python
/// (`host-bridge/tests/browser/admin_page.py`; `make setup-browser`
/// installs both): a wrong token is refused, the counts move while
/// messages flow, a dropped order is listed with its data, and Replay after
/// a live fix ends with the order processed. It saves a screenshot in
/// `target/test-artifacts/admin-page.png`.
#[test]
fn the_page_works_in_a_real_browser() {
    let browser_dir = common::workspace().join("host-bridge/tests/browser");
    let python = browser_dir.join(".venv/bin/python");
    assert!(
        python.exists() && PathBuf::from("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and Playwright: run `make setup-browser`"
    );
    let admin = format!("127.0.0.1:{}", free_port());
    let host = start(&admin, &[]);
    let artifacts = common::workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("admin-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = Command::new(&python)
        .arg(browser_dir.join("admin_page.py"))
        .args(["--admin", &format!("http://{admin}")])
        .args(["--sidecar", &host.api_url])
        .arg("--fixed")
        .arg(guests().join("dead_letter.wasm"))
        .arg("--screenshot")
        .arg(&screenshot)
        .env("HOST_BRIDGE_ADMIN_TOKEN", TOKEN)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("ok: Replay ended with the order processed"),
        "{stdout}"
    );
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}

/// Under Dapr the events are the broker's: the page lists what host-bridge
/// answered DROP, read-only, and a replay is refused naming the
/// `deadLetterTopic` where daprd sent the event.
#[test]
fn under_dapr_the_page_lists_what_the_host_answered_and_where_the_events_are() {
    use common::dapr::{Backing, Daprd};
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "admin-page-dapr"
[[trigger.pubsub]]
component = "processor"
pubsubname = "pubsub"
topic = "drop-orders"
dead_letter_topic = "drop-orders-dead"
[[trigger.pubsub]]
component = "dead-letter"
pubsubname = "pubsub"
topic = "drop-orders-dead"
[component.processor]
source = "{}"
[component.dead-letter]
source = "{}"
"#,
        wasm("test_subscriber"),
        wasm("dead_letter")
    );
    let backing = Backing::start();
    let daprd_dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let daprd = Daprd::start(
        "admin-page",
        app_port,
        &backing.resources,
        daprd_dir.path(),
        &[],
    );
    let admin = format!("127.0.0.1:{}", free_port());
    let mut host = Host::start_with_args(
        tempfile::tempdir().unwrap(),
        &manifest,
        app_port,
        &[
            ("DAPR_HTTP_PORT", daprd.http_port.to_string()),
            ("DAPR_GRPC_PORT", daprd.grpc_port.to_string()),
            ("HOST_BRIDGE_ADMIN_TOKEN", TOKEN.to_owned()),
        ],
        Some(daprd.url.clone()),
        &["--admin", &admin],
    );
    daprd.wait_for_subscriptions(&["drop-orders", "drop-orders-dead"]);

    host.publish(
        "drop-orders",
        "o-dapr-1",
        "application/json",
        r#"{"orderId":"o-dapr-1"}"#,
    );
    // daprd dead-letters it; the dead-letter component records it.
    host.wait_for_state("deadletter-o-dapr-1", SLOW, |_| true);
    let listed = wait_for_dead_letter(&admin, "o-dapr-1");
    assert_eq!(listed["reason"], "DROP");
    assert_eq!(listed["deadLetterTopic"], "drop-orders-dead");
    assert_eq!(
        decode(listed["dataBase64"].as_str().unwrap()),
        r#"{"orderId":"o-dapr-1"}"#
    );
    let listing = dead_letters(&admin);
    assert_eq!(listing["kind"], "dapr");
    assert_eq!(listing["replayable"], false);
    assert!(
        listing["note"]
            .as_str()
            .unwrap()
            .contains("pubsub/drop-orders → pubsub/drop-orders-dead"),
        "{listing}"
    );

    let refused = admin_call(
        &admin,
        reqwest::Method::POST,
        &format!(
            "/admin/dead-letters/{}/replay",
            listed["id"].as_str().unwrap()
        ),
    );
    assert_eq!(refused.status(), 409);
    let message = refused.text().unwrap();
    assert!(
        message.contains("the dead-letter topic pubsub/drop-orders-dead"),
        "{message}"
    );
    let unknown = admin_call(&admin, reqwest::Method::DELETE, "/admin/dead-letters/d-999");
    assert_eq!(unknown.status(), 404);
}
