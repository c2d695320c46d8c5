//! The `embedded` section: the embedded broker, publish to processed.
//! host-bridge in memory and durable (every publish fsynced before its
//! ack); each run publishes N orders on the publish API over 16
//! connections and ends when the order processor has processed the last.

use crate::config::Config;
use crate::measure::{Flow, error_note, publish_and_process, publish_percentiles, rotated};
use crate::report::Report;
use crate::stats::{errors_note, median, micros, percentiles, rates, spread};
use crate::systems::{Tools, host_bridges};
use std::fmt::Write as _;

const SECTION: &str = "embedded";
const PUBLISHERS: usize = 16;

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [{SECTION}] starting the servers");
    let servers = host_bridges(tools);
    for round in 0..config.rounds {
        for server in rotated(&servers, round) {
            let (published, elapsed, cpu) =
                publish_and_process(runtime, server, PUBLISHERS, config.messages);
            let (p50, p99) = percentiles(&published.latencies);
            let rate = published.ok as f64 / elapsed.as_secs_f64();
            eprintln!(
                "bench: [{SECTION}] round {} {:<28} {} published and processed in {:.2?}: {rate:.0} msg/s; publish p50 {} p99 {}; cpu/message {}{}",
                round + 1,
                server.name,
                published.ok,
                elapsed,
                micros(p50),
                micros(p99),
                micros((cpu / published.ok.max(1) as u32).as_micros() as u32),
                error_note(&published),
            );
            let mut flow = Flow::new(SECTION, server.name.to_owned(), round, published, elapsed);
            flow.cpu = Some(cpu);
            report.flows.push(flow);
        }
    }
}

fn runs<'a>(report: &'a Report, system: &str) -> Vec<&'a Flow> {
    report.runs_of(SECTION, system).collect()
}

pub(crate) fn targets(report: &mut Report) {
    for (system, what) in [
        (
            "host-bridge (durable state)",
            "durable (every publish fsynced before its ack)",
        ),
        ("host-bridge", "in memory (--in-memory)"),
    ] {
        let rates: Vec<f64> = runs(report, system).iter().map(|f| f.rate()).collect();
        report.target(
            format!(
                "embedded broker ≥ 15,000 messages/s published and processed at concurrency {PUBLISHERS}, {what}"
            ),
            (!rates.is_empty()).then(|| spread(rates.clone(), |r| format!("{r:.0} messages/s"))),
            (!rates.is_empty()).then(|| median(rates) >= 15_000.0),
        );
    }
}

pub(crate) fn table(report: &Report, out: &mut String) {
    if !report.flows.iter().any(|f| f.section == SECTION) {
        return;
    }
    let _ = writeln!(
        out,
        "\n### The embedded broker: publish to processed, concurrency {PUBLISHERS}\n\n`BENCH_ONLY=embedded make bench`; \
         each run publishes the messages on host-bridge's publish API over {PUBLISHERS} keep-alive connections and ends \
         when the order processor has processed the last; the two take turns, starting with the next one each round; pinned as said above. \
         CPU is host-bridge's over the run, publishing included. Median over rounds, min–max in brackets.\n\n\
         | system | messages | messages/s | CPU per message | publish p50 | publish p99 |\n|---|---|---|---|---|---|"
    );
    for system in ["host-bridge", "host-bridge (durable state)"] {
        let runs = runs(report, system);
        if runs.is_empty() {
            continue;
        }
        let (p50, p99) = publish_percentiles(runs.iter().copied());
        let cpu = median(
            runs.iter()
                .map(|f| f.cpu.unwrap_or_default().as_secs_f64() * 1e6 / f.messages.max(1) as f64)
                .collect(),
        );
        let errors: u64 = runs.iter().map(|f| f.errors).sum();
        let _ = writeln!(
            out,
            "| {system}{} | {} | {} | {cpu:.0} µs | {} | {} |",
            errors_note(errors),
            runs[0].messages,
            rates(runs.iter().map(|f| f.rate()).collect()),
            micros(p50),
            micros(p99),
        );
    }
}
