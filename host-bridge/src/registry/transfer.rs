//! Every download: bounded, hashed as it arrives, and handed on as the
//! very bytes that were hashed.
//!
//! A layer pulled from a registry (`up --from`, `deploy --from`) and a
//! `{ url, digest }` source both come from someone else's server, so both go
//! through [`receive`], which keeps these invariants:
//!
//! - **Bounded in size.** A download announced larger than
//!   [`DownloadLimits::max_size`] (`--max-component-size`) is refused before
//!   its body is read; one that grows past it is cut off at the chunk that
//!   crosses it. Nothing larger is ever held in memory or written to disk.
//! - **Bounded in time.** The whole download has [`DownloadLimits::timeout`]
//!   (`--download-timeout`), and a server that sends nothing for
//!   [`IDLE_TIMEOUT`] is given up on, whichever comes first.
//! - **Checked bytes are the loaded bytes.** The sha256 is computed over the
//!   chunks as they arrive, and the same chunks are returned. The copy on
//!   disk is a cache for the next start, written under a temporary name and
//!   renamed once whole and checked; it is never read back to be trusted
//!   (a cached file is re-hashed by whoever reads it, see [`read_checked`]).

use super::digest;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--max-component-size`'s default: the largest download of one component.
pub const DEFAULT_MAX_COMPONENT_SIZE: u64 = 256 << 20;
/// `--download-timeout`'s default: the longest one download may take.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a download may go without receiving a byte.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bounds every download obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// The most bytes one download may have (`--max-component-size`).
    pub max_size: u64,
    /// The longest one download may take (`--download-timeout`).
    pub timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_size: DEFAULT_MAX_COMPONENT_SIZE,
            timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }
}

/// Why a download was refused. `what` names it (a URL, or a layer of a
/// reference); nothing of it was kept.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "{what} is larger than --max-component-size ({max_size} bytes){}; it was refused",
        .announced.map(|n| format!(": its server announced {n} bytes")).unwrap_or_else(|| ": the download was cut off there".to_owned())
    )]
    TooLarge {
        what: String,
        max_size: u64,
        announced: Option<u64>,
    },
    #[error("{what} did not finish within {timeout:?} (--download-timeout)")]
    TimedOut { what: String, timeout: Duration },
    #[error("{what} stalled: nothing arrived for {idle:?}")]
    Stalled { what: String, idle: Duration },
    #[error("{what}: {message}")]
    Transfer { what: String, message: String },
    #[error("{what} has digest {actual}, not {expected}; it was not used")]
    Digest {
        what: String,
        actual: String,
        expected: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Receives `stream`, which `what` names and whose server announced
/// `announced` bytes, under `limits`; checks its sha256 is `expected`; if
/// `save_to` is given, keeps a copy there. Returns the bytes that were
/// hashed (see the module docs).
pub async fn receive<S, E>(
    what: &str,
    announced: Option<u64>,
    stream: S,
    expected: &str,
    save_to: Option<&Path>,
    limits: DownloadLimits,
) -> Result<Vec<u8>, DownloadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    if let Some(n) = announced
        && n > limits.max_size
    {
        return Err(DownloadError::TooLarge {
            what: what.to_owned(),
            max_size: limits.max_size,
            announced: Some(n),
        });
    }
    let partial = save_to.map(|path| path.with_extension("partial"));
    let received = tokio::time::timeout(
        limits.timeout,
        receive_unbounded_in_time(
            what,
            stream,
            partial.as_deref(),
            limits.max_size,
            limits.timeout,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(DownloadError::TimedOut {
            what: what.to_owned(),
            timeout: limits.timeout,
        })
    });
    let kept = received.and_then(|(bytes, actual)| {
        if actual == expected {
            Ok(bytes)
        } else {
            Err(DownloadError::Digest {
                what: what.to_owned(),
                actual,
                expected: expected.to_owned(),
            })
        }
    });
    match (&kept, save_to, &partial) {
        (Ok(_), Some(path), Some(partial)) => {
            std::fs::rename(partial, path).map_err(|source| DownloadError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        (Err(_), _, Some(partial)) => {
            let _ = std::fs::remove_file(partial);
        }
        _ => {}
    }
    kept
}

/// The body of [`receive`], without its overall timeout: the bytes and
/// their digest.
async fn receive_unbounded_in_time<S, E>(
    what: &str,
    mut stream: S,
    partial: Option<&Path>,
    max_size: u64,
    timeout: Duration,
) -> Result<(Vec<u8>, String), DownloadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: fmt::Display,
{
    let write_error = |path: &Path, source| DownloadError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = match partial {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| write_error(path, e))?),
        None => None,
    };
    let idle = IDLE_TIMEOUT.min(timeout);
    let mut hasher = Sha256::new();
    let mut bytes = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(DownloadError::Stalled {
                    what: what.to_owned(),
                    idle,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(DownloadError::Transfer {
                    what: what.to_owned(),
                    message: e.to_string(),
                });
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if (bytes.len() + chunk.len()) as u64 > max_size {
            return Err(DownloadError::TooLarge {
                what: what.to_owned(),
                max_size,
                announced: None,
            });
        }
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
        if let (Some(file), Some(path)) = (&mut file, partial) {
            file.write_all(&chunk).map_err(|e| write_error(path, e))?;
        }
    }
    if let (Some(file), Some(path)) = (&mut file, partial) {
        file.sync_all().map_err(|e| write_error(path, e))?;
    }
    Ok((bytes, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// The bytes of a cached file if it holds no more than `max_size` bytes
/// and its sha256 is `expected`; `None` otherwise (then it is downloaded
/// again). The bytes returned are the ones that were hashed, so the file is
/// never opened a second time to be used.
pub fn read_checked(path: &Path, expected: &str, max_size: u64) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > max_size {
        return None;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max_size + 1), &mut bytes).ok()?;
    (bytes.len() as u64 <= max_size && digest(&bytes) == expected).then_some(bytes)
}

/// A `reqwest` response's body as a stream of chunks, for [`receive`].
pub fn body_stream(
    response: reqwest013::Response,
) -> impl Stream<Item = Result<Bytes, reqwest013::Error>> + Unpin {
    Box::pin(futures::stream::unfold(
        response,
        |mut response| async move {
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), response)),
                Ok(None) => None,
                Err(e) => Some((Err(e), response)),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    fn limits(max_size: u64) -> DownloadLimits {
        DownloadLimits {
            max_size,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_hashed_bytes_are_returned_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob.wasm");
        let expected = digest(b"hello world");
        let bytes = receive(
            "x",
            Some(11),
            chunks(vec![b"hello", b" world"]),
            &expected,
            Some(&path),
            limits(11),
        )
        .await
        .unwrap();
        assert_eq!(bytes, b"hello world");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(read_checked(&path, &expected, 11).unwrap(), b"hello world");
        assert_eq!(read_checked(&path, &expected, 10), None);
        assert_eq!(read_checked(&path, &digest(b"other"), 11), None);
    }

    #[tokio::test]
    async fn too_large_is_refused_announced_or_not_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob.wasm");
        let e = receive("big", Some(12), chunks(vec![]), "", Some(&path), limits(11))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains(
                "big is larger than --max-component-size (11 bytes): its server announced 12"
            ),
            "{e}"
        );
        // Unannounced: cut off at the chunk that crosses the cap; the rest
        // of the stream is never polled.
        let rest = futures::stream::once(async { panic!("read past the cap") });
        let stream = chunks(vec![b"0123456789", b"01"]).chain(Box::pin(rest));
        let e = receive("big", None, stream, "", Some(&path), limits(11))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                DownloadError::TooLarge {
                    announced: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn a_wrong_digest_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob.wasm");
        let e = receive(
            "x",
            None,
            chunks(vec![b"abc"]),
            &digest(b"abd"),
            Some(&path),
            limits(10),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("x has digest {}", digest(b"abc"))),
            "{e}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn a_stalled_or_slow_download_times_out() {
        // A server that sends one chunk, then nothing: the idle timeout is
        // the whole timeout's when that is shorter.
        let stalled = chunks(vec![b"abc"]).chain(futures::stream::pending());
        let short = DownloadLimits {
            max_size: 10,
            timeout: Duration::from_millis(300),
        };
        let e = receive("slow", None, stalled, "", None, short)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, DownloadError::Stalled { idle, .. } if *idle == short.timeout),
            "{e}"
        );
        // One that trickles an empty chunk well inside the idle timeout,
        // forever.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, String>(Bytes::from_static(b"")), ()))
        });
        let e = receive("trickle", None, Box::pin(trickle), "", None, short)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("trickle did not finish within 300ms (--download-timeout)"),
            "{e}"
        );
    }
}
