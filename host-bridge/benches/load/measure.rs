//! How the harness measures: a [`Point`] is one system loaded at one
//! concurrency for a window ([`measure_point`], [`load_servers`]); a
//! [`Flow`] is N messages published and the time until the last was
//! processed ([`publish_and_process`]).

use crate::config::Config;
use crate::generator::{LoadResult, Stop, Workload, load, run};
use crate::report::Report;
use crate::stats::{micros, percentiles};
use crate::systems::{Server, wait_for, within};
use std::time::{Duration, Instant};

/// One system at one concurrency in one round.
#[derive(Clone)]
pub(crate) struct Point {
    pub(crate) section: &'static str,
    pub(crate) path: &'static str,
    pub(crate) system: &'static str,
    pub(crate) concurrency: usize,
    pub(crate) round: usize,
    /// Requests answered (and, where the answer comes first, processed)
    /// per second of the window plus its drain.
    pub(crate) rate: f64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latencies: Vec<u32>,
    /// CPU time of the server per answered request, its drain included.
    pub(crate) cpu_per_request: Duration,
    /// How long the server took after the window to finish the work it had
    /// accepted in it.
    pub(crate) drain: Duration,
}

/// The longest a server may take to finish what it accepted in a window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Loads `server` for one point: a short warm-up, drained; then
/// `config.seconds` measured and, if the workload is answered before it
/// is done (`POST /orders`), the wait until the server has processed
/// every order it accepted, which counts in the rate and the CPU time.
pub(crate) fn measure_point(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    (section, path, workload): (&'static str, &'static str, Workload),
    concurrency: usize,
    round: usize,
) -> Point {
    let counted = || {
        if workload.leaves_work() {
            server.processed()
        } else {
            None
        }
    };
    // Waits until the server has processed `accepted` more than `before`;
    // an error if it has not within the timeout.
    let drain = |before: Option<u64>, accepted: u64| -> Option<String> {
        let goal = before? + accepted;
        let done = within(DRAIN_TIMEOUT, || counted().is_some_and(|n| n >= goal));
        (!done).then(|| {
            format!(
                "{} of the {accepted} orders accepted were not processed within {DRAIN_TIMEOUT:?}",
                goal.saturating_sub(counted().unwrap_or(0))
            )
        })
    };
    let warm_up = Duration::from_secs_f64((config.seconds / 5.0).clamp(0.1, 1.0));
    let before = counted();
    let warm = run(
        runtime,
        load(server.addr, workload, concurrency, Stop::After(warm_up)),
    );
    let mut stuck = drain(before, warm.ok);

    let before = counted();
    let cpu_before = server.process.cpu_time();
    let started = Instant::now();
    let mut result = run(
        runtime,
        load(
            server.addr,
            workload,
            concurrency,
            Stop::After(config.measure()),
        ),
    );
    let window = started.elapsed();
    stuck = stuck.or(drain(before, result.ok));
    let elapsed = started.elapsed();
    let cpu = server.process.cpu_time().saturating_sub(cpu_before);
    if let Some(stuck) = stuck {
        result.errors += 1;
        result.first_error.get_or_insert(stuck);
    }
    let point = Point {
        section,
        path,
        system: server.name,
        concurrency,
        round,
        rate: result.ok as f64 / elapsed.as_secs_f64(),
        errors: result.errors,
        first_error: result.first_error.clone(),
        cpu_per_request: cpu / result.ok.max(1) as u32,
        drain: elapsed.saturating_sub(window),
        latencies: result.latencies,
    };
    let (p50, p99) = percentiles(&point.latencies);
    eprintln!(
        "bench: [{section}] {path} c={concurrency:<2} round {} {:<40} {:>8.0} req/s  p50 {:>7}  p99 {:>7}  cpu/req {:>7}{}{}",
        round + 1,
        server.name,
        point.rate,
        micros(p50),
        micros(p99),
        micros(point.cpu_per_request.as_micros() as u32),
        if point.drain > Duration::from_millis(1) {
            format!("  drain {:.0?}", point.drain)
        } else {
            String::new()
        },
        if point.errors > 0 {
            format!(
                "  ERRORS {} ({})",
                point.errors,
                point.first_error.as_deref().unwrap_or("")
            )
        } else {
            String::new()
        }
    );
    point
}

/// Every concurrency, every server in turn, round after round; each round
/// starts with the next server, so none always runs first or after the
/// same one.
pub(crate) fn load_servers(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
    servers: &[Server],
    (section, path, workload): (&'static str, &'static str, Workload),
    concurrencies: &[usize],
) {
    for round in 0..config.rounds {
        for &concurrency in concurrencies {
            for server in rotated(servers, round) {
                let point = measure_point(
                    config,
                    runtime,
                    server,
                    (section, path, workload),
                    concurrency,
                    round,
                );
                report.points.push(point);
            }
        }
    }
    for server in servers {
        report.peak_rss.insert(
            format!("{section}: {path}: {}", server.name),
            server.process.memory_kib("VmHWM"),
        );
    }
}

/// `items` starting at `round`'s place, wrapping around.
pub(crate) fn rotated<T>(items: &[T], round: usize) -> impl Iterator<Item = &T> {
    let n = items.len().max(1);
    (0..items.len()).map(move |k| &items[(k + round) % n])
}

/// Publishes `messages` to a host-bridge's embedded broker from
/// `concurrency` connections and waits until its subscriber has processed
/// every one: what was published, the time from the first publish to the
/// last message processed, and the server's CPU time over it.
pub(crate) fn publish_and_process(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    concurrency: usize,
    messages: u64,
) -> (LoadResult, Duration, Duration) {
    let processed = || {
        server
            .processed()
            .expect("a server that counts what it processed")
    };
    let before = processed();
    let cpu_before = server.process.cpu_time();
    let started = Instant::now();
    let published = run(
        runtime,
        load(
            server.sidecar,
            Workload::Publish("orders"),
            concurrency,
            Stop::Count(messages),
        ),
    );
    let goal = before + published.ok;
    wait_for(
        Duration::from_secs(600),
        "the embedded broker to process every message",
        || processed() >= goal,
    );
    let elapsed = started.elapsed();
    (
        published,
        elapsed,
        server.process.cpu_time().saturating_sub(cpu_before),
    )
}

pub(crate) fn error_note(result: &LoadResult) -> String {
    if result.errors == 0 {
        return String::new();
    }
    format!(
        "  ERRORS {} ({})",
        result.errors,
        result.first_error.as_deref().unwrap_or("")
    )
}

/// A message flow: N messages published, the time until all were processed.
pub(crate) struct Flow {
    pub(crate) section: &'static str,
    pub(crate) system: String,
    pub(crate) round: usize,
    pub(crate) messages: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) publish_latencies: Vec<u32>,
    /// The server's CPU time over the flow, where measured.
    pub(crate) cpu: Option<Duration>,
}

impl Flow {
    pub(crate) fn new(
        section: &'static str,
        system: String,
        round: usize,
        published: LoadResult,
        elapsed: Duration,
    ) -> Flow {
        Flow {
            section,
            system,
            round,
            messages: published.ok,
            errors: published.errors,
            first_error: published.first_error,
            elapsed,
            publish_latencies: published.latencies,
            cpu: None,
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// The p50 and p99 of the publish latencies of every run in `runs`.
pub(crate) fn publish_percentiles<'a>(runs: impl Iterator<Item = &'a Flow>) -> (u32, u32) {
    let all: Vec<u32> = runs
        .flat_map(|f| f.publish_latencies.iter().copied())
        .collect();
    crate::stats::percentiles(&all)
}
