//! The `brokers` section: N messages through daprd and each broker Dapr can
//! carry the app's messages on (Redis, Kafka, RabbitMQ, NATS JetStream,
//! MQTT), host-bridge against the native baseline behind identical daprds,
//! in the same run.
//!
//! Per broker, one broker instance ([`Backing::for_broker`]: the broker as
//! `scripts/broker.sh` runs it, and a private Redis as the state store, each
//! with its persistence on) and two stacks on it: a daprd with the broker's
//! `components/NAME` resources and the same flags, in front of one system,
//! under its own app id. Both stacks stay up while the broker is measured;
//! the two systems are measured one after another, round after round,
//! alternating which goes first.
//!
//! Each system has its own topic. Different app ids give each its own
//! consumer group, queue or session, but every one of those receives every
//! message of its topic: had both subscribed to `orders`, the messages
//! published to measure one would have run through both at once. Stopping
//! the idle stack instead would not help: on its return it would be handed
//! what it missed (on JetStream as shipped, an ephemeral consumer that
//! delivers all, the whole stream), and a stack killed before its last acks
//! reached the broker has those messages again. So the native baseline,
//! which subscribes to `orders` and nothing else, keeps it, and host-bridge's
//! manifest subscribes the order processor to `orders-host-bridge`.
//!
//! A run is over when the app's own count of processed messages
//! (host-bridge's `/metrics`, the native baseline's `/stats`) has grown by
//! the number published; a count that grew by more means redeliveries, and
//! is reported as errors, which fail a smoke run.

use crate::common::brokers::BrokerKind;
use crate::common::dapr::Backing;
use crate::config::Config;
use crate::generator::{self, LoadResult, Stop, Workload};
use crate::measure::{Flow, error_note, rotated};
use crate::report::Report;
use crate::stats::{errors_note, rates, spread};
use crate::systems::{
    Server, Sidecar, Storage, Tools, bench_manifest, local, start_host_bridge, start_native,
    wait_for,
};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

const SECTION: &str = "brokers";

/// Every broker, in the order of the table.
const BROKERS: [BrokerKind; 5] = [
    BrokerKind::Redis,
    BrokerKind::Kafka,
    BrokerKind::RabbitMq,
    BrokerKind::JetStream,
    BrokerKind::Mqtt,
];

/// Publishing connections, as in the `dapr` section.
const PUBLISHERS: usize = 16;

/// The two systems under test.
#[derive(Clone, Copy, PartialEq)]
enum System {
    HostBridge,
    Native,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::HostBridge => "host-bridge",
            System::Native => "native baseline",
        }
    }

    /// The topic its processor subscribes to, and the run publishes to.
    fn topic(self) -> &'static str {
        match self {
            System::HostBridge => "orders-host-bridge",
            System::Native => "orders",
        }
    }

    fn app_id(self) -> &'static str {
        match self {
            System::HostBridge => "bench-host-bridge",
            System::Native => "bench-native-baseline",
        }
    }
}

/// What the table calls a broker.
fn title(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Redis => "Redis (streams)",
        BrokerKind::Kafka => "Kafka",
        BrokerKind::RabbitMq => "RabbitMQ",
        BrokerKind::JetStream => "NATS JetStream",
        BrokerKind::Mqtt => "MQTT (Mosquitto)",
    }
}

/// The name of a flow of this section: the broker and the system.
fn flow_name(kind: BrokerKind, system: &str) -> String {
    format!("{}: {system}", kind.name())
}

/// The flow that stands for a broker that could not be measured.
const FAILED: &str = "not measured";

/// Every broker in turn; a broker that fails (it does not start, daprd
/// cannot use it, a run times out) is reported as an error of the run,
/// which fails a smoke run, and the next broker is measured.
pub(crate) fn run(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    for kind in BROKERS {
        let started = Instant::now();
        let measured = std::panic::catch_unwind(AssertUnwindSafe(|| {
            measure_broker(config, tools, runtime, kind)
        }));
        match measured {
            Ok(flows) => {
                eprintln!(
                    "bench: [brokers] {} done in {:.0?}",
                    kind.name(),
                    started.elapsed()
                );
                report.flows.extend(flows);
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                // The whole message, and the tails of the logs, went to
                // stderr with the panic; the report gets its first and last lines.
                let message = first_and_last_lines(message);
                eprintln!("bench: [brokers] {} FAILED: {message}", kind.name());
                let failure = LoadResult {
                    errors: 1,
                    first_error: Some(format!("{} failed: {message}", kind.name())),
                    ..LoadResult::default()
                };
                report.flows.push(Flow::new(
                    SECTION,
                    flow_name(kind, FAILED),
                    0,
                    failure,
                    started.elapsed(),
                ));
            }
        }
    }
}

