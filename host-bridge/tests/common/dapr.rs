//! Real Dapr for the end-to-end tests: Debian's `redis-server` on a free
//! port, and the daprd that `scripts/install-dapr.sh` builds from Go modules
//! and installs at `~/.dapr/bin/daprd`. Nothing here fakes a sidecar.
//!
//! Every process is started on free ports and killed when its guard drops.

use super::brokers::{Broker, BrokerKind, copy_resources};
use super::logs::{self, LogEntry};
use super::{Host, client, free_port, workspace};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The app health check the README's `dapr run` command turns on, and every
/// daprd here runs with. daprd stops delivering to an app that fails a probe
/// (every second, a threshold of one), so a delivery to a dead host-bridge
/// is never acked: see "When host-bridge is down" in the README.
pub const APP_HEALTH_FLAGS: [&str; 7] = [
    "--enable-app-health-check",
    "--app-health-check-path",
    "/healthz",
    "--app-health-probe-interval",
    "1",
    "--app-health-threshold",
    "1",
];

/// The daprd the install script put in Dapr's standard place.
pub fn daprd_path() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is not set");
    let path = Path::new(&home).join(".dapr/bin/daprd");
    assert!(
        path.is_file(),
        "{} is missing: run `make test` (or scripts/install-dapr.sh) to build and install daprd",
        path.display()
    );
    path
}

/// Kills a child process when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits until `ready` is true; fails the test at once if the process
    /// exits first, or after `timeout`.
    pub fn wait_until_ready(
        &mut self,
        name: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        wait_until(timeout, &format!("{name} to be ready"), || {
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("{name} exited ({status}) before it was ready");
            }
            ready()
        });
    }
}

/// A private Redis, logging to a file.
pub struct Redis {
    process: Guard,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    _log: LogEntry,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts redis-server on a free port with extra arguments (persistence settings, say).
    pub fn start_with(args: &[&str]) -> Redis {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut redis = Redis {
            _log: logs::register(format!("redis-server on port {port}"), &log),
            process: Redis::spawn(port, dir.path(), &args),
            port,
            dir,
            args,
        };
        redis.wait_ready();
        redis
    }

    fn spawn(port: u16, dir: &Path, args: &[String]) -> Guard {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: run `make test` (or scripts/install-dapr.sh), which installs it");
        Guard(child)
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        self.process
            .wait_until_ready("redis-server", Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
    }

    /// Kills redis-server with SIGKILL and starts it again on the same port
    /// and data directory, after `down`.
    pub fn crash_and_restart(&mut self, down: Duration) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        std::thread::sleep(down);
        self.process = Redis::spawn(self.port, self.dir.path(), &self.args);
        self.wait_ready();
    }
}

/// What daprd carries messages on and keeps state in: a private Redis (the
/// state store of every folder of `components/`, and the broker of the
/// top one) and, for another broker's folder, that broker; with the folder's
/// resources pointed at them.
pub struct Backing {
    pub redis: Redis,
    pub broker: Option<Broker>,
    pub dir: tempfile::TempDir,
    pub resources: PathBuf,
}

impl Backing {
    pub fn start() -> Backing {
        Backing::on(Redis::start())
    }

    /// The resources of `components/` pointed at `redis`.
    pub fn on(redis: Redis) -> Backing {
        let dir = tempfile::tempdir().unwrap();
        let resources = resources(dir.path(), &redis);
        Backing {
            redis,
            broker: None,
            dir,
            resources,
        }
    }

    /// `kind`'s folder of `components/` and its broker, each with its
    /// persistence on, as a restart test needs: Redis with an append-only
    /// file synced on every write.
    pub fn for_broker(kind: BrokerKind) -> Backing {
        if kind == BrokerKind::Redis {
            return Backing::on(Redis::start_with(&[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]));
        }
        let redis = Redis::start();
        let broker = Broker::start(kind);
        let dir = tempfile::tempdir().unwrap();
        let resources = dir.path().join("components");
        copy_resources(&kind.components(), &resources, redis.port, Some(&broker));
        Backing {
            redis,
            broker: Some(broker),
            dir,
            resources,
        }
    }

