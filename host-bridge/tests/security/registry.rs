//! A pulled app is untrusted input, and so is every download.
//!
//! - An app pushed with `host-bridge push`, whose manifest layer someone
//!   with push rights then edits to mount the host's `/etc` (or a `..`
//!   path out of the app's folder), is refused by `up --from`, naming the
//!   component and `files`. Before: it ran, and its subscriber could read
//!   the host's `/etc`.
//! - A clean pulled app runs, and its grants are printed before it
//!   compiles.
//! - A `{ url, digest }` source larger than `--max-component-size` is
//!   refused by name without being read whole; one whose server stalls
//!   mid-body times out. Before: read whole into memory, with no timeout.
//!
//! The limits are given through their environment variables, which an
//! older build ignores, so that the negative control fails on the hole and
//! not on an unknown flag.

use crate::common::registry::Registry;
use crate::common::{free_port, host_bridge_bin, orders_manifest};
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The manifest layer's media type, as `host-bridge push` writes it.
const MANIFEST_LAYER: &str = "application/vnd.host-bridge.manifest.v1+toml";

/// Runs `host-bridge` with `args` and `env`, without the variables
/// `remove_env`, for at most `timeout`. Returns its exit status (`None` if
/// it was still running, and was killed) and everything it printed.
pub fn run_until_exit(
    args: &[&str],
    env: &[(&str, &str)],
    remove_env: &[&str],
    timeout: Duration,
) -> (Option<ExitStatus>, String) {
    run_until(args, env, remove_env, timeout, None)
}

/// Like [`run_until_exit`], also stopping it once it printed `stop_at`.
fn run_until(
    args: &[&str],
    env: &[(&str, &str)],
    remove_env: &[&str],
    timeout: Duration,
    stop_at: Option<&str>,
) -> (Option<ExitStatus>, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut command = Command::new(host_bridge_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(append(out.path()))
        .stderr(append(out.path()));
    for name in ["DAPR_HTTP_PORT", "DAPR_GRPC_PORT", "APP_PORT"]
        .iter()
        .chain(remove_env)
    {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        let printed = || std::fs::read_to_string(out.path()).unwrap_or_default();
        if Instant::now() > deadline || stop_at.is_some_and(|line| printed().contains(line)) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(out.path()).unwrap())
}

/// `path` opened for appending, so that stdout and stderr share it whole.
fn append(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new().append(true).open(path).unwrap()
}

/// Pushes the orders app to `registry` as `orders:v1`; returns the reference.
fn push_orders(registry: &Registry) -> String {
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("spin.toml");
    std::fs::write(&manifest, orders_manifest()).unwrap();
    let reference = format!("{}/orders:v1", registry.address);
    let pushed = Command::new(host_bridge_bin())
        .args(["push", &reference, "--insecure", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "push failed:\n{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    reference
}

/// `up --from reference` into the empty cache `cache`, for at most 60 s or
/// until it prints `stop_at`.
fn up_from(reference: &str, cache: &Path, stop_at: Option<&str>) -> (Option<ExitStatus>, String) {
    run_until(
        &[
            "up",
            "--from",
            reference,
            "--insecure",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        // Ignored by builds without a sidecar listener.
        &[(
            "HOST_BRIDGE_SIDECAR_LISTEN",
            &format!("127.0.0.1:{}", free_port()),
        )],
        &[],
        Duration::from_secs(60),
        stop_at,
    )
}

#[test]
fn a_pulled_app_that_mounts_host_etc_is_refused() {
    refuses_a_pulled_mount("/etc", "\"/etc\" is refused (the path also is absolute");
}

#[test]
fn a_pulled_app_whose_path_leaves_its_folder_is_refused() {
    refuses_a_pulled_mount(
        "../../../../../../../../../../etc",
        "has a `..` component, which would leave the app's folder",
    );
}

/// Pushes the orders app, adds `files = [{ source, destination = "/data" }]`
/// to its subscriber in the registry, and checks `up --from` refuses it,
/// naming the component, `files` and `named`.
fn refuses_a_pulled_mount(source: &str, named: &str) {
    let registry = Registry::start();
    let reference = push_orders(&registry);
    registry.edit_layer("orders", "v1", MANIFEST_LAYER, |text| {
        let header = "[component.order-processor]\n";
        assert!(text.contains(header), "{text}");
        text.replace(
            header,
            &format!("{header}files = [{{ source = \"{source}\", destination = \"/data\" }}]\n"),
        )
    });
    let cache = tempfile::tempdir().unwrap();
    let (status, log) = up_from(&reference, cache.path(), Some("is ready on"));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a pulled app mounting {source} ran ({status:?}):\n{log}"
    );
    assert!(
        log.contains(&format!("{reference} was refused"))
            && log.contains(
                "[component.order-processor] files: a pulled app may not mount host directories"
            )
            && log.contains(named)
            && !log.contains("is not defined"),
        "{log}"
    );
    // Refused before any component was downloaded, and nothing is
    // left where an app would run from.
    assert!(
        log.contains("[1/4]") && !log.contains("[2/4]"),
        "a component was pulled:\n{log}"
    );
    assert!(!cache.path().join("oci/apps").exists());
}

#[test]
fn a_pulled_app_prints_its_grants_before_it_compiles() {
    let registry = Registry::start();
    let reference = push_orders(&registry);
    let cache = tempfile::tempdir().unwrap();
    let (status, log) = up_from(&reference, cache.path(), Some("is ready on"));
    assert!(
        status.is_none() && log.contains("is ready on"),
        "the clean app did not start ({status:?}):\n{log}"
    );
    let grants = log
        .find("host-bridge: app `orders` asks for these grants:")
        .unwrap_or_else(|| panic!("no grants block:\n{log}"));
    let compiling = log.find("compiling `").unwrap();
    assert!(grants < compiling, "grants printed after compiling:\n{log}");
    let block = &log[grants..compiling];
    for line in [
        "  component `order-api`:",
        "    outbound hosts    none",
        "    publish topics    pubsub/orders",
        "  component `order-processor`:",
        "    files             none",
        "    key-value stores  none",
    ] {
        assert!(block.contains(line), "{line:?} not in:\n{block}");
    }

    // Started again from the same cache: every layer is hashed again and
    // its checked bytes reused, and the grants are shown again.
    let (status, log) = up_from(&reference, cache.path(), Some("is ready on"));
    assert!(status.is_none() && log.contains("is ready on"), "{log}");
    assert_eq!(log.matches("(cached)").count(), 4, "{log}");
    assert!(log.contains("asks for these grants"), "{log}");
}

/// What a one-shot HTTP server saw: how many body bytes it got out, and
/// whether the client closed the connection before it sent them all.
struct Served {
    sent: usize,
    cut_off: bool,
}

/// Serves one request on a free port: a 200 announcing `length` bytes, then
/// `send` bytes of body, then (if it got that far) `stall` of silence.
fn serve_once(length: usize, send: usize, stall: Duration) -> (String, mpsc::Receiver<Served>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/big.wasm", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let header = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {length}\r\n\r\n"
        );
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0;
        let mut cut_off = stream.write_all(header.as_bytes()).is_err();
        while !cut_off && sent < send {
            let n = chunk.len().min(send - sent);
            match stream.write_all(&chunk[..n]) {
                Ok(()) => sent += n,
                Err(_) => cut_off = true,
            }
        }
        if !cut_off {
            std::thread::sleep(stall);
        }
        let _ = tx.send(Served { sent, cut_off });
    });
    (url, rx)
}

