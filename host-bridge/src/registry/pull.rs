//! `host-bridge up --from REF`: pull an app into the cache and return the
//! manifest to run (see the module docs of [`super`]).

use super::{MANIFEST_MEDIA_TYPE, WASM_MEDIA_TYPE, auth, client, digest, parse_reference};
use anyhow::{Context as _, bail};
use oci_client::manifest::OciDescriptor;
use std::path::{Path, PathBuf};

/// Pulls `reference` into `cache` and returns the path of its manifest,
/// with every source a checked blob in `cache`.
pub async fn pull(reference: &str, insecure: bool, cache: &Path) -> anyhow::Result<PathBuf> {
    let image = parse_reference(reference)?;
    let client = client(insecure);
    let auth = auth();
    // A tag is resolved to a digest once; everything after reads by digest,
    // so a tag moved meanwhile cannot mix two versions.
    let resolved = client
        .fetch_manifest_digest(&image, &auth)
        .await
        .with_context(|| format!("cannot resolve {reference}"))?;
    eprintln!("host-bridge: {reference} is {resolved}");
    let pinned = image.clone_with_digest(resolved.clone());
    let app_dir = cache.join("apps").join(resolved.replace(':', "-"));
    let app_manifest = app_dir.join("spin.toml");
    let blobs = cache.join("blobs");

    let (manifest, _) = client
        .pull_image_manifest(&pinned, &auth)
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
    }
    let Some(manifest_layer) = wanted.iter().find(|l| l.media_type == MANIFEST_MEDIA_TYPE) else {
        bail!(
            "{reference} has no {MANIFEST_MEDIA_TYPE} layer: it was not pushed by `host-bridge push`"
        );
    };

    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    for (index, layer) in wanted.iter().enumerate() {
        let path = blob_path(&blobs, layer)?;
        if path.is_file() && check(&path, &layer.digest).is_ok() {
            eprintln!(
                "host-bridge: [{}/{}] {} (cached)",
                index + 1,
                wanted.len(),
                layer.digest
            );
            continue;
        }
        eprintln!(
            "host-bridge: [{}/{}] pulling {} ({} KiB)",
            index + 1,
            wanted.len(),
            layer.digest,
            layer.size / 1024
        );
        let mut bytes = Vec::new();
        client
            .pull_blob(&pinned, layer, &mut bytes)
            .await
            .with_context(|| format!("cannot pull layer {} of {reference}", layer.digest))?;
        let actual = digest(&bytes);
        if actual != layer.digest {
            bail!(
                "layer {} of {reference} arrived with sha256 {actual}: it was altered; nothing was run",
                layer.digest
            );
        }
        // Written under a temporary name and renamed, so a blob in the
        // cache is always whole.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    let text = std::fs::read_to_string(blob_path(&blobs, manifest_layer)?)?;
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("the manifest layer of {reference} is not TOML"))?;
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
        let path = blob_path(&blobs, layer)?;
        document["component"][id.as_str()]["source"] = toml_edit::value(path.display().to_string());
    }
    std::fs::create_dir_all(&app_dir)
        .with_context(|| format!("cannot create {}", app_dir.display()))?;
    std::fs::write(&app_manifest, document.to_string())
        .with_context(|| format!("cannot write {}", app_manifest.display()))?;
    Ok(app_manifest)
}

/// Where `layer` is kept: by digest, with a `.wasm` name for a component
/// (which the manifest requires of a source) and `.toml` for the manifest.
fn blob_path(blobs: &Path, layer: &OciDescriptor) -> anyhow::Result<PathBuf> {
    let digest = &layer.digest;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("{digest:?} is not a sha256 digest"))?;
    let extension = if layer.media_type == WASM_MEDIA_TYPE {
        "wasm"
    } else {
        "toml"
    };
    Ok(blobs.join(format!("sha256-{hex}.{extension}")))
}

/// Checks that the file at `path` has `expected` as its digest.
fn check(path: &Path, expected: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(path)?;
    let actual = digest(&bytes);
    if actual == expected {
        Ok(())
    } else {
        bail!("{} is {actual}, not {expected}", path.display())
    }
}

/// The bytes of component `id` of the app pushed to `reference`, found by
/// the digest the app's config gives it, and checked.
pub async fn pull_component(reference: &str, insecure: bool, id: &str) -> anyhow::Result<Vec<u8>> {
    let image = parse_reference(reference)?;
    let client = client(insecure);
    let auth = auth();
    let (manifest, resolved, config) = client
        .pull_manifest_and_config(&image, &auth)
        .await
        .with_context(|| format!("cannot read the manifest of {reference}"))?;
    eprintln!("host-bridge: {reference} is {resolved}");
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
    let mut bytes = Vec::new();
    client
        .pull_blob(&pinned, layer, &mut bytes)
        .await
        .with_context(|| format!("cannot pull layer {wanted} of {reference}"))?;
    if digest(&bytes) != wanted {
        bail!("layer {wanted} of {reference} arrived altered");
    }
    Ok(bytes)
}
