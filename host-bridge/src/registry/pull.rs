//! `host-bridge up --from REF` and `deploy --from REF`: pull an app, or one
//! of its components, as untrusted input (see the module docs of
//! [`super`]).
//!
//! What a pulled app may ask for is decided by the manifest's parser
//! ([`Manifest::parse_pulled`], [`crate::manifest::trust`]); this file
//! makes sure that parser is the one that reads it, and that it reads it
//! before any component is downloaded. Every blob goes through
//! [`transfer::receive`] (bounded, hashed as it arrives), and the bytes
//! returned in [`PulledApp::components`] are the ones that were checked.

use super::transfer::{self, DownloadLimits};
use super::{MANIFEST_MEDIA_TYPE, WASM_MEDIA_TYPE, auth, client, parse_reference};
use crate::manifest::Manifest;
use anyhow::{Context as _, bail};
use oci_client::manifest::OciDescriptor;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// An app pulled from a registry, ready to run.
#[derive(Clone)]
pub struct PulledApp {
    /// The reference it was pulled from, as given.
    pub reference: String,
    /// Its manifest, parsed as a registry's ([`Manifest::parse_pulled`]):
    /// every source is a checked blob in the app's folder.
    pub manifest: Manifest,
    /// Each component's bytes, by component: the bytes whose sha256 was
    /// checked, for the engine to load without reading the file again.
    pub components: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for PulledApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulledApp")
            .field("reference", &self.reference)
            .field("manifest", &self.manifest.path)
            .field(
                "components",
                &self
                    .components
                    .iter()
                    .map(|(id, bytes)| (id, bytes.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Pulls `reference` into `cache` (`apps/sha256-…/`, each layer a file
/// named by its digest, and the manifest `spin.toml` with its sources
/// pointing at them). An app is pulled into `partial/sha256-…/` and moved
/// into `apps/` only once every layer checked out, so nothing half-pulled
/// is ever run; a layer already there is hashed again and reused.
#[tracing::instrument(name = "pull", skip_all, fields(otel.name = %format_args!("pull {reference}"), oci.reference = %reference))]
pub async fn pull(
    reference: &str,
    insecure: bool,
    cache: &Path,
    limits: DownloadLimits,
) -> anyhow::Result<PulledApp> {
    let image = parse_reference(reference)?;
    let client = client(insecure);
    let auth = auth();
    // A tag is resolved to a digest once; everything after reads by digest,
    // so a tag moved meanwhile cannot mix two versions.
    let resolved = within(
        limits,
        reference,
        client.fetch_manifest_digest(&image, &auth),
    )
    .await
    .with_context(|| format!("cannot resolve {reference}"))?;
    crate::say!("{reference} is {resolved}");
    // The registry's word, and a folder's name: a digest, or refused.
    let folder = sha256_hex(&resolved)
        .map(|hex| format!("sha256-{hex}"))
        .with_context(|| {
            format!("{reference} resolved to {resolved:?}, which is not a sha256 digest")
        })?;
    let pinned = image.clone_with_digest(resolved.clone());
    let app_dir = cache.join("apps").join(&folder);

    let (manifest, _) = within(
        limits,
        reference,
        client.pull_image_manifest(&pinned, &auth),
    )
    .await
    .with_context(|| format!("cannot read the manifest of {reference}"))?;
    let mut wanted = Vec::new();
    for layer in &manifest.layers {
        match layer.media_type.as_str() {
            WASM_MEDIA_TYPE | MANIFEST_MEDIA_TYPE => wanted.push(layer.clone()),
            other => bail!(
                "{reference} holds a layer of type {other}; a host-bridge app holds only {WASM_MEDIA_TYPE} and {MANIFEST_MEDIA_TYPE} layers (pushed with `host-bridge push`)"
            ),
        }
        if layer.size < 0 || layer.size as u64 > limits.max_size {
            bail!(
                "layer {} of {reference} is {} bytes, larger than --max-component-size ({} bytes); nothing was pulled",
                layer.digest,
                layer.size,
                limits.max_size
            );
        }
    }
    let Some(manifest_layer) = wanted
        .iter()
        .find(|l| l.media_type == MANIFEST_MEDIA_TYPE)
        .cloned()
    else {
        bail!(
            "{reference} has no {MANIFEST_MEDIA_TYPE} layer: it was not pushed by `host-bridge push`"
        );
    };

    // A whole app from an earlier pull is reused, every layer hashed again;
    // else layers gather in `partial/` until all are there.
    let cached = app_dir.join("spin.toml").is_file();
    let dir = if cached {
        app_dir.clone()
    } else {
        cache.join("partial").join(&folder)
    };
    crate::engine::cache_dir::create_private(&dir)?;
    let layers = Layers {
        client: &client,
        pinned: &pinned,
        reference,
        dir: &dir,
        limits,
        total: wanted.len(),
        done: std::sync::atomic::AtomicUsize::new(0),
    };

    // The manifest first, and parsed as a registry's: an app asking for
    // what a pulled app may not have is refused before its components are
    // downloaded.
    let text = layers.fetch(&manifest_layer).await?;
    let text = String::from_utf8(text)
        .with_context(|| format!("the manifest layer of {reference} is not UTF-8 text"))?;
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("the manifest layer of {reference} is not TOML"))?;
    let mut sources = BTreeMap::new();
    let ids: Vec<String> = document
        .get("component")
        .and_then(|c| c.as_table_like())
        .map(|t| t.iter().map(|(id, _)| id.to_owned()).collect())
        .unwrap_or_default();
    for id in ids {
        let source = document["component"][id.as_str()]["source"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(layer) = wanted
            .iter()
            .find(|l| l.digest == source && l.media_type == WASM_MEDIA_TYPE)
        else {
            bail!(
                "the manifest of {reference} gives [component.{id}] source {source:?}, which is not one of its layers"
            );
        };
        // A name in the app's own folder, which the parser below confines
        // every path to.
        document["component"][id.as_str()]["source"] = toml_edit::value(blob_name(layer)?);
        sources.insert(id, layer.clone());
    }
    let text = document.to_string();
    let manifest = Manifest::parse_pulled(&app_dir.join("spin.toml"), &text).with_context(|| {
        format!("{reference} was refused: it asks for what an app from a registry may not have; nothing was run")
    })?;

    let mut by_digest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for layer in &wanted {
        if layer.media_type == WASM_MEDIA_TYPE && !by_digest.contains_key(&layer.digest) {
            let bytes = layers.fetch(layer).await?;
            by_digest.insert(layer.digest.clone(), bytes);
        }
    }
    let components = sources
        .into_iter()
        .map(|(id, layer)| (id, by_digest[&layer.digest].clone()))
        .collect();

    // The manifest with its sources rewritten is written last, for the
    // user to read; host-bridge never reads it back.
    let written = dir.join("spin.toml");
    std::fs::write(&written, &text)
        .with_context(|| format!("cannot write {}", written.display()))?;
    if !cached {
        std::fs::create_dir_all(cache.join("apps"))
            .with_context(|| format!("cannot create {}", cache.join("apps").display()))?;
        std::fs::rename(&dir, &app_dir)
            .with_context(|| format!("cannot move {} to {}", dir.display(), app_dir.display()))?;
    }
    Ok(PulledApp {
        reference: reference.to_owned(),
        manifest,
        components,
    })
}

/// The layers of one pulled app, fetched into `dir`.
struct Layers<'a> {
    client: &'a oci_client::Client,
    pinned: &'a oci_client::Reference,
    reference: &'a str,
    dir: &'a Path,
    limits: DownloadLimits,
    total: usize,
    /// How many were fetched so far, for the progress lines.
    done: std::sync::atomic::AtomicUsize,
}

impl Layers<'_> {
    /// The checked bytes of `layer`: from `dir` if a file there has its
    /// digest, else downloaded into it.
    async fn fetch(&self, layer: &OciDescriptor) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(blob_name(layer)?);
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let progress = format!("host-bridge: [{n}/{}] {}", self.total, layer.digest);
        if let Some(bytes) = transfer::read_checked(&path, &layer.digest, self.limits.max_size) {
            crate::say!(plain: "{progress} (cached)");
            return Ok(bytes);
        }
        crate::say!(plain: "{progress}: pulling ({} KiB)", layer.size / 1024);
        let what = format!("layer {} of {}", layer.digest, self.reference);
        let context = || format!("cannot pull {what}");
        let stream = within(
            self.limits,
            &what,
            self.client.pull_blob_stream(self.pinned, layer),
        )
        .await
        .with_context(context)?;
        transfer::receive(
            &what,
            stream.content_length,
            stream.stream,
            &layer.digest,
            Some(&path),
            self.limits,
        )
        .await
        .with_context(context)
    }
}

/// `future`, a call to a registry, under `limits`' timeout.
async fn within<T>(
    limits: DownloadLimits,
    what: &str,
    future: impl Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limits.timeout, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(transfer::DownloadError::TimedOut {
            what: what.to_owned(),
            timeout: limits.timeout,
        }
        .into()),
    }
}

/// The file name `layer` is kept under: its digest, with a `.wasm` name for
/// a component (which the manifest requires of a source) and `.toml` for
/// the manifest.
fn blob_name(layer: &OciDescriptor) -> anyhow::Result<String> {
    let digest = &layer.digest;
    let hex = sha256_hex(digest).with_context(|| format!("{digest:?} is not a sha256 digest"))?;
    let extension = if layer.media_type == WASM_MEDIA_TYPE {
        "wasm"
    } else {
        "toml"
    };
    Ok(format!("sha256-{hex}.{extension}"))
}

/// The 64 hex digits of a `sha256:` digest, if `digest` is one: safe to
/// put in a file name.
fn sha256_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The bytes of component `id` of the app pushed to `reference`, found by
/// the digest the app's config gives it, received under `limits` and
/// checked.
#[tracing::instrument(name = "pull", skip_all, fields(otel.name = %format_args!("pull {reference} {id}"), oci.reference = %reference, host_bridge.component = %id))]
pub async fn pull_component(
    reference: &str,
    insecure: bool,
    id: &str,
    limits: DownloadLimits,
) -> anyhow::Result<Vec<u8>> {
    let image = parse_reference(reference)?;
    let client = client(insecure);
    let auth = auth();
    let (manifest, resolved, config) = within(
        limits,
        reference,
        client.pull_manifest_and_config(&image, &auth),
    )
    .await
    .with_context(|| format!("cannot read the manifest of {reference}"))?;
    crate::say!("{reference} is {resolved}");
    let config: serde_json::Value = serde_json::from_str(&config)
        .with_context(|| format!("the config of {reference} is not a host-bridge app's"))?;
    let Some(wanted) = config["components"][id].as_str() else {
        bail!(
            "the app at {reference} has no component `{id}`; it has: {}",
            config["components"]
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
    };
    let Some(layer) = manifest.layers.iter().find(|l| l.digest == wanted) else {
        bail!("the app at {reference} names {wanted} for `{id}` but has no such layer");
    };
    let pinned = image.clone_with_digest(resolved);
    let what = format!("layer {wanted} of {reference}");
    let stream = within(limits, &what, client.pull_blob_stream(&pinned, layer))
        .await
        .with_context(|| format!("cannot pull {what}"))?;
    transfer::receive(
        &what,
        stream.content_length,
        stream.stream,
        wanted,
        None,
        limits,
    )
    .await
    .with_context(|| format!("cannot pull {what}"))
}
