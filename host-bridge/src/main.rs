//! The `host-bridge` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use host_bridge::app::{self, BrokerChoice, EmbeddedData, UpOptions};
use host_bridge::engine::EngineOptions;
use host_bridge::manifest::Manifest;
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
        /// Which broker carries the messages.
        #[arg(long, value_enum, default_value_t = BrokerChoice::Auto)]
        broker: BrokerChoice,
        /// Seconds the first call to the Dapr sidecar waits for it to become ready.
        #[arg(long, default_value_t = 30, env = "HOST_BRIDGE_DAPR_READY_TIMEOUT")]
        dapr_ready_timeout: u64,
        /// Run the components' build commands before starting.
        #[arg(long)]
        build: bool,
        /// Where compiled machine code (`compiled/`) and apps pulled with --from (`oci/`) are cached [default: $XDG_CACHE_HOME/host-bridge or ~/.cache/host-bridge].
        #[arg(long, env = "HOST_BRIDGE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile every start from scratch, without the cache.
        #[arg(long, conflicts_with = "cache_dir")]
        no_cache: bool,
        /// The most guest instances alive at once.
        #[arg(long, default_value_t = 1000)]
        max_instances: u32,
        /// Seconds deliveries in flight get to finish on shutdown.
        #[arg(long, default_value_t = 10)]
        shutdown_grace: u64,
        /// The largest request or delivery body accepted, in bytes or with a
        /// unit (`4Mi`, `512Ki`, `10M`), as daprd's own --max-body-size.
        #[arg(long, default_value = "4Mi", value_parser = parse_size, env = "HOST_BRIDGE_MAX_BODY_SIZE")]
        max_body_size: usize,
        /// Where the embedded broker keeps messages and state, so they survive
        /// a restart [default: $XDG_DATA_HOME/host-bridge/APP or ~/.local/share/host-bridge/APP].
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
        /// Serve the admin API (live deploys) on this address; it needs the
        /// token in HOST_BRIDGE_ADMIN_TOKEN. Off unless given.
        #[arg(long, env = "HOST_BRIDGE_ADMIN_LISTEN", num_args = 0..=1, default_missing_value = "127.0.0.1:3001")]
        admin: Option<SocketAddr>,
        /// Rebuild a component and swap it in, without a restart, when a
        /// file its [component.NAME.build] `watch` patterns match changes.
        #[arg(long, conflicts_with = "from")]
        watch: bool,
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
        /// The host's admin API.
        #[arg(
            long,
            default_value = "http://127.0.0.1:3001",
            env = "HOST_BRIDGE_ADMIN_URL"
        )]
        host: String,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
            let mut manifest = Manifest::load(&manifest)?;
            if build {
                host_bridge::build::run(&manifest, &[])?;
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(host_bridge::registry::fetch_sources(
                &mut manifest,
                &default_cache_dir().join("downloads"),
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
        } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let bytes = match (source, from) {
                (Some(path), _) => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, Some(reference)) => runtime.block_on(
                    host_bridge::registry::pull_component(&reference, insecure, &component),
                )?,
                (None, None) => anyhow::bail!("give --source FILE or --from REF"),
            };
            let token = std::env::var("HOST_BRIDGE_ADMIN_TOKEN").unwrap_or_default();
            let answer = runtime.block_on(deploy(&host, &component, &token, bytes))?;
            println!("{answer}");
            Ok(())
        }
        Command::Up {
            manifest,
            from,
            insecure,
            admin,
            watch,
            listen,
            build,
            cache_dir,
            no_cache,
            max_instances,
            shutdown_grace,
            broker,
            dapr_ready_timeout,
            max_body_size,
            data_dir,
            in_memory,
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
            // --no-cache, which is about compiled code (`compiled/`).
            let cache_root = cache_dir.unwrap_or_else(default_cache_dir);
            let manifest = match from {
                Some(reference) => runtime.block_on(host_bridge::registry::pull(
                    &reference,
                    insecure,
                    &cache_root.join("oci"),
                ))?,
                None => manifest,
            };
            // wasmtime's cache worker prunes files it does not know from the
            // directory it is given, so compiled code has a directory of its
            // own, beside the pulled apps.
            let cache_dir = (!no_cache).then(|| cache_root.join("compiled"));
            let download_dir = cache_root.join("downloads");
            let options = UpOptions {
                manifest,
                listen,
                build,
                engine: EngineOptions {
                    cache_dir,
                    max_instances,
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
                admin: admin.map(|listen| {
                    let token = std::env::var("HOST_BRIDGE_ADMIN_TOKEN").unwrap_or_default();
                    (listen, token)
                }),
                watch,
            };
            runtime.block_on(app::up(options, shutdown_signal()))
        }
    }
}

/// PUTs `bytes` to the admin API at `host` as the new version of
/// `component`; returns the host's answer, or its refusal as an error.
async fn deploy(
    host: &str,
    component: &str,
    token: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/admin/components/{component}",
        host.trim_end_matches('/')
    );
    let client = reqwest::Client::new();
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
    if !check.status().is_success() {
        let status = check.status();
        anyhow::bail!(
            "the host refused the deploy ({status}): {}",
            check.text().await.unwrap_or_default()
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

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("host-bridge")
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
