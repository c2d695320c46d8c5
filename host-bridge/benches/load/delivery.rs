//! The `delivery` section: the delivery path without Dapr. CloudEvents are
//! posted to the subscription's route exactly as daprd posts them
//! (host-bridge serves Dapr's app protocol on the embedded broker too, so
//! the same code runs with no daprd in front). The systems: host-bridge
//! (in memory, and durable), running the order processor of `spin.toml`
//! (a typed `hostbridge:pubsub` export, the CloudEvent parsed by the host),
//! and the native baseline doing the same work in-process with no Wasm.
//!
//! `wasmtime serve` is not here: it cannot run that component, and a
//! `wasi:http` one parses the CloudEvent in Wasm behind the whole HTTP
//! machinery. The `http` section compares the two runtimes on the same
//! `wasi:http` component instead.

use crate::CONCURRENCY;
use crate::config::Config;
use crate::generator::Workload;
use crate::measure::load_servers;
use crate::report::Report;
use crate::stats::{median, spread};
use crate::systems::{Tools, with_native};

const SECTION: &str = "delivery";
pub(crate) const PATH: &str = "POST /orders-events";

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [{SECTION}] {PATH}: starting the servers");
    let servers = with_native(tools);
    load_servers(
        config,
        runtime,
        report,
        &servers,
        (SECTION, PATH, Workload::Delivery),
        &CONCURRENCY,
    );
}

pub(crate) fn targets(report: &mut Report) {
    let cpu = report.cpu_per_request(PATH, "host-bridge", 16);
    report.target(
        "host-bridge's CPU per delivery at concurrency 16 ≤ 40 µs (the delivery path, in memory, a fresh instance per delivery)",
        (!cpu.is_empty()).then(|| spread(cpu.clone(), |us| format!("{us:.0} µs"))),
        (!cpu.is_empty()).then(|| median(cpu) <= 40.0),
    );
    let to_native = report.ratios(PATH, "host-bridge", "native baseline", 16);
    report.target(
        "delivery path throughput ≥ 80% of the native baseline at concurrency 16",
        (!to_native.is_empty())
            .then(|| spread(to_native.clone(), |r| format!("{:.0}%", r * 100.0))),
        (!to_native.is_empty()).then(|| median(to_native) >= 0.8),
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    report.points_table(
        out,
        (SECTION, PATH),
        "POST /orders-events: the delivery path (delivery)",
        "host-bridge runs the orders app of `spin.toml` plus the hello world, `--in-memory`; *durable state* is the \
         default, the embedded broker and state on disk. The native baseline (`benches/native-baseline`) parses the \
         CloudEvent, validates, totals and saves the order in-process with the same `orders` crate.",
        "host-bridge",
    );
}
