//! The `languages` section: the order processor in Rust, Python and
//! JavaScript, each with a fresh instance per delivery (the default) and
//! with the opt-in `instance_reuse = 1000` and `max_instances = 4` (what
//! the Python and JavaScript manifests set), on the embedded broker in
//! memory: 8 publishers on the publish API, each run ending when the last
//! message is processed. The host's peak RSS is read after those runs.
//!
//! Then the JavaScript Web API (`handler/orders-js`'s `order-api`, POSTed
//! orders at concurrency 1 and 16, each point lasting until the processor
//! has processed every accepted order), with a fresh instance per request
//! and with the same opt-in for HTTP; its processor reuses instances in
//! both, so it is the API that differs.

use crate::common::{self, workspace};
use crate::config::Config;
use crate::generator::Workload;
use crate::measure::{Flow, error_note, load_servers, publish_and_process, rotated};
use crate::report::Report;
use crate::stats::{median, micros, spread};
use crate::systems::{Placement, Storage, Tools, start_host_bridge};
use std::fmt::Write as _;
use std::time::Duration;

/// Each language: what the table calls it, and its suffix.
pub(crate) const LANGUAGES: [(&str, &str); 3] =
    [("Rust", "rs"), ("Python", "py"), ("JavaScript", "js")];
pub(crate) const LANGUAGE_PUBLISHERS: usize = 8;

const SECTION: &str = "languages";

/// The opt-in, as the table and the targets name it.
const OPT_IN: &str = "opt-in `instance_reuse = 1000`, `max_instances = 4`";

/// The JavaScript Web API's path in the table.
const WEB_API: &str = "POST /orders (JavaScript Web API)";
const WEB_API_FRESH: &str = "JavaScript Web API, fresh instances";
const WEB_API_REUSE: &str = "JavaScript Web API, instance reuse";

pub(crate) fn language_manifest(lang: &str, reuse: bool) -> String {
    let manifest = if lang == "rs" {
        common::orders_manifest().replace(
            "timeout_ms = 5000\n",
            "timeout_ms = 5000\ninstance_reuse = 1000\nmax_instances = 4\n",
        )
    } else {
        common::polyglot_manifest(lang)
    };
    if reuse {
        assert!(manifest.contains("instance_reuse = 1000\n"), "{manifest}");
        manifest
    } else {
        manifest
            .replace("instance_reuse = 1000\n", "")
            .replace("max_instances = 4\n", "")
    }
}

pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [{SECTION}] starting the servers");
    let mut servers = Vec::new();
    for (language, lang) in LANGUAGES {
        for reuse in [false, true] {
            let name: &'static str = format!(
                "{language}, {}",
                if reuse {
                    "instance reuse"
                } else {
                    "fresh instances"
                }
            )
            .leak();
            let manifest = language_manifest(lang, reuse);
            servers.push(start_host_bridge(
                tools,
                Storage::InMemory,
                name,
                &manifest,
                Placement::anywhere(),
            ));
        }
    }
    // The slowest guest handles a few hundred a second: fewer messages.
    let messages = (config.messages / 2).max(100);
    for round in 0..config.rounds {
        for server in rotated(&servers, round) {
            let (published, elapsed, cpu) =
                publish_and_process(runtime, server, LANGUAGE_PUBLISHERS, messages);
            let rate = published.ok as f64 / elapsed.as_secs_f64();
            eprintln!(
                "bench: [{SECTION}] round {} {:<32} {} processed in {:.2?}: {rate:.0}/s, cpu/delivery {}{}",
                round + 1,
                server.name,
                published.ok,
                elapsed,
                micros((cpu / published.ok.max(1) as u32).as_micros() as u32),
                error_note(&published),
            );
            let mut flow = Flow::new(SECTION, server.name.to_owned(), round, published, elapsed);
            flow.cpu = Some(cpu);
            report.flows.push(flow);
        }
    }
    for server in &servers {
        report.peak_rss.insert(
            format!("{SECTION}: {}", server.name),
            server.process.memory_kib("VmHWM"),
        );
    }
    drop(servers);
    web_api(config, tools, runtime, report);
}

/// Whether the errors of a point of `system`, the first of which was
/// `first_error`, are expected: those of the JavaScript Web API with
/// instance reuse, which componentize-js 0.23 cannot take (a second request
/// on an instance fails, README "instance_reuse"), so every other request
/// is answered 500 `ERR_COMPONENT_FAILED` and its instance dropped. They are
/// shown in the results, and do not fail a smoke run; any other error does.
pub(crate) fn errors_expected(system: &str, first_error: Option<&str>) -> bool {
    system == WEB_API_REUSE && first_error.is_some_and(|e| e.contains("ERR_COMPONENT_FAILED"))
}

/// The JavaScript app with its processor reusing instances, and its Web
/// API fresh per request or, with `reuse`, opted into reuse too.
fn web_api_manifest(reuse: bool) -> String {
    let manifest = language_manifest("js", true);
    if !reuse {
        return manifest;
    }
    let api = "allowed_publish_topics = [\"pubsub/orders\"]\n";
    assert_eq!(
        manifest.matches(api).count(),
        1,
        "handler/orders-js/spin.toml no longer grants only its order-api {api:?}"
    );
    manifest.replace(
        api,
        &format!("{api}instance_reuse = 1000\nmax_instances = 4\n"),
    )
}

