//! The compiled-code cache: each component's machine code in a file of its
//! own, mapped into memory rather than read into it.
//!
//! wasmtime's own cache stores compiled code zstd-compressed, so loading it
//! reads the file, decompresses it into a buffer and copies that into
//! anonymous memory: 35 MB of resident memory for the Python orders
//! processor, and twice that for a moment while it loads. This cache stores
//! what [`wasmtime::Engine::precompile_component`] makes, uncompressed, and
//! loads it with [`Component::deserialize_file`], which maps the file:
//!
//! - only the pages of code and data a guest uses become resident, and they
//!   are the kernel's page cache, shared between host-bridge processes and
//!   given back under memory pressure;
//! - linear memories are initialised copy-on-write from the same file,
//!   instead of from a copy of the data segments in a memfd.
//!
//! A file is named after the SHA-256 of wasmtime's compatibility hash (its
//! version and every compiler and runtime setting) and the component's
//! bytes, so a changed component or a changed engine is a miss, never a
//! stale hit. A file is written under a temporary name and renamed into
//! place, and never written again: wasmtime requires that a mapped file is
//! not modified. Unlinking one (eviction, or another host-bridge evicting
//! it) leaves the mapping valid.
//!
//! wasmtime runs what it maps from here, so the directory must be the
//! user's own ([`super::cache_dir`]); files are created `0600`.

use sha2::{Digest as _, Sha256};
use std::hash::Hash as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::error::Context as _;

/// Past this total size, the least recently used files are removed (the
/// default total of wasmtime's own cache).
const SIZE_LIMIT: u64 = 1 << 30;

/// A temporary file this old was left by a writer that died.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

const EXTENSION: &str = "cwasm";

/// The compiled-code cache in one private directory.
#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: PathBuf,
    size_limit: u64,
}

/// Where a loaded component's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Mapped from a file already in the cache.
    Hit,
    /// Compiled now, written to the cache and mapped from it.
    Compiled,
    /// Compiled now but not cached (the file could not be written); the
    /// code is in anonymous memory.
    CompiledUncached,
}

impl CompiledCache {
    /// The cache in `dir`, created `0700` if missing and refused if it is
    /// not the user's own (see [`super::cache_dir::create_private`]).
    pub fn open(dir: &Path) -> wasmtime::Result<CompiledCache> {
        super::cache_dir::create_private(dir)?;
        Ok(CompiledCache {
            dir: dir.to_owned(),
            size_limit: SIZE_LIMIT,
        })
    }

    /// The component compiled from `bytes` for `engine`: mapped from the
    /// cache, or compiled by `compiler`, stored and mapped. `what` names it
    /// in errors.
    pub fn load(
        &self,
        engine: &wasmtime::Engine,
        compiler: &Compiler,
        bytes: &[u8],
        what: &str,
    ) -> wasmtime::Result<(Component, Source)> {
        let path = self.path_of(engine, bytes);
        if let Some(component) = self.map(engine, &path) {
            return Ok((component, Source::Hit));
        }
        // Another load of the same bytes may have stored it while this one
        // waited for its turn to compile.
        let serialized = match compiler.compile(bytes, || self.map(engine, &path))? {
            Ok(component) => return Ok((component, Source::Hit)),
            Err(serialized) => serialized,
        };
        match self.store(&path, &serialized) {
            Ok(()) => {
                drop(serialized);
                // SAFETY: as in `map`; the file was just written whole and
                // renamed into place.
                let component = unsafe { Component::deserialize_file(engine, &path) }
                    .with_context(|| {
                        format!("{what}: cannot map its compiled code {}", path.display())
                    })?;
                self.prune(&path);
                Ok((component, Source::Compiled))
            }
            Err(e) => {
                tracing::warn!(
                    "{what}: cannot cache its compiled code in {}: {e:#}; it stays in memory",
                    self.dir.display()
                );
                // SAFETY: `compiler` made `serialized` just now, with an
                // engine configured like `engine`.
                let component = unsafe { Component::deserialize(engine, &serialized) }?;
                Ok((component, Source::CompiledUncached))
            }
        }
    }

