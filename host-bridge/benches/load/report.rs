//! The report: every point, flow and start-up the sections measured, the
//! targets they judged, and how all of it is written out (the markdown
//! between `BENCHMARKS.md`'s `results` markers, and the throughput plot).
//! What each section's table says is in the section's own file.

use crate::CONCURRENCY;
use crate::common::workspace;
use crate::config::Config;
use crate::measure::{Flow, Point};
use crate::startup::Startup;
use crate::stats::{errors_note, median, micros, percentiles, rates, spread};
use crate::systems::Tools;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

pub(crate) struct Report {
    /// When, on what and from which commit: the first line of the results.
    pub(crate) provenance: String,
    /// How the load generator and the systems were pinned.
    pub(crate) pinning: String,
    pub(crate) smoke: bool,
    pub(crate) points: Vec<Point>,
    pub(crate) flows: Vec<Flow>,
    pub(crate) startups: Vec<Startup>,
    pub(crate) peak_rss: BTreeMap<String, u64>,
    /// Criterion's medians, by benchmark id, in nanoseconds.
    pub(crate) micro: BTreeMap<String, f64>,
    pub(crate) targets: Vec<(String, String, bool)>,
    /// What failed outside any point or flow (a section that could not
    /// run), for the report's errors.
    pub(crate) failures: Vec<String>,
}

impl Report {
    /// The flows of `section`.
    pub(crate) fn flows_of(&self, section: &str) -> Vec<&Flow> {
        self.flows.iter().filter(|f| f.section == section).collect()
    }

    /// The flows of `system` in `section`, one per round.
    pub(crate) fn runs_of(&self, section: &str, system: &str) -> impl Iterator<Item = &Flow> {
        self.flows
            .iter()
            .filter(move |f| f.section == section && f.system == system)
    }

