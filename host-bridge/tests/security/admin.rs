//! The admin API: whoever reaches it can replace the app's code, so it is
//! loopback unless it speaks TLS, its token cannot be guessed, its uploads
//! are capped by `--max-component-size`, and what it deploys is kept across
//! a restart instead of silently rolling back to the manifest's code.
//!
//! Version 1 of the subscriber `live` is the test subscriber, which records
//! each event as `received-{id}`; version 2 is the dead-letter recorder,
//! which records it as `deadletter-{id}`. So the state store tells which
//! version handled a message.

use crate::common::{self, Host, Process, free_port, guests, host_bridge_bin};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// 32 bytes at the least, or `up` refuses it.
const TOKEN: &str = "security-tests-admin-token-0123456789";
const SLOW: Duration = Duration::from_secs(60);

/// The subscriber `live` on topic `record-live`, from `live.wasm` in the
/// host's directory.
const MANIFEST: &str = r#"spin_manifest_version = 2
[application]
name = "live"
[[trigger.pubsub]]
component = "live"
pubsubname = "pubsub"
topic = "record-live"
[component.live]
source = "live.wasm"
"#;

/// A directory with `live.wasm`, version 1.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        guests().join("test_subscriber.wasm"),
        dir.path().join("live.wasm"),
    )
    .unwrap();
    dir
}

/// A host on [`MANIFEST`] with the admin token set, started with `args`.
fn start(args: &[&str]) -> Host {
    Host::start_with_args(
        app_dir(),
        MANIFEST,
        free_port(),
        &[("HOST_BRIDGE_ADMIN_TOKEN", TOKEN.to_owned())],
        None,
        args,
    )
}

