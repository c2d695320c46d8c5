//! The end-to-end harness: real guests, a real `host-bridge up` process on a
//! free port, and a real HTTP client.
//!
//! The guests are built once per test run with cargo for `wasm32-wasip2`.
//! Each test writes its own `spin.toml` into a temporary directory, pointing
//! at the built `.wasm` files, and starts its own host on it. The host is
//! killed when the [`Host`] is dropped, so a failed test leaves nothing behind.

#![allow(dead_code)]

pub mod brokers;
pub mod dapr;
pub mod jaeger;
pub mod logs;
mod ports;
mod process;
pub mod registry;
pub mod scenarios;

pub use ports::free_port;
pub use process::Process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `host-bridge` binary the tests run: this build's, or the one in
/// `$HOST_BRIDGE_BIN`, so that a test can be run once against an older
/// build as a negative control.
pub fn host_bridge_bin() -> PathBuf {
    std::env::var_os("HOST_BRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_host-bridge")))
}

/// A tool `make` installs under `~/.cache/host-bridge/tools/{dir}/bin/{name}`,
/// or the path in the environment variable `var` (as the Makefile passes
/// `WASMTIME` and `WAC`), if it exists.
pub fn installed_tool(var: &str, dir: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(
                Path::new(&home)
                    .join(".cache/host-bridge/tools")
                    .join(dir)
                    .join("bin")
                    .join(name),
            )
        })
        .filter(|path| path.is_file())
}

/// wasmtime-cli 48.0.8 with `run` and `serve` (`make setup-wasmtime`), or `$WASMTIME`.
pub fn wasmtime_cli() -> Option<PathBuf> {
    installed_tool("WASMTIME", "wasmtime-serve-48.0.8", "wasmtime")
}

/// Builds every guest once and returns the directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace();
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "order-api",
                "-p",
                "order-processor",
                "-p",
                "dead-letter",
                "-p",
                "test-subscriber",
                "-p",
                "http-probe",
                "-p",
                "fetcher",
            ])
            .status()
            .expect("cannot run cargo to build the guests");
        assert!(status.success(), "building the guests failed");
        root.join("target/wasm32-wasip2/release")
    })
}

/// The orders app in another language, `py` or `js`: the folder holding
/// its sources and its manifest (`handler/order-processor-py`: the
/// processor in Python; `handler/orders-js`: the API and the processor in
/// JavaScript).
pub fn polyglot_dir(lang: &str) -> PathBuf {
    workspace().join(match lang {
        "py" => "handler/order-processor-py",
        "js" => "handler/orders-js",
        other => panic!("no orders app in {other:?}"),
    })
}