/// A multi-line message on one line: its first line, and its last if it has several.
fn first_and_last_lines(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first.to_owned(),
    }
}

/// One broker: its backing, both stacks, a warm-up each, then the rounds.
fn measure_broker(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    kind: BrokerKind,
) -> Vec<Flow> {
    let name = kind.name();
    eprintln!("bench: [brokers] {name}: starting the broker and a Redis for state");
    let backing = tools.cores.on_servers(|| Backing::for_broker(kind));
    eprintln!(
        "bench: [brokers] {name}: starting host-bridge and the native baseline, each behind its own daprd"
    );
    let stacks =
        [System::HostBridge, System::Native].map(|system| Stack::start(tools, &backing, system));
    // Until every consumer has joined (Kafka's group takes seconds) and
    // every connection is open, a run would time that too.
    let timeout = Duration::from_secs(60) + Duration::from_millis(20) * config.messages as u32;
    let warm_up = (config.messages / 10).clamp(10, 500);
    for stack in &stacks {
        let (published, _) = stack.flow(runtime, warm_up, timeout, kind);
        assert!(
            published.errors == 0,
            "the warm-up of {} through daprd and {name} failed:{}",
            stack.system.name(),
            error_note(&published)
        );
    }
    let mut flows = Vec::new();
    for round in 0..config.rounds {
        // Alternate which goes first, so neither always runs on a broker
        // that has just been loaded.
        for stack in rotated(&stacks, round) {
            let (published, elapsed) = stack.flow(runtime, config.messages, timeout, kind);
            eprintln!(
                "bench: [brokers] {name} round {} {:<16} {} messages processed in {:.2?}: {:.0} msg/s{}",
                round + 1,
                stack.system.name(),
                published.ok,
                elapsed,
                published.ok as f64 / elapsed.as_secs_f64(),
                error_note(&published),
            );
            flows.push(Flow::new(
                SECTION,
                flow_name(kind, stack.system.name()),
                round,
                published,
                elapsed,
            ));
        }
    }
    flows
}

/// One system behind its own daprd.
struct Stack {
    system: System,
    app: Server,
    sidecar: Sidecar,
}

impl Stack {
    /// As `through_dapr` starts them: daprd first (it dials the app until it
    /// answers, as under `dapr run`), then the app with daprd's ports, in
    /// Dapr mode; ready once daprd has subscribed it.
    fn start(tools: &Tools, backing: &Backing, system: System) -> Stack {
        let sidecar = Sidecar::start(&tools.cores, system.app_id(), &backing.resources);
        let at = sidecar.placement();
        let app = match system {
            System::HostBridge => {
                let subscription = "topic = \"orders\"\n";
                let manifest = bench_manifest(tools, false);
                assert!(
                    manifest.contains(subscription),
                    "spin.toml no longer subscribes the order processor with {subscription:?}"
                );
                let manifest =
                    manifest.replace(subscription, &format!("topic = \"{}\"\n", system.topic()));
                start_host_bridge(tools, Storage::InMemory, system.name(), &manifest, at)
            }
            System::Native => start_native(tools, &["--state", "dapr"], at),
        };
        sidecar.daprd.wait_for_subscriptions(&[system.topic()]);
        Stack {
            system,
            app,
            sidecar,
        }
    }

    /// How many orders the app has processed.
    fn processed(&self) -> u64 {
        self.app
            .processed()
            .expect("host-bridge and the native baseline count what they processed")
    }