    /// The broker the resources point daprd at.
    pub fn kind(&self) -> BrokerKind {
        self.broker.as_ref().map_or(BrokerKind::Redis, |b| b.kind)
    }

    /// Kills the broker with SIGKILL and starts it again on its data after `down`.
    pub fn crash_and_restart_broker(&mut self, down: Duration) {
        match &mut self.broker {
            Some(broker) => broker.crash_and_restart(down),
            None => self.redis.crash_and_restart(down),
        }
    }
}

/// Writes the repo's `components/` resources into `dir`, pointed at `redis`.
pub fn resources(dir: &Path, redis: &Redis) -> PathBuf {
    let out = dir.join("components");
    copy_resources(&workspace().join("components"), &out, redis.port, None);
    out
}

/// A running daprd.
pub struct Daprd {
    process: Guard,
    _log_entry: LogEntry,
    pub http_port: u16,
    pub grpc_port: u16,
    pub url: String,
    pub log: PathBuf,
    api_token: Option<String>,
    /// Its whole command line, to start it again as it was.
    command: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Daprd {
    /// Starts daprd for `app_id` in front of the app on `app_port`.
    pub fn start(
        app_id: &str,
        app_port: u16,
        resources: &Path,
        log_dir: &Path,
        env: &[(&'static str, String)],
    ) -> Daprd {
        Daprd::start_with_args(app_id, app_port, resources, log_dir, env, &[])
    }

    /// Like [`Daprd::start`], with more arguments (a `--config`, say).
    pub fn start_with_args(
        app_id: &str,
        app_port: u16,
        resources: &Path,
        log_dir: &Path,
        env: &[(&'static str, String)],
        args: &[&str],
    ) -> Daprd {
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = log_dir.join(format!("daprd-{app_id}-{http_port}.log"));
        let mut command: Vec<String> = [
            "--app-id",
            app_id,
            "--app-port",
            &app_port.to_string(),
            "--dapr-http-port",
            &http_port.to_string(),
            "--dapr-grpc-port",
            &grpc_port.to_string(),
            "--dapr-internal-grpc-port",
            &free_port().to_string(),
            "--metrics-port",
            &free_port().to_string(),
            "--resources-path",
            &resources.display().to_string(),
            "--placement-host-address",
            "",
            "--scheduler-host-address",
            "",
            "--log-level",
            "info",
        ]
        .map(str::to_owned)
        .to_vec();
        command.extend(APP_HEALTH_FLAGS.map(str::to_owned));
        command.extend(args.iter().map(|a| a.to_string()));
        let mut daprd = Daprd {
            _log_entry: logs::register(format!("daprd {app_id} on port {http_port}"), &log),
            process: Daprd::spawn(&command, env, &log),
            http_port,
            grpc_port,
            url: format!("http://127.0.0.1:{http_port}"),
            log,
            api_token: env
                .iter()
                .find(|(k, _)| *k == "DAPR_API_TOKEN")
                .map(|(_, v)| v.clone()),
            command,
            env: env.to_vec(),
        };
        daprd.wait_ready();
        daprd
    }

    fn spawn(command: &[String], env: &[(&'static str, String)], log: &Path) -> Guard {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(daprd_path())
            .args(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start daprd");
        Guard(child)
    }

    fn wait_ready(&mut self) {
        let url = format!("{}/v1.0/healthz/outbound", self.url);
        self.process
            .wait_until_ready("daprd", Duration::from_secs(60), || {
                client()
                    .get(&url)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            });
    }

    /// Kills daprd with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }

    /// Starts daprd again, as it was, on the same ports, after [`Daprd::kill`].
    pub fn restart(&mut self) {
        self.process = Daprd::spawn(&self.command, &self.env, &self.log);
        self.wait_ready();
    }

    /// Waits until daprd has subscribed the app to every one of `topics`.
    pub fn wait_for_subscriptions(&self, topics: &[&str]) {
        let url = format!("{}/v1.0/metadata", self.url);
        wait_until(
            Duration::from_secs(60),
            "daprd to subscribe the app",
            || {
                let mut request = client().get(&url);
                if let Some(token) = &self.api_token {
                    request = request.header("dapr-api-token", token);
                }
                let Ok(response) = request.send() else {
                    return false;
                };
                let metadata: serde_json::Value = response.json().unwrap_or_default();
                let subscribed: Vec<&str> = metadata["subscriptions"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|s| s["topic"].as_str()).collect())
                    .unwrap_or_default();
                topics.iter().all(|t| subscribed.contains(t))
            },
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One app replica: a host-bridge and its daprd.
pub struct DaprApp {
    pub host: Host,
    pub daprd: Daprd,
    /// What the host was started with, to start it again.
    manifest: String,
    host_env: Vec<(&'static str, String)>,
    app_port: u16,
    /// daprd's log; the host's is in its own directory, which a restart replaces.
    _daprd_dir: tempfile::TempDir,
}

impl DaprApp {
    /// Starts host-bridge on `manifest` in Dapr mode and a daprd for it.
    pub fn start(app_id: &str, manifest: &str, resources: &Path, topics: &[&str]) -> DaprApp {
        DaprApp::start_with_env(app_id, manifest, resources, topics, &[])
    }

    pub fn start_with_env(
        app_id: &str,
        manifest: &str,
        resources: &Path,
        topics: &[&str],
        env: &[(&'static str, String)],
    ) -> DaprApp {
        DaprApp::start_with_daprd_args(app_id, manifest, resources, topics, env, &[])
    }

    /// Like [`DaprApp::start_with_env`], with more arguments to daprd.
    pub fn start_with_daprd_args(
        app_id: &str,
        manifest: &str,
        resources: &Path,
        topics: &[&str],
        env: &[(&'static str, String)],
        daprd_args: &[&str],
    ) -> DaprApp {
        let daprd_dir = tempfile::tempdir().unwrap();
        let app_port = free_port();
        // daprd dials the app until it answers, so daprd starts first, as
        // under `dapr run`.
        let daprd = Daprd::start_with_args(
            app_id,
            app_port,
            resources,
            daprd_dir.path(),
            env,
            daprd_args,
        );
        let mut host_env = vec![
            ("DAPR_HTTP_PORT", daprd.http_port.to_string()),
            ("DAPR_GRPC_PORT", daprd.grpc_port.to_string()),
        ];
        host_env.extend(env.iter().cloned());
        let host = Host::start_with(
            tempfile::tempdir().unwrap(),
            manifest,
            app_port,
            &host_env,
            Some(daprd.url.clone()),
        );
        daprd.wait_for_subscriptions(topics);
        DaprApp {
            host,
            daprd,
            manifest: manifest.to_owned(),
            host_env,
            app_port,
            _daprd_dir: daprd_dir,
        }
    }

    /// Starts host-bridge again, on the same port, after [`Host::kill`].
    pub fn restart_host(&mut self) {
        self.host = Host::start_with(
            tempfile::tempdir().unwrap(),
            &self.manifest,
            self.app_port,
            &self.host_env,
            Some(self.daprd.url.clone()),
        );
    }
}

/// Polls `ready` every 50 ms until it is true, failing the test after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, ready: impl FnMut() -> bool) {
    wait_until_every(Duration::from_millis(50), timeout, what, ready)
}

/// Polls `ready` every `interval` until it is true, failing after `timeout`;
/// the benchmarks poll often, so the time they measure is not the interval's.
pub fn wait_until_every(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(interval);
    }
}
