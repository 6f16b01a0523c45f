//! The on-disk compiled-code cache: a second process (here, a second
//! runtime) loads compiled code instead of compiling; a corrupt, truncated
//! or foreign entry is detected, recompiled and never crashes the host; an
//! entry is bound to its component, engine and cache (another plugin's
//! entry under this one's name is never run); the cache is private to its
//! user; the cache stays within its size bound.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wasmplug::reference::GreeterPlugin;
use wasmplug::{runtime::CacheStats, Runtime};
use wasmplug_tests::{guest, guest_bytes, TempDir};

/// The cache directory inside `dir`, created by the cache itself (so its
/// mode is the cache's, whatever the umask made of `dir`).
fn cache_path(dir: &TempDir) -> PathBuf {
    dir.path().join("cache")
}

fn cached_runtime(dir: &TempDir) -> Runtime<GreeterPlugin> {
    Runtime::builder()
        .cache_dir(cache_path(dir))
        .build()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn welcome(rt: &Runtime<GreeterPlugin>) -> String {
    rt.load(guest("hello-v1"))
        .unwrap()
        .instantiate()
        .unwrap()
        .welcome("Gopher")
        .unwrap()
}

fn stats(hits: u64, misses: u64, rejected: u64) -> Option<CacheStats> {
    Some(CacheStats {
        hits,
        misses,
        rejected,
    })
}

#[test]
fn a_second_runtime_loads_compiled_code_from_the_cache() {
    let dir = TempDir::new("cache-hit");
    let first = cached_runtime(&dir);
    assert_eq!(welcome(&first), "Welcome, Gopher!");
    assert_eq!(first.cache_stats(), stats(0, 1, 0));
    let entry = first.cache_entry(&guest_bytes("hello-v1")).unwrap();
    assert!(entry.is_file(), "{} written", entry.display());

    let second = cached_runtime(&dir);
    assert_eq!(welcome(&second), "Welcome, Gopher!");
    assert_eq!(second.cache_stats(), stats(1, 0, 0));
}

#[test]
fn corrupt_truncated_and_foreign_entries_are_recompiled_not_trusted() {
    let dir = TempDir::new("cache-bad");
    let rt = cached_runtime(&dir);
    welcome(&rt);
    let entry = rt.cache_entry(&guest_bytes("hello-v1")).unwrap();
    let good = std::fs::read(&entry).unwrap();

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let truncated = good[..good.len() / 3].to_vec();
    let foreign = b"\x7fELF definitely not a wasmplug cache entry".to_vec();
    // Code compiled by an engine with another configuration, in the same
    // cache (so under the same key), copied over this engine's name.
    let other: Runtime<GreeterPlugin> = Runtime::builder()
        .fuel(true)
        .cache_dir(cache_path(&dir))
        .build()
        .unwrap();
    welcome(&other);
    let other_entry = other.cache_entry(&guest_bytes("hello-v1")).unwrap();
    assert_ne!(other_entry, entry, "another engine, another name");
    let other_config = std::fs::read(other_entry).unwrap();

    for (what, bytes) in [
        ("corrupt", corrupt),
        ("truncated", truncated),
        ("foreign", foreign),
        ("other config", other_config),
    ] {
        std::fs::write(&entry, bytes).unwrap();
        let fresh = cached_runtime(&dir);
        assert_eq!(welcome(&fresh), "Welcome, Gopher!", "{what}");
        assert_eq!(fresh.cache_stats(), stats(0, 0, 1), "{what} entry rejected");
        assert_eq!(
            std::fs::read(&entry).unwrap().len(),
            good.len(),
            "{what}: rewritten"
        );
    }
}

#[test]
fn the_cache_stays_within_its_size_bound() {
    let dir = TempDir::new("cache-bound");
    let one_entry = {
        let rt = cached_runtime(&dir);
        welcome(&rt);
        std::fs::metadata(rt.cache_entry(&guest_bytes("hello-v1")).unwrap())
            .unwrap()
            .len()
    };
    let bound = one_entry * 2 + one_entry / 2; // room for two entries
    let rt: Runtime<GreeterPlugin> = Runtime::builder()
        .cache_dir_bounded(cache_path(&dir), bound)
        .build()
        .unwrap();
    for name in [
        "hello-v2",
        "uses-shared-v1",
        "uses-shared-v2",
        "broken-init-error",
    ] {
        let _ = rt.load(guest(name));
    }
    let total: u64 = std::fs::read_dir(cache_path(&dir))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= bound, "cache holds {total} bytes, bound {bound}");
}

