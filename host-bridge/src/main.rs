//! The `host-bridge` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use host_bridge::app::{self, BrokerChoice, EmbeddedData, UpOptions};
use host_bridge::deploy::{AdminOptions, tls::TlsFiles};
use host_bridge::engine::cache_dir;
use host_bridge::engine::{EngineOptions, GuestOutput};
use host_bridge::manifest::Manifest;
use host_bridge::registry::DownloadLimits;
use host_bridge::server;
use host_bridge::telemetry::{LogFormat, Telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Run Dapr publish/subscribe applications as sandboxed WebAssembly components.
///
/// An app is described by a spin.toml (Spin manifest v2 plus [[trigger.pubsub]]).
/// HTTP components serve its routes; subscriber components handle its events,
/// each delivery in a fresh sandboxed instance.
#[derive(Parser)]
#[command(name = "host-bridge", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text`, or `json` (one object per line,
    /// with daprd's keys and the trace and span ids). Spans are exported
    /// over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HOST_BRIDGE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Compile the app's components and serve it.
    ///
    /// Without Dapr, messages go through the embedded broker, which keeps
    /// them and the state store on disk (--data-dir), or in memory (--in-memory).
    Up {
        /// The app manifest.
        #[arg(
            long,
            short = 'f',
            default_value = "spin.toml",
            env = "HOST_BRIDGE_MANIFEST"
        )]
        manifest: PathBuf,
        /// The address to serve on; under Dapr, the app port [default: 127.0.0.1:$APP_PORT, else 127.0.0.1:3000].
        #[arg(long, env = "HOST_BRIDGE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Where the embedded broker serves daprd's HTTP API (publish, bulk
        /// publish, state), as daprd does on its own port; not the app's
        /// port, which serves only the app. Requires DAPR_API_TOKEN when
        /// that is set. Unused under Dapr.
        #[arg(
            long,
            default_value = "127.0.0.1:3500",
            env = "HOST_BRIDGE_SIDECAR_LISTEN"
        )]
        sidecar_listen: SocketAddr,
        /// The most connections each listener keeps open; past it, new ones
        /// wait to be accepted.
        #[arg(long, default_value_t = server::Limits::default().max_connections, env = "HOST_BRIDGE_MAX_CONNECTIONS")]
        max_connections: usize,
        /// How long a request's headers may take to arrive, and how long an
        /// idle keep-alive connection stays open (`30s`, `500ms`).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "HOST_BRIDGE_HEADER_READ_TIMEOUT")]
        header_read_timeout: Duration,
        /// Which broker carries the messages.
        #[arg(long, value_enum, default_value_t = BrokerChoice::Auto)]
        broker: BrokerChoice,
        /// Seconds the first call to the Dapr sidecar waits for it to become ready.
        #[arg(long, default_value_t = 30, env = "HOST_BRIDGE_DAPR_READY_TIMEOUT")]
        dapr_ready_timeout: u64,
        /// Run the components' build commands before starting.
        #[arg(long)]
        build: bool,
        /// Where compiled machine code (`code/`) and apps pulled with --from (`oci/`) are cached [default: $XDG_CACHE_HOME/host-bridge or ~/.cache/host-bridge, never /tmp]. It must be yours, and not writable by group or others; host-bridge creates it 0700.
        #[arg(long, env = "HOST_BRIDGE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile every start from scratch, without the cache.
        #[arg(long, conflicts_with = "cache_dir")]
        no_cache: bool,
        /// The most guest instances alive at once.
        #[arg(long, default_value_t = 1000)]
        max_instances: u32,
        /// Where guests' stdout and stderr go: `host` writes each line to
        /// host-bridge's stderr as `[component] line`, escaped and capped;
        /// `off` discards it (counted in /metrics).
        #[arg(long, value_enum, default_value_t = GuestOutput::Host, env = "HOST_BRIDGE_GUEST_OUTPUT")]
        guest_output: GuestOutput,
        /// Seconds deliveries in flight get to finish on shutdown.
        #[arg(long, default_value_t = 10)]
        shutdown_grace: u64,
        /// The largest request or delivery body accepted, in bytes or with a
        /// unit (`4Mi`, `512Ki`, `10M`), as daprd's own --max-body-size.
        #[arg(long, default_value = "4Mi", value_parser = parse_size, env = "HOST_BRIDGE_MAX_BODY_SIZE")]
        max_body_size: usize,
        /// Where the embedded broker keeps messages and state, and where
        /// versions deployed through the admin API are kept (`deployed/`,
        /// under Dapr too), so they survive a restart [default: $XDG_DATA_HOME/host-bridge/APP or ~/.local/share/host-bridge/APP].
        #[arg(long, env = "HOST_BRIDGE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Keep the embedded broker's messages and state in memory only: they
        /// are gone when the process exits.
        #[arg(long, conflicts_with = "data_dir")]
        in_memory: bool,
        /// Run the app pushed to this OCI reference (`registry/app:tag` or
        /// `@sha256:…`) instead of a manifest on disk; it is pulled into
        /// the cache directory, every layer checked by its sha256.
        #[arg(long, conflicts_with = "build", env = "HOST_BRIDGE_FROM")]
        from: Option<String>,
        /// Talk to the registry of --from over plain HTTP (a local registry).
        #[arg(long, requires = "from")]
        insecure: bool,
        /// Serve the admin API (live deploys) on this address, 127.0.0.1:3001
        /// when none is given; it needs a token of at least 32 bytes in
        /// HOST_BRIDGE_ADMIN_TOKEN, and TLS on any address but loopback.
        /// Off unless given.
        #[arg(long, env = "HOST_BRIDGE_ADMIN_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:3001")]
        admin: Option<SocketAddr>,
        /// The admin API's TLS certificate chain (PEM). With
        /// --admin-tls-key, the admin API speaks HTTPS; it must on any
        /// address but loopback.
        #[arg(long, requires_all = ["admin", "admin_tls_key"], env = "HOST_BRIDGE_ADMIN_TLS_CERT")]
        admin_tls_cert: Option<PathBuf>,
        /// The private key of --admin-tls-cert (PEM).
        #[arg(long, requires_all = ["admin", "admin_tls_cert"], env = "HOST_BRIDGE_ADMIN_TLS_KEY")]
        admin_tls_key: Option<PathBuf>,
        /// Rebuild a component and swap it in, without a restart, when a
        /// file its [component.NAME.build] `watch` patterns match changes.
        #[arg(long, conflicts_with = "from")]
        watch: bool,
        #[command(flatten)]
        downloads: DownloadArgs,
    },
    /// Deploy a new version of one component into a running host (its
    /// admin API), with no restart. The token is HOST_BRIDGE_ADMIN_TOKEN.
    Deploy {
        /// The component to replace.
        #[arg(long)]
        component: String,
        /// The new version's .wasm.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        source: Option<PathBuf>,
        /// Take the new version from an app pushed to this OCI reference
        /// (its layer for the component).
        #[arg(long)]
        from: Option<String>,
        /// Talk to the registry of --from over plain HTTP.
        #[arg(long, requires = "from")]
        insecure: bool,
        #[command(flatten)]
        downloads: DownloadArgs,
        /// The host's admin API: `https://…` when it serves TLS.
        #[arg(
            long,
            default_value = "http://127.0.0.1:3001",
            env = "HOST_BRIDGE_ADMIN_URL"
        )]
        host: String,
        /// Trust only the certificates in this PEM file for an `https`
        /// admin API (its own self-signed certificate, or the CA that
        /// signed it); without it, the system's roots.
        #[arg(long, env = "HOST_BRIDGE_ADMIN_CA")]
        admin_ca: Option<PathBuf>,
    },
    /// Push the app to an OCI registry, as one artifact: a layer per
    /// component and one for the manifest. Prints the pushed digest.
    Push {
        /// Where to push: `registry/repository:tag`.
        reference: String,
        /// The app manifest.
        #[arg(
            long,
            short = 'f',
            default_value = "spin.toml",
            env = "HOST_BRIDGE_MANIFEST"
        )]
        manifest: PathBuf,
        /// Run the components' build commands first.
        #[arg(long)]
        build: bool,
        /// Talk to the registry over plain HTTP (a local registry).
        #[arg(long)]
        insecure: bool,
    },
    /// Name each setting in a Dapr resources folder (as `dapr run
    /// --resources-path DIR` loads it) that can lose a message or deliver
    /// it to the wrong place, and the value to write instead. Exit code 1
    /// when there is any, 2 when the folder cannot be read.
    Check(host_bridge::check::Args),
    /// Run each component's [component.NAME.build] command, like `spin build`.
    Build {
        /// The app manifest.
        #[arg(
            long,
            short = 'f',
            default_value = "spin.toml",
            env = "HOST_BRIDGE_MANIFEST"
        )]
        manifest: PathBuf,
        /// Build only these components.
        components: Vec<String>,
    },
}