/// `host-bridge deploy` of `source` as component `live` to `admin` (a
/// URL), with `extra` arguments.
fn deploy(admin: &str, source: &Path, extra: &[&str]) -> Output {
    Command::new(host_bridge_bin())
        .args(["deploy", "--component", "live", "--source"])
        .arg(source)
        .args(["--host", admin])
        .args(extra)
        .env("HOST_BRIDGE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

/// `sha256:…` of the file at `path`, as host-bridge writes digests.
fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap();
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Which version handled message `id`, waiting for one to.
fn handled_by(host: &mut Host, id: &str) -> u8 {
    let deadline = Instant::now() + SLOW;
    loop {
        if host.state(&format!("received-{id}")).is_some() {
            return 1;
        }
        if host.state(&format!("deadletter-{id}")).is_some() {
            return 2;
        }
        assert!(
            Instant::now() < deadline,
            "message {id} was never handled; host log:\n{}",
            host.drain_log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `up --admin …` with `token`, expecting it to refuse to start; returns
/// what it printed. Fails if the host gets as far as being ready.
fn refused_at_startup(args: &[&str], token: &str) -> String {
    let dir = app_dir();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let mut command = Command::new(host_bridge_bin());
    command
        .arg("up")
        .arg("--manifest")
        .arg(&manifest)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--in-memory")
        .arg("--cache-dir")
        .arg(common::workspace().join("target/host-bridge-test-cache"))
        .args(args)
        .env_remove("DAPR_HTTP_PORT")
        .env("HOST_BRIDGE_ADMIN_TOKEN", token);
    let mut process = Process::spawn(
        command,
        "host-bridge up (expected to refuse)".to_owned(),
        &dir.path().join("host-bridge.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = process.drain_log();
        if log.contains("is ready on") {
            process.kill();
            panic!("up started with {args:?}; it should have refused:\n{log}");
        }
        if !process.is_running() {
            std::thread::sleep(Duration::from_millis(200));
            return process.drain_log();
        }
        assert!(
            Instant::now() < deadline,
            "up neither started nor refused:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_non_loopback_admin_address_without_tls_is_refused_by_name() {
    let listen = format!("0.0.0.0:{}", free_port());
    let log = refused_at_startup(&["--admin", &listen], TOKEN);
    assert!(
        log.contains(&format!("--admin {listen} is not a loopback address"))
            && log.contains("--admin-tls-cert")
            && log.contains("--admin-tls-key"),
        "{log}"
    );
}

#[test]
fn a_short_admin_token_is_refused() {
    let listen = format!("127.0.0.1:{}", free_port());
    let log = refused_at_startup(&["--admin", &listen], "0123456789");
    assert!(
        log.contains("HOST_BRIDGE_ADMIN_TOKEN is 10 bytes long")
            && log.contains("at least 32")
            && log.contains("openssl rand -hex 32"),
        "{log}"
    );
    // And no token at all.
    let log = refused_at_startup(&["--admin", &listen], "");
    assert!(
        log.contains("needs a token: set HOST_BRIDGE_ADMIN_TOKEN"),
        "{log}"
    );
}

/// A CA and a server certificate it signed, for `127.0.0.1` and
/// `localhost`, made with the `openssl` command line: (ca.pem, cert.pem,
/// key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the TLS test needs the `openssl` command (apt-get install openssl)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            text(&output)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=host-bridge test CA",
            ][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new", "-nodes", "-subj", "/CN=localhost"][..],
            &ec,
            &["-keyout", "key.pem", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[test]
fn the_admin_api_speaks_tls_off_loopback_and_nothing_else() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path());
    let port = free_port();
    let mut host = start(&[
        "--admin",
        &format!("0.0.0.0:{port}"),
        "--admin-tls-cert",
        cert.to_str().unwrap(),
        "--admin-tls-key",
        key.to_str().unwrap(),
    ]);
    host.wait_for_line(
        &format!("admin API on https://0.0.0.0:{port}/admin/components/NAME"),
        SLOW,
    );
    let https = format!("https://127.0.0.1:{port}");

    // Plain HTTP to the TLS port gets no HTTP answer, and so no deploy.
    let plain = common::client()
        .put(format!("http://127.0.0.1:{port}/admin/components/live"))
        .bearer_auth(TOKEN)
        .body(std::fs::read(guests().join("dead_letter.wasm")).unwrap())
        .send();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A client that does not trust the certificate refuses to send.
    let untrusted = deploy(&https, &guests().join("dead_letter.wasm"), &[]);
    assert!(!untrusted.status.success(), "{}", text(&untrusted));

    host.publish("record-live", "before", "text/plain", "v1");
    assert_eq!(handled_by(&mut host, "before"), 1);

    // Trusting the CA, the deploy goes through, over TLS.
    let deployed = deploy(
        &https,
        &guests().join("dead_letter.wasm"),
        &["--admin-ca", ca.to_str().unwrap()],
    );
    assert!(
        deployed.status.success() && text(&deployed).contains(r#""component":"live""#),
        "{}",
        text(&deployed)
    );
    host.publish("record-live", "after", "text/plain", "v2");
    assert_eq!(handled_by(&mut host, "after"), 2);
}

/// Sends a `PUT` of component `live` to `admin` declaring `length` bytes of
/// body, and none of them; returns what the host answered within 10 s.
fn put_declaring(admin: &str, length: u64) -> String {
    let mut socket = std::net::TcpStream::connect(admin).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "PUT /admin/components/live HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) => {
                assert!(
                    !answer.is_empty(),
                    "no answer to a PUT declaring {length} bytes within 10 s ({e}): the host is waiting for them"
                );
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn an_upload_over_the_default_cap_is_refused_before_it_is_read() {
    let admin = format!("127.0.0.1:{}", free_port());
    let _host = start(&["--admin", &admin]);
    // 300 MiB: over the default --max-component-size of 256 MiB.
    let answer = put_declaring(&admin, 300 << 20);
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("--max-component-size"),
        "{answer}"
    );
}

#[test]
fn an_upload_over_max_component_size_is_refused_and_the_old_version_stays() {
    let v2 = guests().join("dead_letter.wasm");
    let cap = std::fs::metadata(&v2).unwrap().len() + 1024;
    let admin = format!("127.0.0.1:{}", free_port());
    let mut host = start(&["--admin", &admin, "--max-component-size", &cap.to_string()]);

    // Declared over the cap: 413 before a byte of it is read.
    let answer = put_declaring(&admin, cap + 1);
    assert!(
        answer.starts_with("HTTP/1.1 413")
            && answer.contains(&format!("limit of {cap} bytes (--max-component-size)")),
        "{answer}"
    );
    // The deploy command learns the cap first, and sends nothing.
    let big = host.dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; cap as usize + 1]).unwrap();
    let refused = deploy(&format!("http://{admin}"), &big, &[]);
    assert!(
        !refused.status.success()
            && text(&refused).contains(&format!("the host takes at most {cap}")),
        "{}",
        text(&refused)
    );
    // Version 1 still serves.
    host.publish("record-live", "after-refusals", "text/plain", "v1");
    assert_eq!(handled_by(&mut host, "after-refusals"), 1);

    // Under the cap, a deploy goes through.
    let deployed = deploy(&format!("http://{admin}"), &v2, &[]);
    assert!(deployed.status.success(), "{}", text(&deployed));
    host.publish("record-live", "under-cap", "text/plain", "v2");
    assert_eq!(handled_by(&mut host, "under-cap"), 2);
}

/// A host with `--admin` on loopback, to which version 2 was deployed.
fn with_v2_deployed() -> Host {
    let admin = format!("127.0.0.1:{}", free_port());
    let host = start(&["--admin", &admin]);
    let deployed = deploy(
        &format!("http://{admin}"),
        &guests().join("dead_letter.wasm"),
        &[],
    );
    assert!(deployed.status.success(), "{}", text(&deployed));
    host
}

#[test]
fn a_deployed_version_survives_a_restart() {
    let mut host = with_v2_deployed();
    host.publish("record-live", "before-restart", "text/plain", "v2");
    assert_eq!(handled_by(&mut host, "before-restart"), 2);

    // Killed, as a crash would: the deploy was answered, so it was kept.
    // The restarted host runs without --admin; what was deployed runs all
    // the same.
    host.kill_and_restart();
    host.publish("record-live", "after-restart", "text/plain", "v2 again");
    assert_eq!(
        handled_by(&mut host, "after-restart"),
        2,
        "after the restart, the manifest's version ran: the deploy was lost"
    );
    // And the host said so, naming the component and the version.
    let line = host.wait_for_line("`live` runs the version deployed at", SLOW);
    let v2 = sha256(&guests().join("dead_letter.wasm"));
    assert!(line.contains(&v2), "{line}");
}

#[test]
fn a_kept_version_older_than_the_manifests_source_is_dropped_by_name() {
    let mut host = with_v2_deployed();

    // The manifest's source is rebuilt after the deploy: version 1 with a
    // custom section appended, so other bytes that act the same.
    let live = host.dir.path().join("live.wasm");
    let mut rebuilt = std::fs::read(&live).unwrap();
    rebuilt.extend_from_slice(&[0x00, 0x03, 0x01, b't', b'x']);
    std::fs::write(&live, rebuilt).unwrap();

    host.kill_and_restart();
    let line = host.wait_for_line("`live`: dropped a deployed version", SLOW);
    assert!(
        line.contains("changed since the deploy") && line.contains("the manifest's version runs"),
        "{line}"
    );
    host.publish("record-live", "rebuilt", "text/plain", "v1, rebuilt");
    assert_eq!(handled_by(&mut host, "rebuilt"), 1);
}
