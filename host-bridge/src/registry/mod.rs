//! Where an app's components come from, other than a path on disk: OCI
//! registries (`host-bridge push` and `host-bridge up --from`) and URLs
//! (`source = { url, digest }`, in [`fetch_sources`]).
//!
//! An app is one OCI image manifest in a registry:
//!
//! | part | media type | holds |
//! |---|---|---|
//! | config | [`CONFIG_MEDIA_TYPE`] | JSON: the app's name, version, and each component's digest |
//! | one layer per component | `application/wasm` | the component's `.wasm` (a component, or a `wasm32-wasip1` core module), titled `{component}.wasm` |
//! | one layer | [`MANIFEST_MEDIA_TYPE`] | the app's `spin.toml`, every `source` replaced by its layer's digest (`"sha256:…"`) and every `build` table removed |
//!
//! Each component layer is also what the CNCF Wasm OCI layout puts in an
//! artifact's single layer, so a registry browser shows `.wasm` blobs.
//!
//! A pulled app is untrusted input: whoever can push to the repository
//! wrote it. Pulling resolves a tag to a digest once (and says which),
//! reads the manifest layer first and parses it as a registry's
//! ([`crate::manifest::trust`]: no host mounts, no builds, no path out of
//! the app's folder), and only then fetches the components. Every layer is
//! received under `--max-component-size` and a timeout, hashed as it
//! arrives ([`transfer`]), and its checked bytes are what the engine loads.
//! The app is kept under `{cache}/oci/apps/sha256-…/`, each layer a file
//! named by its digest; nothing half-pulled is ever run, since an app moves
//! there only once every layer checked out.

mod download;
mod pull;
mod push;
pub mod transfer;

pub use download::fetch_sources;
pub use pull::{PulledApp, pull, pull_component};
pub use push::push;
pub use transfer::DownloadLimits;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

/// The config blob of an app artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.host-bridge.app.config.v1+json";
/// The layer holding the app's manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.host-bridge.manifest.v1+toml";
/// A component's layer.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// The OCI annotation naming a layer's file.
const TITLE: &str = "org.opencontainers.image.title";

/// A client for `reference`'s registry: plain HTTP with `insecure` (a
/// local registry, as `spin registry push --insecure`), else HTTPS.
fn client(insecure: bool) -> oci_client::Client {
    // oci-client's TLS is rustls without a bundled crypto provider; ring is
    // installed once, process-wide. (The pure-Rust provider,
    // rustls-rustcrypto, is an alpha.) An error means one is installed
    // already, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(ClientConfig {
        protocol: if insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // A registry that stops sending is given up on; the whole of each
        // call is bounded by `transfer::DownloadLimits::timeout`.
        read_timeout: Some(transfer::IDLE_TIMEOUT),
        connect_timeout: Some(transfer::IDLE_TIMEOUT),
        ..ClientConfig::default()
    })
}

/// Credentials from `HOST_BRIDGE_REGISTRY_USER` and
/// `HOST_BRIDGE_REGISTRY_PASSWORD`, else anonymous.
fn auth() -> RegistryAuth {
    match (
        std::env::var("HOST_BRIDGE_REGISTRY_USER"),
        std::env::var("HOST_BRIDGE_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    }
}

/// `sha256:{hex}` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Parses `reference`, naming it in the error.
fn parse_reference(reference: &str) -> anyhow::Result<oci_client::Reference> {
    reference.parse().map_err(|e| {
        anyhow::anyhow!(
            "{reference:?} is not an OCI reference like registry.example.com/app:tag: {e}"
        )
    })
}