    pub(crate) fn new(config: &Config, tools: &Tools) -> Report {
        let shell = |command: &str| {
            Command::new("sh")
                .args(["-c", command])
                .current_dir(workspace())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let commit = shell("git rev-parse HEAD");
        let dirty = shell("git status --porcelain --untracked-files=no | head -1");
        let provenance = format!(
            "Measured {} on commit {}{}; {} CPUs ({}), Linux {}, {} of memory; load average at start {}. \
             {} s per point, {} round(s), {} messages per flow{}",
            shell("date -u '+%Y-%m-%d %H:%M UTC'"),
            if commit.is_empty() {
                "unknown"
            } else {
                &commit
            },
            if dirty.is_empty() {
                ""
            } else {
                " with uncommitted changes"
            },
            shell("nproc --all"),
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
            shell("uname -r"),
            shell("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-3"),
            shell("cut -d' ' -f1-3 /proc/loadavg"),
            config.seconds,
            config.rounds,
            config.messages,
            if config.smoke {
                " (BENCH_SMOKE: too brief to quote)"
            } else {
                ""
            },
        );
        Report {
            provenance,
            pinning: tools.cores.to_string(),
            smoke: config.smoke,
            points: Vec::new(),
            flows: Vec::new(),
            startups: Vec::new(),
            peak_rss: BTreeMap::new(),
            micro: BTreeMap::new(),
            targets: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Points of one table row: `section`, `path`, `system`, `concurrency`.
    pub(crate) fn select(&self, path: &str, system: &str, concurrency: usize) -> Vec<&Point> {
        self.points
            .iter()
            .filter(|p| p.path == path && p.system == system && p.concurrency == concurrency)
            .collect()
    }

    pub(crate) fn systems(&self, path: &str) -> Vec<&'static str> {
        let mut systems: Vec<&'static str> = Vec::new();
        for p in self.points.iter().filter(|p| p.path == path) {
            if !systems.contains(&p.system) {
                systems.push(p.system);
            }
        }
        systems
    }

    pub(crate) fn paths(&self) -> Vec<(&'static str, &'static str)> {
        let mut paths = Vec::new();
        for p in &self.points {
            if !paths.contains(&(p.section, p.path)) {
                paths.push((p.section, p.path));
            }
        }
        paths
    }

    pub(crate) fn median_rate(&self, path: &str, system: &str, concurrency: usize) -> f64 {
        median(
            self.select(path, system, concurrency)
                .iter()
                .map(|p| p.rate)
                .collect(),
        )
    }

    /// `system`'s rate divided by `baseline`'s in the same round, for
    /// every round both ran.
    pub(crate) fn ratios(
        &self,
        path: &str,
        system: &str,
        baseline: &str,
        concurrency: usize,
    ) -> Vec<f64> {
        let ours = self.select(path, system, concurrency);
        let theirs = self.select(path, baseline, concurrency);
        ours.iter()
            .filter_map(|o| {
                let t = theirs.iter().find(|t| t.round == o.round)?;
                Some(o.rate / t.rate)
            })
            .collect()
    }

    /// `system`'s CPU time per request on `path` at `concurrency`, in
    /// microseconds, one value per round.
    pub(crate) fn cpu_per_request(&self, path: &str, system: &str, concurrency: usize) -> Vec<f64> {
        self.select(path, system, concurrency)
            .iter()
            .map(|p| p.cpu_per_request.as_secs_f64() * 1e6)
            .collect()
    }

    pub(crate) fn target(
        &mut self,
        name: impl Into<String>,
        measured: Option<String>,
        met: Option<bool>,
    ) {
        let (measured, met) = match (measured, met) {
            (Some(m), Some(ok)) => (m, ok),
            _ => ("not measured in this run".to_owned(), false),
        };
        self.targets.push((name.into(), measured, met));
    }

    pub(crate) fn finish(mut self, config: &Config) {
        crate::judge(&mut self);
        // Each error line, and whether it is expected (see
        // `languages::errors_expected`): shown, but not failing a smoke run.
        let errors: Vec<(String, bool)> = self
            .points
            .iter()
            .filter(|p| p.errors > 0)
            .map(|p| {
                let expected =
                    crate::languages::errors_expected(p.system, p.first_error.as_deref());
                let line = format!(
                    "{} {} c={} round {}: {} errors ({})",
                    p.path,
                    p.system,
                    p.concurrency,
                    p.round + 1,
                    p.errors,
                    p.first_error.as_deref().unwrap_or("")
                );
                (line, expected)
            })
            .chain(self.flows.iter().filter(|f| f.errors > 0).map(|f| {
                let line = format!(
                    "{} {}: {} errors ({})",
                    f.section,
                    f.system,
                    f.errors,
                    f.first_error.as_deref().unwrap_or("")
                );
                (line, false)
            }))
            .chain(self.failures.iter().map(|f| (f.clone(), false)))
            .collect();
        let all: Vec<String> = errors.iter().map(|(line, _)| line.clone()).collect();
        let markdown = self.markdown(&all);
        eprintln!("\n{markdown}");
        if let Some(dir) = config.plot.parent() {
            std::fs::create_dir_all(dir).expect("cannot create the plot's directory");
        }
        std::fs::write(&config.plot, self.svg()).expect("cannot write the plot");
        write_results(&config.markdown, &markdown);
        eprintln!(
            "bench: results written to {} and {}",
            config.markdown.display(),
            config.plot.display()
        );
        let unexpected: Vec<&str> = errors
            .iter()
            .filter(|(_, expected)| !expected)
            .map(|(line, _)| line.as_str())
            .collect();
        if config.smoke && !unexpected.is_empty() {
            panic!("the smoke run saw errors:\n{}", unexpected.join("\n"));
        }
    }

    pub(crate) fn markdown(&self, errors: &[String]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}.\n\nPinning: {}.\n", self.provenance, self.pinning);
        let _ = writeln!(out, "### Targets\n\n| target | measured | |\n|---|---|---|");
        for (name, measured, met) in &self.targets {
            let verdict = if *met { "MET" } else { "MISSED" };
            let _ = writeln!(out, "| {name} | {measured} | **{verdict}** |");
        }
        crate::tables(self, &mut out);
        if !errors.is_empty() {
            let _ = writeln!(out, "\n**Errors in this run:** {}", errors.join("; "));
        }
        let _ = writeln!(
            out,
            "\n![throughput against concurrency](docs/bench/throughput.svg)"
        );
        out
    }

    /// The table of `section`'s points on `path`: each system's rate,
    /// latency, CPU per request and drain at each concurrency, and
    /// `reference`'s rate over each system's in the same round. `legend`
    /// says what the systems are.
    pub(crate) fn points_table(
        &self,
        out: &mut String,
        (section, path): (&str, &str),
        title: &str,
        legend: &str,
        reference: &str,
    ) {
        let systems = self.systems(path);
        if systems.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n### {title}\n\n`BENCH_ONLY={section} make bench`. {legend}\n\n\
             Each point loads one system for the window, keep-alive, closed loop, from the load generator's own core (see \
             Pinning above); the systems take turns, starting with \
             the next one each round. Where a server answers before the work is done (`POST /orders` answers 202 and \
             the order is processed after), the point lasts until the server has processed every request it accepted, \
             and that drain counts in its rate and CPU. Rates are medians over rounds, min–max in brackets; latency is \
             over every request of every round; CPU is the server process's own per request; the ratio is {reference}'s \
             rate over the system's in the same round.\n"
        );
        let _ = writeln!(
            out,
            "| system | concurrency | req/s | p50 | p99 | CPU/req | drain | {reference} ÷ system |\n|---|---|---|---|---|---|---|---|"
        );
        for concurrency in CONCURRENCY {
            for system in &systems {
                let points = self.select(path, system, concurrency);
                if points.is_empty() {
                    continue;
                }
                let all: Vec<u32> = points
                    .iter()
                    .flat_map(|p| p.latencies.iter().copied())
                    .collect();
                let (p50, p99) = percentiles(&all);
                let cpu = median(self.cpu_per_request(path, system, concurrency));
                let drain = median(
                    points
                        .iter()
                        .map(|p| p.drain.as_secs_f64() * 1000.0)
                        .collect(),
                );
                let ratio = if *system == reference {
                    String::new()
                } else {
                    spread(self.ratios(path, reference, system, concurrency), |r| {
                        format!("{r:.2}")
                    })
                };
                let errors: u64 = points.iter().map(|p| p.errors).sum();
                let _ = writeln!(
                    out,
                    "| {system}{} | {concurrency} | {} | {} | {} | {} | {} | {ratio} |",
                    errors_note(errors),
                    rates(points.iter().map(|p| p.rate).collect()),
                    micros(p50),
                    micros(p99),
                    micros(cpu.round() as u32),
                    if drain >= 0.5 {
                        format!("{drain:.0} ms")
                    } else {
                        "–".to_owned()
                    },
                );
            }
        }
        let peaks: Vec<String> = self
            .peak_rss
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{section}: {path}: ")))
            .map(|(k, v)| format!("{} {} MiB", k.rsplit(": ").next().unwrap_or(k), v / 1024))
            .collect();
        if !peaks.is_empty() {
            let _ = writeln!(out, "\nPeak RSS over the section: {}.", peaks.join(", "));
        }
    }

