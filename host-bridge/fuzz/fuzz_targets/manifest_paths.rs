//! A manifest pulled from a registry, through the registry-trust check
//! (`Manifest::parse_pulled`, `manifest::trust`): it never panics, and if
//! it is accepted, every path it names lies inside the app's folder and no
//! host directory is mounted, no build is run and no URL is fetched.
#![no_main]

use host_bridge::manifest::{Manifest, Origin};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

/// The app's folder, as `registry::pull` would give it.
const APP_DIR: &str = "/nonexistent/cache/oci/apps/sha256-fuzz";

fuzz_target!(|text: &str| {
    let app = Path::new(APP_DIR);
    let manifest = match Manifest::parse_pulled(&app.join("spin.toml"), text) {
        Ok(manifest) => manifest,
        Err(e) => {
            assert!(e.to_string().contains("spin.toml"), "{e}");
            return;
        }
    };
    assert_eq!(manifest.origin, Origin::Registry);
    for (id, component) in &manifest.components {
        assert!(component.files.is_empty(), "{id}: a host mount survived");
        assert!(component.build.is_none(), "{id}: a build survived");
        assert!(component.download.is_none(), "{id}: a URL source survived");
        let inside = component.source.strip_prefix(app).is_ok_and(|rest| {
            rest.components()
                .all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
        });
        assert!(
            inside,
            "{id}: source {} leaves {APP_DIR}",
            component.source.display()
        );
    }
});
