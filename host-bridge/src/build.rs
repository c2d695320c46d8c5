//! `host-bridge build`: run each component's `[component.NAME.build] command`,
//! as `spin build` does.
//!
//! Commands run one after another through `sh -c`, in the component's
//! `workdir` (the manifest's directory by default), with their output shown
//! as it comes. The first failure stops the build and names the component.
//! A successful command must leave the component's `source` file behind.

use crate::manifest::Manifest;
use anyhow::{Context as _, bail};
use std::process::Command;
use std::time::Instant;

/// Builds the components named in `only`, or every component with a build
/// command when `only` is empty.
pub fn run(manifest: &Manifest, only: &[String]) -> anyhow::Result<()> {
    for id in only {
        if !manifest.components.contains_key(id) {
            bail!(
                "there is no component `{id}` in {}; components: {}",
                manifest.path.display(),
                manifest
                    .components
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let chosen: Vec<_> = manifest
        .components
        .values()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .collect();
    let total = chosen.len();
    for (n, component) in chosen.into_iter().enumerate() {
        let id = &component.id;
        let Some(build) = &component.build else {
            crate::say!(plain: "[{}/{total}] `{id}` has no build command; skipped", n + 1);
            continue;
        };
        crate::say!(plain: "[{}/{total}] building `{id}`: {}", n + 1, build.command);
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(&build.command)
            .current_dir(&build.workdir)
            .status()
            .with_context(|| {
                format!(
                    "component `{id}`: cannot run its build command in {}",
                    build.workdir.display()
                )
            })?;
        if !status.success() {
            bail!(
                "component `{id}`: build command `{}` failed ({status}) in {}",
                build.command,
                build.workdir.display()
            );
        }
        if !component.source.is_file() {
            bail!(
                "component `{id}`: the build succeeded but {} does not exist; check [component.{id}] source in {}",
                component.source.display(),
                manifest.path.display()
            );
        }
        crate::say!(plain:
            "[{}/{total}] built `{id}` in {:.1?}",
            n + 1,
            started.elapsed()
        );
    }
    Ok(())
}
