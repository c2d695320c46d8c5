//! Deployed versions, kept on disk so a restart runs them again.
//!
//! A deploy through the admin API is kept in the data dir's `deployed/`
//! folder (`--data-dir`, else `$XDG_DATA_HOME/host-bridge/APP`; under Dapr
//! as on the embedded broker; never with `--in-memory`): the `.wasm`, named
//! by its sha256, and a small record beside it, `{component}.json`, saying
//! what it is and what it replaced.
//!
//! **Invariants.**
//! - A deploy is answered 200 only once its version is kept: both files
//!   are written under a temporary name, synced, and renamed into place,
//!   the record last. A crash at any point leaves the old record (and the
//!   `.wasm` it names) or the new one, never half of either.
//! - A kept version runs again only as the bytes that were deployed: its
//!   sha256 is checked against the record before it is used.
//! - A kept version runs again only over the manifest's code it replaced
//!   (the record's `replaces`): when the manifest's source has changed
//!   since (a rebuild, a new pull), the manifest's code is newer than the
//!   deploy, and the kept version is dropped, by name, with the reason.

use crate::registry::digest;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The `deployed/` folder of the data dir.
#[derive(Debug, Clone)]
pub struct Kept {
    dir: PathBuf,
}

/// What is known of one kept version (`{component}.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    pub component: String,
    /// The sha256 of the kept `.wasm`.
    pub digest: String,
    /// The sha256 of the manifest's source it replaced.
    pub replaces: String,
    /// When it was deployed (RFC 3339, UTC).
    pub deployed_at: String,
}

