//! Who wrote a manifest, and so what it may ask for.
//!
//! The same parser reads two kinds of `spin.toml`:
//!
//! - **The user's own** ([`Origin::Local`], [`Manifest::load`]): a file on
//!   disk that the person running host-bridge chose. As in Spin, it may name
//!   any folder that person can read, mount host directories with `files`,
//!   and run build commands.
//! - **A manifest layer pulled from a registry** ([`Origin::Registry`],
//!   [`Manifest::parse_pulled`]): written by whoever could push to that
//!   repository. It is input, not configuration.
//!
//! What a registry's app may ask for is decided here, in
//! [`check_pulled_component`], and nowhere else. The invariant it keeps:
//!
//! > A pulled manifest that is accepted names no host directory to mount,
//! > no build to run, no URL to fetch, and every path in it is relative,
//! > without `..`, so that it resolves inside the app's own folder.
//!
//! Each refusal names the component and the field. The grants a pulled app
//! does get (outbound hosts, environment, publish topics, key-value stores,
//! variables) are printed before it runs ([`Manifest::grants`]), so the user
//! sees what they are about to allow.

use super::{Manifest, Problems, RawComponent, RawFileMount, RawSource};
use std::fmt;
use std::path::{Component as PathPart, Path};

/// Where a manifest came from; it decides what the manifest may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The user's own `spin.toml`: trusted as the user is.
    Local,
    /// A manifest layer pulled from a registry (`up --from`): confined to
    /// its app's folder, with no host mounts (see the module docs).
    Registry,
}

/// Whether `path`, as written in a pulled manifest, stays inside the folder
/// it is resolved against; if not, why, as a phrase to follow the path.
pub fn confined(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    for part in Path::new(path).components() {
        match part {
            PathPart::Normal(_) | PathPart::CurDir => {}
            PathPart::ParentDir => {
                return Err("has a `..` component, which would leave the app's folder");
            }
            PathPart::RootDir | PathPart::Prefix(_) => {
                return Err("is absolute; a pulled app's paths are relative to its own folder");
            }
        }
    }
    Ok(())
}

/// The one check of what a pulled component may ask for (see the module
/// docs). Pushes a problem, naming `[component.ID]` and the field, for each
/// thing refused.
pub(super) fn check_pulled_component(id: &str, raw: &RawComponent, problems: &mut Problems) {
    let here = format!("[component.{id}]");
    match &raw.source {
        RawSource::Path(path) => {
            if let Err(why) = confined(path) {
                problems.push(format!("{here} source: {path:?} {why}"));
            }
        }
        RawSource::Url { url, .. } => problems.push(format!(
            "{here} source: a pulled app's components are its own layers; a {{ url = {url:?} }} source would have this host fetch whatever the registry names, and is refused"
        )),
    }
    for mount in &raw.files {
        let source = match mount {
            RawFileMount::Directory(path) => path,
            RawFileMount::Mapping { source, .. } => source,
        };
        let why = confined(source)
            .err()
            .map(|why| format!(" (the path also {why})"))
            .unwrap_or_default();
        problems.push(format!(
            "{here} files: a pulled app may not mount host directories; {source:?} is refused{why}"
        ));
    }
    if raw.build.is_some() {
        problems.push(format!(
            "{here} build: a pulled app runs as it was pushed and is never built on this host (`push` removes build tables)"
        ));
    }
}

/// What the components of a manifest are granted, as [`Manifest::grants`]
/// prints it.
pub struct Grants<'a>(&'a Manifest);

impl Manifest {
    /// The grants of every component, for the user to read before a pulled
    /// app runs.
    pub fn grants(&self) -> Grants<'_> {
        Grants(self)
    }
}

