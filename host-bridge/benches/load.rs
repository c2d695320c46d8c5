//! The system benchmarks of `make bench`: host-bridge under load, measured
//! side by side with its baselines in the same run.
//!
//! Every figure here compares systems that ran on the same machine, in
//! turn, round after round, so that the noise of a shared machine hits all
//! of them alike; ratios are taken within a round and their median reported.
//!
//! | section | what is loaded | systems |
//! |---|---|---|
//! | `delivery` | `POST /orders-events`, the CloudEvents daprd would send | host-bridge (in memory, and durable), the native baseline, `wasmtime serve` |
//! | `http` | keep-alive `POST /orders`, and `GET /hello` (a spin-sdk hello world) | host-bridge (in memory, and durable), the native baseline, `wasmtime serve` (hello only) |
//! | `dapr` | N messages through daprd and Redis, one by one and in bulk | host-bridge and the native baseline, each behind an identical daprd |
//! | `brokers` | N messages through daprd and each broker: Redis, Kafka, RabbitMQ, NATS JetStream, MQTT (`load/brokers.rs`) | host-bridge and the native baseline, each behind an identical daprd |
//! | `embedded` | publish to processed on the embedded broker | host-bridge in memory and durable |
//! | `startup` | launch to `/healthz` 200, cold and with a warm cache | host-bridge, the native baseline |
//!
//! The load generator is in this process: one keep-alive HTTP/1.1
//! connection per unit of concurrency, each sending its next request as
//! soon as the last is answered (a closed loop), on one thread so it takes
//! at most one of the machine's cores. Every answer is checked (status and,
//! for a delivery, `SUCCESS`); anything else counts as an error, and a point
//! with errors is marked in the results.
//!
//! The criterion micro-benchmarks (`benches/sandbox.rs`) run first under
//! `make bench`; this harness reads their estimates to judge the sandbox
//! target. The results go to `BENCHMARKS.md` (between its `results`
//! markers) and `docs/bench/throughput.svg`; a run of some sections
//! (`BENCH_ONLY`) writes under `target/bench/` instead, and so does
//! `BENCH_SMOKE=1`, which runs everything briefly and fails on any error.
//!
//! Settings (environment): `BENCH_SECONDS` per load point (3),
//! `BENCH_ROUNDS` (3), `BENCH_MESSAGES` for the broker sections (10000),
//! `BENCH_ONLY` (comma-separated sections), `BENCH_SMOKE`, `WASMTIME` (the
//! `wasmtime` binary; `make bench` installs wasmtime-cli 48.0.8).

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "load/brokers.rs"]
mod brokers;

use bytes::Bytes;
use common::dapr::{Backing, Daprd};
use common::{Process, free_port, workspace};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments.
    let config = Config::from_env();
    // Every system under test runs with the same environment. wasmtime
    // makes an error on every store drop, and with RUST_BACKTRACE set each
    // one captures a backtrace; host-bridge turns that off for itself, so
    // wasmtime serve gets the same here.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the load generator");
    let tools = Tools::prepare();
    let mut report = Report::new(&config);

    delivery_and_http(&config, &tools, &runtime, &mut report);
    if config.runs("embedded") {
        embedded(&config, &tools, &runtime, &mut report);
    }
    if config.runs("languages") {
        languages(&config, &tools, &runtime, &mut report);
    }
    if config.runs("dapr") {
        through_dapr(&config, &tools, &runtime, &mut report);
    }
    if config.runs("brokers") {
        brokers::run(&config, &tools, &runtime, &mut report);
    }
    if config.runs("startup") {
        startup(&config, &tools, &mut report);
    }
    report.micro();
    report.finish(&config);
}

// ---------------------------------------------------------------------------
// Settings and tools

struct Config {
    seconds: f64,
    rounds: usize,
    messages: u64,
    only: Option<Vec<String>>,
    smoke: bool,
    /// Where the report and the plot go.
    markdown: PathBuf,
    plot: PathBuf,
}