/// A kept version that cannot be kept or read.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    #[error("cannot keep the deployed version of `{component}` in {}: {source}", path.display())]
    Write {
        component: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

impl Kept {
    pub fn new(dir: PathBuf) -> Kept {
        Kept { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.json"))
    }

    fn wasm_path(&self, record: &Record) -> PathBuf {
        let hex = record.digest.trim_start_matches("sha256:");
        self.dir.join(format!("{}.{hex}.wasm", record.component))
    }

    /// Keeps `bytes` as the deployed version of `record.component`,
    /// replacing what was kept for it before.
    pub fn keep(&self, record: &Record, bytes: &[u8]) -> Result<(), KeptError> {
        let id = &record.component;
        let error = |path: &Path| {
            let (component, path) = (id.clone(), path.to_owned());
            move |source| KeptError::Write {
                component,
                path,
                source,
            }
        };
        if !is_plain_name(id) {
            return Err(error(&self.dir)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a component name of lowercase letters, digits and dashes is needed for a file name",
            )));
        }
        create_private_dir(&self.dir).map_err(error(&self.dir))?;
        let wasm = self.wasm_path(record);
        write_atomically(&wasm, bytes).map_err(error(&wasm))?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| error(&wasm)(e.into()))?;
        let record_path = self.record_path(id);
        write_atomically(&record_path, &json).map_err(error(&record_path))?;
        sync_dir(&self.dir).map_err(error(&self.dir))?;
        self.remove_wasm_except(id, Some(&wasm));
        Ok(())
    }

    /// Forgets what is kept for `component`, if anything: the manifest's
    /// version runs after the next restart.
    pub fn forget(&self, component: &str) -> Result<(), KeptError> {
        let path = self.record_path(component);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(KeptError::Write {
                    component: component.to_owned(),
                    path,
                    source,
                });
            }
        }
        self.remove_wasm_except(component, None);
        Ok(())
    }

    /// Every kept record, by component name; a record that cannot be read
    /// is there too, with why.
    pub fn records(&self) -> Vec<(String, Result<Record, KeptError>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut records: Vec<_> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let component = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .to_owned();
                let record = read_record(&path, &component);
                Some((component, record))
            })
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }

    /// The kept bytes of `record`, checked against its digest.
    pub fn load(&self, record: &Record) -> Result<Vec<u8>, KeptError> {
        let path = self.wasm_path(record);
        let bytes = std::fs::read(&path).map_err(|e| KeptError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let actual = digest(&bytes);
        if actual != record.digest {
            return Err(KeptError::Read {
                path,
                reason: format!(
                    "its sha256 is {actual}, not the {} that was deployed",
                    record.digest
                ),
            });
        }
        Ok(bytes)
    }

    /// Removes `component`'s kept `.wasm` files but `keep`, and any
    /// temporary file a crash left. Best effort: a file left behind is
    /// never used, as no record names it.
    fn remove_wasm_except(&self, component: &str, keep: Option<&Path>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{component}.");
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let ours = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| rest.ends_with(".wasm") || rest.ends_with(".partial"));
            if ours && Some(path.as_path()) != keep {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn read_record(path: &Path, component: &str) -> Result<Record, KeptError> {
    let reason = |reason: String| KeptError::Read {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| reason(e.to_string()))?;
    let record: Record =
        serde_json::from_slice(&text).map_err(|e| reason(format!("not a deploy record: {e}")))?;
    if record.component != component {
        return Err(reason(format!(
            "it is the record of `{}`, not of `{component}`",
            record.component
        )));
    }
    Ok(record)
}

/// Spin's component names are lowercase words joined by dashes; only
/// such a name becomes a file name here.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Creates `dir` (and its parents); on Unix, `dir` itself is the user's
/// only: it holds code the host will run.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` to `path` whole or not at all: to a temporary file,
/// synced, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let written = std::fs::File::create(&partial).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&partial, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Syncs the directory, so the renames in it survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(component: &str, bytes: &[u8]) -> Record {
        Record {
            component: component.to_owned(),
            digest: digest(bytes),
            replaces: digest(b"the manifest's version"),
            deployed_at: "2026-12-02T22:00:00Z".to_owned(),
        }
    }

    #[test]
    fn a_kept_version_is_read_back_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path().join("deployed"));
        assert!(kept.records().is_empty());

        let v2 = record("order-api", b"version 2");
        kept.keep(&v2, b"version 2").unwrap();
        let v3 = record("order-api", b"version 3");
        kept.keep(&v3, b"version 3").unwrap();

        let records = kept.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, "order-api");
        let read = records[0].1.as_ref().unwrap();
        assert_eq!(read, &v3);
        assert_eq!(kept.load(read).unwrap(), b"version 3");
        // Only the record and the newest .wasm are left.
        let files = std::fs::read_dir(kept.dir()).unwrap().count();
        assert_eq!(files, 2);

        kept.forget("order-api").unwrap();
        assert!(kept.records().is_empty());
        assert_eq!(std::fs::read_dir(kept.dir()).unwrap().count(), 0);
    }

    #[test]
    fn kept_bytes_that_changed_on_disk_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path().to_owned());
        let v2 = record("live", b"version 2");
        kept.keep(&v2, b"version 2").unwrap();
        std::fs::write(kept.wasm_path(&v2), b"something else").unwrap();
        let refused = kept.load(&v2).unwrap_err().to_string();
        assert!(
            refused.contains("its sha256 is") && refused.contains(&v2.digest),
            "{refused}"
        );
    }

    #[test]
    fn a_broken_record_is_listed_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path().to_owned());
        std::fs::write(dir.path().join("live.json"), b"{ not json").unwrap();
        let records = kept.records();
        assert_eq!(records.len(), 1);
        let why = records[0].1.as_ref().unwrap_err().to_string();
        assert!(
            why.contains("live.json") && why.contains("not a deploy record"),
            "{why}"
        );
    }

    #[test]
    fn a_name_that_is_not_a_component_id_is_not_a_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path().to_owned());
        let refused = kept
            .keep(&record("../escape", b"x"), b"x")
            .unwrap_err()
            .to_string();
        assert!(refused.contains("`../escape`"), "{refused}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