/// Runs `up` on the test subscriber with its source at `url`, with `env`.
fn up_with_url_source(url: &str, env: &[(&str, &str)]) -> (Option<ExitStatus>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    // The digest of nothing the server sends: the old build read it all
    // first, and only then found it wrong.
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"big\"\n[[trigger.pubsub]]\ncomponent = \"test-subscriber\"\npubsubname = \"pubsub\"\ntopic = \"t\"\n[component.test-subscriber]\nsource = {{ url = \"{url}\", digest = \"sha256:{}\" }}\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let started = Instant::now();
    let (status, log) = run_until_exit(
        &[
            "up",
            "--manifest",
            manifest.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        env,
        &[],
        Duration::from_secs(40),
    );
    (status, log, started.elapsed())
}

#[test]
fn a_download_past_the_size_cap_is_refused_without_being_read() {
    // 64 MiB announced and sent, against a 1 MiB cap: more than the
    // kernel's socket buffers hold, so the server sees the connection
    // closed unless the client reads it all.
    let (url, served) = serve_once(64 << 20, 64 << 20, Duration::ZERO);
    let (status, log, _) = up_with_url_source(&url, &[("HOST_BRIDGE_MAX_COMPONENT_SIZE", "1Mi")]);
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains(&format!(
            "[component.test-subscriber] source: {url} is larger than --max-component-size (1048576 bytes): its server announced 67108864 bytes"
        )),
        "{log}"
    );
    let served = served.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        served.cut_off && served.sent < 64 << 20,
        "the client read all {} bytes",
        served.sent
    );
    eprintln!(
        "the server got {} KiB out before the connection was closed",
        served.sent / 1024
    );
}

#[test]
fn a_download_that_stalls_times_out() {
    // 10 MiB announced, 64 KiB sent, then silence for a minute.
    let (url, _served) = serve_once(10 << 20, 64 << 10, Duration::from_secs(60));
    let (status, log, took) = up_with_url_source(&url, &[("HOST_BRIDGE_DOWNLOAD_TIMEOUT", "2s")]);
    assert!(
        status.is_some_and(|s| !s.success()),
        "still waiting after {took:?}:\n{log}"
    );
    // With a timeout under 30 s, the idle timeout is the same 2 s, and
    // whichever fires first names itself.
    let here = format!("[component.test-subscriber] source: {url} ");
    assert!(
        log.contains(&format!("{here}stalled: nothing arrived for 2s"))
            || log.contains(&format!(
                "{here}did not finish within 2s (--download-timeout)"
            )),
        "{log}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