impl Config {
    fn from_env() -> Config {
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
            rounds: number("BENCH_ROUNDS", if smoke { 1.0 } else { 3.0 }) as usize,
            messages: number("BENCH_MESSAGES", if smoke { 500.0 } else { 10_000.0 }) as u64,
            only,
            smoke,
            markdown,
            plot,
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section))
    }

    fn measure(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// The binaries and components under test.
struct Tools {
    host_bridge: PathBuf,
    native: PathBuf,
    wasmtime: Option<PathBuf>,
    guests: PathBuf,
    /// host-bridge's compiled-code cache, shared by the warm runs.
    cache: PathBuf,
}

impl Tools {
    fn prepare() -> Tools {
        let root = workspace();
        eprintln!("bench: building the guests and the native baseline (release)");
        // The example app's guests, as the tests build them, and the two
        // the benchmarks add.
        common::guests();
        cargo(&[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "hello",
            "-p",
            "order-processor-http",
        ]);
        cargo(&["build", "--release", "-p", "native-baseline"]);
        let wasmtime = common::wasmtime_cli();
        if wasmtime.is_none() {
            eprintln!(
                "bench: no wasmtime 48.0.8 found (set WASMTIME, or run `make bench`, which installs it); \
                 the wasmtime serve baseline is left out"
            );
        }
        let cache = root.join("target/bench/cache");
        std::fs::create_dir_all(&cache).expect("cannot create target/bench/cache");
        Tools {
            host_bridge: PathBuf::from(env!("CARGO_BIN_EXE_host-bridge")),
            native: root.join("target/release/native-baseline"),
            wasmtime,
            guests: root.join("target/wasm32-wasip2/release"),
            cache,
        }
    }

    fn wasm(&self, name: &str) -> String {
        self.guests
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    }
}

fn cargo(args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(args)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cargo {} failed", args.join(" "));
}

// ---------------------------------------------------------------------------
// The systems under test

/// A server under test, stopped when dropped.
struct Server {
    name: &'static str,
    process: Process,
    addr: SocketAddr,
    /// host-bridge's embedded sidecar API (`--sidecar-listen`); the native
    /// baseline's and other servers' `addr`.
    sidecar: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// How host-bridge keeps the embedded broker's data.
#[derive(Clone, Copy)]
enum Storage {
    InMemory,
    Durable,
}

/// The example app of `spin.toml`, as the tests run it, plus the hello
/// world on `/hello`; with `bulk`, its processor subscribes in bulk.
fn bench_manifest(tools: &Tools, bulk: bool) -> String {
    let mut manifest = common::orders_manifest();
    if bulk {
        manifest = manifest.replace(
            "route = \"/orders-events\"\n",
            "route = \"/orders-events\"\nbulk_subscribe = { max_messages_count = 100, max_await_duration_ms = 40 }\n",
        );
    }
    manifest.push_str(&format!(
        "\n[[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n\n[component.hello]\nsource = \"{}\"\n",
        tools.wasm("hello")
    ));
    manifest
}

fn host_bridge_command(
    tools: &Tools,
    dir: &Path,
    manifest: &str,
    storage: Storage,
    sidecar: SocketAddr,
) -> Command {
    host_bridge_command_with_cache(tools, dir, manifest, storage, &tools.cache, sidecar)
}

/// `host-bridge up` on `manifest`, with its embedded sidecar API on `sidecar`.
fn host_bridge_command_with_cache(
    tools: &Tools,
    dir: &Path,
    manifest: &str,
    storage: Storage,
    cache: &Path,
    sidecar: SocketAddr,
) -> Command {
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest).expect("cannot write the manifest");
    let mut command = Command::new(&tools.host_bridge);
    for name in [
        "DAPR_HTTP_PORT",
        "DAPR_GRPC_PORT",
        "APP_PORT",
        "APP_API_TOKEN",
    ] {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .arg("up")
        .arg("--manifest")
        .arg(&path)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--sidecar-listen")
        .arg(sidecar.to_string());
    match storage {
        Storage::InMemory => command.arg("--in-memory"),
        Storage::Durable => command.arg("--data-dir").arg(dir.join("data")),
    };
    command
}

/// A daprd for `app_id` in front of a free app port, started first (it
/// dials the app until it answers, as under `dapr run`), and the variables
/// the app reaches it with.
struct Sidecar {
    daprd: Daprd,
    app_port: u16,
    env: [(&'static str, String); 2],
    _dir: tempfile::TempDir,
}

impl Sidecar {
    fn start(app_id: &str, resources: &Path) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let app_port = free_port();
        let daprd = Daprd::start(app_id, app_port, resources, dir.path(), &[]);
        let env = [
            ("DAPR_HTTP_PORT", daprd.http_port.to_string()),
            ("DAPR_GRPC_PORT", daprd.grpc_port.to_string()),
        ];
        Sidecar {
            daprd,
            app_port,
            env,
            _dir: dir,
        }
    }

    /// Where the app behind it listens, and with what.
    fn placement(&self) -> Placement<'_> {
        Placement {
            addr: local(self.app_port),
            env: &self.env,
        }
    }
}

/// Where a server listens and what it runs with: a free port and nothing
/// extra, or, behind daprd, the app port and the sidecar's variables.
struct Placement<'a> {
    addr: SocketAddr,
    env: &'a [(&'static str, String)],
}

impl Placement<'_> {
    fn anywhere() -> Placement<'static> {
        Placement {
            addr: local(free_port()),
            env: &[],
        }
    }
}

fn start_host_bridge(
    tools: &Tools,
    storage: Storage,
    name: &'static str,
    manifest: &str,
    at: Placement,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = local(free_port());
    let mut command = host_bridge_command(tools, dir.path(), manifest, storage, sidecar);
    command
        .arg("--listen")
        .arg(at.addr.to_string())
        .envs(at.env.iter().cloned());
    let mut process = Process::spawn(command, name.into(), &dir.path().join("log"));
    process.wait_for_line("is ready on", Duration::from_secs(120));
    Server {
        name,
        process,
        addr: at.addr,
        sidecar,
        _dir: dir,
    }
}

fn start_native(tools: &Tools, args: &[&str], at: Placement) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&tools.native);
    command
        .arg("--listen")
        .arg(at.addr.to_string())
        .args(args)
        .envs(at.env.iter().cloned());
    let mut process = Process::spawn(command, "native baseline".into(), &dir.path().join("log"));
    process.wait_for_line("ready on", Duration::from_secs(30));
    Server {
        name: "native baseline",
        process,
        addr: at.addr,
        sidecar: at.addr,
        _dir: dir,
    }
}

