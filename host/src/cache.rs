//! The on-disk compiled-code cache.
//!
//! Compiling a component is the slow part of loading it: ~20 ms for a 47 KB
//! Rust plugin, seconds for a 12 MB JavaScript one. The cache keeps what
//! `Component::serialize` produced, so the next process loads it with a
//! checksum and a `Component::deserialize_file` instead: wasmtime maps the
//! entry rather than copying it, so a 37 MB JavaScript entry costs a
//! streaming checksum, not a read into fresh memory.
//!
//! * **Key**: the component's SHA-256, plus wasmtime's
//!   `precompile_compatibility_hash` of the engine (wasmtime version,
//!   compiler settings, every `Config` option that affects code). Another
//!   engine configuration simply has other entries.
//! * **Entry**: the payload as `Component::serialize` wrote it (an ELF
//!   object wasmtime maps in place), then a 16-byte footer: `WPC3`, the
//!   payload's length and its CRC-32. An entry whose magic, length or
//!   checksum is wrong (corrupt, truncated, written by something else) is
//!   never deserialized: it is removed, counted in
//!   [`CacheStats::rejected`], and the component is compiled again. wasmtime
//!   additionally refuses a payload built for another version or config.
//!   The footer sits after the object, where wasmtime's loader, which finds
//!   everything through the ELF headers, never looks.
//! * **Writes** go to a temporary file renamed into place, so a crash never
//!   leaves half an entry under a real name.
//! * **Size**: bounded by `max_bytes`; after each write, the least recently
//!   used entries (by modification time, refreshed on every hit) are
//!   evicted until the total fits.

use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
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
const MAGIC: &[u8; 4] = b"WPC3";
/// `MAGIC`, the payload length (u64 LE), the payload's CRC-32 (u32 LE).
const FOOTER: usize = 4 + 8 + 4;

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
        let Ok(file) = std::fs::File::open(&path) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if let Err(why) = verify(file) {
            return self.reject(&path, why);
        }
        // SAFETY: `Component::deserialize_file` trusts the file to hold the
        // output of `Component::serialize`, unchanged while it is mapped.
        // This one does, byte for byte: `verify` just streamed the payload
        // through the CRC-32 this cache computed over exactly those bytes
        // when it wrote them (`store`), so corruption and truncation are
        // ruled out. Entries are only ever replaced whole, by rename, never
        // written in place, so the mapped file cannot change under wasmtime.
        // The file name carries this engine's compatibility hash, and
        // wasmtime checks its own version and config header as well,
        // refusing a foreign one.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                touch(&path);
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
        let mut entry = component.serialize().map_err(anyhow::Error::from)?;
        let (len, sum) = (entry.len() as u64, crc32fast::hash(&entry));
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&sum.to_le_bytes());
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

/// Refresh an entry's age for LRU eviction, at most once a minute: a
/// service loading the same entry in a loop need not write its metadata
/// every time.
fn touch(path: &Path) {
    let now = SystemTime::now();
    let fresh = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age.as_secs() < 60));
    if !fresh {
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(now);
        }
    }
}

/// Check an entry's footer and stream its payload through CRC-32, in
/// chunks: the payload is never held in memory whole.
fn verify(mut file: impl Read + Seek) -> Result<(), &'static str> {
    const NOT_OURS: &str = "not a wasmplug cache entry";
    let size = file.seek(SeekFrom::End(0)).map_err(|_| NOT_OURS)?;
    let payload_len = size.checked_sub(FOOTER as u64).ok_or(NOT_OURS)?;
    let mut footer = [0u8; FOOTER];
    file.seek(SeekFrom::Start(payload_len))
        .and_then(|_| file.read_exact(&mut footer))
        .map_err(|_| NOT_OURS)?;
    let (magic, rest) = footer.split_at(4);
    let (len, sum) = rest.split_at(8);
    if magic != MAGIC {
        return Err(NOT_OURS);
    }
    if u64::from_le_bytes(len.try_into().expect("8 bytes")) != payload_len {
        return Err("length mismatch (truncated or appended to)");
    }
    file.seek(SeekFrom::Start(0)).map_err(|_| NOT_OURS)?;
    let mut crc = crc32fast::Hasher::new();
    let mut chunk = vec![0u8; 256 << 10];
    let mut left = payload_len;
    while left > 0 {
        let n = chunk.len().min(left as usize);
        file.read_exact(&mut chunk[..n])
            .map_err(|_| "unreadable (truncated while reading)")?;
        crc.update(&chunk[..n]);
        left -= n as u64;
    }
    if crc.finalize() != u32::from_le_bytes(sum.try_into().expect("4 bytes")) {
        return Err("checksum mismatch (corrupt)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{verify, MAGIC};
    use std::io::Cursor;

    fn entry(payload: &[u8]) -> Vec<u8> {
        let mut entry = payload.to_vec();
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        entry.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        entry
    }

    #[test]
    fn entries_are_verified_before_use() {
        let check = |bytes: &[u8]| verify(Cursor::new(bytes.to_vec()));
        assert!(check(b"").is_err());
        assert!(check(b"\x7fELF not ours, but long enough to have a footer....").is_err());
        let good = entry(b"payload");
        assert_eq!(check(&good), Ok(()));
        let mut flipped = good.clone();
        flipped[3] ^= 1;
        assert!(check(&flipped).unwrap_err().contains("checksum"));
        assert!(check(&good[3..]).unwrap_err().contains("length"));
        assert!(check(&good[..good.len() - 3]).is_err());
        let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        assert_eq!(check(&entry(&big)), Ok(()), "more than one chunk");
    }
}