impl super::Component {
    /// What the component is granted, one row per kind of grant (the kind,
    /// then each grant): what `up` prints before a pulled app runs, and
    /// what the admin page shows.
    pub fn grant_rows(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![
            (
                "outbound hosts",
                self.allowed_outbound_hosts
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
            ("environment", self.environment.keys().cloned().collect()),
            (
                "files",
                self.files
                    .iter()
                    .map(|m| format!("{} at {}", m.source.display(), m.destination))
                    .collect(),
            ),
            (
                "publish topics",
                self.allowed_publish_topics
                    .iter()
                    .map(|p| match (&p.pubsubname, &p.topic) {
                        (None, _) => "*".to_owned(),
                        (Some(pubsub), None) => format!("{pubsub}/*"),
                        (Some(pubsub), Some(topic)) => format!("{pubsub}/{topic}"),
                    })
                    .collect(),
            ),
            (
                "key-value stores",
                self.key_value_stores
                    .iter()
                    .map(|(label, store)| format!("{label} ({store})"))
                    .collect(),
            ),
            ("variables", self.variables.keys().cloned().collect()),
        ]
    }
}

impl fmt::Display for Grants<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let manifest = self.0;
        writeln!(
            f,
            "host-bridge: app `{}` asks for these grants:",
            manifest.application.name
        )?;
        for (id, c) in &manifest.components {
            writeln!(f, "  component `{id}`:")?;
            for (what, grants) in c.grant_rows() {
                let value = if grants.is_empty() {
                    "none".to_owned()
                } else {
                    grants.join(", ")
                };
                writeln!(f, "    {what:<17} {value}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ManifestError;
    use std::path::PathBuf;

    const APP_DIR: &str = "/cache/oci/apps/sha256-0000";

    fn pulled(component: &str) -> Result<Manifest, ManifestError> {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"pulled\"\n[[trigger.pubsub]]\ncomponent = \"sub\"\npubsubname = \"pubsub\"\ntopic = \"t\"\n[component.sub]\n{component}\n"
        );
        Manifest::parse_pulled(&Path::new(APP_DIR).join("spin.toml"), &text)
    }

    fn problems(component: &str) -> String {
        match pulled(component) {
            Ok(_) => panic!("accepted: {component}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn paths_that_leave_the_folder_are_refused_by_name() {
        assert_eq!(confined("a.wasm"), Ok(()));
        assert_eq!(confined("./dir/a.wasm"), Ok(()));
        assert!(confined("").is_err());
        assert!(confined("/etc").unwrap_err().contains("absolute"));
        assert!(confined("../a.wasm").unwrap_err().contains("`..`"));
        assert!(confined("dir/../../a.wasm").unwrap_err().contains("`..`"));
        // A name that merely starts with dots is a name.
        assert_eq!(confined("..a.wasm"), Ok(()));

        let e = problems(r#"source = "/etc/passwd.wasm""#);
        assert!(
            e.contains("[component.sub] source: \"/etc/passwd.wasm\" is absolute"),
            "{e}"
        );
        let e = problems(r#"source = "../../other/app.wasm""#);
        assert!(
            e.contains("[component.sub] source: \"../../other/app.wasm\" has a `..` component"),
            "{e}"
        );
    }

    #[test]
    fn a_pulled_app_may_not_mount_host_directories() {
        for files in [
            r#"files = [{ source = "/etc", destination = "/data" }]"#,
            r#"files = [{ source = "../../../../etc", destination = "/data" }]"#,
            r#"files = [{ source = "static", destination = "/static" }]"#,
            r#"files = ["static"]"#,
        ] {
            let e = problems(&format!("source = \"sub.wasm\"\n{files}"));
            assert!(
                e.contains("[component.sub] files: a pulled app may not mount host directories"),
                "{files}: {e}"
            );
        }
        let e = problems(
            "source = \"sub.wasm\"\nfiles = [{ source = \"/etc\", destination = \"/data\" }]",
        );
        assert!(
            e.contains("\"/etc\" is refused (the path also is absolute"),
            "{e}"
        );
    }

    #[test]
    fn a_pulled_app_neither_builds_nor_fetches_urls() {
        let e = problems("source = \"sub.wasm\"\n[component.sub.build]\ncommand = \"make\"");
        assert!(e.contains("[component.sub] build: a pulled app"), "{e}");
        let digest = format!("sha256:{}", "0".repeat(64));
        let e = problems(&format!(
            "source = {{ url = \"http://127.0.0.1/x.wasm\", digest = \"{digest}\" }}"
        ));
        assert!(
            e.contains("[component.sub] source: a pulled app's components are its own layers"),
            "{e}"
        );
    }

    #[test]
    fn a_confined_pulled_app_loads_with_its_grants() {
        let manifest = pulled(
            "source = \"sha256-1.wasm\"\nallowed_outbound_hosts = [\"https://example.com\"]\nenvironment = { MODE = \"x\" }\nkey_value_stores = [\"default\"]\n[component.sub.tool.host-bridge]\nallowed_publish_topics = [\"pubsub/out\"]",
        )
        .unwrap();
        assert_eq!(manifest.origin, Origin::Registry);
        assert_eq!(
            manifest.components["sub"].source,
            PathBuf::from(APP_DIR).join("sha256-1.wasm")
        );
        let grants = manifest.grants().to_string();
        for line in [
            "component `sub`:",
            "outbound hosts    https://example.com",
            "environment       MODE",
            "files             none",
            "publish topics    pubsub/out",
            "key-value stores  default (statestore)",
            "variables         none",
        ] {
            assert!(grants.contains(line), "{line:?} not in:\n{grants}");
        }
    }

    #[test]
    fn a_local_manifest_stays_the_users_own() {
        let dir = tempfile::tempdir().unwrap();
        let text = "spin_manifest_version = 2\n[application]\nname = \"local\"\n[[trigger.pubsub]]\ncomponent = \"sub\"\npubsubname = \"pubsub\"\ntopic = \"t\"\n[component.sub]\nsource = \"../elsewhere/sub.wasm\"\nfiles = [{ source = \"/etc\", destination = \"/data\" }]\n[component.sub.build]\ncommand = \"make\"\n";
        let manifest = Manifest::parse(&dir.path().join("spin.toml"), text).unwrap();
        assert_eq!(manifest.origin, Origin::Local);
        // As in Spin: the user's own manifest may mount any folder they can
        // read, absolute or not.
        assert_eq!(
            manifest.components["sub"].files[0].source,
            PathBuf::from("/etc")
        );
        assert!(manifest.components["sub"].build.is_some());
    }
}