/// `wasmtime serve` running one component: the reference Wasm runtime.
/// By default it reuses a WASI 0.3 instance for up to 128 requests, 16 at
/// once; with `fresh`, it makes one instance per request, as host-bridge
/// does, which is the comparison that keeps isolation equal.
fn start_wasmtime(tools: &Tools, component: &str, fresh: bool) -> Option<Server> {
    let wasmtime = tools.wasmtime.as_ref()?;
    let dir = tempfile::tempdir().unwrap();
    let addr = local(free_port());
    let mut command = Command::new(wasmtime);
    // `-S cli` gives the guest stdout and stderr, as host-bridge does.
    command
        .arg("serve")
        .arg("--addr")
        .arg(addr.to_string())
        .arg("-Scli");
    if fresh {
        command.args([
            "--max-instance-reuse-count",
            "1",
            "--max-instance-concurrent-reuse-count",
            "1",
        ]);
    }
    command.arg(tools.wasm(component));
    let name = if fresh {
        "wasmtime serve"
    } else {
        "wasmtime serve (instance reuse)"
    };
    let mut process = Process::spawn(command, name.into(), &dir.path().join("log"));
    process.wait_for_line("Serving HTTP on", Duration::from_secs(120));
    Some(Server {
        name,
        process,
        addr,
        sidecar: addr,
        _dir: dir,
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------
// The load generator

/// What one point of load sends and what it accepts as an answer.
#[derive(Clone, Copy)]
enum Workload {
    /// `POST /orders-events`: a CloudEvent as daprd sends it; wants SUCCESS.
    Delivery,
    /// `POST /orders`: a new order; wants 202.
    PlaceOrder,
    /// `GET /hello`; wants 200.
    Hello,
    /// `POST /v1.0/publish/pubsub/{topic}` on the embedded broker's sidecar
    /// API (or daprd's); wants 204.
    Publish(&'static str),
}

static ORDER_NUMBER: AtomicU64 = AtomicU64::new(0);

/// An order; ids cycle over a thousand, so the state stores stay small.
fn order_json(n: u64) -> String {
    format!(
        r#"{{"orderId":"o-{}","customer":"ada","items":[{{"sku":"book","qty":2,"price":12.5}},{{"sku":"pen","qty":3,"price":1.2}}]}}"#,
        n % 1000
    )
}

impl Workload {
    fn request(self, addr: SocketAddr) -> http::Request<Full<Bytes>> {
        let n = ORDER_NUMBER.fetch_add(1, Ordering::Relaxed);
        let publish_path;
        let (method, path, body) = match self {
            Workload::Delivery => (
                http::Method::POST,
                "/orders-events",
                format!(
                    r#"{{"specversion":"1.0","id":"e-{n}","source":"bench","type":"com.dapr.event.sent","datacontenttype":"application/json","topic":"orders","pubsubname":"pubsub","traceid":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{}}}"#,
                    order_json(n)
                ),
            ),
            Workload::PlaceOrder => (http::Method::POST, "/orders", order_json(n)),
            Workload::Hello => (http::Method::GET, "/hello", String::new()),
            Workload::Publish(topic) => {
                publish_path = format!("/v1.0/publish/pubsub/{topic}");
                (http::Method::POST, publish_path.as_str(), order_json(n))
            }
        };
        let content_type = if matches!(self, Workload::Delivery) {
            "application/cloudevents+json"
        } else {
            "application/json"
        };
        http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request")
    }

    fn accepts(self, status: http::StatusCode, body: &[u8]) -> bool {
        match self {
            Workload::Delivery => {
                status == http::StatusCode::OK && body.windows(9).any(|w| w == b"\"SUCCESS\"")
            }
            Workload::PlaceOrder => status == http::StatusCode::ACCEPTED,
            Workload::Hello => status == http::StatusCode::OK,
            Workload::Publish(_) => status.is_success(),
        }
    }
}

/// What one run of load measured.
#[derive(Default, Clone)]
struct LoadResult {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Latency of every accepted answer, in microseconds.
    latencies: Vec<u32>,
    /// The first unaccepted answer or failure, for the report.
    first_error: Option<String>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

enum Stop {
    After(Duration),
    /// After this many requests in all.
    Count(u64),
}

/// Runs `concurrency` closed-loop connections against `addr` until `stop`.
async fn load(addr: SocketAddr, workload: Workload, concurrency: usize, stop: Stop) -> LoadResult {
    let started = Instant::now();
    let (deadline, budget) = match stop {
        Stop::After(d) => (Some(started + d), None),
        Stop::Count(n) => (None, Some(Arc::new(AtomicU64::new(n)))),
    };
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let budget = budget.clone();
            tokio::task::spawn_local(async move {
                let mut result = LoadResult::default();
                let take = || match &budget {
                    Some(b) => b
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok(),
                    None => deadline.is_some_and(|d| Instant::now() < d),
                };
                'connections: while take() {
                    let mut sender = match connect(addr).await {
                        Ok(sender) => sender,
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    loop {
                        let sent = Instant::now();
                        let answer = async {
                            let response = sender.send_request(workload.request(addr)).await?;
                            let status = response.status();
                            let body = response.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>((status, body))
                        }
                        .await;
                        match answer {
                            Ok((status, body)) if workload.accepts(status, &body) => {
                                result.ok += 1;
                                let micros = sent.elapsed().as_micros();
                                result.latencies.push(micros.min(u32::MAX as u128) as u32);
                            }
                            Ok((status, body)) => {
                                result.errors += 1;
                                result.first_error.get_or_insert_with(|| {
                                    format!("{status}: {}", String::from_utf8_lossy(&body))
                                });
                            }
                            Err(e) => {
                                result.errors += 1;
                                result.first_error.get_or_insert(e.to_string());
                                continue 'connections;
                            }
                        }
                        if !take() {
                            break 'connections;
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for task in tasks {
        let r = task.await.expect("a load task panicked");
        total.ok += r.ok;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(connection);
    Ok(sender)
}

/// Runs load on `runtime`, in a `LocalSet` (the generator is one thread).
fn run(runtime: &tokio::runtime::Runtime, future: impl Future<Output = LoadResult>) -> LoadResult {
    tokio::task::LocalSet::new().block_on(runtime, future)
}

// ---------------------------------------------------------------------------
// Measurements

/// One system at one concurrency in one round.
#[derive(Clone)]
struct Point {
    section: &'static str,
    path: &'static str,
    system: &'static str,
    concurrency: usize,
    round: usize,
    rate: f64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<u32>,
    /// CPU time of the server per answered request.
    cpu_per_request: Duration,
}

/// Loads `server` for one point: a short warm-up, then `config.seconds`
/// measured, with the server's CPU time read around the measured part.
fn measure_point(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    (section, path, workload): (&'static str, &'static str, Workload),
    concurrency: usize,
    round: usize,
) -> Point {
    let warm_up = Duration::from_secs_f64((config.seconds / 5.0).clamp(0.1, 1.0));
    run(
        runtime,
        load(server.addr, workload, concurrency, Stop::After(warm_up)),
    );
    let cpu_before = server.process.cpu_time();
    let result = run(
        runtime,
        load(
            server.addr,
            workload,
            concurrency,
            Stop::After(config.measure()),
        ),
    );
    let cpu = server.process.cpu_time().saturating_sub(cpu_before);
    let point = Point {
        section,
        path,
        system: server.name,
        concurrency,
        round,
        rate: result.rate(),
        errors: result.errors,
        first_error: result.first_error.clone(),
        cpu_per_request: cpu / result.ok.max(1) as u32,
        latencies: result.latencies,
    };
    let (p50, p99) = percentiles(&point.latencies);
    eprintln!(
        "bench: [{section}] {path} c={concurrency:<2} round {} {:<28} {:>8.0} req/s  p50 {:>7}  p99 {:>7}  cpu/req {:>7}{}",
        round + 1,
        server.name,
        point.rate,
        micros(p50),
        micros(p99),
        micros(point.cpu_per_request.as_micros() as u32),
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

fn percentiles(latencies: &[u32]) -> (u32, u32) {
    if latencies.is_empty() {
        return (0, 0);
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// host-bridge running the example app in memory, and durable (the default).
fn host_bridges(tools: &Tools) -> Vec<Server> {
    let manifest = bench_manifest(tools, false);
    [
        (Storage::InMemory, "host-bridge"),
        (Storage::Durable, "host-bridge (durable state)"),
    ]
    .map(|(storage, name)| {
        start_host_bridge(tools, storage, name, &manifest, Placement::anywhere())
    })
    .into()
}

/// host-bridge (in memory and durable), the native baseline, and, when
/// `component` is given, `wasmtime serve` running it (fresh instances, and
/// its default reuse).
fn servers(tools: &Tools, component: Option<&str>) -> Vec<Server> {
    let mut servers = host_bridges(tools);
    servers.push(start_native(
        tools,
        &["--state", "memory"],
        Placement::anywhere(),
    ));
    if let Some(component) = component {
        servers.extend(start_wasmtime(tools, component, true));
        servers.extend(start_wasmtime(tools, component, false));
    }
    servers
}

/// The delivery path without Dapr: CloudEvents posted to the route daprd
/// would post to; then the HTTP trigger: the order API and a hello world.
fn delivery_and_http(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    let paths = [
        (
            "delivery",
            "POST /orders-events",
            Workload::Delivery,
            Some("order_processor_http"),
        ),
        ("http", "POST /orders", Workload::PlaceOrder, None),
        ("http", "GET /hello", Workload::Hello, Some("hello")),
    ];
    for (section, path, workload, component) in paths {
        if !config.runs(section) {
            continue;
        }
        eprintln!("bench: [{section}] {path}: starting the servers");
        let servers = servers(tools, component);
        load_servers(config, runtime, report, &servers, section, path, workload);
    }
}

/// Every concurrency, every server in turn, round after round.
fn load_servers(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
    servers: &[Server],
    section: &'static str,
    path: &'static str,
    workload: Workload,
) {
    for round in 0..config.rounds {
        for concurrency in CONCURRENCY {
            for server in servers {
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

/// The embedded broker: publish to processed, in memory and durable.
fn embedded(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [embedded] starting the servers");
    let servers = host_bridges(tools);
    for round in 0..config.rounds {
        for server in &servers {
            let (published, elapsed, _) = publish_and_process(runtime, server, 16, config.messages);
            let (p50, p99) = percentiles(&published.latencies);
            let rate = published.ok as f64 / elapsed.as_secs_f64();
            eprintln!(
                "bench: [embedded] round {} {:<28} {} published and processed in {:.2?}: {rate:.0} msg/s; publish p50 {} p99 {}{}",
                round + 1,
                server.name,
                published.ok,
                elapsed,
                micros(p50),
                micros(p99),
                error_note(&published),
            );
            report.flows.push(Flow::new(
                "embedded",
                server.name.to_owned(),
                round,
                published,
                elapsed,
            ));
        }
    }
}

/// The order processor in Rust, Python and JavaScript, each with a fresh
/// instance per delivery (the default) and with `instance_reuse`, on the
/// embedded broker in memory: 8 publishers, publish to processed.
const LANGUAGES: [(&str, &str); 3] = [("Rust", "rs"), ("Python", "py"), ("JavaScript", "js")];
const LANGUAGE_PUBLISHERS: usize = 8;

fn language_manifest(lang: &str, reuse: bool) -> String {
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

fn languages(
    config: &Config,
    tools: &Tools,
    runtime: &tokio::runtime::Runtime,
    report: &mut Report,
) {
    eprintln!("bench: [languages] building the Python and JavaScript guests, starting the servers");
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
        for server in &servers {
            let (published, elapsed, cpu) =
                publish_and_process(runtime, server, LANGUAGE_PUBLISHERS, messages);
            let rate = published.ok as f64 / elapsed.as_secs_f64();
            eprintln!(
                "bench: [languages] round {} {:<32} {} processed in {:.2?}: {rate:.0}/s, cpu/delivery {}{}",
                round + 1,
                server.name,
                published.ok,
                elapsed,
                micros((cpu / published.ok.max(1) as u32).as_micros() as u32),
                error_note(&published),
            );
            let mut flow = Flow::new(
                "languages",
                server.name.to_owned(),
                round,
                published,
                elapsed,
            );
            flow.cpu = Some(cpu);
            report.flows.push(flow);
        }
    }
    for server in &servers {
        report.peak_rss.insert(
            format!("languages: {}", server.name),
            server.process.memory_kib("VmHWM"),
        );
    }
}

/// Publishes `messages` to a host-bridge's embedded broker from
/// `concurrency` connections and waits until its subscriber has processed
/// every one: what was published, the time from the first publish to the
/// last message processed, and the server's CPU time over it.
fn publish_and_process(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    concurrency: usize,
    messages: u64,
) -> (LoadResult, Duration, Duration) {
    let processed = || metric(server, "host_bridge_deliveries_total{outcome=\"success\"}");
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

fn error_note(result: &LoadResult) -> String {
    if result.errors == 0 {
        return String::new();
    }
    format!(
        "  ERRORS {} ({})",
        result.errors,
        result.first_error.as_deref().unwrap_or("")
    )
}

/// A counter from a host-bridge's `/metrics`.
fn metric(server: &Server, series: &str) -> u64 {
    let text = get_text(&server.url("/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn get_text(url: &str) -> String {
    common::client()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Waits, polling every 5 ms, so a measured wait ends close to the event.
fn wait_for(timeout: Duration, what: &str, done: impl FnMut() -> bool) {
    common::dapr::wait_until_every(Duration::from_millis(5), timeout, what, done)
}

/// A message flow: N messages published, the time until all were processed.
struct Flow {
    section: &'static str,
    system: String,
    round: usize,
    messages: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    publish_latencies: Vec<u32>,
    /// The server's CPU time over the flow, where measured.
    cpu: Option<Duration>,
}

impl Flow {
    fn new(
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

    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// N messages through a real daprd and Redis: host-bridge against the
/// native baseline behind identical sidecars, one by one and in bulk.
fn through_dapr(
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
        for (system, bulk) in [
            ("host-bridge", false),
            ("native baseline", false),
            ("host-bridge, bulk", true),
            ("native baseline, bulk", true),
        ] {
            // Each run has its own Redis, so no stream holds another run's
            // messages.
            let backing = Backing::start();
            let sidecar = Sidecar::start("bench", &backing.resources);
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
                if app.name == "host-bridge" {
                    metric(&app, "host_bridge_deliveries_total{outcome=\"success\"}")
                } else {
                    serde_json::from_str::<Value>(&get_text(&app.url("/stats")))
                        .ok()
                        .and_then(|v| v["processed"].as_u64())
                        .unwrap_or(0)
                }
            };
            let sidecar = local(daprd.http_port);
            let started = Instant::now();
            let published = run(
                runtime,
                load(
                    sidecar,
                    Workload::Publish("orders"),
                    16,
                    Stop::Count(config.messages),
                ),
            );
            let goal = published.ok;
            wait_for(
                Duration::from_secs(600),
                "every message to be processed through daprd",
                || processed() >= goal,
            );
            let elapsed = started.elapsed();
            eprintln!(
                "bench: [dapr] round {} {system:<24} {} messages processed in {:.2?}: {:.0} msg/s{}",
                round + 1,
                published.ok,
                elapsed,
                published.ok as f64 / elapsed.as_secs_f64(),
                error_note(&published),
            );
            report.flows.push(Flow::new(
                "dapr",
                system.to_owned(),
                round,
                published,
                elapsed,
            ));
        }
    }
}

/// Launch to `/healthz` 200: host-bridge cold (empty cache) and warm, and
/// the native baseline; and host-bridge's memory once ready.
fn startup(config: &Config, tools: &Tools, report: &mut Report) {
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
            let mut process = Process::spawn(command, name.to_owned(), &dir.path().join("log"));
            wait_for(Duration::from_secs(120), "/healthz to answer 200", || {
                healthz_ok(addr) || !process.is_running()
            });
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
fn healthz_ok(addr: SocketAddr) -> bool {
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

struct Startup {
    system: String,
    millis: Vec<f64>,
    rss_kib: Vec<u64>,
}

// ---------------------------------------------------------------------------
// The report

struct Report {
    started: String,
    machine: String,
    points: Vec<Point>,
    flows: Vec<Flow>,
    startups: Vec<Startup>,
    peak_rss: BTreeMap<String, u64>,
    /// Criterion's medians, by benchmark id, in nanoseconds.
    micro: BTreeMap<String, f64>,
    targets: Vec<(String, String, bool)>,
}

impl Report {
    fn new(config: &Config) -> Report {
        let shell = |command: &str| {
            Command::new("sh")
                .args(["-c", command])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let machine = format!(
            "{} cores ({}), {}; load average at start: {}; commit {}; {} s per point, {} round(s), {} messages per flow",
            shell("nproc"),
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
            shell("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2-3"),
            shell("cut -d' ' -f1-3 /proc/loadavg"),
            shell("git rev-parse --short HEAD; git status --porcelain | grep -q . && echo '(with uncommitted changes)'")
                .replace('\n', " "),
            config.seconds,
            config.rounds,
            config.messages,
        );
        Report {
            started: shell("date -u '+%Y-%m-%d %H:%M UTC'"),
            machine,
            points: Vec::new(),
            flows: Vec::new(),
            startups: Vec::new(),
            peak_rss: BTreeMap::new(),
            micro: BTreeMap::new(),
            targets: Vec::new(),
        }
    }

    /// Reads criterion's medians from `target/criterion`, if `sandbox` ran.
    fn micro(&mut self) {
        let root = workspace().join("target/criterion");
        let Ok(groups) = std::fs::read_dir(&root) else {
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
                if let (Some(id), Some(estimates)) =
                    (read("benchmark.json"), read("estimates.json"))
                    && let (Some(id), Some(median)) = (
                        id["full_id"].as_str(),
                        estimates["median"]["point_estimate"].as_f64(),
                    )
                {
                    self.micro.insert(id.to_owned(), median);
                }
            }
        }
    }

    /// Points of one table row: `section`, `path`, `system`, `concurrency`.
    fn select(&self, path: &str, system: &str, concurrency: usize) -> Vec<&Point> {
        self.points
            .iter()
            .filter(|p| p.path == path && p.system == system && p.concurrency == concurrency)
            .collect()
    }

    fn systems(&self, path: &str) -> Vec<&'static str> {
        let mut systems: Vec<&'static str> = Vec::new();
        for p in self.points.iter().filter(|p| p.path == path) {
            if !systems.contains(&p.system) {
                systems.push(p.system);
            }
        }
        systems
    }

    fn paths(&self) -> Vec<(&'static str, &'static str)> {
        let mut paths = Vec::new();
        for p in &self.points {
            if !paths.contains(&(p.section, p.path)) {
                paths.push((p.section, p.path));
            }
        }
        paths
    }

    fn median_rate(&self, path: &str, system: &str, concurrency: usize) -> f64 {
        median(
            self.select(path, system, concurrency)
                .iter()
                .map(|p| p.rate)
                .collect(),
        )
    }

    /// The median over rounds of `system`'s rate divided by `baseline`'s in
    /// the same round.
    fn ratio(&self, path: &str, system: &str, baseline: &str, concurrency: usize) -> Option<f64> {
        let ours = self.select(path, system, concurrency);
        let theirs = self.select(path, baseline, concurrency);
        let ratios: Vec<f64> = ours
            .iter()
            .filter_map(|o| {
                let t = theirs.iter().find(|t| t.round == o.round)?;
                Some(o.rate / t.rate)
            })
            .collect();
        (!ratios.is_empty()).then(|| median(ratios))
    }

    fn flow_ratio(&self, section: &str, system: &str, baseline: &str) -> Option<f64> {
        let ratios: Vec<f64> =
            self.flows
                .iter()
                .filter(|f| f.section == section && f.system == system)
                .filter_map(|o| {
                    let t = self.flows.iter().find(|t| {
                        t.section == section && t.system == baseline && t.round == o.round
                    })?;
                    Some(o.rate() / t.rate())
                })
                .collect();
        (!ratios.is_empty()).then(|| median(ratios))
    }

    fn target(&mut self, name: impl Into<String>, measured: Option<String>, met: Option<bool>) {
        let (measured, met) = match (measured, met) {
            (Some(m), Some(ok)) => (m, ok),
            _ => ("not measured in this run".to_owned(), false),
        };
        self.targets.push((name.into(), measured, met));
    }

    fn judge(&mut self) {
        let delivery = "POST /orders-events";
        let sandbox = self.micro.get("delivery/order-processor").copied();
        self.target(
            "sandbox cost per delivery (store, instantiate, handle, drop) ≤ 15 µs",
            sandbox.map(|ns| format!("{:.1} µs (criterion median)", ns / 1000.0)),
            sandbox.map(|ns| ns <= 15_000.0),
        );
        let p50 = |report: &Report, system: &str| {
            let points = report.select("POST /orders", system, 1);
            let all: Vec<u32> = points
                .iter()
                .flat_map(|p| p.latencies.iter().copied())
                .collect();
            (!all.is_empty()).then(|| percentiles(&all).0)
        };
        for system in ["host-bridge (durable state)", "host-bridge"] {
            let p = p50(self, system);
            self.target(
                format!("keep-alive POST /orders p50 ≤ 2 ms at concurrency 1, {system}"),
                p.map(micros),
                p.map(|us| us <= 2000),
            );
        }
        let to_native = self.ratio(delivery, "host-bridge", "native baseline", 16);
        self.target(
            "delivery path throughput ≥ 80% of the native baseline at concurrency 16",
            to_native.map(|r| format!("{:.0}%", r * 100.0)),
            to_native.map(|r| r >= 0.8),
        );
        let to_wasmtime = self.ratio(delivery, "host-bridge", "wasmtime serve", 16);
        self.target(
            "delivery path throughput ≥ 1.5× wasmtime serve at concurrency 16",
            to_wasmtime.map(|r| format!("{r:.2}×")),
            to_wasmtime.map(|r| r >= 1.5),
        );
        for (system, baseline) in [
            ("host-bridge", "native baseline"),
            ("host-bridge, bulk", "native baseline, bulk"),
        ] {
            let r = self.flow_ratio("dapr", system, baseline);
            self.target(
                format!("through daprd ≥ 95% of the native baseline ({system})"),
                r.map(|r| format!("{:.0}%", r * 100.0)),
                r.map(|r| r >= 0.95),
            );
        }
        for system in ["host-bridge", "host-bridge (durable state)"] {
            let rates: Vec<f64> = self
                .flows
                .iter()
                .filter(|f| f.section == "embedded" && f.system == system)
                .map(Flow::rate)
                .collect();
            let rate = (!rates.is_empty()).then(|| median(rates));
            self.target(
                format!("embedded broker ≥ 15,000 messages/s published and processed at concurrency 16, {system}"),
                rate.map(|r| format!("{r:.0} messages/s")),
                rate.map(|r| r >= 15_000.0),
            );
        }
        for (language, goal) in [("Python", 2500.0), ("JavaScript", 4000.0)] {
            for instances in ["fresh instances", "instance reuse"] {
                let measured = self.language(&format!("{language}, {instances}"));
                self.target(
                    format!("{language} subscriber ≥ {goal:.0} deliveries/s on the embedded broker, {LANGUAGE_PUBLISHERS} publishers, {instances}"),
                    measured.map(|(rate, ..)| format!("{rate:.0} deliveries/s")),
                    measured.map(|(rate, ..)| rate >= goal),
                );
                self.target(
                    format!("host RSS ≤ 150 MB under that load, {language}, {instances}"),
                    measured.map(|(.., rss)| format!("{rss} MiB peak")),
                    measured.map(|(.., rss)| (rss as f64) * 1.048_576 <= 150.0),
                );
            }
        }
        let warm = self
            .startups
            .iter()
            .find(|s| s.system == "host-bridge, warm cache")
            .map(|s| median(s.millis.clone()));
        self.target(
            "start-up with a warm cache ≤ 25 ms from launch to /healthz 200",
            warm.map(|ms| format!("{ms:.1} ms (median)")),
            warm.map(|ms| ms <= 25.0),
        );
    }

    fn finish(mut self, config: &Config) {
        self.judge();
        let errors: Vec<String> = self
            .points
            .iter()
            .filter(|p| p.errors > 0)
            .map(|p| {
                format!(
                    "{} {} c={} round {}: {} errors ({})",
                    p.path,
                    p.system,
                    p.concurrency,
                    p.round + 1,
                    p.errors,
                    p.first_error.as_deref().unwrap_or("")
                )
            })
            .chain(self.flows.iter().filter(|f| f.errors > 0).map(|f| {
                format!(
                    "{} {}: {} errors ({})",
                    f.section,
                    f.system,
                    f.errors,
                    f.first_error.as_deref().unwrap_or("")
                )
            }))
            .collect();
        let markdown = self.markdown(&errors);
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
        if config.smoke && !errors.is_empty() {
            panic!("the smoke run saw errors:\n{}", errors.join("\n"));
        }
    }

    /// The median rate and CPU per delivery of a `languages` system, and
    /// its peak RSS in MiB.
    fn language(&self, system: &str) -> Option<(f64, Duration, u64)> {
        let runs: Vec<&Flow> = self
            .flows
            .iter()
            .filter(|f| f.section == "languages" && f.system == system)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let rate = median(runs.iter().map(|f| f.rate()).collect());
        let cpu = median(
            runs.iter()
                .map(|f| f.cpu.unwrap_or_default().as_secs_f64() / f.messages.max(1) as f64)
                .collect(),
        );
        let rss = self
            .peak_rss
            .get(&format!("languages: {system}"))
            .map_or(0, |kib| kib / 1024);
        Some((rate, Duration::from_secs_f64(cpu), rss))
    }

    fn languages_table(&self, out: &mut String) {
        if !self.flows.iter().any(|f| f.section == "languages") {
            return;
        }
        let _ = writeln!(
            out,
            "\n### Python and JavaScript guests: the order processor in three languages\n\n`BENCH_ONLY=languages make bench`; \
             the embedded broker in memory, {LANGUAGE_PUBLISHERS} publishers on the publish API, each run ends when the last message is \
             processed; median over rounds. Fresh instances is the default; instance reuse is `instance_reuse = 1000` with \
             `max_instances = 4`. CPU is host-bridge's, publishing included; RSS is the host's peak over the section.\n\n\
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
                let Some((rate, cpu, rss)) = self.language(&system) else {
                    continue;
                };
                let to_rust = self
                    .language(&format!("Rust, {instances}"))
                    .map_or(String::new(), |(rust, ..)| {
                        format!("{:.0}%", rate / rust * 100.0)
                    });
                let _ = writeln!(
                    out,
                    "| {language} | {size} | {instances} | {rate:.0} | {} | {to_rust} | {rss} MiB |",
                    micros(cpu.as_micros() as u32),
                );
            }
        }
    }

    fn markdown(&self, errors: &[String]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Measured {}: {}.\n", self.started, self.machine);
        let _ = writeln!(out, "### Targets\n\n| target | measured | |\n|---|---|---|");
        for (name, measured, met) in &self.targets {
            let verdict = if *met { "MET" } else { "MISSED" };
            let _ = writeln!(out, "| {name} | {measured} | **{verdict}** |");
        }
        if !self.micro.is_empty() {
            let _ = writeln!(
                out,
                "\n### Micro-benchmarks (criterion, median per iteration)\n\n`cargo bench -p host-bridge --bench sandbox`\n\n| benchmark | median |\n|---|---|"
            );
            for (id, ns) in &self.micro {
                let _ = writeln!(out, "| `{id}` | {:.1} µs |", ns / 1000.0);
            }
        }
        for (section, path) in self.paths() {
            let systems = self.systems(path);
            let _ = writeln!(
                out,
                "\n### {path} ({section})\n\n`BENCH_ONLY={section} make bench`; median req/s over rounds, latency over all rounds, \
                 server CPU time per request; ratios are host-bridge's rate over the baseline's in the same round (median).\n"
            );
            let _ = writeln!(
                out,
                "| system | concurrency | req/s | p50 | p99 | CPU/req | host-bridge ÷ system |\n|---|---|---|---|---|---|---|"
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
                    let cpu = median(
                        points
                            .iter()
                            .map(|p| p.cpu_per_request.as_secs_f64() * 1e6)
                            .collect(),
                    );
                    let ratio = if *system == "host-bridge" {
                        "".to_owned()
                    } else {
                        self.ratio(path, "host-bridge", system, concurrency)
                            .map_or("".to_owned(), |r| format!("{r:.2}"))
                    };
                    let errors: u64 = points.iter().map(|p| p.errors).sum();
                    let _ = writeln!(
                        out,
                        "| {system}{} | {concurrency} | {:.0} | {} | {} | {:.0} µs | {ratio} |",
                        if errors > 0 {
                            format!(" ({errors} errors)")
                        } else {
                            String::new()
                        },
                        self.median_rate(path, system, concurrency),
                        micros(p50),
                        micros(p99),
                        cpu,
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
        for (section, title, command) in [
            (
                "embedded",
                "The embedded broker: publish to processed, concurrency 16",
                "BENCH_ONLY=embedded make bench",
            ),
            (
                "dapr",
                "Through daprd and Redis: publish to processed, concurrency 16",
                "BENCH_ONLY=dapr make bench",
            ),
        ] {
            let flows: Vec<&Flow> = self.flows.iter().filter(|f| f.section == section).collect();
            if flows.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "\n### {title}\n\n`{command}`; each run publishes the messages over keep-alive connections and ends when the \
                 last is processed; median over rounds.\n\n| system | messages | messages/s | publish p50 | publish p99 | ÷ native baseline |\n|---|---|---|---|---|---|"
            );
            let mut systems: Vec<&str> = Vec::new();
            for f in &flows {
                if !systems.contains(&f.system.as_str()) {
                    systems.push(&f.system);
                }
            }
            for system in systems {
                let runs: Vec<&&Flow> = flows.iter().filter(|f| f.system == system).collect();
                let all: Vec<u32> = runs
                    .iter()
                    .flat_map(|f| f.publish_latencies.iter().copied())
                    .collect();
                let (p50, p99) = percentiles(&all);
                let baseline = if system.starts_with("host-bridge") && section == "dapr" {
                    let native = system.replace("host-bridge", "native baseline");
                    self.flow_ratio(section, system, &native)
                        .map_or(String::new(), |r| format!("{:.0}%", r * 100.0))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| {system} | {} | {:.0} | {} | {} | {baseline} |",
                    runs[0].messages,
                    median(runs.iter().map(|f| f.rate()).collect()),
                    micros(p50),
                    micros(p99),
                );
            }
        }
        brokers::table(self, &mut out);
        self.languages_table(&mut out);
        if !self.startups.is_empty() {
            let _ = writeln!(
                out,
                "\n### Start-up: launch to `/healthz` 200 (the orders app of spin.toml and the hello world: four components)\n\n`BENCH_ONLY=startup make bench`\n\n| system | median | min | max | RSS when ready |\n|---|---|---|---|---|"
            );
            for s in &self.startups {
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
        if !errors.is_empty() {
            let _ = writeln!(out, "\n**Errors in this run:** {}", errors.join("; "));
        }
        let _ = writeln!(
            out,
            "\n![throughput against concurrency](docs/bench/throughput.svg)"
        );
        out
    }

    /// Throughput against concurrency, one panel per path, one line per system.
    fn svg(&self) -> String {
        let paths = self.paths();
        let (panel_w, panel_h, margin) = (360.0, 260.0, 50.0);
        let width = panel_w * paths.len().max(1) as f64;
        let height = panel_h + 130.0;
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
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
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= value)
        .unwrap_or(value)
}

const BEGIN: &str = "<!-- results:begin (written by make bench) -->";
const END: &str = "<!-- results:end -->";

/// Puts `results` between the markers of `path`, keeping the prose around
/// them; a file without markers gets them appended.
fn write_results(path: &Path, results: &str) {
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
