//! The on-disk compiled-code cache.
//!
//! Compiling a component is the slow part of loading it: ~20 ms for a 47 KB
//! Rust plugin, seconds for a 12 MB JavaScript one. The cache keeps what
//! `Component::serialize` produced, so the next process loads it with a
//! keyed checksum and a `Component::deserialize_file` instead: wasmtime maps
//! the entry rather than copying it, so a 37 MB JavaScript entry costs a
//! streaming MAC, not a read into fresh memory.
//!
//! * **Key**: the component's SHA-256, plus wasmtime's
//!   `precompile_compatibility_hash` of the engine (wasmtime version,
//!   compiler settings, every `Config` option that affects code). Another
//!   engine configuration simply has other entries.
//! * **Entry**: the payload as `Component::serialize` wrote it (an ELF
//!   object wasmtime maps in place), then a footer: `WPC4`, the SHA-256 and
//!   engine key the entry was stored under, the payload's length, and a
//!   keyed BLAKE3 MAC over the payload and those fields. The footer sits
//!   after the object, where wasmtime's loader, which finds everything
//!   through the ELF headers, never looks.
//! * **Secret**: the MAC key is 32 random bytes in the file `key` of the
//!   cache directory, created once (mode 0600, never overwritten). Only a
//!   process that can read it can write an entry this cache accepts.
//! * **Checked before use**: an entry whose magic, length, hash, engine key
//!   or MAC is wrong (corrupt, truncated, another component's entry copied
//!   over this one's name, written by another cache or by anyone without
//!   the key) is never deserialized: it is removed, counted in
//!   [`CacheStats::rejected`], and the component is compiled again.
//!   wasmtime additionally refuses a payload built for another version or
//!   config.
//! * **Private**: directories are created 0700, entries, temporary files
//!   and the key 0600. A cache directory that other users may write (group
//!   or world writable) or that another user owns is refused when the
//!   runtime is built, as is one this process cannot write.
//! * **Writes** go to a temporary file renamed into place, so a crash never
//!   leaves half an entry under a real name, and an entry is never written
//!   in place (wasmtime maps it).
//! * **Size**: bounded by `max_bytes`; after each write, the least recently
//!   used entries (by modification time, refreshed on every hit) are
//!   evicted until the total fits.
//!
//! Not covered: another process of the same user (or root) can read the key
//! and write the directory, as it can replace the host's own files; and a
//! plugin granted the cache directory (`--dir-rw ~/.cache/wasmplug`) is such
//! a writer. Do not grant it.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Context as _;
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::identity::ContentHash;

// BLAKE3 in keyed mode, not SHA-256 or an HMAC over it: a keyed MAC is what
// binds an entry to this cache, and BLAKE3 streams a JavaScript component's
// 30 MB of compiled code at several GB/s (SHA-256 over it was most of a
// cached load).
const MAGIC: &[u8; 4] = b"WPC4";
/// `MAGIC`, the content hash (32 bytes), the engine key (u64 LE), the
/// payload length (u64 LE): everything the MAC covers besides the payload.
const FIELDS: usize = 4 + 32 + 8 + 8;
/// The fields, then the MAC over payload and fields (32 bytes).
const FOOTER: usize = FIELDS + blake3::OUT_LEN;
/// The file holding the cache's MAC key.
const KEY_FILE: &str = "key";

/// Hits, misses and rejected entries of a [`Runtime`](crate::Runtime)'s
/// on-disk cache since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from the cache.
    pub hits: u64,
    /// Loads that found no entry and compiled.
    pub misses: u64,
    /// Entries found corrupt, truncated, foreign or not written under this
    /// cache's key: removed and recompiled.
    pub rejected: u64,
}

pub(crate) struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    engine_key: u64,
    key: [u8; blake3::KEY_LEN],
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
    /// A failed write has been reported (at WARN) once already.
    store_warned: AtomicBool,
}

