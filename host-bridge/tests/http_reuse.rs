//! `instance_reuse` for HTTP components, through a real `host-bridge up`
//! and real HTTP: the probe (`handler/http-probe`) counts, in a static,
//! the requests its instance has taken, so the count a request answers
//! tells whether it ran on a fresh instance (1) or on a kept one (more).
//!
//! Every test runs on both handler generations: the probe as built
//! (`wasi:http/handler@0.3.0`, spin-sdk 7) and its `p2` example
//! (`wasi:http/incoming-handler@0.2`, the generation componentize-js and
//! componentize-py export).
//!
//! Requests one after another are sent 20 ms apart: an instance goes back
//! among the idle ones once its response has ended, on a task of its own,
//! and a request that came before that would get a fresh instance (a
//! correct answer, but not the one these tests count on).

mod common;

use common::{Host, free_port, guests, wasm};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The probe's two builds: `(label, path of the .wasm)`.
fn probes() -> [(&'static str, String); 2] {
    [
        ("wasi:http 0.3", wasm("http_probe")),
        ("wasi:http 0.2", p2_probe()),
    ]
}

/// The probe's `p2` example, built once.
fn p2_probe() -> String {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            guests();
            let status = Command::new(env!("CARGO"))
                .current_dir(common::workspace())
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .args(["-p", "http-probe", "--example", "p2"])
                .status()
                .expect("cannot run cargo to build the probe's p2 example");
            assert!(status.success(), "building the probe's p2 example failed");
            guests().join("examples/p2.wasm").display().to_string()
        })
        .clone()
}

/// An app with the probe at `source` on `/probe/...`, with `settings`
/// (lines of `[component.probe.tool.host-bridge]`).
fn manifest(source: &str, settings: &str) -> String {
    format!(
        "spin_manifest_version = 2\n[application]\nname = \"reuse\"\n\n\
         [[trigger.http]]\nroute = \"/probe/...\"\ncomponent = \"probe\"\n\n\
         [component.probe]\nsource = \"{source}\"\n\
         [component.probe.tool.host-bridge]\n{settings}\n"
    )
}

/// The count `GET /probe/count` answers.
fn count(host: &Host) -> u32 {
    let response = host.get("/probe/count");
    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {text:?}"))
}

/// `n` counts, one request after another.
fn counts(host: &Host, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            count(host)
        })
        .collect()
}

/// Without `instance_reuse`, every request gets a fresh instance: the
/// count never grows.
#[test]
fn every_request_gets_a_fresh_instance_by_default() {
    for (probe, source) in probes() {
        let host = Host::start(&manifest(&source, ""));
        assert_eq!(counts(&host, 8), vec![1; 8], "{probe}");
        assert_eq!(
            host.metric("host_bridge_http_requests_on_reused_instances_total"),
            0,
            "{probe}"
        );
    }
}

/// With `instance_reuse = 4`, an instance takes four requests one after
/// another, and the fifth gets a fresh one.
#[test]
fn an_instance_takes_instance_reuse_requests_then_a_fresh_one_comes() {
    for (probe, source) in probes() {
        let host = Host::start(&manifest(&source, "instance_reuse = 4"));
        assert_eq!(
            counts(&host, 10),
            vec![1, 2, 3, 4, 1, 2, 3, 4, 1, 2],
            "{probe}"
        );
        // Every count above 1 was a request on a kept instance.
        assert_eq!(
            host.metric("host_bridge_http_requests_on_reused_instances_total"),
            7,
            "{probe}"
        );
    }
}

/// Answers that carry no body (to `HEAD`, and `204 No Content`) end
/// cleanly too, and so do bodies of a declared length, which hyper stops
/// reading once it has them all (the `p2` probe declares the length of
/// each count, as componentize-js does): the instance is kept after each.
#[test]
fn answers_without_a_body_or_of_a_declared_length_keep_the_instance() {
    for (probe, source) in probes() {
        let host = Host::start(&manifest(&source, "instance_reuse = 100"));
        assert_eq!(counts(&host, 2), vec![1, 2], "{probe}");
        std::thread::sleep(Duration::from_millis(20));
        let response = common::client()
            .head(format!("{}/probe/count", host.url))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{probe}");
        std::thread::sleep(Duration::from_millis(20));
        let response = host.get("/probe/empty");
        assert_eq!(response.status(), 204, "{probe}");
        assert_eq!(response.headers()["probe-count"], "4", "{probe}");
        assert_eq!(counts(&host, 2), vec![5, 6], "{probe}");
    }
}

