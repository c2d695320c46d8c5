//! The benchmarks of `make bench`: host-bridge under load, measured side
//! by side with its baselines in the same run.
//!
//! Every figure here compares systems that ran on the same machine, in
//! turn, round after round (5 by default), each round starting with the
//! next system, so that the noise of a shared machine hits all of them
//! alike; ratios are taken within a round, and figures are reported as the
//! median and the min–max over rounds.
//!
//! | section | file | what is loaded | systems |
//! |---|---|---|---|
//! | `sandbox` | `load/micro.rs` | the criterion micro-benchmarks of `benches/sandbox.rs`, run by this harness | in-process |
//! | `delivery` | `load/delivery.rs` | `POST /orders-events`, the CloudEvents daprd would send | host-bridge (in memory, and durable), the native baseline |
//! | `http` | `load/http.rs` | `POST /orders`; `GET /hello`; `POST /order-processor-http`, the same `wasi:http` component under each runtime | host-bridge (fresh instances, and `instance_reuse`), the native baseline, `wasmtime serve` (host-bridge's pool, its default pool, its instance reuse) |
//! | `embedded` | `load/embedded.rs` | publish to processed on the embedded broker | host-bridge in memory and durable |
//! | `languages` | `load/languages.rs` | the order processor in Rust, Python, JavaScript; the JavaScript Web API | host-bridge, fresh instances and `instance_reuse` |
//! | `dapr` | `load/dapr.rs` | N messages through daprd and Redis, one by one and in bulk | host-bridge and the native baseline, each behind an identical daprd |
//! | `brokers` | `load/brokers.rs` | N messages through daprd and each broker: Redis, Kafka, RabbitMQ, NATS JetStream, MQTT | host-bridge and the native baseline, each behind an identical daprd |
//! | `startup` | `load/startup.rs` | launch to `/healthz` 200, cold and with a warm cache | host-bridge, the native baseline |
//!
//! Shared by the sections: the load generator (`load/generator.rs`: one
//! keep-alive HTTP/1.1 connection per unit of concurrency, closed loop, on
//! the harness's one thread, every answer checked), the systems under test
//! and how they start (`load/systems.rs`; `wasmtime serve` in
//! `load/wasmtime.rs`), pinning (`load/cores.rs`: the load generator on one
//! core, the systems, daprd, Redis and brokers on the others), how a point
//! or a flow is measured (`load/measure.rs`), the settings
//! (`load/config.rs`) and the report (`load/report.rs`, `load/stats.rs`).
//! Each section's file holds what it runs, its targets (MET or MISSED) and
//! its tables.
//!
//! The results go to `BENCHMARKS.md` (between its `results` markers) and
//! `docs/bench/throughput.svg`; a run of some sections (`BENCH_ONLY`)
//! writes under `target/bench/` instead, and so does `BENCH_SMOKE=1`, which
//! runs everything briefly and fails on any error.
//!
//! Settings (environment): `BENCH_SECONDS` per load point (3),
//! `BENCH_ROUNDS` (5), `BENCH_MESSAGES` for the message-flow sections
//! (10000), `BENCH_ONLY` (comma-separated sections), `BENCH_SMOKE`,
//! `WASMTIME` (the `wasmtime` binary; `make bench` installs wasmtime-cli
//! 48.0.8).

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "load/config.rs"]
mod config;
#[path = "load/cores.rs"]
mod cores;
#[path = "load/generator.rs"]
mod generator;
#[path = "load/measure.rs"]
mod measure;
#[path = "load/report.rs"]
mod report;
#[path = "load/stats.rs"]
mod stats;
#[path = "load/systems.rs"]
mod systems;
#[path = "load/wasmtime.rs"]
mod wasmtime;

#[path = "load/brokers.rs"]
mod brokers;
#[path = "load/dapr.rs"]
mod dapr;
#[path = "load/delivery.rs"]
mod delivery;
#[path = "load/embedded.rs"]
mod embedded;
#[path = "load/http.rs"]
mod http;
#[path = "load/languages.rs"]
mod languages;
#[path = "load/micro.rs"]
mod micro;
#[path = "load/startup.rs"]
mod startup;
#[path = "load/tracing.rs"]
mod tracing;

use config::Config;
use report::Report;
use systems::Tools;

/// The concurrencies of every section that loads a server for a window.
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let config = Config::from_env();
    // Every system under test runs with the same environment. wasmtime
    // makes an error on every store drop, and with RUST_BACKTRACE set each
    // one captures a backtrace; host-bridge turns that off for itself, so
    // wasmtime serve gets the same here.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    if let Some(only) = &config.only {
        for section in only {
            assert!(
                SECTIONS.contains(&section.as_str()),
                "BENCH_ONLY: no section {section:?}; the sections are {}",
                SECTIONS.join(", ")
            );
        }
    }
    /// One section of the harness, run into the report.
    type Section<'a> = dyn Fn(&mut Report) + 'a;
    let tools = Tools::prepare(&config);
    // Made after `prepare` pinned this thread: the load generator runs on
    // it alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the load generator");
    let mut report = Report::new(&config, &tools);

    let sections: [(&str, &Section); 9] = [
        ("sandbox", &|report| micro::run(&config, &tools, report)),
        ("delivery", &|report| {
            delivery::run(&config, &tools, &runtime, report)
        }),
        ("http", &|report| {
            http::run(&config, &tools, &runtime, report)
        }),
        ("tracing", &|report| {
            tracing::run(&config, &tools, &runtime, report)
        }),
        ("embedded", &|report| {
            embedded::run(&config, &tools, &runtime, report)
        }),
        ("languages", &|report| {
            languages::run(&config, &tools, &runtime, report)
        }),
        ("dapr", &|report| {
            dapr::run(&config, &tools, &runtime, report)
        }),
        ("brokers", &|report| {
            brokers::run(&config, &tools, &runtime, report)
        }),
        ("startup", &|report| startup::run(&config, &tools, report)),
    ];
    for (section, run) in sections {
        if config.runs(section) {
            let started = std::time::Instant::now();
            run(&mut report);
            eprintln!("bench: [{section}] done in {:.0?}", started.elapsed());
        }
    }
    report.finish(&config);
}

/// The sections, in the order they run; `BENCH_ONLY` names some.
const SECTIONS: [&str; 9] = [
    "sandbox",
    "delivery",
    "http",
    "tracing",
    "embedded",
    "languages",
    "dapr",
    "brokers",
    "startup",
];

/// Every section's targets, in the order of the report.
fn judge(report: &mut Report) {
    micro::targets(report);
    delivery::targets(report);
    http::targets(report);
    tracing::targets(report);
    embedded::targets(report);
    languages::targets(report);
    dapr::targets(report);
    startup::targets(report);
}

/// Every section's tables, in the order of the report.
fn tables(report: &Report, out: &mut String) {
    micro::table(report, out);
    delivery::table(report, out);
    http::table(report, out);
    tracing::table(report, out);
    embedded::table(report, out);
    languages::table(report, out);
    dapr::table(report, out);
    brokers::table(report, out);
    startup::table(report, out);
}