impl DiskCache {
    /// Open (creating it 0700 if needed) the cache in `dir`, refusing a
    /// directory other users could write, and read or create its key.
    pub(crate) fn new(dir: PathBuf, max_bytes: u64, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| {
                format!(
                    "creating the compiled-code cache directory {}",
                    dir.display()
                )
            })?;
        check_private(&dir)?;
        let key = secret_key(&dir)?;
        // DefaultHasher::new() has fixed keys: stable for this binary, and
        // the compatibility hash itself covers the wasmtime version.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache {
            dir,
            max_bytes,
            engine_key: hasher.finish(),
            key,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            store_warned: AtomicBool::new(false),
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

    /// The footer fields an entry for `hash` with a payload of `len` bytes
    /// must carry.
    fn fields(&self, hash: &ContentHash, len: u64) -> [u8; FIELDS] {
        let mut fields = [0u8; FIELDS];
        fields[..4].copy_from_slice(MAGIC);
        fields[4..36].copy_from_slice(&hash.0);
        fields[36..44].copy_from_slice(&self.engine_key.to_le_bytes());
        fields[44..].copy_from_slice(&len.to_le_bytes());
        fields
    }

    /// `payload` with its footer: an entry for `hash` in this cache.
    fn seal(&self, hash: &ContentHash, mut payload: Vec<u8>) -> Vec<u8> {
        let fields = self.fields(hash, payload.len() as u64);
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&payload).update(&fields);
        payload.extend_from_slice(&fields);
        payload.extend_from_slice(mac.finalize().as_bytes());
        payload
    }

    /// The cached compiled code for `hash`, if a sound entry exists.
    pub(crate) fn load(&self, engine: &Engine, hash: &ContentHash) -> Option<Component> {
        let path = self.path(hash);
        let Ok(mut file) = File::open(&path) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if let Err(why) = self.verify(&mut file, hash) {
            return self.reject(&path, why);
        }
        let opened = same_file(&file, &path);
        // SAFETY: `Component::deserialize_file` requires the file to hold
        // what `Component::serialize` wrote (for another wasmtime version or
        // config wasmtime returns an error instead), unchanged while mapped.
        // * What it maps is the very file `verify` read: `opened` names the
        //   open `file` (`/proc/self/fd/N`), not whatever `path` holds now.
        //   (Without /proc it is `path`, and the check below that it is
        //   still the same inode leaves only a process of this user renaming
        //   entries twice within microseconds.)
        // * `verify` streamed every byte of it through a BLAKE3 MAC under
        //   this cache's secret key, covering this component's SHA-256 and
        //   this engine's key: so the bytes are exactly what `store`, in a
        //   process holding the key, wrote from `Component::serialize` of
        //   this component for an engine with this compatibility hash. The
        //   key is a 0600 file of this user's, in a directory no other user
        //   may write (`check_private`).
        // * This cache never writes an entry in place: `store` renames a
        //   finished temporary file over it and eviction unlinks it, both of
        //   which leave a mapping intact. Entries are 0600, so only this user
        //   (or root) could modify one in place, as they could the host.
        match unsafe { Component::deserialize_file(engine, &opened) } {
            Ok(component) if opened == path && !same_inode(&file, &path) => {
                drop(component);
                self.reject(&path, "replaced while it was being loaded")
            }
            Ok(component) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                touch(&path);
                Some(component)
            }
            Err(err) => self.reject(&path, format!("wasmtime refused it: {err:#}")),
        }
    }

    fn reject(&self, path: &Path, why: impl std::fmt::Display) -> Option<Component> {
        tracing::warn!(target: "wasmplug::cache", "discarding cache entry {}: {why}", path.display());
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(path);
        None
    }

    /// Check an entry's footer against `hash` and this engine, then stream
    /// its payload and footer through the keyed MAC, in chunks: the payload
    /// is never held in memory whole.
    fn verify(
        &self,
        file: &mut (impl Read + Seek),
        hash: &ContentHash,
    ) -> Result<(), &'static str> {
        const NOT_OURS: &str = "not a wasmplug cache entry";
        let size = file.seek(SeekFrom::End(0)).map_err(|_| NOT_OURS)?;
        let payload_len = size.checked_sub(FOOTER as u64).ok_or(NOT_OURS)?;
        let mut footer = [0u8; FOOTER];
        file.seek(SeekFrom::Start(payload_len))
            .and_then(|_| file.read_exact(&mut footer))
            .map_err(|_| NOT_OURS)?;
        let (fields, mac) = footer.split_at(FIELDS);
        if fields[..4] != MAGIC[..] {
            return Err(NOT_OURS);
        }
        if fields[4..36] != hash.0[..] {
            return Err("stored for another component (copied over this one's name)");
        }
        if fields[36..44] != self.engine_key.to_le_bytes() {
            return Err("stored for another engine configuration");
        }
        if fields[44..] != payload_len.to_le_bytes() {
            return Err("length mismatch (truncated or appended to)");
        }
        file.seek(SeekFrom::Start(0)).map_err(|_| NOT_OURS)?;
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        let mut chunk = vec![0u8; 256 << 10];
        let mut left = payload_len;
        while left > 0 {
            let n = chunk.len().min(left as usize);
            file.read_exact(&mut chunk[..n])
                .map_err(|_| "unreadable (truncated while reading)")?;
            hasher.update(&chunk[..n]);
            left -= n as u64;
        }
        hasher.update(fields);
        let mac: [u8; blake3::OUT_LEN] = mac.try_into().expect("32 bytes");
        // `blake3::Hash` compares in constant time.
        if hasher.finalize() != mac {
            return Err("MAC mismatch (corrupt, or not written by this cache)");
        }
        Ok(())
    }

    /// Write the compiled code for `hash`. Failures are logged (the first
    /// at WARN, later ones at DEBUG), never fatal: the cache is an
    /// optimisation.
    pub(crate) fn store(&self, hash: &ContentHash, component: &Component) {
        if let Err(err) = self.try_store(hash, component) {
            if self.store_warned.swap(true, Ordering::Relaxed) {
                tracing::debug!(target: "wasmplug::cache", "not caching compiled code: {err:#}");
            } else {
                tracing::warn!(target: "wasmplug::cache", "not caching compiled code: {err:#}");
            }
        }
        self.evict();
    }

    fn try_store(&self, hash: &ContentHash, component: &Component) -> anyhow::Result<()> {
        let entry = self.seal(hash, component.serialize().map_err(anyhow::Error::from)?);
        let path = self.path(hash);
        let tmp = temp_name(&path);
        let written = private_file(&tmp)
            .and_then(|mut file| file.write_all(&entry))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("writing {}", path.display()))
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

