//! Pulled layers kept on disk by digest, so a tag moved back to a version
//! pulled before, or a process restarted, does not download it again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::Digest as _;

/// A directory of blobs named by their sha256 digest
/// (`DIR/sha256/<hex>`). A blob is checked against its name on every read;
/// one that does not match (a disk error, a hand edit) is removed and
/// counts as absent. Writes go to a temporary file renamed into place, so a
/// reader never sees half a blob.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// A cache in `dir` (created when first written to).
    pub fn new(dir: impl Into<PathBuf>) -> LayerCache {
        LayerCache { dir: dir.into() }
    }

    /// The default place: `$XDG_CACHE_HOME/wasmplug/oci` or
    /// `$HOME/.cache/wasmplug/oci`; `None` when neither is set.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("wasmplug").join("oci"))
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.dir.join("sha256").join(hex.to_ascii_lowercase()))
    }

    /// The blob `digest`, if it is cached and intact.
    pub fn get(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) == digest.to_ascii_lowercase() {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Keep `bytes` as the blob `digest` (which they must hash to).
    ///
    /// # Errors
    /// When `bytes` do not hash to `digest`, or the directory cannot be
    /// written.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self
            .path(digest)
            .with_context(|| format!("`{digest}` is not a sha256 digest"))?;
        let actual = sha256_digest(bytes);
        anyhow::ensure!(
            actual == digest.to_ascii_lowercase(),
            "the bytes hash to {actual}, not {digest}"
        );
        let parent = path.parent().expect("a blob path has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the layer cache {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("writing the layer cache {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing the layer cache {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("writing the layer cache {}", path.display()))
    }
}

/// `sha256:` and the hex digest of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wasmplug-layer-cache-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn blobs_are_kept_by_digest_and_checked_on_read() {
        let dir = temp();
        let cache = LayerCache::new(&dir);
        let digest = sha256_digest(b"component");
        assert_eq!(cache.get(&digest), None);
        cache.put(&digest, b"component").unwrap();
        assert_eq!(cache.get(&digest).as_deref(), Some(&b"component"[..]));
        // Not what the name says: refused on write, dropped on read.
        assert!(cache.put(&digest, b"other").is_err());
        std::fs::write(cache.path(&digest).unwrap(), b"rotted").unwrap();
        assert_eq!(cache.get(&digest), None);
        assert!(!cache.path(&digest).unwrap().exists());
        // Names that are not digests never reach the file system.
        assert_eq!(cache.get("sha256:../../etc/passwd"), None);
        assert!(cache.put("md5:00", b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