/// Builds the `py` or `js` orders app from source, once per test binary,
/// with the build commands of its own manifest (componentize-py or
/// componentize-js, which `make setup-guests` installs, and cargo).
pub fn polyglot_guest(lang: &str) {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    guests();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if built.iter().any(|l| l == lang) {
        return;
    }
    let manifest = polyglot_dir(lang).join("spin.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .arg("build")
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .expect("cannot run host-bridge build");
    assert!(
        output.status.success(),
        "building the {lang} orders app with {} failed (run `make setup-guests` first):\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    built.push(lang.to_owned());
}

/// The orders app in `py` or `js`: that folder's `spin.toml`, built, with
/// sources pointed at the built guests and a fast
/// retry policy.
pub fn polyglot_manifest(lang: &str) -> String {
    polyglot_guest(lang);
    let text = std::fs::read_to_string(polyglot_dir(lang).join("spin.toml")).unwrap();
    let text = text.replace(
        "source = \"../../target/wasm32-wasip2/release/",
        &format!("source = \"{}/", guests().display()),
    );
    text.replace("initial_backoff_ms = 200", "initial_backoff_ms = 20")
}

/// The path of a built guest, e.g. `wasm("order_api")`.
pub fn wasm(name: &str) -> String {
    guests().join(format!("{name}.wasm")).display().to_string()
}

/// A running `host-bridge up`.
pub struct Host {
    pub process: Process,
    pub url: String,
    /// Where publishes and state reads go: the embedded broker's sidecar
    /// API (`--sidecar-listen`), or daprd under Dapr.
    pub api_url: String,
    /// The `dapr-api-token` calls to `api_url` carry, if any.
    pub api_token: Option<String>,
    pub dir: tempfile::TempDir,
    /// How it was started, to start it again.
    manifest: String,
    port: u16,
    /// The embedded broker's `--sidecar-listen` port, kept across restarts.
    sidecar_port: u16,
    env: Vec<(String, String)>,
    sidecar_url: Option<String>,
}

impl Host {
    /// Writes `manifest` to a fresh directory and starts the host on it,
    /// waiting until it reports ready.
    pub fn start(manifest: &str) -> Host {
        Host::start_in(tempfile::tempdir().unwrap(), manifest)
    }

    /// Like [`Host::start`], in a directory the test has prepared.
    pub fn start_in(dir: tempfile::TempDir, manifest: &str) -> Host {
        Host::start_with(dir, manifest, free_port(), &[], None)
    }

    /// Starts a host on `port` with extra environment variables; `api_url`
    /// is the sidecar's address under Dapr (`None` for the embedded broker).
    pub fn start_with(
        dir: tempfile::TempDir,
        manifest: &str,
        port: u16,
        env: &[(&str, String)],
        api_url: Option<String>,
    ) -> Host {
        Host::start_with_args(dir, manifest, port, env, api_url, &[])
    }

    /// Like [`Host::start_with`], with more arguments to `up`. A
    /// `--cache-dir` among them replaces the tests' shared cache.
    pub fn start_with_args(
        dir: tempfile::TempDir,
        manifest: &str,
        port: u16,
        env: &[(&str, String)],
        api_url: Option<String>,
        args: &[&str],
    ) -> Host {
        Host::start_on(dir, manifest, (port, free_port()), env, api_url, args)
    }

    /// Like [`Host::start_with_args`], with the embedded broker's sidecar
    /// API on the second port of `ports`.
    pub fn start_on(
        dir: tempfile::TempDir,
        manifest: &str,
        (port, sidecar_port): (u16, u16),
        env: &[(&str, String)],
        api_url: Option<String>,
        args: &[&str],
    ) -> Host {
        let path = dir.path().join("spin.toml");
        std::fs::write(&path, manifest).unwrap();
        let data_dir = dir.path().join("broker-data");
        let mut command = Command::new(host_bridge_bin());
        // Only what the test passes: a Dapr variable from the outside would
        // switch the embedded tests to Dapr mode.
        for name in [
            "DAPR_HTTP_PORT",
            "DAPR_GRPC_PORT",
            "DAPR_API_TOKEN",
            "APP_API_TOKEN",
            "APP_PORT",
        ] {
            command.env_remove(name);
        }
        command
            .env("RUST_LOG", "info,host_bridge=debug")
            .arg("up")
            .arg("--manifest")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // Each host its own durable embedded broker (in its directory,
            // so a restart finds what it left).
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args);
        // A build from before `--sidecar-listen` (a negative control)
        // served the sidecar API on the app's port.
        let sidecar_api = if std::env::var_os("HOST_BRIDGE_BIN").is_some() {
            format!("http://127.0.0.1:{port}")
        } else {
            command
                .arg("--sidecar-listen")
                .arg(format!("127.0.0.1:{sidecar_port}"));
            format!("http://127.0.0.1:{sidecar_port}")
        };
        if !args.contains(&"--cache-dir") {
            command
                .arg("--cache-dir")
                .arg(workspace().join("target/host-bridge-test-cache"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let process = Process::spawn(
            command,
            format!("host-bridge on port {port}"),
            &dir.path().join("host-bridge.log"),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut host = Host {
            process,
            manifest: manifest.to_owned(),
            port,
            sidecar_port,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            sidecar_url: api_url.clone(),
            api_url: api_url.unwrap_or(sidecar_api),
            api_token: env
                .iter()
                .find(|(k, _)| *k == "DAPR_API_TOKEN")
                .map(|(_, v)| v.clone()),
            url,
            dir,
        };
        // A JavaScript app's two 12 MiB components take two minutes to
        // compile into an empty cache on one busy core of a CI machine.
        host.wait_for_line("is ready on", Duration::from_secs(300));
        host
    }

    /// Waits until the host prints a line containing `needle`; fails at once
    /// if the host exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        self.process.wait_for_line(needle, timeout)
    }

    /// Everything the host printed so far.
    pub fn drain_log(&mut self) -> String {
        self.process.drain_log()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills the process with SIGKILL and starts it again, on the same port,
    /// manifest and directory: the embedded broker's data dir is where the
    /// killed one left it.
    pub fn kill_and_restart(&mut self) {
        self.kill_and_restart_with(&[]);
    }

    /// Like [`Host::kill_and_restart`], with `args` to `up` again (an
    /// `--admin` address, for instance).
    pub fn kill_and_restart_with(&mut self, args: &[&str]) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let restarted = Host::start_on(
            dir,
            &self.manifest,
            (self.port, self.sidecar_port),
            &env,
            self.sidecar_url.clone(),
            args,
        );
        *self = restarted;
    }

    /// Sends SIGTERM, as `dapr run`, systemd or Kubernetes would to stop
    /// the app, and waits at most `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.process.terminate(timeout)
    }

    /// The process's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        self.process.memory_kib("VmRSS")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        client().get(format!("{}{path}", self.url)).send().unwrap()
    }

    /// `GET path` on the host, parsed as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).json().unwrap()
    }

    /// Like [`Host::get`], carrying `dapr-api-token: token`.
    pub fn get_with_token(&self, path: &str, token: &str) -> reqwest::blocking::Response {
        client()
            .get(format!("{}{path}", self.url))
            .header("dapr-api-token", token)
            .send()
            .unwrap()
    }

    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> reqwest::blocking::Response {
        client()
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap()
    }

    /// Adds the API token, if the sidecar wants one.
    pub fn api(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.api_token {
            Some(token) => request.header("dapr-api-token", token),
            None => request,
        }
    }

    /// Publishes through the sidecar API (the embedded broker's, or daprd's); expects 204.
    pub fn publish(
        &self,
        topic: &str,
        id: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) {
        let url = format!(
            "{}/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id={id}",
            self.api_url
        );
        let response = self
            .api(client().post(url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            204,
            "publish failed: {}",
            response.text().unwrap_or_default()
        );
    }

    /// A value from the state store, as bytes, if set.
    pub fn state_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.state_response(key)
            .map(|r| r.bytes().unwrap().to_vec())
    }

    /// A value from the state store, if set.
    pub fn state(&self, key: &str) -> Option<String> {
        self.state_response(key).map(|r| r.text().unwrap())
    }

    fn state_response(&self, key: &str) -> Option<reqwest::blocking::Response> {
        let response = self
            .api(client().get(format!("{}/v1.0/state/statestore/{key}", self.api_url)))
            .send()
            .unwrap();
        match response.status().as_u16() {
            200 => Some(response),
            204 => None,
            other => panic!(
                "state read of {key} at {} answered {other}: {}",
                self.api_url,
                response.text().unwrap_or_default()
            ),
        }
    }

    /// Polls state `key` until `check` accepts it, or fails after `timeout`.
    pub fn wait_for_state(
        &mut self,
        key: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = self.state(key)
                && check(&value)
            {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "state {key} = {:?} did not reach the expected value within {timeout:?}; host log:\n{}",
                    self.state(key),
                    self.drain_log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls state `key` until it is set, and parses it as JSON.
    pub fn wait_for_json(&mut self, key: &str, timeout: Duration) -> serde_json::Value {
        let value = self.wait_for_state(key, timeout, |_| true);
        serde_json::from_str(&value)
            .unwrap_or_else(|e| panic!("state {key} is not JSON ({e}): {value}"))
    }

    /// The value of one line of `/metrics`, e.g. `host_bridge_deliveries_total{outcome="retry"}`.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.get("/metrics").text().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no metric {series} in:\n{text}"))
    }
}

pub fn client() -> reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        })
        .clone()
}

