//! The directories host-bridge caches in: its own, or refused.
//!
//! The compiled-code cache holds machine code that wasmtime maps and runs
//! without compiling it again, so whoever can write there can have
//! host-bridge run their code as this user. Pulled apps and downloaded
//! components live beside it. The invariant:
//!
//! > A cache directory is owned by the user running host-bridge, and
//! > neither its group nor others may write to it. One host-bridge creates
//! > is made `0700`. There is no fallback to a shared directory such as
//! > `/tmp`: without a home, the user names one (`--cache-dir`) or turns the
//! > cache off (`--no-cache`).
//!
//! Only the directory itself is checked, and each one created under it
//! (`compiled/`, `oci/`, `downloads/`): the folders above it are the
//! user's choice, as with any path they pass.

use std::path::{Path, PathBuf};

/// A cache directory that cannot be used, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    #[error("cannot create the cache directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cache directory {path} belongs to user id {owner}, not to this user ({uid}): \
         host-bridge runs the machine code cached there, so it must be your own. \
         Pass --cache-dir DIR with a directory of your own, or --no-cache"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "the cache directory {path} can be written by {who} (mode {mode:o}): whoever can write there \
         can have host-bridge run their machine code. Run `chmod go-w {path}`, or pass --cache-dir DIR \
         with a private directory, or --no-cache"
    )]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "no cache directory: neither XDG_CACHE_HOME nor HOME is set, and host-bridge does not cache in a \
         shared directory such as /tmp. Pass --cache-dir DIR, or --no-cache"
    )]
    NoDefault,
}

/// `$XDG_CACHE_HOME/host-bridge`, else `~/.cache/host-bridge`; never a
/// shared temporary directory.
pub fn default_dir() -> Result<PathBuf, CacheDirError> {
    user_dir("XDG_CACHE_HOME", ".cache")
        .map(|dir| dir.join("host-bridge"))
        .ok_or(CacheDirError::NoDefault)
}

/// The user's own directory of a kind: `$xdg_variable`, else
/// `$HOME/under_home`; `None` when neither is set, for the caller to say so
/// rather than fall back to a shared directory.
pub fn user_dir(xdg_variable: &str, under_home: &str) -> Option<PathBuf> {
    std::env::var_os(xdg_variable)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(under_home))
        })
}

/// Creates `dir` (and any missing parent) `0700` if it does not exist, then
/// checks it is private (see the module docs).
pub fn create_private(dir: &Path) -> Result<(), CacheDirError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|source| CacheDirError::Create {
            path: dir.to_owned(),
            source,
        })?;
    check_private(dir)
}

/// Checks that `dir` is this user's own and that neither its group nor
/// others may write to it.
#[cfg(unix)]
pub fn check_private(dir: &Path) -> Result<(), CacheDirError> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(dir).map_err(|source| CacheDirError::Create {
        path: dir.to_owned(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if metadata.uid() != uid {
        return Err(CacheDirError::NotOwned {
            path: dir.to_owned(),
            owner: metadata.uid(),
            uid,
        });
    }
    let mode = metadata.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (_, true) => "every user",
        (true, false) => "its group",
        (false, false) => return Ok(()),
    };
    Err(CacheDirError::Writable {
        path: dir.to_owned(),
        who,
        mode,
    })
}

/// Elsewhere, directories carry no Unix owner and mode to check.
#[cfg(not(unix))]
pub fn check_private(_dir: &Path) -> Result<(), CacheDirError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_created_cache_is_private_and_a_shared_one_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/compiled");
        create_private(&dir).unwrap();
        for created in [root.path().join("a"), root.path().join("a/b"), dir.clone()] {
            let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", created.display());
        }
        // An existing 0755 directory (target/ on a normal checkout) is fine.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private(&dir).unwrap();
        for (mode, who) in [
            (0o777, "every user"),
            (0o775, "its group"),
            (0o1777, "every user"),
        ] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = create_private(&dir).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{} can be written by {who}", dir.display()))
                    && e.contains("chmod go-w")
                    && e.contains("--no-cache"),
                "{e}"
            );
        }
        // Someone else's directory; only root can make one to test with
        // (the tests run as root in CI).
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let e = create_private(&dir).unwrap_err().to_string();
            assert!(
                e.contains("belongs to user id 65534, not to this user (0)")
                    && e.contains("--cache-dir DIR with a directory of your own"),
                "{e}"
            );
        }
    }
}