/// Refuse a cache directory that is not a directory, that another user
/// owns, or that group or others may write: whoever can write it can plant
/// entries (or remove the key and plant a key of their own).
fn check_private(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "reading the compiled-code cache directory {}",
            dir.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    anyhow::ensure!(
        meta.is_dir(),
        "the compiled-code cache {} is not a directory",
        dir.display()
    );
    let me = rustix::process::geteuid().as_raw();
    anyhow::ensure!(
        meta.uid() == me,
        "refusing the compiled-code cache {}: it is owned by uid {}, not this user (uid {me}) \
         (mode {mode:04o}); use a directory of your own",
        dir.display(),
        meta.uid()
    );
    anyhow::ensure!(
        mode & 0o022 == 0,
        "refusing the compiled-code cache {}: mode {mode:04o} lets other users write it; \
         `chmod 700 {}` or use another directory",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// The cache's MAC key: read from `dir/key`, or created there (32 random
/// bytes, 0600) when the cache is new. Creating it is also the check that
/// the directory is writable; an existing key gets a probe file instead.
fn secret_key(dir: &Path) -> anyhow::Result<[u8; blake3::KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Ok(key) => {
            let probe = temp_name(&path);
            private_file(&probe).with_context(|| {
                format!("the compiled-code cache {} is not writable", dir.display())
            })?;
            let _ = std::fs::remove_file(&probe);
            return Ok(key);
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let mut key = [0u8; blake3::KEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("getting random bytes for {}: {e}", path.display()))?;
    // Written whole to a temporary file, then linked to its name: link
    // fails if the name exists (O_EXCL semantics), so of two processes
    // creating a cache at once one key wins and neither reads half a key.
    let tmp = temp_name(&path);
    let linked = private_file(&tmp)
        .and_then(|mut file| file.write_all(&key))
        .and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(&path).with_context(|| format!("reading {}", path.display()))
        }
        Err(err) => Err(err).with_context(|| {
            format!(
                "creating the key of the compiled-code cache {} (is it writable?)",
                dir.display()
            )
        }),
    }
}

/// Read a key file, refusing one another user owns, that others may read or
/// write, or of the wrong size.
fn read_key(path: &Path) -> std::io::Result<[u8; blake3::KEY_LEN]> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let mode = meta.permissions().mode() & 0o7777;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() || meta.uid() != me || mode & 0o077 != 0 || meta.len() != 32 {
        return Err(std::io::Error::other(format!(
            "expected a 32-byte file of uid {me} with mode 0600, found {} bytes of uid {}, \
             mode {mode:04o}; remove it to start a new cache",
            meta.len(),
            meta.uid()
        )));
    }
    let mut key = [0u8; blake3::KEY_LEN];
    file.read_exact(&mut key)?;
    Ok(key)
}

