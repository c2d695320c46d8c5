//! The `http` section: the HTTP trigger, three paths.
//!
//! - `POST /orders`, keep-alive: the order API, which publishes each order
//!   for the processor and answers 202 before it is processed; host-bridge
//!   (in memory, and durable) and the native baseline. A point lasts until
//!   every accepted order is processed.
//! - `GET /hello`, a spin-sdk hello world: what a request costs in the
//!   runtime itself. host-bridge, the native baseline and `wasmtime serve`.
//! - `POST /order-processor-http`: the same `wasi:http` component,
//!   `handler/order-processor-http` (the order processor's work behind
//!   `wasi:http`), under host-bridge's HTTP trigger and under `wasmtime
//!   serve`.
//!
//! On the last two, the like-for-like comparison is host-bridge against
//! `wasmtime serve` with host-bridge's pool settings, both with a fresh
//! instance per request. The other rows are labelled: `wasmtime serve`
//! with its default pool, with its default instance reuse, and host-bridge
//! with the opt-in `instance_reuse`; reuse trades isolation for speed.

use crate::config::Config;
use crate::generator::Workload;
use crate::measure::load_servers;
use crate::report::Report;
use crate::stats::{median, micros, percentiles, spread};
use crate::systems::{
    HTTP_REUSE, Placement, Server, Storage, Tools, bench_manifest, start_host_bridge, start_native,
    with_http_processor, with_native,
};
use crate::wasmtime::{WASMTIME_SAME_POOL, wasmtimes};
use crate::{CONCURRENCY, delivery};

const SECTION: &str = "http";
const ORDERS: &str = "POST /orders";
const HELLO: &str = "GET /hello";
const PROCESSOR: &str = "POST /order-processor-http";
const REUSE: &str = "host-bridge, instance reuse";

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    for (path, workload) in [
        (ORDERS, Workload::PlaceOrder),
        (HELLO, Workload::Hello),
        (PROCESSOR, Workload::HttpDelivery),
    ] {
        eprintln!("bench: [{SECTION}] {path}: starting the servers");
        let servers = match workload {
            Workload::PlaceOrder => with_native(tools),
            Workload::Hello => {
                let mut servers = runtimes(tools, "hello", &mut report.failures);
                servers.insert(
                    2,
                    start_native(tools, &["--state", "memory"], Placement::anywhere()),
                );
                servers
            }
            _ => runtimes(tools, "order_processor_http", &mut report.failures),
        };
        load_servers(
            config,
            runtime,
            report,
            &servers,
            (SECTION, path, workload),
            &CONCURRENCY,
        );
    }
}

/// host-bridge with a fresh instance per request and with `instance_reuse`
/// (both in memory), then `wasmtime serve` running `component` (see
/// [`wasmtimes`]).
fn runtimes(tools: &Tools, component: &str, failures: &mut Vec<String>) -> Vec<Server> {
    let mut servers: Vec<Server> = [(false, "host-bridge"), (true, REUSE)]
        .into_iter()
        .map(|(reuse, name)| {
            let manifest = with_http_processor(tools, &bench_manifest(tools, false), reuse);
            start_host_bridge(
                tools,
                Storage::InMemory,
                name,
                &manifest,
                Placement::anywhere(),
            )
        })
        .collect();
    servers.extend(wasmtimes(tools, component, failures));
    servers
}

pub(crate) fn targets(report: &mut Report) {
    let p50 = |report: &Report, system: &str| {
        let points = report.select(ORDERS, system, 1);
        let all: Vec<u32> = points
            .iter()
            .flat_map(|p| p.latencies.iter().copied())
            .collect();
        (!all.is_empty()).then(|| percentiles(&all).0)
    };
    for system in ["host-bridge (durable state)", "host-bridge"] {
        let p = p50(report, system);
        report.target(
            format!("keep-alive POST /orders p50 ≤ 2 ms at concurrency 1, {system}"),
            p.map(micros),
            p.map(|us| us <= 2000),
        );
    }
    // The HTTP trigger against the delivery path, on components of similar
    // size doing the same work: order-processor-http over HTTP, the order
    // processor as a subscriber (which also saves the order).
    let http = report.cpu_per_request(PROCESSOR, "host-bridge", 16);
    let delivery = report.cpu_per_request(delivery::PATH, "host-bridge", 16);
    let both = !http.is_empty() && !delivery.is_empty();
    let ratio = both.then(|| median(http.clone()) / median(delivery.clone()));
    report.target(
        "HTTP trigger CPU per request ≤ 1.2× the delivery path's at concurrency 16 (order-processor-http on \
         POST /order-processor-http ÷ order-processor on POST /orders-events, fresh instances)",
        ratio.map(|r| {
            format!(
                "{r:.2}× ({:.0} µs ÷ {:.0} µs)",
                median(http.clone()),
                median(delivery.clone())
            )
        }),
        ratio.map(|r| r <= 1.2),
    );
    let to_wasmtime = report.ratios(PROCESSOR, "host-bridge", WASMTIME_SAME_POOL, 16);
    report.target(
        "HTTP trigger throughput ≥ 1.5× wasmtime serve at concurrency 16, like for like: the same wasi:http \
         component (order-processor-http), the same pool settings, a fresh instance per request in both",
        (!to_wasmtime.is_empty()).then(|| spread(to_wasmtime.clone(), |r| format!("{r:.2}×"))),
        (!to_wasmtime.is_empty()).then(|| median(to_wasmtime) >= 1.5),
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    report.points_table(
        out,
        (SECTION, ORDERS),
        "POST /orders: the order API (http)",
        "host-bridge runs the orders app of `spin.toml`, `--in-memory`, and with its default durable state; the \
         order API publishes each order to the embedded broker and the processor processes it. The native baseline \
         does the same in-process (a tokio queue, a map).",
        "host-bridge",
    );
    let runtimes = format!(
        "host-bridge runs it on its HTTP trigger, in memory; *{REUSE}* opts into `instance_reuse = {HTTP_REUSE}` \
         (an instance serves up to {HTTP_REUSE} requests one after another: isolation traded for speed). \
         *{WASMTIME_SAME_POOL}* is `wasmtime serve` (48.0.8, the wasmtime host-bridge embeds) with host-bridge's \
         pooling-allocator settings as `-O pooling-*` options and a fresh instance per request \
         (`--max-instance-reuse-count 1`): the like-for-like row. *default pool* is its own defaults, fresh \
         instances; *default pool, instance reuse* is its default reuse of a WASI 0.3 instance (up to 128 requests, \
         16 at once)."
    );
    report.points_table(
        out,
        (SECTION, HELLO),
        "GET /hello: a hello world (http)",
        &format!(
            "`handler/hello`, a spin-sdk `wasi:http` component that does nothing: what a request costs in the runtime \
             itself. {runtimes} The native baseline answers the same bytes."
        ),
        "host-bridge",
    );
    report.points_table(
        out,
        (SECTION, PROCESSOR),
        "POST /order-processor-http: the same wasi:http component under each runtime (http)",
        &format!(
            "`handler/order-processor-http`: the order processor's work (parse the CloudEvent, validate, total and \
             encode the order) behind `wasi:http`, without the save. {runtimes}"
        ),
        "host-bridge",
    );
}