    /// `<dir>/<sha256 of the engine's compatibility hash and the bytes>.cwasm`.
    fn path_of(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut sha = hasher.0;
        sha.update(b"component\0");
        sha.update(bytes);
        self.dir
            .join(format!("{}.{EXTENSION}", hex::encode(sha.finalize())))
    }

    /// The component mapped from `path`, or `None` if there is none there
    /// or it cannot be used (then it is removed, to be compiled again).
    fn map(&self, engine: &wasmtime::Engine, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: wasmtime trusts the machine code in the file. Only this
        // user can write to the directory (checked in `open`), only
        // `store` writes files in it, whole, under a temporary name then
        // renamed, and nothing writes to a file once it is in place, so
        // the file is wasmtime's own output and is not modified while
        // mapped. wasmtime checks that it was made by a compatible engine.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => {
                // The time of last use, for `prune`.
                if let Ok(file) = std::fs::File::open(path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot use the cached compiled code {}: {e:#}; compiling again",
                    path.display()
                );
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Writes `serialized` to `path`: to a temporary file `0600` first,
    /// then renamed, so that a reader finds the whole file or none.
    fn store(&self, path: &Path, serialized: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = self
            .dir
            .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temporary).and_then(|mut file| {
            file.write_all(serialized)?;
            file.sync_all()
        });
        let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        renamed
    }

    /// Removes the least recently used files while the cache holds more
    /// than its size limit (never `keep`, just written), and temporary
    /// files a writer left behind.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            let modified = metadata.modified().unwrap_or(now);
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMPORARY {
                    let _ = std::fs::remove_file(&path);
                }
            } else if path.extension().is_some_and(|e| e == EXTENSION) {
                files.push((modified, metadata.len(), path));
            }
        }
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.size_limit {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Compiles components one at a time, each with an engine of its own that
/// is dropped afterwards.
///
/// Cranelift needs hundreds of megabytes to compile a runtime such as
/// Python's or JavaScript's (a 12–18 MB component), and an engine keeps its
/// compiler's working buffers, sized for the largest function it compiled,
/// for as long as it lives: about 100 MB after the JavaScript orders app.
/// Compiling with a throwaway engine configured like the one that runs the
/// code frees them; one at a time, the peak is the largest component's, not
/// the sum of all of them (wasmtime already compiles a component's
/// functions on every core).
pub struct Compiler {
    config: wasmtime::Config,
    lock: std::sync::Mutex<()>,
}

impl Compiler {
    /// A compiler for engines made from `config` (whose allocation strategy
    /// it does not need).
    pub fn new(config: &wasmtime::Config) -> Compiler {
        let mut config = config.clone();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
        Compiler {
            config,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// `bytes` compiled and serialized, as
    /// [`wasmtime::Engine::precompile_component`] makes them, unless
    /// `instead`, asked once this compilation's turn comes, gives what to
    /// use without compiling.
    pub fn compile<T>(
        &self,
        bytes: &[u8],
        instead: impl FnOnce() -> Option<T>,
    ) -> wasmtime::Result<Result<T, Vec<u8>>> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = instead() {
            return Ok(Ok(found));
        }
        let serialized = {
            let _trimming = TrimWhileCompiling::start();
            let engine = wasmtime::Engine::new(&self.config)?;
            engine.precompile_component(bytes)
        };
        release_freed_memory();
        Ok(Err(serialized?))
    }
}

/// While it lives, glibc gives the free memory at the top of each of its
/// arenas back to the system as soon as there is more than 1 MiB of it.
///
/// Cranelift's allocations are spread over the arenas of the threads that
/// compile (wasmtime's workers), and by default glibc returns the free top
/// of a thread's arena only past a threshold that grows to 64 MiB, which
/// `malloc_trim` does not lower: after the JavaScript orders app compiled,
/// 60 MB stayed resident with nothing allocated in it. Setting the
/// thresholds fixes them for the rest of the process (glibc stops adapting
/// them), at what its adaptation reaches anyway after the first large
/// allocation is freed: 32 MiB for `mmap`, twice that for trimming.
struct TrimWhileCompiling;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl TrimWhileCompiling {
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;

    fn start() -> TrimWhileCompiling {
        // SAFETY: mallopt only changes the allocator's thresholds.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, Self::MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
        }
        TrimWhileCompiling
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
impl Drop for TrimWhileCompiling {
    fn drop(&mut self) {
        // SAFETY: as in `start`.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * Self::MMAP_THRESHOLD);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
impl TrimWhileCompiling {
    fn start() -> TrimWhileCompiling {
        TrimWhileCompiling
    }
}

/// Gives the memory the compiler freed and glibc kept, in free blocks
/// between live ones, back to the system.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Feeds what a `Hash` writes into SHA-256, so that the key does not depend
/// on the standard library's hasher.
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (wasmtime::Engine, Compiler) {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let compiler = Compiler::new(&config);
        (wasmtime::Engine::new(&config).unwrap(), compiler)
    }

    /// A component with a linear memory and data in it, as text.
    fn component(data: &str) -> Vec<u8> {
        format!(
            r#"(component (core module (memory 1) (data (i32.const 0) "{data}")) (core instance (instantiate 0)))"#
        )
        .into_bytes()
    }

    fn cached(dir: &Path) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().permissions().mode() & 0o777,
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn compiled_once_then_mapped_from_a_private_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("compiled");
        let cache = CompiledCache::open(&dir).unwrap();
        let (engine, compiler) = engine();
        let bytes = component("one");
        let (_, source) = cache.load(&engine, &compiler, &bytes, "one").unwrap();
        assert_eq!(source, Source::Compiled);
        let files = cached(&dir);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].0.ends_with(".cwasm") && files[0].1 == 0o600,
            "{files:?}"
        );

        let (mapped, source) = cache.load(&engine, &compiler, &bytes, "one").unwrap();
        assert_eq!(source, Source::Hit);
        // The mapped component instantiates.
        let mut store = wasmtime::Store::new(&engine, ());
        wasmtime::component::Linker::new(&engine)
            .instantiate(&mut store, &mapped)
            .unwrap();

        // Other bytes, or another engine configuration, are another file.
        let (_, source) = cache
            .load(&engine, &compiler, &component("two"), "two")
            .unwrap();
        assert_eq!(source, Source::Compiled);
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let other = wasmtime::Engine::new(&config).unwrap();
        let (_, source) = cache
            .load(&other, &Compiler::new(&config), &bytes, "one")
            .unwrap();
        assert_eq!(source, Source::Compiled);
        assert_eq!(cached(&dir).len(), 3);
    }

    #[test]
    fn a_damaged_file_is_compiled_again() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(root.path()).unwrap();
        let (engine, compiler) = engine();
        let bytes = component("one");
        cache.load(&engine, &compiler, &bytes, "one").unwrap();
        let (name, _) = cached(root.path()).remove(0);
        let path = root.path().join(name);
        std::fs::write(&path, b"not an ELF file").unwrap();
        let (_, source) = cache.load(&engine, &compiler, &bytes, "one").unwrap();
        assert_eq!(source, Source::Compiled);
        assert!(std::fs::metadata(&path).unwrap().len() > 100);
        let (_, source) = cache.load(&engine, &compiler, &bytes, "one").unwrap();
        assert_eq!(source, Source::Hit);
    }

    #[test]
    fn the_least_recently_used_files_go_past_the_size_limit() {
        let root = tempfile::tempdir().unwrap();
        let mut cache = CompiledCache::open(root.path()).unwrap();
        let (engine, compiler) = engine();
        let (a, b, c) = (component("a"), component("b"), component("c"));
        cache.load(&engine, &compiler, &a, "a").unwrap();
        let size = std::fs::metadata(cache.path_of(&engine, &a)).unwrap().len();
        // Room for two files.
        cache.size_limit = 2 * size + size / 2;
        cache.load(&engine, &compiler, &b, "b").unwrap();
        // `a` was used after `b`: `b` is the least recently used.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            cache.load(&engine, &compiler, &a, "a").unwrap().1,
            Source::Hit
        );
        // A temporary file a dead writer left, an hour old.
        let stale = root.path().join(".x.cwasm.1.0.tmp");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMPORARY)
            .unwrap();
        cache.load(&engine, &compiler, &c, "c").unwrap();
        assert!(cache.path_of(&engine, &a).exists());
        assert!(!cache.path_of(&engine, &b).exists());
        assert!(cache.path_of(&engine, &c).exists());
        assert!(!stale.exists());
    }
}