/// The example app's manifest (the repo's `spin.toml`), with sources pointed
/// at the built guests and a fast retry policy.
pub fn orders_manifest() -> String {
    let text = std::fs::read_to_string(workspace().join("spin.toml")).unwrap();
    let text = text.replace(
        "source = \"target/wasm32-wasip2/release/",
        &format!("source = \"{}/", guests().display()),
    );
    text.replace("initial_backoff_ms = 200", "initial_backoff_ms = 20")
}

/// Where the test subscriber may publish (`forward` and `relay` do).
pub const TEST_SUBSCRIBER_PUBLISHES: &str =
    r#"allowed_publish_topics = ["pubsub/record-forwarded", "pubsub/record-relayed"]"#;

/// A manifest with the test subscriber on each of `topics`, retry policy
/// `max_attempts` with a short backoff, and `tool` settings for it.
pub fn test_subscriber_manifest(
    topics: &[&str],
    max_attempts: u32,
    tool: &str,
    extra: &str,
) -> String {
    let mut text = format!(
        r#"spin_manifest_version = 2
[application]
name = "tests"
[application.trigger.pubsub]
max_attempts = {max_attempts}
initial_backoff_ms = 20
max_backoff_ms = 100
"#
    );
    for topic in topics {
        text.push_str(&format!(
            "[[trigger.pubsub]]\ncomponent = \"test-subscriber\"\npubsubname = \"pubsub\"\ntopic = \"{topic}\"\n"
        ));
    }
    text.push_str(&format!(
        "[component.test-subscriber]\nsource = \"{}\"\n{extra}\n[component.test-subscriber.tool.host-bridge]\n{TEST_SUBSCRIBER_PUBLISHES}\n{tool}\n",
        wasm("test_subscriber")
    ));
    text
}

