//! The systems under test: the binaries and components ([`Tools`]), how
//! host-bridge and the native baseline are started ([`start_host_bridge`],
//! [`start_native`]; `wasmtime serve` is in `wasmtime.rs`), a daprd in
//! front of one ([`Sidecar`]), and how the harness reads what a server has
//! done (`/metrics`, `/stats`).

use crate::common;
use crate::common::dapr::Daprd;
use crate::common::{Process, free_port, workspace};
use crate::config::Config;
use crate::cores::Cores;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The binaries and components under test, and the cores they run on.
pub(crate) struct Tools {
    pub(crate) host_bridge: PathBuf,
    pub(crate) native: PathBuf,
    pub(crate) wasmtime: Option<PathBuf>,
    /// The criterion benchmarks of `benches/sandbox.rs`, built, when the
    /// `sandbox` section runs.
    pub(crate) sandbox_bench: Option<PathBuf>,
    pub(crate) guests: PathBuf,
    /// host-bridge's compiled-code cache, shared by the warm runs.
    pub(crate) cache: PathBuf,
    pub(crate) cores: Cores,
}

impl Tools {
    /// Builds what the sections need, on every core, then pins the
    /// harness's thread to the load generator's core.
    pub(crate) fn prepare(config: &Config) -> Tools {
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
        if config.runs("languages") {
            eprintln!("bench: building the Python and JavaScript orders apps");
            common::polyglot_guest("py");
            common::polyglot_guest("js");
        }
        // Built now, on every core; run later, pinned, as it is, with no
        // cargo (and no rebuild) in between.
        let sandbox_bench = config.runs("sandbox").then(|| sandbox_bench(config.smoke));
        let wasmtime = common::wasmtime_cli();
        if wasmtime.is_none() {
            eprintln!(
                "bench: no wasmtime 48.0.8 found (set WASMTIME, or run `make bench`, which installs it); \
                 the wasmtime serve baseline is left out"
            );
        }
        let cache = root.join("target/bench/cache");
        std::fs::create_dir_all(&cache).expect("cannot create target/bench/cache");
        let cores = Cores::pin_harness();
        // The client that reads servers' counters keeps a thread of its
        // own: made now, it stays on the load generator's core.
        common::client();
        eprintln!("bench: {cores}");
        Tools {
            host_bridge: PathBuf::from(env!("CARGO_BIN_EXE_host-bridge")),
            native: root.join("target/release/native-baseline"),
            wasmtime,
            sandbox_bench,
            guests: root.join("target/wasm32-wasip2/release"),
            cache,
            cores,
        }
    }

    pub(crate) fn wasm(&self, name: &str) -> String {
        self.guests
            .join(format!("{name}.wasm"))
            .display()
            .to_string()
    }
}

/// Builds `benches/sandbox.rs` and returns its executable: with the bench
/// profile, or for a smoke run (`make bench-smoke`, run by `cargo test`)
/// with the test profile, as the harness itself was built.
fn sandbox_bench(smoke: bool) -> PathBuf {
    let args = [
        if smoke { "test" } else { "bench" },
        "-p",
        "host-bridge",
        "--bench",
        "sandbox",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(output.status.success(), "cargo {} failed", args.join(" "));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == "sandbox")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo {} named no executable", args.join(" ")))
}

pub(crate) fn cargo(args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(args)
        .status()
        .expect("cannot run cargo");
    assert!(status.success(), "cargo {} failed", args.join(" "));
}

/// A server under test, stopped when dropped.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) process: Process,
    pub(crate) addr: SocketAddr,
    /// host-bridge's embedded sidecar API (`--sidecar-listen`); the native
    /// baseline's and other servers' `addr`.
    pub(crate) sidecar: SocketAddr,
    /// Where it counts the messages it has processed, if it does.
    pub(crate) counter: Counter,
    pub(crate) _dir: tempfile::TempDir,
}

/// How a server reports the orders it has processed, so the harness can
/// wait until it has done everything it accepted.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Counter {
    /// host-bridge's `/metrics`: successful deliveries.
    HostBridge,
    /// The native baseline's `/stats`.
    Native,
    /// It answers each request only when done (`wasmtime serve`).
    None,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many orders it has processed so far; `None` for a server that
    /// does not count them.
    pub(crate) fn processed(&self) -> Option<u64> {
        match self.counter {
            Counter::HostBridge => Some(metric(
                self,
                "host_bridge_deliveries_total{outcome=\"success\"}",
            )),
            Counter::Native => Some(
                serde_json::from_str::<serde_json::Value>(&get_text(&self.url("/stats")))
                    .ok()
                    .and_then(|v| v["processed"].as_u64())
                    .unwrap_or(0),
            ),
            Counter::None => None,
        }
    }
}

/// How host-bridge keeps the embedded broker's data.
#[derive(Clone, Copy)]
pub(crate) enum Storage {
    InMemory,
    Durable,
}