/// An instance that trapped, answered an error, never answered, or whose
/// body failed is dropped, never reused: the next request gets a fresh
/// instance (its count starts again at 1), and the host keeps serving.
/// Each failure is on an instance that had taken three requests.
#[test]
fn an_instance_that_failed_is_never_reused() {
    for (probe, source) in probes() {
        let mut host = Host::start(&manifest(&source, "instance_reuse = 100"));
        let mut failures = vec!["/probe/trap", "/probe/error", "/probe/broken-body"];
        if probe == "wasi:http 0.2" {
            failures.push("/probe/no-answer");
        }
        assert_eq!(counts(&host, 3), vec![1, 2, 3], "{probe}");
        for failure in failures {
            std::thread::sleep(Duration::from_millis(20));
            let response = common::client()
                .get(format!("{}{failure}", host.url))
                .send();
            if failure == "/probe/broken-body" {
                // The head may be out before the body fails: the client
                // sees no answer, or 200 and a body it cannot read to its
                // end.
                if let Ok(response) = response {
                    assert_eq!(response.status(), 200, "{probe}");
                    assert!(response.text().is_err(), "{probe}: the body should fail");
                }
            } else {
                let response = response.unwrap();
                assert_eq!(response.status(), 500, "{probe}, {failure}");
                let text = response.text().unwrap();
                assert!(
                    text.contains("ERR_COMPONENT_FAILED"),
                    "{probe}, {failure}: {text}"
                );
            }
            assert_eq!(
                counts(&host, 3),
                vec![1, 2, 3],
                "{probe}: the instance that took {failure} was reused"
            );
            assert!(host.is_running());
        }
    }
}

/// A request that runs past `timeout_ms` is answered 504, and its instance
/// is dropped: the next request gets a fresh one.
#[test]
fn an_instance_that_ran_out_of_time_is_never_reused() {
    let host = Host::start(&manifest(
        &wasm("http_probe"),
        "instance_reuse = 100\nclock = true\ntimeout_ms = 500",
    ));
    assert_eq!(counts(&host, 2), vec![1, 2]);
    let started = Instant::now();
    let response = host.get("/probe/slow?ms=5000");
    assert_eq!(response.status(), 504, "{}", response.text().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counts(&host, 2), vec![1, 2]);
}

/// Requests in parallel, some of them trapping, are each answered right:
/// every count is between 1 and N (an instance takes one request at a
/// time, at most N), every trap is a 500, and instances were reused. With
/// `max_instances`, a request waits for room but never long.
#[test]
fn parallel_requests_are_served_right() {
    const REUSE: u32 = 5;
    const THREADS: usize = 8;
    const REQUESTS: usize = 40;
    for (probe, source) in probes() {
        for settings in [
            format!("instance_reuse = {REUSE}"),
            format!("instance_reuse = {REUSE}\nmax_instances = 2"),
        ] {
            let host = Host::start(&manifest(&source, &settings));
            let url = host.url.clone();
            let threads: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let url = url.clone();
                    std::thread::spawn(move || {
                        let client = common::client();
                        let mut seen = Vec::new();
                        let mut slowest = Duration::ZERO;
                        for i in 0..REQUESTS {
                            let trap = thread % 4 == 0 && i % 10 == 5;
                            let path = if trap { "/probe/trap" } else { "/probe/count" };
                            let started = Instant::now();
                            let response = client.get(format!("{url}{path}")).send().unwrap();
                            slowest = slowest.max(started.elapsed());
                            let status = response.status();
                            let text = response.text().unwrap();
                            if trap {
                                assert_eq!(status, 500, "{text}");
                            } else {
                                assert_eq!(status, 200, "{text}");
                                seen.push(text.trim().parse::<u32>().unwrap());
                            }
                        }
                        (seen, slowest)
                    })
                })
                .collect();
            let mut seen = Vec::new();
            let mut slowest = Duration::ZERO;
            for thread in threads {
                let (counts, slow) = thread.join().unwrap();
                seen.extend(counts);
                slowest = slowest.max(slow);
            }
            let label = format!("{probe}, {settings:?}");
            assert!(
                seen.iter().all(|&c| (1..=REUSE).contains(&c)),
                "{label}: {seen:?}"
            );
            let reused = seen.iter().filter(|&&c| c > 1).count();
            assert!(
                reused >= seen.len() / 2,
                "{label}: {reused} reused: {seen:?}"
            );
            // Some 30 ms per request at the most on a quiet machine; a
            // request stuck behind an idle instance would wait seconds.
            assert!(slowest < Duration::from_secs(3), "{label}: {slowest:?}");
            assert_eq!(host.get("/probe/count").status(), 200, "{label}");
        }
    }
}

/// A live deploy drops the instances kept of the old version: the first
/// request after it gets a fresh instance of the new one.
#[test]
fn a_deploy_drops_the_kept_instances() {
    const TOKEN: &str = "s3cret-admin-token-for-the-reuse-tests";
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("probe.wasm");
    std::fs::copy(wasm("http_probe"), &source).unwrap();
    let host = Host::start_with_args(
        dir,
        &manifest(&source.display().to_string(), "instance_reuse = 100"),
        free_port(),
        &[("HOST_BRIDGE_ADMIN_TOKEN", TOKEN.to_owned())],
        None,
        &["--admin", &admin],
    );
    assert_eq!(counts(&host, 3), vec![1, 2, 3]);
    let deployed = Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args(["deploy", "--component", "probe", "--source", &p2_probe()])
        .args(["--host", &format!("http://{admin}")])
        .env("HOST_BRIDGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert_eq!(
        counts(&host, 3),
        vec![1, 2, 3],
        "the new version's instance"
    );
}
