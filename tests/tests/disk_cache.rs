//! The on-disk compiled-code cache: a second process (here, a second
//! runtime) loads compiled code instead of compiling; a corrupt, truncated
//! or foreign entry is detected, recompiled and never crashes the host; the
//! cache stays within its size bound.

use wasmplug::reference::GreeterPlugin;
use wasmplug::{CacheStats, Runtime};
use wasmplug_tests::{guest, guest_bytes, TempDir};

fn cached_runtime(dir: &TempDir) -> Runtime<GreeterPlugin> {
    Runtime::builder().cache_dir(dir.path()).build().unwrap()
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
    // Code compiled by an engine with another configuration, under this
    // engine's name: the header is sound, wasmtime must refuse the payload.
    let other_dir = TempDir::new("cache-other");
    let other: Runtime<GreeterPlugin> = Runtime::builder()
        .fuel(true)
        .cache_dir(other_dir.path())
        .build()
        .unwrap();
    welcome(&other);
    let other_config = std::fs::read(other.cache_entry(&guest_bytes("hello-v1")).unwrap()).unwrap();

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
        .cache_dir_bounded(dir.path(), bound)
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
    let total: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= bound, "cache holds {total} bytes, bound {bound}");
}