fn main() -> ExitCode {
    // wasmtime makes an error value for every store it drops with the
    // component-model async machinery on, and with RUST_BACKTRACE=1 each of
    // those captures a backtrace: a fifth of a delivery's cost. Panics keep
    // their backtraces (RUST_BACKTRACE); errors get none unless asked for
    // with RUST_LIB_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet to read the environment.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    let telemetry = match Telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.log_format == LogFormat::Json;
    let result = run(cli);
    // Sends the spans still buffered, after the runtime is gone.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            tracing::error!(target: "host_bridge", "{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check(args) => std::process::exit(host_bridge::check::run(&args).code()),
        Command::Build {
            manifest,
            components,
        } => {
            let manifest = Manifest::load(&manifest)?;
            host_bridge::build::run(&manifest, &components)
        }
        Command::Push {
            reference,
            manifest,
            build,
            insecure,
        } => {
            // Downloads of `{ url, digest }` sources to push go into the
            // cache, and obey the default limits.
            let downloads = cache_dir::default_dir()
                .ok()
                .map(|dir| dir.join("downloads"));
            let mut manifest = Manifest::load(&manifest)?;
            if build {
                host_bridge::build::run(&manifest, &[])?;
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(host_bridge::registry::fetch_sources(
                &mut manifest,
                downloads.as_deref(),
                DownloadLimits::default(),
            ))?;
            let digest =
                runtime.block_on(host_bridge::registry::push(&manifest, &reference, insecure))?;
            eprintln!("host-bridge: pushed {reference}");
            println!("{digest}");
            Ok(())
        }
        Command::Deploy {
            component,
            source,
            from,
            insecure,
            host,
            downloads,
            admin_ca,
        } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let bytes = match (source, from) {
                (Some(path), _) => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, Some(reference)) => {
                    runtime.block_on(host_bridge::registry::pull_component(
                        &reference,
                        insecure,
                        &component,
                        downloads.limits(),
                    ))?
                }
                (None, None) => anyhow::bail!("give --source FILE or --from REF"),
            };
            let token = std::env::var("HOST_BRIDGE_ADMIN_TOKEN").unwrap_or_default();
            let client = admin_client(admin_ca.as_deref())?;
            let answer = runtime.block_on(deploy(&client, &host, &component, &token, bytes))?;
            println!("{answer}");
            Ok(())
        }
        Command::Up {
            manifest,
            from,
            insecure,
            admin,
            admin_tls_cert,
            admin_tls_key,
            watch,
            listen,
            sidecar_listen,
            max_connections,
            header_read_timeout,
            build,
            cache_dir,
            no_cache,
            max_instances,
            guest_output,
            shutdown_grace,
            broker,
            dapr_ready_timeout,
            max_body_size,
            data_dir,
            in_memory,
            downloads,
        } => {
            let listen = match (listen, std::env::var("APP_PORT")) {
                (Some(listen), _) => listen,
                (None, Ok(port)) => format!("127.0.0.1:{port}")
                    .parse()
                    .with_context(|| format!("APP_PORT={port} is not a port number"))?,
                (None, Err(_)) => SocketAddr::from(([127, 0, 0, 1], 3000)),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            // A pulled app lives in the cache directory (`oci/`), even with
            // --no-cache, which is about compiled code (`code/`). The
            // directory must be the user's own (`engine::cache_dir`), and
            // without a home there is none unless given: never /tmp.
            let cache_root = match (cache_dir, no_cache) {
                (Some(dir), _) => Some(dir),
                (None, false) => Some(cache_dir::default_dir()?),
                (None, true) => cache_dir::default_dir().ok(),
            };
            if let Some(root) = &cache_root
                && (!no_cache || from.is_some())
            {
                cache_dir::create_private(root)?;
            }
            let limits = downloads.limits();
            let pulled = match from {
                Some(reference) => {
                    let Some(root) = &cache_root else {
                        anyhow::bail!(
                            "--from pulls the app into the cache directory, and there is none: set XDG_CACHE_HOME or HOME, or pass --cache-dir DIR instead of --no-cache"
                        );
                    };
                    Some(runtime.block_on(host_bridge::registry::pull(
                        &reference,
                        insecure,
                        &root.join("oci"),
                        limits,
                    ))?)
                }
                None => None,
            };
            // Compiled code has a directory of its own (`engine::compiled`),
            // beside the pulled apps. Not `compiled/`: earlier versions gave
            // that to wasmtime's own cache, whose cache worker removes files
            // it does not know.
            let cache_dir = cache_root
                .as_ref()
                .filter(|_| !no_cache)
                .map(|root| root.join("code"));
            let download_dir = cache_root.as_ref().map(|root| root.join("downloads"));
            let options = UpOptions {
                manifest,
                listen,
                sidecar_listen,
                limits: server::Limits {
                    max_connections,
                    header_read_timeout,
                    ..server::Limits::default()
                },
                build,
                engine: EngineOptions {
                    cache_dir,
                    max_instances,
                    guest_output,
                },
                shutdown_grace: Duration::from_secs(shutdown_grace),
                broker,
                dapr_ready_timeout: Duration::from_secs(dapr_ready_timeout),
                max_body: max_body_size,
                embedded_data: match (in_memory, data_dir) {
                    (true, _) => EmbeddedData::InMemory,
                    (false, Some(dir)) => EmbeddedData::Dir(dir),
                    (false, None) => EmbeddedData::DefaultDir,
                },
                download_dir,
                downloads: limits,
                pulled,
                admin: admin.map(|listen| AdminOptions {
                    listen,
                    token: std::env::var("HOST_BRIDGE_ADMIN_TOKEN").unwrap_or_default(),
                    tls: admin_tls_cert
                        .zip(admin_tls_key)
                        .map(|(cert, key)| TlsFiles { cert, key }),
                    max_component_size: downloads.max_component_size,
                }),
                watch,
            };
            runtime.block_on(app::up(options, shutdown_signal()))
        }
    }
}

