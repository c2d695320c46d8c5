//! The embedded broker's journal under a backlog: what a restart reads back,
//! and where dead letters go when their topic is full (RELIABILITY.md,
//! "Backlogs on the embedded broker").
//!
//! - A restart with a journal much larger than `max_queued` replays it in
//!   pages: the host holds at most `max_queued` messages per subscription
//!   (plus the deliveries in flight and one page), and every message is
//!   still processed.
//! - A loop of dead-letter topics is refused at startup, by name.
//! - A dead-letter topic that is full does not stall the topic whose
//!   dropped messages it takes.

use crate::common::{Host, client, free_port, host_bridge_bin, wasm, workspace};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The sidecar API of a host, which threads can share (a [`Host`] holds
/// its log's receiver, which they cannot).
struct Api {
    url: String,
    token: Option<String>,
}

impl Api {
    fn of(host: &Host) -> Api {
        Api {
            url: host.api_url.clone(),
            token: host.api_token.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let request = client().request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(token) => request.header("dapr-api-token", token),
            None => request,
        }
    }
}

/// Publishes one message per id to `topic` through the sidecar API, from
/// `threads` threads (so that publishes share the journal's commits). A
/// publish refused as a full queue (`503`) is tried again until `deadline`.
/// Returns how many were published by then.
fn publish_all(
    host: &Host,
    topic: &str,
    ids: &[String],
    data: &[u8],
    threads: usize,
    deadline: Instant,
) -> usize {
    let api = &Api::of(host);
    let published = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let published = &published;
            scope.spawn(move || {
                for id in ids.iter().skip(t).step_by(threads) {
                    let path = format!("/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id={id}");
                    loop {
                        if Instant::now() > deadline {
                            return;
                        }
                        let response = api
                            .request(reqwest::Method::POST, &path)
                            .header("content-type", "application/octet-stream")
                            .body(data.to_vec())
                            .send()
                            .unwrap();
                        match response.status().as_u16() {
                            204 => break,
                            503 => std::thread::sleep(Duration::from_millis(5)),
                            other => panic!(
                                "publishing {id} answered {other}: {}",
                                response.text().unwrap_or_default()
                            ),
                        }
                    }
                    published.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    published.into_inner()
}

/// The keys among `keys` that are not set in the state store, read with
/// 8 threads.
fn missing_state(host: &Host, keys: &[String]) -> Vec<String> {
    const THREADS: usize = 8;
    let api = &Api::of(host);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    keys.iter()
                        .skip(t)
                        .step_by(THREADS)
                        .filter(|key| {
                            let path = format!("/v1.0/state/statestore/{key}");
                            let response = api.request(reqwest::Method::GET, &path).send().unwrap();
                            match response.status().as_u16() {
                                200 => false,
                                204 => true,
                                other => panic!("reading {key} answered {other}"),
                            }
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// Kills `host` (SIGKILL) and starts `manifest` on what it left in its
/// directory: its journal, on fresh ports.
fn kill_and_start(host: &mut Host, manifest: &str) -> Host {
    host.kill();
    let dir = std::mem::replace(&mut host.dir, tempfile::tempdir().unwrap());
    Host::start_on(dir, manifest, (free_port(), free_port()), &[], None, &[])
}

const BACKLOG: usize = 20_000;
const MAX_QUEUED: usize = 100;
/// Each message's payload: 20,000 of them are 160 MiB, more than the
/// journal's page cache (64 MiB) and the allowance below together.
const PAYLOAD: usize = 8 << 10;
/// The deliveries one subscription runs at once (`MAX_CONCURRENT_DELIVERIES`).
const SLOTS: u64 = 32;

/// The test subscriber on `bulk-backlog` (it counts each delivery under
/// `attempts-{id}` and succeeds), with `max_queued` and `sandbox` settings.
fn backlog_manifest(max_queued: usize, backoff_ms: u64, sandbox: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "backlog"
[application.trigger.pubsub]
max_attempts = 1000
initial_backoff_ms = {backoff_ms}
max_backoff_ms = {backoff_ms}
max_queued = {max_queued}

[[trigger.pubsub]]
component = "sub"
pubsubname = "pubsub"
topic = "bulk-backlog"

[component.sub]
source = "{}"
[component.sub.tool.host-bridge]
{sandbox}
"#,
        wasm("test_subscriber")
    )
}

/// 20,000 messages are left in the journal (the first host may queue
/// 25,000, and its subscriber cannot even be instantiated in 1 MiB, so
/// nothing is processed), then the host restarts with `max_queued = 100`
/// and a working subscriber. It must hold at most `max_queued` messages
/// (plus the 32 being delivered) at any time, stay within a memory bound
/// far below the journal's payload, and still process every message.
#[test]
fn a_restart_replays_a_large_journal_in_pages_within_max_queued() {
    let first = backlog_manifest(25_000, 600_000, "max_memory_mb = 1");
    let mut host = Host::start(&first);
    let baseline_kib = host.rss_kib();
    let ids: Vec<String> = (0..BACKLOG).map(|i| format!("b-{i}")).collect();
    let started = Instant::now();
    let published = publish_all(
        &host,
        "bulk-backlog",
        &ids,
        &vec![b'x'; PAYLOAD],
        16,
        started + Duration::from_secs(60),
    );
    assert_eq!(published, BACKLOG, "the backlog could not be published");
    eprintln!(
        "published {BACKLOG} messages of {PAYLOAD} bytes in {:?}",
        started.elapsed()
    );
    assert_eq!(
        host.metric("host_bridge_deliveries_total{outcome=\"success\"}"),
        0,
        "the first host was not to process anything"
    );

    let second = backlog_manifest(MAX_QUEUED, 20, "");
    let restarted = Instant::now();
    let mut host = kill_and_start(&mut host, &second);
    host.wait_for_line("delivered again", Duration::from_secs(10));
    // Sample what the host holds while it works through the backlog.
    let mut most_held = 0;
    let deadline = restarted + Duration::from_secs(120);
    loop {
        most_held = most_held.max(host.metric("host_bridge_deliveries_in_flight"));
        let done = host.metric("host_bridge_deliveries_total{outcome=\"success\"}");
        if done >= BACKLOG as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {BACKLOG} messages were processed within {:?} of the restart",
            deadline - restarted
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak_kib = host.process.memory_kib("VmHWM");
    eprintln!(
        "restart: {BACKLOG} processed in {:?}; at most {most_held} held at once (max_queued {MAX_QUEUED}); \
         RSS of an idle host {baseline_kib} KiB, peak while replaying {peak_kib} KiB (+{} KiB)",
        restarted.elapsed(),
        peak_kib.saturating_sub(baseline_kib)
    );
    let keys: Vec<String> = ids.iter().map(|id| format!("attempts-{id}")).collect();
    let missing = missing_state(&host, &keys);
    assert!(
        missing.is_empty(),
        "{} message(s) never processed after the restart, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // In flight: what waits in the queue (max_queued), what is being
    // delivered (32 slots), and the one message taken off the queue that
    // waits for a slot; a page being read in is not counted until it is
    // queued (it is at most 1 MiB, and within the memory bound below).
    assert!(
        most_held <= MAX_QUEUED as u64 + SLOTS + 1,
        "{most_held} messages were held at once after the restart; max_queued is {MAX_QUEUED}"
    );
    // The journal's payload is 160 MiB. The bound: redb's page cache
    // (64 MiB), and 64 MiB for 32 guest instances at work, the queue, one
    // page and the allocator's slack (measured: about 25 MiB). Holding the
    // backlog in memory, even once, goes past it.
    let allowance_kib = (64 + 64) << 10;
    assert!(
        peak_kib < baseline_kib + allowance_kib,
        "peak RSS {peak_kib} KiB while replaying, {} KiB over an idle host's; allowed {allowance_kib} KiB",
        peak_kib.saturating_sub(baseline_kib)
    );
}

/// Two topics whose dead letters go to each other: `up` refuses the
/// manifest before serving, naming both topics, both triggers and the
/// manifest.
#[test]
fn a_loop_of_dead_letter_topics_is_refused_at_startup_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"spin_manifest_version = 2
[application]
name = "loop"

[[trigger.pubsub]]
component = "first"
pubsubname = "pubsub"
topic = "drop-a"
dead_letter_topic = "drop-b"

[[trigger.pubsub]]
component = "second"
pubsubname = "pubsub"
topic = "drop-b"
dead_letter_topic = "drop-a"

[component.first]
source = "{0}"
[component.second]
source = "{0}"
"#,
            wasm("test_subscriber")
        ),
    )
    .unwrap();
    let log_path = dir.path().join("host-bridge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // No --sidecar-listen: the manifest is refused before anything listens,
    // and an older build without that flag runs the same command.
    let mut child = Command::new(host_bridge_bin())
        .env_remove("DAPR_HTTP_PORT")
        .env_remove("DAPR_GRPC_PORT")
        .env_remove("APP_PORT")
        .arg("up")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path().join("broker-data"))
        .arg("--cache-dir")
        .arg(workspace().join("target/host-bridge-test-cache"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        if output.contains("is ready on") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("host-bridge started with a loop of dead-letter topics:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "exited with {status}:\n{output}");
    assert!(
        !output.contains("is ready on"),
        "it served before exiting:\n{output}"
    );
    for needle in [
        manifest.display().to_string(),
        "pubsub/drop-a, pubsub/drop-b".to_owned(),
        "#1 (component \"first\") sends what it drops on pubsub/drop-a to drop-b".to_owned(),
        "#2 (component \"second\") sends what it drops on pubsub/drop-b to drop-a".to_owned(),
        "loop".to_owned(),
    ] {
        assert!(output.contains(&needle), "no {needle:?} in:\n{output}");
    }
}

/// What the full-dead-letter-topic test runs. Messages are published to
/// `slow-src`, and the test subscriber sleeps half a second on a `slow`
/// topic, then records the message as `received-{id}`. `dropper` may take
/// 50 ms, so every delivery times out (RETRY, once the sleep returns to the
/// guest: half a second) and, with `max_attempts = 1`, goes straight to the
/// dead-letter topic `slow-dead`. There `sink` (which
/// sees the original topic, as a dead-letter subscriber does) records it:
/// with `max_instances` of them at a time (none: 32, one per slot).
fn dead_letter_manifest(sink_instances: Option<u32>) -> String {
    let sink_limit = sink_instances
        .map(|n| format!("max_instances = {n}"))
        .unwrap_or_default();
    format!(
        r#"spin_manifest_version = 2
[application]
name = "full-dead-letters"
[application.trigger.pubsub]
max_attempts = 1
max_queued = 5

[[trigger.pubsub]]
component = "dropper"
pubsubname = "pubsub"
topic = "slow-src"
dead_letter_topic = "slow-dead"

[[trigger.pubsub]]
component = "sink"
pubsubname = "pubsub"
topic = "slow-dead"

[component.dropper]
source = "{0}"
[component.dropper.tool.host-bridge]
clock = true
timeout_ms = 50

[component.sink]
source = "{0}"
[component.sink.tool.host-bridge]
clock = true
{sink_limit}
"#,
        wasm("test_subscriber")
    )
}

/// The dead-letter topic takes 8 messages a second (4 instances, half a
/// second each) and has room for 37 more (5 queued, 32 in its slots), while
/// 400 messages fail on `slow-src` at 64 a second (32 slots, half a second
/// each). All 400 must be delivered on `slow-src` within 15 s (it takes
/// about 7): a dead letter that waits for room in a slot of `slow-src` (the
/// old behaviour) lets only 8 a second through once the dead-letter queue is
/// full, about 190 in 15 s. Then the dead letters left on disk must still
/// reach the sink: its feeder queues them while the host runs (its log
/// says so), and all 400 are handled after a `kill -9` and a restart.
#[test]
fn a_full_dead_letter_topic_does_not_stall_the_topic_it_serves() {
    const COUNT: usize = 400;
    let mut host = Host::start(&dead_letter_manifest(Some(4)));
    let ids: Vec<String> = (0..COUNT).map(|i| format!("d-{i}")).collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    let published = publish_all(&host, "slow-src", &ids, b"dead letter", 4, deadline);
    let failed = loop {
        let failed = host.metric("host_bridge_messages_dead_lettered_total");
        if failed >= COUNT as u64 || Instant::now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "{published} published and {failed} delivered and dead-lettered from slow-src in {:?}",
        started.elapsed()
    );
    assert!(
        published == COUNT && failed == COUNT as u64,
        "slow-src stalled behind its full dead-letter topic: {published} of {COUNT} published and {failed} \
         delivered within 15 s"
    );
    // Dead letters that found the sink's queue full wait on disk, and its
    // feeder queues them as room frees up, while the host runs.
    host.wait_for_line(
        "the dead-letter queue is full; the message waits on disk",
        Duration::from_secs(5),
    );
    host.wait_for_line(
        "dead letters left on disk are queued",
        Duration::from_secs(20),
    );
    // At least once: after a kill -9, every dead letter still reaches the
    // sink, now with an instance per slot.
    let host = kill_and_start(&mut host, &dead_letter_manifest(None));
    let keys: Vec<String> = ids.iter().map(|id| format!("received-{id}")).collect();
    let wait = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = missing_state(&host, &keys);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < wait,
            "{} dead letter(s) never handled by the sink after the restart, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
