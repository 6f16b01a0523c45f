//! The on-disk compiled-code cache.
//!
//! Compiling a component is the slow part of loading it: ~20 ms for a 47 KB
//! Rust plugin, seconds for a 12 MB JavaScript one. The cache keeps what
//! `Component::serialize` produced, so the next process loads it with a
//! checksum and a `Component::deserialize` instead.
//!
//! * **Key**: the component's SHA-256, plus wasmtime's
//!   `precompile_compatibility_hash` of the engine (wasmtime version,
//!   compiler settings, every `Config` option that affects code). Another
//!   engine configuration simply has other entries.
//! * **Entry**: `WPC2` + CRC-32 of the payload + the payload. An entry
//!   whose magic, checksum or length is wrong (corrupt, truncated, written
//!   by something else) is never deserialized: it is removed, counted in
//!   [`CacheStats::rejected`], and the component is compiled again. wasmtime
//!   additionally refuses a payload built for another version or config.
//! * **Writes** go to a temporary file renamed into place, so a crash never
//!   leaves half an entry under a real name.
//! * **Size**: bounded by `max_bytes`; after each write, the least recently
//!   used entries (by modification time, refreshed on every hit) are
//!   evicted until the total fits.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use wasmtime::component::Component;
use wasmtime::Engine;

use crate::ContentHash;

// CRC-32, not a cryptographic hash: it guards against corruption and
// truncation, at memory speed (SHA-256 over a JavaScript component's 30 MB
// of compiled code was most of a cached load). Whoever can write the cache
// directory can already replace the host's files; the cache does not
// defend against that.
const MAGIC: &[u8; 4] = b"WPC2";
const HEADER: usize = 4 + 4;

/// Hits, misses and rejected entries of a [`Runtime`](crate::Runtime)'s
/// on-disk cache since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from the cache.
    pub hits: u64,
    /// Loads that found no entry and compiled.
    pub misses: u64,
    /// Entries found corrupt, truncated or foreign: removed and recompiled.
    pub rejected: u64,
}

pub(crate) struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    engine_key: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
}

impl DiskCache {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("creating the compiled-code cache {}: {e}", dir.display())
        })?;
        // DefaultHasher::new() has fixed keys: stable for this binary, and
        // the compatibility hash itself covers the wasmtime version.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache {
            dir,
            max_bytes,
            engine_key: hasher.finish(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Where the entry for `hash` lives.
    pub(crate) fn path(&self, hash: &ContentHash) -> PathBuf {
        self.dir
            .join(format!("{hash}-{:016x}.cwasm", self.engine_key))
    }

    /// The cached compiled code for `hash`, if a sound entry exists.
    pub(crate) fn load(&self, engine: &Engine, hash: &ContentHash) -> Option<Component> {
        let path = self.path(hash);
        let Ok(bytes) = std::fs::read(&path) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let payload = match verify(&bytes) {
            Ok(payload) => payload,
            Err(why) => return self.reject(&path, why),
        };
        // SAFETY: `Component::deserialize` trusts its input to be the output
        // of `Component::serialize`. This payload is, byte for byte: the
        // entry's CRC-32 was computed over exactly these bytes when this
        // cache wrote them (`store`), and `verify` just recomputed and
        // compared it, so corruption and truncation are ruled out. The file
        // name carries this engine's compatibility hash, and wasmtime checks
        // its own version and config header as well, refusing a foreign one.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(component) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Refresh the entry's age for LRU eviction.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(err) => self.reject(&path, format!("wasmtime refused it: {err}")),
        }
    }

    fn reject(&self, path: &Path, why: impl std::fmt::Display) -> Option<Component> {
        tracing::warn!(target: "wasmplug::cache", "discarding cache entry {}: {why}", path.display());
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(path);
        None
    }

    /// Write the compiled code for `hash`. Failures are logged, never
    /// fatal: the cache is an optimisation.
    pub(crate) fn store(&self, hash: &ContentHash, component: &Component) {
        if let Err(err) = self.try_store(hash, component) {
            tracing::warn!(target: "wasmplug::cache", "not caching compiled code: {err:#}");
        }
        self.evict();
    }

    fn try_store(&self, hash: &ContentHash, component: &Component) -> anyhow::Result<()> {
        let payload = component.serialize().map_err(anyhow::Error::from)?;
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        entry.extend_from_slice(&payload);
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &entry)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Remove least recently used entries until the total fits `max_bytes`.
    fn evict(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// The payload of a cache entry, if its magic and checksum are right.
fn verify(entry: &[u8]) -> Result<&[u8], &'static str> {
    if entry.len() < HEADER || &entry[..4] != MAGIC {
        return Err("not a wasmplug cache entry");
    }
    let (sum, payload) = entry[4..].split_at(4);
    if crc32fast::hash(payload).to_le_bytes() != sum {
        return Err("checksum mismatch (corrupt or truncated)");
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::verify;

    #[test]
    fn entries_are_verified_before_use() {
        assert!(verify(b"").is_err());
        assert!(verify(b"ELF\0 not ours, but long enough to have a header....").is_err());
        let mut entry = b"WPC2".to_vec();
        entry.extend_from_slice(&crc32fast::hash(b"payload").to_le_bytes());
        entry.extend_from_slice(b"payload");
        assert_eq!(verify(&entry).unwrap(), b"payload");
        let last = entry.len() - 1;
        entry[last] ^= 1;
        assert!(verify(&entry).is_err());
        assert!(verify(&entry[..entry.len() - 3]).is_err());
    }
}
