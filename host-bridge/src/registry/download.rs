//! Component sources given as Spin's `{ url = "…", digest = "sha256:…" }`:
//! downloaded once into the cache, by digest, and checked.
//!
//! A download is kept only if its sha256 is the manifest's digest, and is
//! written under a temporary name and renamed, so a file in the cache is
//! always whole and always the bytes the manifest asked for; a cached file
//! is checked again before it is used.

use super::digest;
use crate::manifest::Manifest;
use anyhow::{Context as _, bail};
use std::path::Path;

/// Downloads every `{ url, digest }` source of `manifest` into `dir` (or
/// finds it there) and points the component's `source` at it.
pub async fn fetch_sources(manifest: &mut Manifest, dir: &Path) -> anyhow::Result<()> {
    let mut client = None;
    for (id, component) in &mut manifest.components {
        let Some(download) = &component.download else {
            continue;
        };
        let hex = download.digest.trim_start_matches("sha256:");
        let path = dir.join(format!("sha256-{hex}.wasm"));
        let cached = std::fs::read(&path).is_ok_and(|bytes| digest(&bytes) == download.digest);
        if !cached {
            eprintln!(
                "host-bridge: component `{id}`: downloading {}",
                download.url
            );
            // TLS is rustls with the process-wide ring provider, as for
            // registries.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = match &client {
                Some(client) => client,
                None => client.insert(
                    reqwest013::Client::builder()
                        .build()
                        .context("cannot make an HTTP client")?,
                ),
            };
            let response = client
                .get(&download.url)
                .send()
                .await
                .and_then(reqwest013::Response::error_for_status)
                .with_context(|| {
                    format!("[component.{id}] source: cannot download {}", download.url)
                })?;
            let bytes = response.bytes().await.with_context(|| {
                format!("[component.{id}] source: cannot download {}", download.url)
            })?;
            let actual = digest(&bytes);
            if actual != download.digest {
                bail!(
                    "[component.{id}] source: {} has digest {actual}, not the manifest's {}; it was not used",
                    download.url,
                    download.digest
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let partial = path.with_extension("partial");
            std::fs::write(&partial, &bytes)
                .and_then(|()| std::fs::rename(&partial, &path))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        component.source = path;
    }
    Ok(())
}
