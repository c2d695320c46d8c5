//! The `sandbox` section: the criterion micro-benchmarks of
//! `benches/sandbox.rs` (what one delivery and one HTTP request cost inside
//! host-bridge, with no network in the way), run by this harness on the
//! server cores, into a directory of this run's own, so a figure never
//! comes from an earlier run's `target/criterion`.

use crate::common::workspace;
use crate::config::Config;
use crate::report::Report;
use crate::systems::Tools;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// The benchmarks `benches/sandbox.rs` defines; a run that does not
/// produce all of them is an error.
const BENCHMARKS: [&str; 6] = [
    "delivery/store",
    "delivery/store+instantiate",
    "delivery/order-processor",
    "tracing/off: a delivery's spans",
    "tracing/order-processor, spans recorded",
    "http/order-api POST /orders",
];

/// The command, for the report.
const COMMAND: &str = "cargo bench -p host-bridge --bench sandbox";

pub(crate) fn run(config: &Config, tools: &Tools, report: &mut Report) {
    eprintln!("bench: [sandbox] {COMMAND} (the criterion micro-benchmarks), on the server cores");
    let Some(bench) = &tools.sandbox_bench else {
        return;
    };
    let dir = tempfile::tempdir_in(workspace().join("target/bench"))
        .expect("cannot make a directory for criterion's results under target/bench");
    // As `cargo bench` runs it: from the package's directory, with `--bench`.
    let mut command = Command::new(bench);
    command
        .current_dir(workspace().join("host-bridge"))
        .arg("--bench")
        .env("CRITERION_HOME", dir.path());
    if config.smoke {
        command.args([
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
            "--sample-size",
            "10",
        ]);
    }
    let status = tools.cores.on_servers(|| command.status());
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => report.failures.push(format!("{COMMAND} failed ({status})")),
        Err(e) => report.failures.push(format!("cannot run {COMMAND}: {e}")),
    }
    read(dir.path(), report);
    for id in BENCHMARKS {
        if !report.micro.contains_key(id) {
            report
                .failures
                .push(format!("{COMMAND} gave no result for `{id}`"));
        }
    }
}

/// Reads criterion's medians from `dir` (its `CRITERION_HOME`).
fn read(dir: &Path, report: &mut Report) {
    let Ok(groups) = std::fs::read_dir(dir) else {
        return;
    };
    for group in groups.flatten() {
        let Ok(benches) = std::fs::read_dir(group.path()) else {
            continue;
        };
        for bench in benches.flatten() {
            let new = bench.path().join("new");
            let read = |file: &str| -> Option<Value> {
                serde_json::from_str(&std::fs::read_to_string(new.join(file)).ok()?).ok()
            };
            if let (Some(id), Some(estimates)) = (read("benchmark.json"), read("estimates.json"))
                && let (Some(id), Some(median)) = (
                    id["full_id"].as_str(),
                    estimates["median"]["point_estimate"].as_f64(),
                )
            {
                report.micro.insert(id.to_owned(), median);
            }
        }
    }
}

pub(crate) fn targets(report: &mut Report) {
    let sandbox = report.micro.get("delivery/order-processor").copied();
    report.target(
        "sandbox cost per delivery (store, instantiate, handle, drop) ≤ 15 µs",
        sandbox.map(|ns| format!("{:.1} µs (criterion median)", ns / 1000.0)),
        sandbox.map(|ns| ns <= 15_000.0),
    );
    let off = report.micro.get("tracing/off: a delivery's spans").copied();
    let share = off.zip(sandbox).map(|(off, all)| off / all);
    report.target(
        "tracing off: a delivery's span calls ≤ 1% of the delivery (within noise)",
        off.zip(share)
            .map(|(ns, share)| format!("{ns:.0} ns, {:.2}% of a delivery", share * 100.0)),
        share.map(|share| share <= 0.01),
    );
    let recorded = report
        .micro
        .get("tracing/order-processor, spans recorded")
        .copied();
    let ratio = recorded.zip(sandbox).map(|(on, off)| on / off);
    report.target(
        "spans recorded: a delivery ≤ 1.15× its cost with tracing off",
        ratio.map(|r| format!("{r:.2}×")),
        ratio.map(|r| r <= 1.15),
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    if report.micro.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Micro-benchmarks (criterion, median per iteration)\n\n`BENCH_ONLY=sandbox make bench` runs `{COMMAND}` \
         in this run, on the systems' cores{}.\n\n| benchmark | median |\n|---|---|",
        if report.smoke {
            " (briefly: 0.2 s warm-up, 0.5 s, 10 samples)"
        } else {
            ""
        }
    );
    for (id, ns) in &report.micro {
        let _ = writeln!(out, "| `{id}` | {:.1} µs |", ns / 1000.0);
    }
}
