//! A real OCI registry for the tests: Debian's `docker-registry` (the
//! distribution registry), started on a free port, and what a test needs
//! to play the registry's owner: find a blob in its storage, or replace an
//! app's manifest layer through its v2 API.

use super::{client, free_port};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry serve` on a free localhost port, storing in a
/// temporary directory; killed when dropped.
pub struct Registry {
    process: Child,
    pub address: String,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

/// The OCI image manifest's media type, as `host-bridge push` writes it.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let address = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                storage.display()
            ),
        )
        .unwrap();
        let process = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start docker-registry (make setup-dapr installs it)");
        let registry = Registry {
            process,
            address,
            storage,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/v2/", registry.address);
        while !client()
            .get(&url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Rewrites the layer of type `media_type` of `repository:tag` with
    /// `edit`, as someone who can push to the repository could: uploads the
    /// new blob and a new image manifest under the same tag.
    pub fn edit_layer(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        edit: impl FnOnce(String) -> String,
    ) {
        let base = format!("http://{}/v2/{repository}", self.address);
        let manifest_url = format!("{base}/manifests/{tag}");
        let mut manifest: serde_json::Value = client()
            .get(&manifest_url)
            .header("accept", OCI_MANIFEST)
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        let layer = manifest["layers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|l| l["mediaType"] == media_type)
            .unwrap_or_else(|| panic!("no {media_type} layer in {repository}:{tag}"));
        let old = layer["digest"].as_str().unwrap().to_owned();
        let text = client()
            .get(format!("{base}/blobs/{old}"))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .unwrap();
        let new = edit(text).into_bytes();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&new)));
        layer["digest"] = digest.clone().into();
        layer["size"] = new.len().into();

        // A monolithic upload: POST for a location, PUT the bytes to it.
        let started = client()
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .unwrap();
        assert_eq!(started.status(), 202, "cannot start an upload");
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.address)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = client()
            .put(format!("{location}{separator}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(new)
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "upload refused: {:?}", put.text());
        let put = client()
            .put(&manifest_url)
            .header("content-type", OCI_MANIFEST)
            .body(manifest.to_string())
            .send()
            .unwrap();
        assert_eq!(put.status(), 201, "manifest refused: {:?}", put.text());
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
