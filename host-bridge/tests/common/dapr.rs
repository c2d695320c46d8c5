//! Real Dapr for the end-to-end tests: Debian's `redis-server` on a free
//! port, and the daprd that `scripts/install-dapr.sh` builds from Go modules
//! and installs at `~/.dapr/bin/daprd`. Nothing here fakes a sidecar.
//!
//! Every process is started on free ports and killed when its guard drops.

use super::{Host, client, free_port, workspace};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A private Redis.
pub struct Redis {
    _process: Guard,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: run `make test` (or scripts/install-dapr.sh), which installs it");
        let redis = Redis {
            _process: Guard(child),
            port,
        };
        wait_until(Duration::from_secs(10), "redis-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        redis
    }
}

/// A private Redis and the repo's `components/`, pointed at it.
pub struct Backing {
    pub redis: Redis,
    pub dir: tempfile::TempDir,
    pub resources: PathBuf,
}

impl Backing {
    pub fn start() -> Backing {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let resources = resources(dir.path(), &redis);
        Backing {
            redis,
            dir,
            resources,
        }
    }
}

/// Writes the repo's `components/` resources into `dir`, pointed at `redis`.
pub fn resources(dir: &Path, redis: &Redis) -> PathBuf {
    let out = dir.join("components");
    fs::create_dir_all(&out).unwrap();
    for entry in fs::read_dir(workspace().join("components")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path).unwrap();
            let text = text.replace("localhost:6379", &format!("127.0.0.1:{}", redis.port));
            fs::write(out.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    out
}

/// A running daprd.
pub struct Daprd {
    _process: Guard,
    pub http_port: u16,
    pub grpc_port: u16,
    pub url: String,
    pub log: PathBuf,
    api_token: Option<String>,
}

impl Daprd {
    /// Starts daprd for `app_id` in front of the app on `app_port`.
    pub fn start(
        app_id: &str,
        app_port: u16,
        resources: &Path,
        log_dir: &Path,
        env: &[(&str, String)],
    ) -> Daprd {
        let (http_port, grpc_port) = (free_port(), free_port());
        let log = log_dir.join(format!("daprd-{app_id}-{http_port}.log"));
        let mut command = Command::new(daprd_path());
        command
            .args(["--app-id", app_id])
            .args(["--app-port", &app_port.to_string()])
            .args(["--dapr-http-port", &http_port.to_string()])
            .args(["--dapr-grpc-port", &grpc_port.to_string()])
            .args(["--dapr-internal-grpc-port", &free_port().to_string()])
            .args(["--metrics-port", &free_port().to_string()])
            .arg("--resources-path")
            .arg(resources)
            .args([
                "--placement-host-address",
                "",
                "--scheduler-host-address",
                "",
            ])
            .args([
                "--enable-app-health-check",
                "--app-health-check-path",
                "/healthz",
            ])
            .args(["--app-health-probe-interval", "1", "--log-level", "info"])
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("cannot start daprd");
        let daprd = Daprd {
            _process: Guard(child),
            http_port,
            grpc_port,
            url: format!("http://127.0.0.1:{http_port}"),
            log,
            api_token: env
                .iter()
                .find(|(k, _)| *k == "DAPR_API_TOKEN")
                .map(|(_, v)| v.clone()),
        };
        let url = format!("{}/v1.0/healthz/outbound", daprd.url);
        wait_until(Duration::from_secs(60), "daprd to be ready", || {
            client()
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        daprd
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
        env: &[(&str, String)],
    ) -> DaprApp {
        let dir = tempfile::tempdir().unwrap();
        let app_port = free_port();
        // daprd dials the app until it answers, so daprd starts first, as
        // under `dapr run`.
        let daprd = Daprd::start(app_id, app_port, resources, dir.path(), env);
        let mut host_env = vec![
            ("DAPR_HTTP_PORT", daprd.http_port.to_string()),
            ("DAPR_GRPC_PORT", daprd.grpc_port.to_string()),
        ];
        host_env.extend(env.iter().cloned());
        let host = Host::start_with(dir, manifest, app_port, &host_env, Some(daprd.url.clone()));
        daprd.wait_for_subscriptions(topics);
        DaprApp { host, daprd }
    }
}

/// Polls `ready` every 50 ms until it is true, failing the test after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
