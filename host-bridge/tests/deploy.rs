//! Live deploys into a running host: `host-bridge deploy` through the admin
//! API while messages flow, refused deploys that leave the old version
//! serving, the token, and `up --watch`.
//!
//! Version 1 of the subscriber `live` is the test subscriber, which records
//! each event as `received-{id}`; version 2 is the dead-letter recorder,
//! which records it as `deadletter-{id}`. So the state store tells, for
//! every message, which version handled it.

mod common;

use common::{Host, free_port, guests};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// 32 bytes at the least, or `up` refuses it.
const TOKEN: &str = "s3cret-admin-token-for-the-deploy-tests";
const SLOW: Duration = Duration::from_secs(60);

/// The subscriber `live` on topic `record-live`, from `live.wasm` in the
/// host's directory (with a build that copies `next.wasm` over it, and
/// `next.wasm` watched), and the HTTP hello component on `/hello`.
fn manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "live"
[[trigger.pubsub]]
component = "live"
pubsubname = "pubsub"
topic = "record-live"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.live]
source = "live.wasm"
[component.live.build]
command = "cp next.wasm live.wasm"
watch = ["next.wasm"]
[component.hello]
source = "{}"
"#,
        guests().join("hello.wasm").display()
    )
}

/// A host on `manifest()` with `live.wasm` and `next.wasm` both version 1,
/// started with `args`.
fn start(args: &[&str]) -> Host {
    build_hello();
    let dir = tempfile::tempdir().unwrap();
    for name in ["live.wasm", "next.wasm"] {
        std::fs::copy(guests().join("test_subscriber.wasm"), dir.path().join(name)).unwrap();
    }
    Host::start_with_args(
        dir,
        &manifest(),
        free_port(),
        &[("HOST_BRIDGE_ADMIN_TOKEN", TOKEN.to_owned())],
        None,
        args,
    )
}

/// The hello component is built with the other guests only by the
/// benchmarks, so the tests build it themselves.
fn build_hello() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        guests();
        let status = Command::new(env!("CARGO"))
            .current_dir(common::workspace())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "hello",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    });
}

fn deploy(admin: &str, component: &str, source: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args(["deploy", "--component", component, "--source"])
        .arg(source)
        .args(["--host", &format!("http://{admin}")])
        .env("HOST_BRIDGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

/// Which version handled message `id`: 1, 2, or none yet.
fn handled_by(host: &Host, id: &str) -> Option<u8> {
    if host.state(&format!("received-{id}")).is_some() {
        Some(1)
    } else if host.state(&format!("deadletter-{id}")).is_some() {
        Some(2)
    } else {
        None
    }
}

#[test]
fn a_subscriber_deployed_while_messages_flow_loses_nothing() {
    let admin = format!("127.0.0.1:{}", free_port());
    let host = start(&["--admin", &admin]);

    // Messages flow, one after another, while v2 is deployed.
    const MESSAGES: usize = 300;
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (api_url, published) = (host.api_url.clone(), published.clone());
        std::thread::spawn(move || {
            for n in 0..MESSAGES {
                let url = format!(
                    "{api_url}/v1.0/publish/pubsub/record-live?metadata.cloudevent.id=m-{n}"
                );
                let response = common::client()
                    .post(url)
                    .header("content-type", "text/plain")
                    .body(format!("message {n}"))
                    .send()
                    .unwrap();
                assert_eq!(response.status(), 204);
                published.store(n + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    while published.load(Ordering::SeqCst) < MESSAGES / 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let deployed = deploy(&admin, "live", &guests().join("dead_letter.wasm"));
    // Every message published from here on was published after the swap.
    let after_swap = published.load(Ordering::SeqCst);
    let answer = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success(),
        "{answer}{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(
        answer.contains(r#""component":"live""#) && answer.contains(r#""subscriptions":1"#),
        "{answer}"
    );
    publisher.join().unwrap();

    // None lost: each message was handled by one version or the other.
    let deadline = Instant::now() + SLOW;
    let mut by = vec![None; MESSAGES];
    while by.iter().any(Option::is_none) {
        for (n, v) in by.iter_mut().enumerate() {
            if v.is_none() {
                *v = handled_by(&host, &format!("m-{n}"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "messages never handled: {:?}",
            by.iter()
                .enumerate()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v1 = by.iter().filter(|v| **v == Some(1)).count();
    let v2 = by.iter().filter(|v| **v == Some(2)).count();
    assert!(v1 >= MESSAGES / 3 && v2 > 0, "v1 {v1}, v2 {v2}");
    // v2 serves everything published after the swap.
    assert!(
        by[after_swap..].iter().all(|v| *v == Some(2)),
        "after the swap (from m-{after_swap}): {:?}",
        &by[after_swap..]
    );
}

#[test]
fn a_refused_deploy_leaves_the_old_version_serving() {
    let admin = format!("127.0.0.1:{}", free_port());
    let host = start(&["--admin", &admin]);
    let dir = tempfile::tempdir().unwrap();

    // Not Wasm at all.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let refused = deploy(&admin, "live", &junk);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("422") && stderr.contains("cannot compile"),
        "{stderr}"
    );

    // A component of the wrong world: an HTTP component for a subscriber.
    let refused = deploy(&admin, "live", &guests().join("hello.wasm"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr
            .contains("it serves subscriptions, so the new version must be a subscriber: component `live` exports no subscriber interface"),
        "{stderr}"
    );
    // And a subscriber for an HTTP route.
    let refused = deploy(&admin, "hello", &guests().join("dead_letter.wasm"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("exports no wasi:http handler"), "{stderr}");

    // An unknown component.
    let refused = deploy(&admin, "nope", &guests().join("dead_letter.wasm"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("no component `nope`"),
        "{stderr}"
    );

    // Without the token, or with a wrong one: 401.
    let url = format!("http://{admin}/admin/components/live");
    let response = common::client().put(&url).send().unwrap();
    assert_eq!(response.status(), 401);
    let response = common::client()
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    let refused = Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args(["deploy", "--component", "live", "--source"])
        .arg(guests().join("dead_letter.wasm"))
        .args(["--host", &format!("http://{admin}")])
        .env_remove("HOST_BRIDGE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("401"),
        "{stderr}"
    );

    // The old version still serves, and so does the HTTP component.
    host.publish("record-live", "after-refusals", "text/plain", "still v1");
    let mut host = host;
    host.wait_for_state("received-after-refusals", SLOW, |_| true);
    assert_eq!(host.get("/hello").status(), 200);
    // The admin API is on its own listener: the app's port does not serve it.
    let response = common::client()
        .put(format!("{}/admin/components/live", host.url))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[test]
fn up_watch_rebuilds_and_swaps_a_changed_component() {
    let mut host = start(&["--watch"]);
    host.wait_for_line("watching `live`", SLOW);
    host.publish("record-live", "w-1", "text/plain", "before");
    host.wait_for_state("received-w-1", SLOW, |_| true);

    // A new build output appears; the watched file changed, so the build
    // (which copies it over live.wasm) runs and v2 is swapped in.
    let next = host.dir.path().join("next.wasm");
    std::fs::copy(guests().join("dead_letter.wasm"), &next).unwrap();
    host.wait_for_line("deployed `live`", SLOW);
    host.publish("record-live", "w-2", "text/plain", "after");
    host.wait_for_state("deadletter-w-2", SLOW, |_| true);
    assert_eq!(host.state("received-w-2"), None);
}
