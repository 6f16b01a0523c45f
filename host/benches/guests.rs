//! Per guest language: component size, compile time (load with no cache),
//! load time from the on-disk cache, and instantiate time (a new Store,
//! instance and `init`). Loads are timed in a fresh runtime (a process
//! that just started) and in a warm one (a service reloading a version it
//! had unloaded). The figures in guest-plugins/README.md come from
//! here. Rust is the baseline row, measured in the same run.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench guests` after
//! `just guests`). Medians.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::guest;
use wasmplug::reference::GreeterPlugin;
use wasmplug::Runtime;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cache = std::env::temp_dir().join(format!("wasmplug-bench-guests-{}", std::process::id()));
    println!(
        "{:<12} {:>12} {:>14} {:>14} {:>14}",
        "language", "size", "compile", "cached load", "instantiate"
    );
    let mut rust_instantiate = None;
    for (language, component) in [
        ("Rust", "hello-v1"),
        ("C", "hello-c"),
        ("JavaScript", "hello-js"),
        ("Python", "hello-py"),
    ] {
        let path = guest(component);
        let size = std::fs::metadata(&path).unwrap().len();
        let compile = median(
            (0..3)
                .map(|_| {
                    let rt = Runtime::<GreeterPlugin>::new().unwrap();
                    let start = Instant::now();
                    rt.load(&path).unwrap();
                    start.elapsed()
                })
                .collect(),
        );
        let warm: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(&cache).build().unwrap();
        warm.load(&path).unwrap(); // fills the cache
        let cached = median(
            (0..5)
                .map(|_| {
                    let rt: Runtime<GreeterPlugin> =
                        Runtime::builder().cache_dir(&cache).build().unwrap();
                    let start = Instant::now();
                    rt.load(&path).unwrap();
                    start.elapsed()
                })
                .collect(),
        );
        // The same two loads in a runtime that has loaded before (a service
        // reloading a version it had unloaded): the engine's pools and
        // caches are warm. Dropping the plugin frees its compiled code, so
        // each load compiles, or reads the cache, again.
        let uncached_warm = Runtime::<GreeterPlugin>::new().unwrap();
        drop(uncached_warm.load(&path).unwrap());
        let compile_warm = median(
            (0..3)
                .map(|_| {
                    let start = Instant::now();
                    drop(uncached_warm.load(&path).unwrap());
                    start.elapsed()
                })
                .collect(),
        );
        let cached_warm = median(
            (0..21)
                .map(|_| {
                    let start = Instant::now();
                    drop(warm.load(&path).unwrap());
                    start.elapsed()
                })
                .collect(),
        );
        let plugin = warm.load(&path).unwrap();
        let instantiate = median(
            (0..200)
                .map(|_| {
                    let start = Instant::now();
                    drop(plugin.instantiate().unwrap());
                    start.elapsed()
                })
                .collect(),
        );
        let ratio = match rust_instantiate {
            None => {
                rust_instantiate = Some(instantiate);
                String::new()
            }
            Some(rust) => format!(
                " ({:.0}x Rust)",
                instantiate.as_secs_f64() / rust.as_secs_f64()
            ),
        };
        println!(
            "{language:<12} {:>9} KB {:>14} {:>14} {:>14}{ratio}",
            size / 1000,
            ms(compile),
            ms(cached),
            ms(instantiate)
        );
        println!(
            "{:<12} compile / cached load = {:.0}x in a fresh runtime; in a warm one {} / {} = {:.0}x",
            "",
            compile.as_secs_f64() / cached.as_secs_f64(),
            ms(compile_warm),
            ms(cached_warm),
            compile_warm.as_secs_f64() / cached_warm.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
}