fn web_api(config: &Config, tools: &Tools, runtime: &tokio::runtime::Runtime, report: &mut Report) {
    eprintln!("bench: [{SECTION}] {WEB_API}: starting the servers");
    let servers: Vec<_> = [(false, WEB_API_FRESH), (true, WEB_API_REUSE)]
        .into_iter()
        .map(|(reuse, name)| {
            start_host_bridge(
                tools,
                Storage::InMemory,
                name,
                &web_api_manifest(reuse),
                Placement::anywhere(),
            )
        })
        .collect();
    load_servers(
        config,
        runtime,
        report,
        &servers,
        (SECTION, WEB_API, Workload::PlaceOrder),
        &[1, 16],
    );
}

pub(crate) fn targets(report: &mut Report) {
    for (language, goal) in [("Python", 2500.0), ("JavaScript", 4000.0)] {
        for (instances, how) in [
            (
                "fresh instances",
                "a fresh instance per delivery (the default)",
            ),
            ("instance reuse", OPT_IN),
        ] {
            let measured = measured(report, &format!("{language}, {instances}"));
            report.target(
                format!(
                    "{language} subscriber ≥ {goal:.0} deliveries/s on the embedded broker, {LANGUAGE_PUBLISHERS} publishers, {how}"
                ),
                measured.map(|(rate, ..)| format!("{rate:.0} deliveries/s")),
                measured.map(|(rate, ..)| rate >= goal),
            );
        }
    }
    for (instances, how) in [
        ("instance reuse", OPT_IN),
        (
            "fresh instances",
            "a fresh instance per delivery (the default)",
        ),
    ] {
        for language in ["Python", "JavaScript"] {
            let measured = measured(report, &format!("{language}, {instances}"));
            report.target(
                format!("host peak RSS ≤ 150 MB under that load, the {language} app, {how}"),
                measured.map(|(.., rss)| format!("{rss} MiB peak")),
                measured.map(|(.., rss)| (rss as f64) * 1.048_576 <= 150.0),
            );
        }
    }
}

/// The median rate and CPU per delivery of a `languages` system, and
/// its peak RSS in MiB.
fn measured(report: &Report, system: &str) -> Option<(f64, Duration, u64)> {
    let runs: Vec<&Flow> = report.runs_of(SECTION, system).collect();
    if runs.is_empty() {
        return None;
    }
    let rate = median(runs.iter().map(|f| f.rate()).collect());
    let cpu = median(
        runs.iter()
            .map(|f| f.cpu.unwrap_or_default().as_secs_f64() / f.messages.max(1) as f64)
            .collect(),
    );
    let rss = report
        .peak_rss
        .get(&format!("{SECTION}: {system}"))
        .map_or(0, |kib| kib / 1024);
    Some((rate, Duration::from_secs_f64(cpu), rss))
}

pub(crate) fn table(report: &Report, out: &mut String) {
    if !report.flows.iter().any(|f| f.section == SECTION) {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Python and JavaScript guests: the order processor in three languages\n\n`BENCH_ONLY=languages make bench`; \
         the embedded broker in memory, {LANGUAGE_PUBLISHERS} publishers on the publish API, each run ends when the last message is \
         processed; the systems take turns, starting with the next one each round, pinned as said above; median over rounds. Fresh instances \
         is the default; instance reuse is the {OPT_IN}. CPU is host-bridge's, publishing included; RSS is the host's \
         peak over the section.\n\n\
         | guest | component | instances | deliveries/s | CPU per delivery | ÷ Rust, same instances | peak RSS |\n|---|---|---|---|---|---|---|"
    );
    let root = workspace();
    for (language, lang) in LANGUAGES {
        let file = if lang == "rs" {
            "order_processor.wasm".to_owned()
        } else {
            format!("order_processor_{lang}.wasm")
        };
        let size = std::fs::metadata(root.join("target/wasm32-wasip2/release").join(file))
            .map_or(String::new(), |m| format!("{:.1} MB", m.len() as f64 / 1e6));
        for instances in ["fresh instances", "instance reuse"] {
            let system = format!("{language}, {instances}");
            let Some((rate, cpu, rss)) = measured(report, &system) else {
                continue;
            };
            let to_rust = measured(report, &format!("Rust, {instances}"))
                .map_or(String::new(), |(rust, ..)| {
                    format!("{:.0}%", rate / rust * 100.0)
                });
            let rates: Vec<f64> = report.runs_of(SECTION, &system).map(Flow::rate).collect();
            let _ = writeln!(
                out,
                "| {language} | {size} | {instances} | {} | {} | {to_rust} | {rss} MiB |",
                spread(rates, |r| format!("{r:.0}")),
                micros(cpu.as_micros() as u32),
            );
        }
    }
    report.points_table(
        out,
        (SECTION, WEB_API),
        "POST /orders: the JavaScript Web API (languages)",
        &format!(
            "`handler/orders-js` (its order-api and processor in JavaScript), in memory, its processor with the \
             {OPT_IN} in both rows. *{WEB_API_FRESH}* gives every request a fresh instance of the API (the default); \
             *{WEB_API_REUSE}* opts the API into the same reuse for HTTP, which componentize-js 0.23 cannot take: \
             the second request on an instance fails (`500`), and the instance is dropped, so about every other \
             request fails (the errors below); its rate and CPU count the requests answered 202."
        ),
        WEB_API_REUSE,
    );
}
