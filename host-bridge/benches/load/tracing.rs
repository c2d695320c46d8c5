//! The `tracing` section: what OpenTelemetry tracing costs the delivery
//! path. The workload of the `delivery` section (CloudEvents posted to the
//! order processor's route, host-bridge in memory), on two host-bridges side
//! by side in the same rounds: one with tracing off (the default: no
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), one exporting every delivery's spans
//! (`process`, `instantiate`, `handle`, the state save) over OTLP/HTTP to a
//! real Jaeger (`make setup-jaeger`), sampled at 100%.
//!
//! The cost of tracing *off* is too small to see here; the `sandbox`
//! section measures it directly (`tracing/off: a delivery's spans`, the
//! span calls a delivery makes with nothing to record them, against the
//! whole delivery).

use crate::common::free_port;
use crate::common::jaeger::Jaeger;
use crate::config::Config;
use crate::generator::Workload;
use crate::measure::load_servers;
use crate::report::Report;
use crate::stats::{median, spread};
use crate::systems::{Placement, Storage, Tools, bench_manifest, local, start_host_bridge};

const SECTION: &str = "tracing";
pub(crate) const PATH: &str = "POST /orders-events (tracing)";
const OFF: &str = "host-bridge (tracing off)";
const ON: &str = "host-bridge (spans exported)";
const CONCURRENCY: usize = 16;

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [{SECTION}] starting Jaeger and the servers");
    let jaeger = Jaeger::start();
    let manifest = bench_manifest(tools, false);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http.clone()),
        ("OTEL_SERVICE_NAME", "host-bridge-bench".to_owned()),
    ];
    let servers = vec![
        start_host_bridge(
            tools,
            Storage::InMemory,
            OFF,
            &manifest,
            Placement::anywhere(),
        ),
        start_host_bridge(
            tools,
            Storage::InMemory,
            ON,
            &manifest,
            Placement {
                addr: local(free_port()),
                env: &env,
            },
        ),
    ];
    load_servers(
        config,
        runtime,
        report,
        &servers,
        (SECTION, PATH, Workload::Delivery),
        &[CONCURRENCY],
    );
    // The spans did arrive: a run that exported nothing measured nothing.
    if jaeger.traces("host-bridge-bench").is_empty() {
        report
            .failures
            .push(format!("[{SECTION}] Jaeger holds no trace of `{ON}`"));
    }
}

pub(crate) fn targets(report: &mut Report) {
    let ratio = report.ratios(PATH, ON, OFF, CONCURRENCY);
    report.target(
        "deliveries with every span exported over OTLP ≥ 80% of the throughput with tracing off, at concurrency 16",
        (!ratio.is_empty()).then(|| spread(ratio.clone(), |r| format!("{:.0}%", r * 100.0))),
        (!ratio.is_empty()).then(|| median(ratio) >= 0.8),
    );
    let (on, off) = (
        report.cpu_per_request(PATH, ON, CONCURRENCY),
        report.cpu_per_request(PATH, OFF, CONCURRENCY),
    );
    let extra: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on - off).collect();
    report.target(
        "host-bridge's CPU per delivery, spans exported minus tracing off, ≤ 15 µs",
        (!extra.is_empty()).then(|| spread(extra.clone(), |us| format!("{us:+.1} µs"))),
        (!extra.is_empty()).then(|| median(extra) <= 15.0),
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    report.points_table(
        out,
        (SECTION, PATH),
        "POST /orders-events: the delivery path, traced (tracing)",
        "Two host-bridges, `--in-memory`, in the same rounds: tracing off (the default), and every delivery's spans \
         exported over OTLP/HTTP to a Jaeger v2 on this machine (its CPU is not host-bridge's, and not counted in \
         host-bridge's CPU per delivery).",
        OFF,
    );
}
