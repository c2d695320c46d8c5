//! The compiled-code cache is the user's own, or it is not used.
//!
//! wasmtime runs the machine code it finds in the cache without compiling
//! it again, so whoever can write there can have host-bridge run their
//! code. A cache directory others can write is refused with a clear error;
//! and with no home (no XDG_CACHE_HOME, no HOME) and no --cache-dir, `up`
//! says to pass one rather than cache in the shared temporary directory,
//! as it did before.

use crate::common::{free_port, wasm};
use crate::registry::run_until_exit;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

/// A manifest with the test subscriber, in `dir`.
fn manifest_in(dir: &Path) -> String {
    let path = dir.join("spin.toml");
    std::fs::write(
        &path,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"cache\"\n[[trigger.pubsub]]\ncomponent = \"test-subscriber\"\npubsubname = \"pubsub\"\ntopic = \"t\"\n[component.test-subscriber]\nsource = \"{}\"\n",
            wasm("test_subscriber")
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn a_cache_dir_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path());
    let cache = dir.path().join("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, log) = run_until_exit(
        &[
            "up",
            "--manifest",
            &manifest,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[],
        &[],
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "up ran with a cache every user can write ({status:?}):\n{log}"
    );
    assert!(
        log.contains(&format!(
            "the cache directory {} can be written by every user (mode 777)",
            cache.display()
        )) && log.contains("chmod go-w")
            && log.contains("--no-cache"),
        "{log}"
    );
    assert!(!cache.join("code").exists(), "it cached there anyway");
}

#[test]
fn without_a_home_up_refuses_to_cache_in_the_shared_temp_dir() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path());
    // The temporary directory the old build fell back to, made the test's.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (status, log) = run_until_exit(
        &[
            "up",
            "--manifest",
            &manifest,
            "--in-memory",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[("TMPDIR", tmp.to_str().unwrap())],
        &["HOME", "XDG_CACHE_HOME", "HOST_BRIDGE_CACHE_DIR"],
        Duration::from_secs(60),
    );
    assert!(
        status.is_some_and(|s| !s.success()),
        "up ran without a cache directory ({status:?}):\n{log}"
    );
    assert!(
        log.contains("no cache directory: neither XDG_CACHE_HOME nor HOME is set")
            && log.contains("Pass --cache-dir DIR, or --no-cache"),
        "{log}"
    );
    assert!(
        !tmp.join("host-bridge").exists(),
        "it cached in the temporary directory"
    );

    // The same with the embedded broker's data: no fallback to /tmp.
    let (status, log) = run_until_exit(
        &[
            "up",
            "--manifest",
            &manifest,
            "--no-cache",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[("TMPDIR", tmp.to_str().unwrap())],
        &[
            "HOME",
            "XDG_CACHE_HOME",
            "XDG_DATA_HOME",
            "HOST_BRIDGE_DATA_DIR",
        ],
        Duration::from_secs(60),
    );
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("neither XDG_DATA_HOME nor HOME is set")
            && log.contains("Pass --data-dir DIR, or --in-memory"),
        "{log}"
    );
    assert!(!tmp.join("host-bridge").exists());
}
