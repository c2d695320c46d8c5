//! A soak: a steady stream through daprd and Redis to the test subscriber,
//! for `SOAK_SECONDS` (default 30, which `make test` runs) at `SOAK_RATE`
//! messages a second (default 100). The full soak is five minutes:
//!
//! ```sh
//! SOAK_SECONDS=300 SOAK_RATE=200 cargo test -p host-bridge --test soak -- --nocapture
//! ```
//!
//! It checks that every message was processed, that the processing rate
//! kept up with the publishing rate to the end, and that host-bridge's
//! resident memory did not grow beyond noise; and it prints the figures.

mod common;

use common::client;
use common::dapr::{Backing, DaprApp};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_steady_stream_through_daprd_and_redis_loses_nothing_and_holds_up() {
    let seconds = env_or("SOAK_SECONDS", 30);
    let rate = env_or("SOAK_RATE", 100);
    let count = (seconds * rate) as usize;
    let backing = Backing::start();
    let manifest = common::test_subscriber_manifest(&["record"], 5, "", "");
    let app = DaprApp::start("soak", &manifest, &backing.resources, &["record"]);

    // Warm up, so the first RSS reading is of a host that has served.
    for i in 0..rate {
        app.host
            .publish("record", &format!("warm-{i}"), "text/plain", "w");
    }
    let processed = |app: &DaprApp| {
        app.host
            .metric("host_bridge_deliveries_total{outcome=\"success\"}")
    };
    common::dapr::wait_until(Duration::from_secs(60), "the warm-up", || {
        processed(&app) >= rate
    });
    let rss_start = app.host.rss_kib();
    let base = processed(&app);

    // Publish on a fixed schedule, from another thread.
    let url = format!(
        "{}/v1.0/publish/pubsub/record?metadata.cloudevent.id=",
        app.daprd.url
    );
    let started = Instant::now();
    let publisher = std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(count);
        for i in 0..count {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let sent = Instant::now();
            let response = client()
                .post(format!("{url}s-{i}"))
                .header("content-type", "text/plain")
                .body(format!("m{i}"))
                .send()
                .unwrap();
            assert_eq!(response.status(), 204, "publishing s-{i} failed");
            latencies.push(sent.elapsed());
        }
        latencies
    });

    // Each second: how many were processed, and the host's RSS.
    let mut samples = Vec::new();
    while !publisher.is_finished() {
        std::thread::sleep(Duration::from_secs(1));
        samples.push((
            started.elapsed(),
            processed(&app) - base,
            app.host.rss_kib(),
        ));
    }
    let mut latencies = publisher.join().unwrap();
    let published_in = started.elapsed();
    common::dapr::wait_until(
        Duration::from_secs(120),
        "every message to be processed",
        || processed(&app) - base >= count as u64,
    );
    let drained_in = started.elapsed();
    let rss_end = app.host.rss_kib();

    // Every id, one by one.
    let missing: Vec<usize> = (0..count)
        .filter(|i| app.host.state(&format!("received-s-{i}")).is_none())
        .collect();

    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    // The processing rate over the last third of the run, against the
    // publishing rate: a host falling behind shows here first.
    let third = samples.len() / 3;
    let (t0, n0, _) = samples[samples.len() - 1 - third];
    let (t1, n1, _) = samples[samples.len() - 1];
    let late_rate = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
    let rss_peak = samples.iter().map(|s| s.2).max().unwrap_or(rss_end);
    println!(
        "soak: {count} messages at {rate}/s for {seconds} s: published in {published_in:.1?}, all processed after {drained_in:.1?}; \
         {} missing; publish latency p50 {:?} p99 {:?}; processing rate over the last third {late_rate:.0}/s; \
         host-bridge RSS {rss_start} KiB at the start, {rss_peak} KiB at the peak, {rss_end} KiB at the end",
        missing.len(),
        quantile(0.50),
        quantile(0.99),
    );
    assert!(missing.is_empty(), "never processed: {missing:?}");
    assert!(
        late_rate >= rate as f64 * 0.9,
        "processing fell behind: {late_rate:.0}/s against {rate}/s published"
    );
    // Noise: allocator pools and caches settle in the first seconds. Growth
    // that scales with the messages (a leak) would be far beyond this.
    assert!(
        rss_end <= rss_start + rss_start / 2 + 16 * 1024,
        "host-bridge grew from {rss_start} KiB to {rss_end} KiB"
    );
}