    /// Throughput against concurrency, one panel per path, one line per system.
    pub(crate) fn svg(&self) -> String {
        let paths = self.paths();
        let (panel_w, panel_h, margin) = (360.0, 260.0, 50.0);
        let width = panel_w * paths.len().max(1) as f64;
        let height = panel_h + 130.0;
        let colours = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
        ];
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
        );
        for (i, (_, path)) in paths.iter().enumerate() {
            let x0 = i as f64 * panel_w + margin;
            let (w, h) = (panel_w - margin - 15.0, panel_h - 60.0);
            let y0 = 40.0;
            let systems = self.systems(path);
            let max = systems
                .iter()
                .flat_map(|s| CONCURRENCY.map(|c| self.median_rate(path, s, c)))
                .filter(|r| r.is_finite())
                .fold(1.0, f64::max);
            let top = nice_ceiling(max);
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="20" text-anchor="middle" font-weight="bold">{path}</text>
<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{}" stroke="black"/>
<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
                x0 + w / 2.0,
                y0 + h,
                y0 + h,
                x0 + w,
                y0 + h
            );
            for k in 0..=4 {
                let value = top * k as f64 / 4.0;
                let y = y0 + h - h * k as f64 / 4.0;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{value:.0}</text>"##,
                    x0 + w,
                    x0 - 4.0,
                    y + 4.0
                );
            }
            let xs: Vec<f64> = (0..CONCURRENCY.len())
                .map(|k| x0 + w * (k as f64 + 0.5) / CONCURRENCY.len() as f64)
                .collect();
            for (x, c) in xs.iter().zip(CONCURRENCY) {
                let _ = writeln!(
                    svg,
                    r#"<text x="{x}" y="{}" text-anchor="middle">{c}</text>"#,
                    y0 + h + 16.0
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">concurrency (connections)</text><text x="{}" y="{}" transform="rotate(-90 {} {})" text-anchor="middle">req/s</text>"#,
                x0 + w / 2.0,
                y0 + h + 32.0,
                x0 - 38.0,
                y0 + h / 2.0,
                x0 - 38.0,
                y0 + h / 2.0
            );
            for (j, system) in systems.iter().enumerate() {
                let colour = colours[j % colours.len()];
                let points: Vec<String> = xs
                    .iter()
                    .zip(CONCURRENCY)
                    .map(|(x, c)| (x, self.median_rate(path, system, c)))
                    .filter(|(_, r)| r.is_finite())
                    .map(|(x, r)| format!("{x:.1},{:.1}", y0 + h - h * r / top))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    points.join(" ")
                );
                for p in &points {
                    let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
                }
                let ly = y0 + h + 50.0 + 16.0 * j as f64;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{x0}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{system}</text>"#,
                    x0 + 20.0,
                    x0 + 26.0,
                    ly + 4.0
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The next round number at or above `value`, for an axis.
pub(crate) fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= value)
        .unwrap_or(value)
}

pub(crate) const BEGIN: &str = "<!-- results:begin (written by make bench) -->";
pub(crate) const END: &str = "<!-- results:end -->";

/// Puts `results` between the markers of `path`, keeping the prose around
/// them; a file without markers gets them appended.
pub(crate) fn write_results(path: &Path, results: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{results}\n{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &old[..begin], &old[end + END.len()..])
        }
        _ => format!("{old}\n{block}\n"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("cannot create the results' directory");
    }
    std::fs::write(path, new).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
