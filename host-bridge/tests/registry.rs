//! Apps as OCI artifacts, against a real registry: Debian's
//! `docker-registry` (the distribution registry), started on a free port.
//! The orders app is pushed, pulled into an empty cache with `up --from`,
//! and serves orders; a blob altered in the registry's storage is refused.
//! A component source given as `{ url, digest }` is downloaded from a real
//! HTTP server, checked and cached, and refused when its digest differs.

mod common;

use common::registry::Registry;
use common::{Host, free_port, orders_manifest};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The admin API's token: 32 bytes at the least, or `up` refuses it.
const ADMIN_TOKEN: &str = "registry-test-admin-token-0123456789";

fn host_bridge(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args(args)
        .current_dir(dir)
        .env_remove("DAPR_HTTP_PORT")
        .env_remove("DAPR_GRPC_PORT")
        .output()
        .unwrap()
}

fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

#[test]
fn an_app_pushed_to_a_registry_runs_from_it_and_a_tampered_blob_is_refused() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let manifest_path = work.path().join("spin.toml");
    std::fs::write(&manifest_path, orders_manifest()).unwrap();
    let reference = format!("{}/orders:v1", registry.address);

    let pushed = host_bridge(
        &[
            "push",
            &reference,
            "--insecure",
            "-f",
            manifest_path.to_str().unwrap(),
        ],
        work.path(),
    );
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success(), "push failed:\n{stderr}");
    let digest = String::from_utf8(pushed.stdout).unwrap().trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    // Pulled into an empty cache, with no source checkout: the manifest the
    // host is given on the command line is not even read.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut host = Host::start_with_args(
        tempfile::tempdir().unwrap(),
        "this manifest is not used",
        free_port(),
        &[("HOST_BRIDGE_ADMIN_TOKEN", ADMIN_TOKEN.to_owned())],
        None,
        &[
            "--from",
            &reference,
            "--insecure",
            "--cache-dir",
            cache_dir,
            "--admin",
            &admin,
        ],
    );
    let log = host.drain_log();
    assert!(log.contains(&format!("{reference} is {digest}")), "{log}");
    let response = host.post(
        "/orders",
        "application/json",
        r#"{"orderId":"oci-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}"#,
    );
    assert_eq!(response.status(), 202);
    let order = host.wait_for_json("order-oci-1", Duration::from_secs(30));
    assert_eq!(order["status"], "processed", "{order}");
    assert_eq!(order["total"], 25.0, "{order}");

    // A live deploy can take its component from the pushed app, too.
    let processor = sha256_of(&common::guests().join("order_processor.wasm"));
    let deployed = Command::new(env!("CARGO_BIN_EXE_host-bridge"))
        .args([
            "deploy",
            "--component",
            "order-processor",
            "--from",
            &reference,
        ])
        .args(["--insecure", "--host", &format!("http://{admin}")])
        .env("HOST_BRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success() && answer.contains(&processor),
        "{answer}{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    drop(host);

    // The processor's blob, altered in the registry's storage: a pull into
    // another empty cache refuses it and runs nothing.
    let blob = registry.blob(&processor);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let refused = host_bridge(
        &[
            "up",
            "--from",
            &reference,
            "--insecure",
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        work.path(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a tampered app ran:\n{stderr}");
    assert!(
        stderr.contains(&format!("cannot pull layer {processor} of {reference}"))
            && stderr.contains("Invalid digest"),
        "{stderr}"
    );
    assert!(
        !cache.path().join("oci/apps").exists(),
        "no app manifest may be written for a refused pull"
    );
}

/// `python3 -m http.server` serving `dir` on a free port; killed when
/// dropped.
struct FileServer {
    process: Child,
    url: String,
}

impl FileServer {
    fn start(dir: &Path) -> FileServer {
        let port = free_port();
        let process = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start python3 -m http.server");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::client().get(&url).send().is_err() {
            assert!(Instant::now() < deadline, "the file server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        FileServer { process, url }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The test subscriber on topic `record-url`, its source a URL.
fn url_manifest(url: &str, digest: &str) -> String {
    format!(
        "spin_manifest_version = 2\n[application]\nname = \"from-url\"\n[[trigger.pubsub]]\ncomponent = \"test-subscriber\"\npubsubname = \"pubsub\"\ntopic = \"record-url\"\n[component.test-subscriber]\nsource = {{ url = \"{url}\", digest = \"{digest}\" }}\n"
    )
}

#[test]
fn a_url_source_is_downloaded_checked_and_cached() {
    let server = FileServer::start(common::guests());
    let url = format!("{}/test_subscriber.wasm", server.url);
    let digest = sha256_of(&common::guests().join("test_subscriber.wasm"));
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();

    let mut host = Host::start_with_args(
        tempfile::tempdir().unwrap(),
        &url_manifest(&url, &digest),
        free_port(),
        &[],
        None,
        &["--cache-dir", cache_dir],
    );
    assert!(host.drain_log().contains(&format!("downloading {url}")));
    host.publish("record-url", "u-1", "text/plain", "hello");
    let record = host.wait_for_json("received-u-1", Duration::from_secs(30));
    assert_eq!(record["data_hex"], "68656c6c6f", "{record}");
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        cache
            .path()
            .join(format!("downloads/sha256-{hex}.wasm"))
            .is_file()
    );
    drop(host);

    // A wrong digest: refused, naming the component, the URL and both
    // digests, and nothing runs.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spin.toml"), url_manifest(&url, &wrong)).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let refused = host_bridge(
        &[
            "up",
            "--cache-dir",
            empty.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "[component.test-subscriber] source: {url} has digest {digest}, not the manifest's {wrong}; it was not used"
        )),
        "{stderr}"
    );
    assert!(
        !empty
            .path()
            .join("downloads")
            .join(format!("sha256-{}.wasm", "0".repeat(64)))
            .exists()
    );
}