/// The client of `deploy`: rustls with ring, as for registries, trusting
/// only the certificates in `ca` when it is given.
fn admin_client(ca: Option<&std::path::Path>) -> anyhow::Result<reqwest013::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest013::Client::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("--admin-ca {}", ca.display()))?;
        let certs = reqwest013::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--admin-ca {}: not a PEM certificate", ca.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "--admin-ca {}: it holds no `BEGIN CERTIFICATE` section",
            ca.display()
        );
        builder = builder.tls_certs_only(certs);
    }
    builder.build().context("cannot make an HTTP client")
}

/// PUTs `bytes` to the admin API at `host` as the new version of
/// `component`; returns the host's answer, or its refusal as an error.
async fn deploy(
    client: &reqwest013::Client,
    host: &str,
    component: &str,
    token: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/admin/components/{component}",
        host.trim_end_matches('/')
    );
    // Asked first, without the body: a wrong token or component is then
    // refused before anything is uploaded (a host refusing an upload
    // halfway closes the connection, and the reason would be lost).
    let check = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the admin API at {url} (is the host running with --admin?)")
        })?;
    let status = check.status();
    let text = check.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("the host refused the deploy ({status}): {text}");
    }
    // The host says how large an upload it takes: a larger one is refused
    // here, before a byte is sent.
    let max = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("maxComponentSize")?.as_u64());
    if let Some(max) = max
        && bytes.len() as u64 > max
    {
        anyhow::bail!(
            "the new version of `{component}` is {} bytes, and the host takes at most {max} (its --max-component-size); nothing was sent",
            bytes.len()
        );
    }
    let response = client
        .put(&url)
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the admin API at {url} (is the host running with --admin?)")
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(text)
    } else {
        anyhow::bail!("the host refused the deploy ({status}): {text}")
    }
}