/// The test subscriber on topic `poison` (it always answers RETRY) with
/// `max_attempts`, dead-lettering to `poison-dead`, where the dead-letter
/// component records what arrives as `deadletter-{id}`.
pub fn poison_manifest(max_attempts: u32) -> String {
    test_subscriber_manifest(&[], max_attempts, "", "")
        + &format!(
            r#"
[[trigger.pubsub]]
component = "test-subscriber"
pubsubname = "pubsub"
topic = "poison"
dead_letter_topic = "poison-dead"

[[trigger.pubsub]]
component = "dead-letter"
pubsubname = "pubsub"
topic = "poison-dead"

[component.dead-letter]
source = "{}"
"#,
            wasm("dead_letter")
        )
}

/// A manifest routing topic `record-routed` by CEL: events of type `widget`
/// to the test subscriber (which records them as `received-{id}`), all
/// others to the dead-letter component (which records `deadletter-{id}`).
pub fn routed_manifest() -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "routed"

[[trigger.pubsub]]
component = "test-subscriber"
pubsubname = "pubsub"
topic = "record-routed"
route = "/widgets"
match = 'event.type == "widget"'

[[trigger.pubsub]]
component = "dead-letter"
pubsubname = "pubsub"
topic = "record-routed"
route = "/others"

[component.test-subscriber]
source = "{}"

[component.dead-letter]
source = "{}"
"#,
        wasm("test_subscriber"),
        wasm("dead_letter")
    )
}

/// Publishes a widget and a gadget, and checks each reached only its component.
pub fn check_routing(host: &mut Host) {
    for (id, kind) in [("w-1", "widget"), ("g-1", "gadget")] {
        let url = format!(
            "{}/v1.0/publish/pubsub/record-routed?metadata.cloudevent.id={id}&metadata.cloudevent.type={kind}",
            host.api_url
        );
        let response = host
            .api(client().post(url))
            .header("content-type", "text/plain")
            .body(kind)
            .send()
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    host.wait_for_state("received-w-1", Duration::from_secs(30), |_| true);
    host.wait_for_state("deadletter-g-1", Duration::from_secs(30), |_| true);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host.state("deadletter-w-1"),
        None,
        "the widget also reached the default"
    );
    assert_eq!(
        host.state("received-g-1"),
        None,
        "the gadget matched the widget rule"
    );
}

/// State is bytes on every backend: a guest saves each payload as it
/// arrived (topic `store`), reads it back and records whether it got the
/// same bytes; and the sidecar API (the embedded one, or daprd's) answers
/// those bytes too.
pub fn check_state_is_bytes(host: &mut Host) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let cases: [(&str, &str, &[u8]); 4] = [
        ("all-bytes", "application/octet-stream", &all_bytes),
        ("quoted", "text/plain", br#""hello""#),
        ("spaced-json", "text/plain", b"{ \"a\" :  [1,  2] }\n"),
        ("empty", "application/octet-stream", b""),
    ];
    for (id, content_type, data) in cases {
        host.publish("store", id, content_type, data.to_vec());
    }
    for (id, _, data) in cases {
        let verdict =
            host.wait_for_state(&format!("readback-{id}"), Duration::from_secs(30), |_| true);
        assert_eq!(verdict, "same", "the guest read back other bytes for {id}");
        assert_eq!(
            host.state_bytes(&format!("stored-{id}")).as_deref(),
            Some(data),
            "the sidecar API answered other bytes for {id}"
        );
    }
}
