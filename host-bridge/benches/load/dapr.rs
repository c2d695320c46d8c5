//! The `dapr` section: N messages through a real daprd and Redis,
//! host-bridge against the native baseline behind identical sidecars. Each
//! run has its own Redis, daprd and app (all on the server cores),
//! publishes to daprd's publish API over 16 connections, and ends when the
//! app has processed the last message; the app's CPU time over the run is
//! read too.
//!
//! One by one (a delivery per request) is what the target judges. The bulk
//! runs are shown apart, with fewer messages: through Redis they measure
//! the component's batching, not the apps (see [`BULK_NOTE`]).

use crate::common;
use crate::common::dapr::Backing;
use crate::config::Config;
use crate::generator::{self, Stop, Workload};
use crate::measure::{Flow, error_note, publish_percentiles, rotated};
use crate::report::Report;
use crate::stats::{errors_note, median, micros, rates, spread};
use crate::systems::{
    Sidecar, Storage, Tools, bench_manifest, local, start_host_bridge, start_native, wait_for,
};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const SECTION: &str = "dapr";
const PUBLISHERS: usize = 16;

/// The systems, and whether each subscribes in bulk.
const SYSTEMS: [(&str, bool); 4] = [
    ("host-bridge", false),
    ("native baseline", false),
    ("host-bridge, bulk", true),
    ("native baseline, bulk", true),
];

/// What the bulk rows measure.
const BULK_NOTE: &str = "Dapr's Redis component hands over at most its `concurrency` (10 by default) messages at once, \
     so a batch of up to 100 never fills and every message waits out `maxAwaitDurationMs` (40 ms here): about 10 \
     messages per 40 ms, for either app. They show that bulk delivery works and what it costs with Redis as shipped, \
     not how fast either app is; they have no target";

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    if !common::dapr::daprd_path().exists() {
        eprintln!("bench: [dapr] no daprd (run `make setup-dapr`); section left out");
        return;
    }
    for round in 0..config.rounds {
        for &(system, bulk) in rotated(&SYSTEMS, round) {
            // Bulk runs wait out Redis's batching, not the apps: fewer
            // messages tell the same.
            let messages = if bulk {
                (config.messages / 5).max(100)
            } else {
                config.messages
            };
            // Each run has its own Redis, so no stream holds another run's
            // messages.
            let backing = tools.cores.on_servers(Backing::start);
            let sidecar = Sidecar::start(&tools.cores, "bench", &backing.resources);
            let (daprd, at) = (&sidecar.daprd, sidecar.placement());
            let app = if system.starts_with("host-bridge") {
                let manifest = bench_manifest(tools, bulk);
                start_host_bridge(tools, Storage::InMemory, "host-bridge", &manifest, at)
            } else {
                let args: &[&str] = if bulk {
                    &["--state", "dapr", "--bulk"]
                } else {
                    &["--state", "dapr"]
                };
                start_native(tools, args, at)
            };
            daprd.wait_for_subscriptions(&["orders"]);
            let processed = || {
                app.processed()
                    .expect("host-bridge and the native baseline count what they processed")
            };
            let sidecar = local(daprd.http_port);
            let cpu_before = app.process.cpu_time();
            let started = Instant::now();
            let published = generator::run(
                runtime,
                generator::load(
                    sidecar,
                    Workload::Publish("orders"),
                    PUBLISHERS,
                    Stop::Count(messages),
                ),
            );
            let goal = published.ok;
            wait_for(
                Duration::from_secs(600),
                "every message to be processed through daprd",
                || processed() >= goal,
            );
            let elapsed = started.elapsed();
            let cpu = app.process.cpu_time().saturating_sub(cpu_before);
            eprintln!(
                "bench: [dapr] round {} {system:<24} {} messages processed in {:.2?}: {:.0} msg/s, app cpu/message {}{}",
                round + 1,
                published.ok,
                elapsed,
                published.ok as f64 / elapsed.as_secs_f64(),
                micros((cpu / published.ok.max(1) as u32).as_micros() as u32),
                error_note(&published),
            );
            let mut flow = Flow::new(SECTION, system.to_owned(), round, published, elapsed);
            flow.cpu = Some(cpu);
            report.flows.push(flow);
        }
    }
}

