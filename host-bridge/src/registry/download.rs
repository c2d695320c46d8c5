//! Component sources given as Spin's `{ url = "…", digest = "sha256:…" }`:
//! downloaded once into the cache, by digest, and checked.
//!
//! A download goes through [`transfer::receive`]: bounded in size and time,
//! hashed as it arrives, and kept only if its sha256 is the manifest's
//! digest. A cached file is hashed again before it is used. Either way the
//! bytes that were checked are the bytes returned for the engine to load,
//! so the file is never checked and then opened again.

use super::transfer::{self, DownloadLimits};
use crate::manifest::Manifest;
use anyhow::{Context as _, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// Downloads every `{ url, digest }` source of `manifest` into `dir` (or
/// finds it there), points the component's `source` at it, and returns the
/// checked bytes of each, by component. Without a `dir` (no cache
/// directory), such a source is refused.
pub async fn fetch_sources(
    manifest: &mut Manifest,
    dir: Option<&Path>,
    limits: DownloadLimits,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut client = None;
    let mut verified = BTreeMap::new();
    for (id, component) in &mut manifest.components {
        let Some(download) = &component.download else {
            continue;
        };
        let Some(dir) = dir else {
            bail!(
                "[component.{id}] source: a {{ url }} source is downloaded into the cache directory, and there is none: \
                 pass --cache-dir DIR, or set XDG_CACHE_HOME or HOME"
            );
        };
        let hex = download.digest.trim_start_matches("sha256:");
        let path = dir.join(format!("sha256-{hex}.wasm"));
        let bytes = match transfer::read_checked(&path, &download.digest, limits.max_size) {
            Some(bytes) => bytes,
            None => {
                crate::say!("component `{id}`: downloading {}", download.url);
                // TLS is rustls with the process-wide ring provider, as for
                // registries.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = match &client {
                    Some(client) => client,
                    None => client.insert(
                        reqwest013::Client::builder()
                            .connect_timeout(transfer::IDLE_TIMEOUT)
                            .build()
                            .context("cannot make an HTTP client")?,
                    ),
                };
                let context =
                    || format!("[component.{id}] source: cannot download {}", download.url);
                let response =
                    tokio::time::timeout(limits.timeout, client.get(&download.url).send())
                        .await
                        .map_err(|_| transfer::DownloadError::TimedOut {
                            what: download.url.clone(),
                            timeout: limits.timeout,
                        })
                        .with_context(context)?
                        .and_then(reqwest013::Response::error_for_status)
                        .with_context(context)?;
                crate::engine::cache_dir::create_private(dir)?;
                let announced = response.content_length();
                transfer::receive(
                    &download.url,
                    announced,
                    transfer::body_stream(response),
                    &download.digest,
                    Some(&path),
                    limits,
                )
                .await
                .map_err(|e| match e {
                    transfer::DownloadError::Digest { actual, .. } => anyhow::anyhow!(
                        "[component.{id}] source: {} has digest {actual}, not the manifest's {}; it was not used",
                        download.url,
                        download.digest
                    ),
                    other => anyhow::Error::new(other).context(format!("[component.{id}] source")),
                })?
            }
        };
        component.source = path;
        verified.insert(id.clone(), bytes);
    }
    Ok(verified)
}
