//! `host-bridge push REF`: the app as one OCI artifact (see the module
//! docs of [`super`] for its layout).

use super::{
    CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, TITLE, WASM_MEDIA_TYPE, auth, client, digest,
    parse_reference,
};
use crate::manifest::Manifest;
use anyhow::{Context as _, bail};
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use std::collections::BTreeMap;

/// Pushes the app of `manifest` to `reference`; returns the pushed
/// manifest's digest.
pub async fn push(manifest: &Manifest, reference: &str, insecure: bool) -> anyhow::Result<String> {
    let image = parse_reference(reference)?;
    manifest.check_sources()?;
    let text = std::fs::read_to_string(&manifest.path)
        .with_context(|| format!("cannot read {}", manifest.path.display()))?;
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", manifest.path.display()))?;

    let mut layers: Vec<ImageLayer> = Vec::new();
    let mut components = BTreeMap::new();
    for (id, component) in &manifest.components {
        if !component.files.is_empty() {
            bail!(
                "[component.{id}] files: `push` packages components only, not the directories they mount; remove `files` or ship them another way"
            );
        }
        let bytes = std::fs::read(&component.source).with_context(|| {
            format!(
                "[component.{id}]: cannot read {}",
                component.source.display()
            )
        })?;
        let layer_digest = digest(&bytes);
        crate::say!(
            "component `{id}`: {} ({} KiB) is {layer_digest}",
            component.source.display(),
            bytes.len() / 1024
        );
        let table = &mut document["component"][id.as_str()];
        table["source"] = toml_edit::value(layer_digest.clone());
        if let Some(table) = table.as_table_like_mut() {
            table.remove("build");
        }
        // Two components may share one .wasm: one layer serves both.
        let first_use = !components.values().any(|d| *d == layer_digest);
        components.insert(id.clone(), layer_digest);
        if first_use {
            layers.push(ImageLayer::new(
                bytes,
                WASM_MEDIA_TYPE.to_owned(),
                Some(BTreeMap::from([(TITLE.to_owned(), format!("{id}.wasm"))])),
            ));
        }
    }
    layers.push(ImageLayer::new(
        document.to_string().into_bytes(),
        MANIFEST_MEDIA_TYPE.to_owned(),
        Some(BTreeMap::from([(TITLE.to_owned(), "spin.toml".to_owned())])),
    ));
    let config = serde_json::json!({
        "name": manifest.application.name,
        "version": manifest.application.version,
        "components": components,
    });
    let config = Config::new(
        config.to_string().into_bytes(),
        CONFIG_MEDIA_TYPE.to_owned(),
        None,
    );
    let image_manifest = OciImageManifest::build(&layers, &config, None);

    let client = client(insecure);
    let auth = auth();
    crate::say!("pushing {} layer(s) to {reference}", layers.len());
    client
        .push(&image, &layers, config, &auth, Some(image_manifest))
        .await
        .with_context(|| format!("cannot push to {reference}"))?;
    let pushed = client
        .fetch_manifest_digest(&image, &auth)
        .await
        .with_context(|| format!("pushed to {reference}, but cannot read back its digest"))?;
    Ok(pushed)
}