/// Create `path` new, readable and writable by this user only.
fn private_file(path: &Path) -> std::io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A fresh temporary name beside `path`, unique in this process and among
/// processes; `evict` ignores it (it does not end in `.cwasm`).
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// A path that opens the very file `file` is: its `/proc/self/fd` link
/// where there is one (Linux), which follows the open file through renames,
/// otherwise `path` itself.
fn same_file(file: &File, path: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if same_inode(file, &link) {
            return link;
        }
    }
    let _ = file;
    path.to_path_buf()
}

/// Whether `path` is (now) the same file as `file`.
fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
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
        if let Ok(file) = File::options().append(true).open(path) {
            let _ = file.set_modified(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn cache(key: u8, engine_key: u64) -> DiskCache {
        DiskCache {
            dir: PathBuf::new(),
            max_bytes: 0,
            engine_key,
            key: [key; 32],
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            store_warned: AtomicBool::new(false),
        }
    }

    #[test]
    fn entries_are_verified_against_their_key_before_use() {
        let (hash, other_hash) = (ContentHash([1; 32]), ContentHash([2; 32]));
        let ours = cache(7, 42);
        let check = |bytes: &[u8]| ours.verify(&mut Cursor::new(bytes.to_vec()), &hash);
        assert!(check(b"").is_err());
        assert!(check(&[0x7f; FOOTER + 10])
            .unwrap_err()
            .contains("not a wasmplug"));
        let good = ours.seal(&hash, b"payload".to_vec());
        assert_eq!(check(&good), Ok(()));
        let mut flipped = good.clone();
        flipped[3] ^= 1;
        assert!(check(&flipped).unwrap_err().contains("MAC"));
        assert!(check(&good[3..]).unwrap_err().contains("length"));
        assert!(check(&good[..good.len() - 3]).is_err());
        let another_component = ours.seal(&other_hash, b"payload".to_vec());
        assert!(check(&another_component)
            .unwrap_err()
            .contains("another component"));
        let another_engine = cache(7, 43).seal(&hash, b"payload".to_vec());
        assert!(check(&another_engine).unwrap_err().contains("engine"));
        let another_key = cache(8, 42).seal(&hash, b"payload".to_vec());
        assert!(check(&another_key).unwrap_err().contains("MAC"));
        let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        assert_eq!(check(&ours.seal(&hash, big)), Ok(()), "more than one chunk");
    }
}