    /// Publishes `messages` through this stack's daprd and waits until the
    /// app has processed every one: what was published (a processed count
    /// that grew by more counts the extra as errors), and the time from the
    /// first publish to the last message processed.
    fn flow(
        &self,
        runtime: &tokio::runtime::Runtime,
        messages: u64,
        timeout: Duration,
        kind: BrokerKind,
    ) -> (LoadResult, Duration) {
        let before = self.processed();
        let started = Instant::now();
        let sidecar = local(self.sidecar.daprd.http_port);
        let mut published = generator::run(
            runtime,
            generator::load(
                sidecar,
                Workload::Publish(self.system.topic()),
                PUBLISHERS,
                Stop::Count(messages),
            ),
        );
        let goal = before + published.ok;
        wait_for(
            timeout,
            &format!(
                "{} to process {} messages through daprd and {}",
                self.system.name(),
                published.ok,
                kind.name()
            ),
            || self.processed() >= goal,
        );
        let elapsed = started.elapsed();
        // Read once more: a count that went on past the goal is
        // redeliveries (a failed read answers 0, hence saturating).
        let extra = self.processed().saturating_sub(goal);
        if extra > 0 {
            published.errors += extra;
            published.first_error.get_or_insert(format!(
                "{} processed {extra} more messages than the {} published (redeliveries)",
                self.system.name(),
                published.ok
            ));
        }
        (published, elapsed)
    }
}

/// The section's table, for the report: per broker, each system's
/// messages/s and host-bridge's over the native baseline's in the same round.
pub(crate) fn table(report: &Report, out: &mut String) {
    let flows: Vec<&Flow> = report.flows_of(SECTION);
    if flows.is_empty() {
        return;
    }
    let rounds = flows.iter().map(|f| f.round + 1).max().unwrap_or(0);
    let messages = flows.iter().map(|f| f.messages).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "\n### Through daprd and each broker: publish to processed\n\n`BENCH_ONLY=brokers make bench`; per broker, one \
         instance as `scripts/broker.sh` runs it, with its persistence on (Redis: an append-only file synced on every \
         write), and a private Redis as the state store. host-bridge (the orders app of spin.toml, in Dapr mode) and the \
         native baseline each run behind their own daprd, with identical flags and that broker's `components/` folder, \
         under their own app id and subscribed to their own topic (`orders-host-bridge`, `orders`), both up throughout; \
         the apps, their daprds and the brokers run on the systems' core, the load generator on its own (see Pinning above). \
         Each run publishes {messages} orders through the system's daprd publish API over {PUBLISHERS} keep-alive \
         connections and ends when the app has processed the last; the two systems run one after another, alternating \
         which goes first, after a warm-up each. Median over {rounds} round(s), min–max in brackets; the ratio is taken \
         within each round.\n\n\
         | broker | messages | host-bridge msg/s | native baseline msg/s | host-bridge ÷ native baseline |\n|---|---|---|---|---|"
    );
    for kind in BROKERS {
        let runs = |system: System| -> Vec<&Flow> {
            let name = flow_name(kind, system.name());
            flows.iter().copied().filter(|f| f.system == name).collect()
        };
        let (ours, theirs) = (runs(System::HostBridge), runs(System::Native));
        if let Some(failed) = flows.iter().find(|f| f.system == flow_name(kind, FAILED)) {
            let _ = writeln!(
                out,
                "| {} | failed: {} | | | |",
                title(kind),
                failed
                    .first_error
                    .as_deref()
                    .unwrap_or("")
                    .replace('|', "\\|")
            );
            continue;
        }
        if ours.is_empty() && theirs.is_empty() {
            continue;
        }
        let rates_of = |runs: &[&Flow]| rates(runs.iter().map(|f| f.rate()).collect());
        let ratios: Vec<f64> = ours
            .iter()
            .filter_map(|o| {
                let t = theirs.iter().find(|t| t.round == o.round)?;
                Some(o.rate() / t.rate())
            })
            .collect();
        let errors: u64 = ours.iter().chain(&theirs).map(|f| f.errors).sum();
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} |",
            title(kind),
            errors_note(errors),
            ours.first().or(theirs.first()).map_or(0, |f| f.messages),
            rates_of(&ours),
            rates_of(&theirs),
            spread(ratios, |r| format!("{:.0}%", r * 100.0)),
        );
    }
}