/// The example app of `spin.toml`, as the tests run it, plus the hello
/// world on `/hello`; with `bulk`, its processor subscribes in bulk.
pub(crate) fn bench_manifest(tools: &Tools, bulk: bool) -> String {
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

/// `manifest` plus `handler/order-processor-http` on
/// `POST /order-processor-http`: the order processor as a plain `wasi:http`
/// component, which `wasmtime serve` runs too. It stamps each order with
/// the time, so it is granted the clock. With `reuse`, it and the hello
/// world opt into `instance_reuse`.
pub(crate) fn with_http_processor(tools: &Tools, manifest: &str, reuse: bool) -> String {
    let mut manifest = format!(
        "{manifest}\n[[trigger.http]]\nroute = \"/order-processor-http\"\ncomponent = \"order-processor-http\"\n\n\
         [component.order-processor-http]\nsource = \"{}\"\n[component.order-processor-http.tool.host-bridge]\nclock = true\n",
        tools.wasm("order_processor_http")
    );
    if reuse {
        manifest.push_str(&format!("instance_reuse = {HTTP_REUSE}\n"));
        manifest.push_str(&format!(
            "[component.hello.tool.host-bridge]\ninstance_reuse = {HTTP_REUSE}\n"
        ));
    }
    manifest
}

/// How many requests an HTTP component that opts into reuse serves on one
/// instance: as many as the subscribers of the `languages` section.
pub(crate) const HTTP_REUSE: u32 = 1000;

pub(crate) fn host_bridge_command(
    tools: &Tools,
    dir: &Path,
    manifest: &str,
    storage: Storage,
    sidecar: SocketAddr,
) -> Command {
    host_bridge_command_with_cache(tools, dir, manifest, storage, &tools.cache, sidecar)
}

/// `host-bridge up` on `manifest`, with its embedded sidecar API on `sidecar`.
pub(crate) fn host_bridge_command_with_cache(
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
pub(crate) struct Sidecar {
    pub(crate) daprd: Daprd,
    pub(crate) app_port: u16,
    pub(crate) env: [(&'static str, String); 2],
    pub(crate) _dir: tempfile::TempDir,
}

impl Sidecar {
    /// daprd runs on the server cores, beside the app.
    pub(crate) fn start(cores: &Cores, app_id: &str, resources: &Path) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let app_port = free_port();
        let daprd = cores.on_servers(|| Daprd::start(app_id, app_port, resources, dir.path(), &[]));
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
    pub(crate) fn placement(&self) -> Placement<'_> {
        Placement {
            addr: local(self.app_port),
            env: &self.env,
        }
    }
}

/// Where a server listens and what it runs with: a free port and nothing
/// extra, or, behind daprd, the app port and the sidecar's variables.
pub(crate) struct Placement<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) env: &'a [(&'static str, String)],
}

impl Placement<'_> {
    pub(crate) fn anywhere() -> Placement<'static> {
        Placement {
            addr: local(free_port()),
            env: &[],
        }
    }
}

pub(crate) fn start_host_bridge(
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
    let mut process = tools
        .cores
        .on_servers(|| Process::spawn(command, name.into(), &dir.path().join("log")));
    // The JavaScript apps' two 12 MiB components compile into an empty
    // cache on the one server core: about two minutes on the test build
    // a smoke run uses.
    process.wait_for_line("is ready on", Duration::from_secs(300));
    Server {
        name,
        process,
        addr: at.addr,
        sidecar,
        counter: Counter::HostBridge,
        _dir: dir,
    }
}

pub(crate) fn start_native(tools: &Tools, args: &[&str], at: Placement) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&tools.native);
    command
        .arg("--listen")
        .arg(at.addr.to_string())
        .args(args)
        .envs(at.env.iter().cloned());
    let mut process = tools
        .cores
        .on_servers(|| Process::spawn(command, "native baseline".into(), &dir.path().join("log")));
    process.wait_for_line("ready on", Duration::from_secs(30));
    Server {
        name: "native baseline",
        process,
        addr: at.addr,
        sidecar: at.addr,
        counter: Counter::Native,
        _dir: dir,
    }
}

pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// host-bridge running the example app in memory, and durable (the default).
pub(crate) fn host_bridges(tools: &Tools) -> Vec<Server> {
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

/// host-bridge (in memory and durable) and the native baseline, which does
/// the same work with no Wasm.
pub(crate) fn with_native(tools: &Tools) -> Vec<Server> {
    let mut servers = host_bridges(tools);
    servers.push(start_native(
        tools,
        &["--state", "memory"],
        Placement::anywhere(),
    ));
    servers
}

/// A counter from a host-bridge's `/metrics`.
pub(crate) fn metric(server: &Server, series: &str) -> u64 {
    let text = get_text(&server.url("/metrics"));
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

pub(crate) fn get_text(url: &str) -> String {
    common::client()
        .get(url)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Waits, polling every 5 ms, so a measured wait ends close to the event.
pub(crate) fn wait_for(timeout: Duration, what: &str, done: impl FnMut() -> bool) {
    common::dapr::wait_until_every(Duration::from_millis(5), timeout, what, done)
}

/// As [`wait_for`], without failing: whether `done` came true in time.
pub(crate) fn within(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