#[test]
fn a_cache_entry_copied_over_another_plugins_entry_is_rejected_and_recompiled() {
    let dir = TempDir::new("cache-swap");
    let rt = cached_runtime(&dir);
    rt.load(guest("hostile")).unwrap();
    welcome(&rt);
    let hello = rt.cache_entry(&guest_bytes("hello-v1")).unwrap();
    let hostile = rt.cache_entry(&guest_bytes("hostile")).unwrap();
    let good = std::fs::read(&hello).unwrap();
    // Another plugin's sound entry, written by this very cache (same key),
    // under hello-v1's name.
    std::fs::copy(&hostile, &hello).unwrap();

    let fresh = cached_runtime(&dir);
    let plugin = fresh.load(guest("hello-v1")).unwrap();
    assert_eq!(
        plugin.label(),
        "hello@1.0.0",
        "hello-v1's code, not hostile's"
    );
    assert_eq!(
        plugin.instantiate().unwrap().welcome("time").unwrap(),
        "Welcome, time!"
    );
    assert_eq!(fresh.cache_stats(), stats(0, 0, 1), "the copy is rejected");
    assert_eq!(
        std::fs::read(&hello).unwrap().len(),
        good.len(),
        "rewritten"
    );
}

#[test]
fn an_entry_written_under_another_cache_key_is_rejected_and_recompiled() {
    // A sound entry for the same component and engine, from another cache
    // (another secret key), under this cache's name for it.
    let ours = TempDir::new("cache-ours");
    let theirs = TempDir::new("cache-theirs");
    let rt = cached_runtime(&ours);
    welcome(&rt);
    welcome(&cached_runtime(&theirs));
    let entry = rt.cache_entry(&guest_bytes("hello-v1")).unwrap();
    let foreign = cache_path(&theirs).join(entry.file_name().unwrap());
    assert!(foreign.is_file(), "same name in the other cache");
    std::fs::copy(&foreign, &entry).unwrap();
    let fresh = cached_runtime(&ours);
    assert_eq!(welcome(&fresh), "Welcome, Gopher!");
    assert_eq!(fresh.cache_stats(), stats(0, 0, 1), "another key's entry");

    // The key replaced (here: removed, so a new one is made): every entry
    // written under the old key is rejected.
    std::fs::remove_file(cache_path(&ours).join("key")).unwrap();
    let rekeyed = cached_runtime(&ours);
    assert_eq!(welcome(&rekeyed), "Welcome, Gopher!");
    assert_eq!(rekeyed.cache_stats(), stats(0, 0, 1), "the old key's entry");
    let again = cached_runtime(&ours);
    welcome(&again);
    assert_eq!(again.cache_stats(), stats(1, 0, 0), "the new entry is good");
}

#[test]
fn the_cache_directory_and_its_files_are_private_to_their_user() {
    let dir = TempDir::new("cache-private");
    let rt: Runtime<GreeterPlugin> = Runtime::builder()
        .cache_dir(dir.path().join("deep").join("cache"))
        .build()
        .unwrap();
    welcome(&rt);
    let cache = dir.path().join("deep").join("cache");
    assert_eq!(mode(&dir.path().join("deep")), 0o700, "created parent");
    assert_eq!(mode(&cache), 0o700, "cache directory");
    let mut names = Vec::new();
    for file in std::fs::read_dir(&cache).unwrap() {
        let path = file.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names.len(),
        2,
        "the key and one entry, no temp files: {names:?}"
    );
    assert_eq!(names[1], "key");
    assert!(names[0].ends_with(".cwasm"), "{names:?}");
    assert_eq!(std::fs::metadata(cache.join("key")).unwrap().len(), 32);
}

#[test]
fn a_cache_directory_other_users_can_write_is_refused() {
    let dir = TempDir::new("cache-shared");
    for shared in [0o777, 0o770, 0o1777] {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(shared)).unwrap();
        let err = Runtime::<GreeterPlugin>::builder()
            .cache_dir(dir.path())
            .build()
            .err()
            .unwrap_or_else(|| panic!("mode {shared:o} accepted"));
        let err = format!("{err:#}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains(&format!("{shared:04o}")), "{err}");
        assert!(err.contains("other users"), "{err}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written into a refused directory"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}
