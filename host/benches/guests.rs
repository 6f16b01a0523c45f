//! Per guest language: component size, compile time (load with no cache),
//! load time from the on-disk cache, instantiate time (a new Store,
//! instance and `init`) and one call (`welcome("Gopher")`). Loads are timed in a fresh runtime (a process
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

/// The median of `runs` samples, each timed by `sample` itself (so setup
/// can stay outside the timing).
fn median_of(runs: usize, mut sample: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..runs).map(|_| sample()).collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cache = std::env::temp_dir().join(format!("wasmplug-bench-guests-{}", std::process::id()));
    println!(
        "{:<12} {:>12} {:>14} {:>14} {:>14} {:>14}",
        "language", "size", "compile", "cached load", "instantiate", "call"
    );
    let mut kept_rows = Vec::new();
    let mut rust_instantiate = None;
    for (language, component) in [
        ("Rust", "hello-v1"),
        ("C", "hello-c"),
        ("Go", "hello-go"),
        ("JavaScript", "hello-js"),
        ("Python", "hello-py"),
    ] {
        let path = guest(component);
        let size = std::fs::metadata(&path).unwrap().len();
        let compile = median_of(3, || {
            let rt = Runtime::<GreeterPlugin>::new().unwrap();
            timed(|| drop(rt.load(&path).unwrap()))
        });
        let warm: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(&cache).build().unwrap();
        warm.load(&path).unwrap(); // fills the cache
        let cached = median_of(5, || {
            let rt: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(&cache).build().unwrap();
            timed(|| drop(rt.load(&path).unwrap()))
        });
        // The same two loads in a runtime that has loaded before (a service
        // reloading a version it had unloaded): the engine's pools and
        // caches are warm. Dropping the plugin frees its compiled code, so
        // each load compiles, or reads the cache, again.
        let uncached_warm = Runtime::<GreeterPlugin>::new().unwrap();
        drop(uncached_warm.load(&path).unwrap());
        let compile_warm = median_of(3, || timed(|| drop(uncached_warm.load(&path).unwrap())));
        let cached_warm = median_of(21, || timed(|| drop(warm.load(&path).unwrap())));
        let plugin = warm.load(&path).unwrap();
        let instantiate = median_of(200, || timed(|| drop(plugin.instantiate().unwrap())));
        // The same, in a runtime that keeps dropped instances' pages resident
        // (`RuntimeBuilder::keep_resident`), measured in turn with the above.
        let kept: Runtime<GreeterPlugin> = Runtime::builder()
            .cache_dir(&cache)
            .keep_resident(8 << 20)
            .build()
            .unwrap();
        let kept_plugin = kept.load(&path).unwrap();
        let instantiate_kept =
            median_of(200, || timed(|| drop(kept_plugin.instantiate().unwrap())));
        let instantiate_again = median_of(200, || timed(|| drop(plugin.instantiate().unwrap())));
        kept_rows.push(format!(
            "{language:<12} default {} and {} (before and after) -> kept resident {}: {:.1}x faster",
            ms(instantiate),
            ms(instantiate_again),
            ms(instantiate_kept),
            (instantiate + instantiate_again).as_secs_f64() / 2.0 / instantiate_kept.as_secs_f64()
        ));
        let mut instance = plugin.instantiate().unwrap();
        let call = median_of(2001, || timed(|| drop(instance.welcome("Gopher").unwrap())));
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
            "{language:<12} {:>9} KB {:>14} {:>14} {:>14} {:>14}{ratio}",
            size / 1000,
            ms(compile),
            ms(cached),
            ms(instantiate),
            format!("{:.2} µs", call.as_secs_f64() * 1e6)
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
    println!("\nkeep_resident(8 MiB): instantiate + init, median of 200");
    for row in kept_rows {
        println!("{row}");
    }
    let _ = std::fs::remove_dir_all(&cache);
}