/// The median CPU time `system`'s app took per message, in microseconds.
fn cpu_per_message(report: &Report, system: &str) -> Option<f64> {
    let values: Vec<f64> = report
        .runs_of(SECTION, system)
        .filter_map(|f| Some(f.cpu?.as_secs_f64() * 1e6 / f.messages.max(1) as f64))
        .collect();
    (!values.is_empty()).then(|| median(values))
}

/// host-bridge's rate over the native baseline's, round by round.
fn ratios(report: &Report, system: &str, baseline: &str) -> Vec<f64> {
    let flows = || report.flows.iter().filter(|f| f.section == SECTION);
    flows()
        .filter(|f| f.system == system)
        .filter_map(|o| {
            let t = flows().find(|t| t.system == baseline && t.round == o.round)?;
            Some(o.rate() / t.rate())
        })
        .collect()
}

pub(crate) fn targets(report: &mut Report) {
    let r = ratios(report, "host-bridge", "native baseline");
    let cpu = |system| {
        cpu_per_message(report, system)
            .map_or("not measured".to_owned(), |us| format!("{us:.0} µs"))
    };
    let measured = (!r.is_empty()).then(|| {
        format!(
            "{}; CPU per message: host-bridge {}, native baseline {}",
            spread(r.clone(), |r| format!("{:.0}%", r * 100.0)),
            cpu("host-bridge"),
            cpu("native baseline"),
        )
    });
    let met = (!r.is_empty()).then(|| median(r) >= 0.95);
    report.target(
        format!(
            "through daprd and Redis ≥ 95% of the native baseline, one delivery per request (not bulk), {PUBLISHERS} publishers"
        ),
        measured,
        met,
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    let flows: Vec<&Flow> = report.flows_of(SECTION);
    if flows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Through daprd and Redis: publish to processed, concurrency {PUBLISHERS}\n\n`BENCH_ONLY=dapr make bench`; \
         each run has its own Redis and daprd (1.18.3, the `components/` of this repo) in front of one app, publishes \
         the messages to daprd's publish API over {PUBLISHERS} keep-alive connections and ends when the app has processed \
         the last. The systems take turns, starting with the next one each round; the app, \
         daprd and Redis share the systems' core, the load generator has its own (see Pinning above). App CPU is the app process's own \
         (not daprd's or Redis's) over the run, per message. Median over rounds, min–max in brackets; the ratio is \
         taken within each round. Bulk rows: {BULK_NOTE}.\n\n\
         | system | messages | messages/s | app CPU per message | publish p50 | publish p99 | ÷ native baseline |\n|---|---|---|---|---|---|---|"
    );
    for (system, _) in SYSTEMS {
        let runs: Vec<&&Flow> = flows.iter().filter(|f| f.system == system).collect();
        if runs.is_empty() {
            continue;
        }
        let (p50, p99) = publish_percentiles(runs.iter().map(|f| **f));
        let baseline = if system.starts_with("host-bridge") {
            let native = system.replace("host-bridge", "native baseline");
            spread(ratios(report, system, &native), |r| {
                format!("{:.0}%", r * 100.0)
            })
        } else {
            String::new()
        };
        let errors: u64 = runs.iter().map(|f| f.errors).sum();
        let _ = writeln!(
            out,
            "| {system}{} | {} | {} | {} | {} | {} | {baseline} |",
            errors_note(errors),
            runs[0].messages,
            rates(runs.iter().map(|f| f.rate()).collect()),
            cpu_per_message(report, system).map_or(String::new(), |us| format!("{us:.0} µs")),
            micros(p50),
            micros(p99),
        );
    }
}
