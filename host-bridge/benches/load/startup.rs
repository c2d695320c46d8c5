//! The `startup` section: launch to `/healthz` 200, host-bridge cold (an
//! empty compiled-code cache) and warm, and the native baseline; and
//! host-bridge's memory once ready. Unlike the load sections it is not
//! pinned: a start may use every core.

use crate::common::{self, Process, free_port};
use crate::config::Config;
use crate::report::Report;
use crate::stats::median;
use crate::systems::{Storage, Tools, bench_manifest, host_bridge_command_with_cache, local};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Launch to `/healthz` 200: host-bridge cold (empty cache) and warm, and
/// the native baseline; and host-bridge's memory once ready.
pub(crate) fn run(config: &Config, tools: &Tools, report: &mut Report) {
    let runs = if config.smoke { 2 } else { 10 };
    let manifest = bench_manifest(tools, false);
    // One start fills the warm cache.
    let mut measure = |name: &str, make: &mut dyn FnMut(&Path, SocketAddr) -> Command| {
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().unwrap();
            let addr = local(free_port());
            let command = make(dir.path(), addr);
            let started = Instant::now();
            // Not pinned: a start uses every core it has (compiling or
            // loading components in parallel), and the poller sleeps
            // between its attempts.
            let mut process = tools
                .cores
                .on_all(|| Process::spawn(command, name.to_owned(), &dir.path().join("log")));
            // Polled every 0.5 ms (plus 0.5 ms after a refused connection),
            // so the figure is not the poll's interval.
            common::dapr::wait_until_every(
                Duration::from_micros(500),
                Duration::from_secs(120),
                "/healthz to answer 200",
                || healthz_ok(addr) || !process.is_running(),
            );
            assert!(
                process.is_running(),
                "{name} exited:\n{}",
                process.drain_log()
            );
            times.push(started.elapsed());
            rss.push(process.memory_kib("VmRSS"));
        }
        let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        eprintln!(
            "bench: [startup] {name:<40} median {:.1} ms (min {:.1}, max {:.1}); RSS when ready {} KiB",
            median(ms.clone()),
            ms.iter().copied().fold(f64::INFINITY, f64::min),
            ms.iter().copied().fold(0.0, f64::max),
            rss[rss.len() / 2],
        );
        report.startups.push(Startup {
            system: name.to_owned(),
            millis: ms,
            rss_kib: rss,
        });
    };
    let host = |storage: Storage, cache: Option<&Path>| {
        let manifest = manifest.clone();
        let cache = cache.map(Path::to_path_buf);
        move |dir: &Path, addr: SocketAddr| {
            let cache = cache.clone().unwrap_or_else(|| dir.join("empty-cache"));
            let mut command = host_bridge_command_with_cache(
                tools,
                dir,
                &manifest,
                storage,
                &cache,
                local(free_port()),
            );
            command.arg("--listen").arg(addr.to_string());
            command
        }
    };
    measure(
        "host-bridge, cold (empty cache)",
        &mut host(Storage::Durable, None),
    );
    measure(
        "host-bridge, warm cache",
        &mut host(Storage::Durable, Some(&tools.cache)),
    );
    measure(
        "host-bridge, warm cache, --in-memory",
        &mut host(Storage::InMemory, Some(&tools.cache)),
    );
    measure("native baseline", &mut |_, addr| {
        let mut command = Command::new(&tools.native);
        command.arg("--listen").arg(addr.to_string());
        command
    });
}

/// One `GET /healthz` over a fresh connection, with no client library in
/// the way, so polling costs little.
pub(crate) fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        std::thread::sleep(Duration::from_micros(500));
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

pub(crate) struct Startup {
    pub(crate) system: String,
    pub(crate) millis: Vec<f64>,
    pub(crate) rss_kib: Vec<u64>,
}

pub(crate) fn targets(report: &mut Report) {
    let warm = report
        .startups
        .iter()
        .find(|s| s.system == "host-bridge, warm cache")
        .map(|s| median(s.millis.clone()));
    report.target(
        "start-up with a warm cache ≤ 25 ms from launch to /healthz 200",
        warm.map(|ms| format!("{ms:.1} ms (median)")),
        warm.map(|ms| ms <= 25.0),
    );
}

pub(crate) fn table(report: &Report, out: &mut String) {
    if report.startups.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n### Start-up: launch to `/healthz` 200 (the orders app of spin.toml and the hello world: four components)\n\n`BENCH_ONLY=startup make bench`; not pinned: each start may use every CPU, and the harness polls `/healthz` \
         over a fresh connection about every millisecond until it answers 200.\n\n| system | median | min | max | RSS when ready |\n|---|---|---|---|---|"
    );
    for s in &report.startups {
        let _ = writeln!(
            out,
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            s.system,
            median(s.millis.clone()),
            s.millis.iter().copied().fold(f64::INFINITY, f64::min),
            s.millis.iter().copied().fold(0.0, f64::max),
            median(s.rss_kib.iter().map(|&k| k as f64).collect()) / 1024.0,
        );
    }
}
