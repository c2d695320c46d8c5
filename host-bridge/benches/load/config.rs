//! The harness's settings, from the environment.

use crate::common::workspace;
use std::path::PathBuf;
use std::time::Duration;

/// `BENCH_SECONDS`, `BENCH_ROUNDS`, `BENCH_MESSAGES`, `BENCH_ONLY` and
/// `BENCH_SMOKE` (see the crate's docs), and where the results go.
pub(crate) struct Config {
    pub(crate) seconds: f64,
    pub(crate) rounds: usize,
    pub(crate) messages: u64,
    pub(crate) only: Option<Vec<String>>,
    pub(crate) smoke: bool,
    /// Where the report and the plot go.
    pub(crate) markdown: PathBuf,
    pub(crate) plot: PathBuf,
}

impl Config {
    pub(crate) fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let smoke = var("BENCH_SMOKE").is_some_and(|v| v != "0");
        let number = |name: &str, default: f64| -> f64 {
            var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
            })
        };
        let root = workspace();
        let only = var("BENCH_ONLY").map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
        // A partial or brief run must not overwrite the full results.
        let (markdown, plot) = if smoke || only.is_some() {
            let dir = root.join("target/bench");
            (dir.join("BENCHMARKS.md"), dir.join("throughput.svg"))
        } else {
            (
                root.join("BENCHMARKS.md"),
                root.join("docs/bench/throughput.svg"),
            )
        };
        Config {
            seconds: number("BENCH_SECONDS", if smoke { 0.5 } else { 3.0 }),
            rounds: number("BENCH_ROUNDS", if smoke { 1.0 } else { 5.0 }) as usize,
            messages: number("BENCH_MESSAGES", if smoke { 500.0 } else { 10_000.0 }) as u64,
            only,
            smoke,
            markdown,
            plot,
        }
    }

    pub(crate) fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section))
    }

    pub(crate) fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}