/// `4Mi`, `512Ki`, `10M`, `1G`, or a plain number of bytes.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" => 1_000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use bytes, K, Ki, M, Mi, G or Gi"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size greater than zero"))
}

/// The bounds of every download (`--from`, `{ url, digest }` sources),
/// shared by `up` and `deploy`; see `registry::transfer`.
#[derive(clap::Args)]
struct DownloadArgs {
    /// The largest component downloaded, pulled or uploaded to the admin
    /// API, in bytes or with a unit (`256Mi`, `1Gi`): one announced or
    /// found larger is refused.
    #[arg(long, default_value = "256Mi", value_parser = parse_size, env = "HOST_BRIDGE_MAX_COMPONENT_SIZE")]
    max_component_size: usize,
    /// The longest one download may take (`5m`, `90s`); a server that sends
    /// nothing for 30 s is given up on sooner.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "HOST_BRIDGE_DOWNLOAD_TIMEOUT")]
    download_timeout: Duration,
}

impl DownloadArgs {
    fn limits(&self) -> DownloadLimits {
        DownloadLimits {
            max_size: self.max_component_size as u64,
            timeout: self.download_timeout,
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_as_daprd_writes_them() {
        assert_eq!(parse_size("4Mi"), Ok(4 << 20));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("99999999999999999999Gi").is_err());
    }
}
