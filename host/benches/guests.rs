//! Per guest language: component size, compile time (load with no cache),
//! load time from the on-disk cache, instantiate time (a new Store,
//! instance and `init`) and one call (`welcome("Gopher")`). Loads are timed in a fresh runtime (a process
//! that just started) and in a warm one (a service reloading a version it
//! had unloaded). The figures in guest-plugins/README.md come from
//! here. Rust is the baseline row, measured in the same run; raw
//! wasmtime's compile and deserialize, each in a fresh engine, are the
//! floor a fresh cached load is measured against.
//!
//! Then, per language, instantiation from a pre-initialized snapshot
//! (`Policy::pre_initialize`) beside the plain component and beside raw
//! wasmtime (`raw/mod.rs`, its own `init` on every instance), with the
//! default pool and with `keep_resident`, measured in turn in one run, and
//! what taking the snapshot costs a load.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench guests` after
//! `just guests`). Medians.

mod raw;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::guest;
use wasmplug::policy::PreInit;
use wasmplug::reference::GreeterPlugin;
use wasmplug::wasmtime::component::Component;
use wasmplug::{Plugin, Policy, Runtime};

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
    let mut snapshot_rows = Vec::new();
    let mut rust_instantiate = None;
    // `GUESTS=Go,Python` measures only those (names as in the first column).
    let only = std::env::var("GUESTS").ok();
    for (language, component) in [
        ("Rust", "hello-v1"),
        ("C", "hello-c"),
        ("Go", "hello-go"),
        ("JavaScript", "hello-js"),
        ("Python", "hello-py"),
    ] {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|l| l.eq_ignore_ascii_case(language)))
        {
            continue;
        }
        let path = guest(component);
        let size = std::fs::metadata(&path).unwrap().len();
        let compile = median_of(3, || {
            let rt = Runtime::<GreeterPlugin>::new().unwrap();
            timed(|| drop(rt.load(&path).unwrap()))
        });
        let warm: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(&cache).build().unwrap();
        // Fills the cache. A fresh load varies from one runtime to the next:
        // 21 of them.
        warm.load(&path).unwrap();
        let cached = median_of(21, || {
            let rt: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(&cache).build().unwrap();
            timed(|| drop(rt.load(&path).unwrap()))
        });
        // Raw wasmtime's floor for the same two loads, each in a new engine
        // configured as wasmplug's: compiling, and deserializing what an
        // engine like it serialized (`Component::deserialize_file`, which
        // maps the file, as wasmplug's disk cache does).
        let cwasm = cache.join(format!("{component}.raw.cwasm"));
        let serialized = Component::from_file(&raw::Fresh::new().engine, &path)
            .unwrap()
            .serialize()
            .unwrap();
        std::fs::write(&cwasm, serialized).unwrap();
        let raw_compile = median_of(3, || {
            let fresh = raw::Fresh::new();
            timed(|| fresh.load(Component::from_file(&fresh.engine, &path).unwrap()))
        });
        let raw_cached = median_of(21, || {
            let fresh = raw::Fresh::new();
            // SAFETY: the file was written just above by `serialize` on an
            // engine with the same configuration, and nothing else writes it.
            timed(|| {
                fresh.load(unsafe { Component::deserialize_file(&fresh.engine, &cwasm) }.unwrap())
            })
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
        snapshot_rows.push(snapshot_row(
            language,
            &path,
            &warm,
            &kept,
            &plugin,
            &kept_plugin,
        ));
        let mut instance = plugin.instantiate().unwrap();
        let call = median_of(2001, || timed(|| drop(instance.welcome("Gopher").unwrap())));
        let ratio = match rust_instantiate {
            None => {
                rust_instantiate = Some(instantiate);
                String::new()
            }
            Some(rust) => format!(
                " ({:.1}x Rust)",
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
        println!(
            "{:<12} raw wasmtime, a fresh engine: compile {} / deserialize {} = {:.0}x; \
             wasmplug's cached load / raw's = {:.2}x",
            "",
            ms(raw_compile),
            ms(raw_cached),
            raw_compile.as_secs_f64() / raw_cached.as_secs_f64(),
            cached.as_secs_f64() / raw_cached.as_secs_f64()
        );
    }
    println!("\nkeep_resident(8 MiB): instantiate + init, median of 200");
    for row in kept_rows {
        println!("{row}");
    }
    println!(
        "\npre-initialized snapshot (Policy::pre_initialize): instantiate (+ init for the \
         plain component), median of 200"
    );
    for row in snapshot_rows {
        println!("{row}");
    }
    let _ = std::fs::remove_dir_all(&cache);
}

/// Instantiation from a snapshot of `path` beside the plain `plugin`, in
/// the default runtime `warm` and in `kept` (keep_resident), in turn; and
/// a load that takes the snapshot, in a fresh runtime with no cache.
fn snapshot_row(
    language: &str,
    path: &std::path::Path,
    warm: &Runtime<GreeterPlugin>,
    kept: &Runtime<GreeterPlugin>,
    plugin: &Plugin<GreeterPlugin>,
    kept_plugin: &Plugin<GreeterPlugin>,
) -> String {
    // Rust and C read nothing as they start; the interpreters read clocks
    // or random numbers, which only this consent lets a snapshot freeze.
    let mode = match language {
        "Rust" | "C" => PreInit::Deterministic,
        _ => PreInit::FreezeClocksAndEntropy,
    };
    let policy = Policy::default().pre_initialize(mode);
    let began = Instant::now();
    let taken = Runtime::<GreeterPlugin>::new()
        .unwrap()
        .load_with_policy(path, policy.clone());
    let take = began.elapsed();
    let (snapshot, kept_snapshot) = match (
        taken,
        warm.load_with_policy(path, policy.clone()),
        kept.load_with_policy(path, policy),
    ) {
        (Ok(_), Ok(snapshot), Ok(kept_snapshot)) => (snapshot, kept_snapshot),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return format!("{language:<12} refused: {e:#}")
        }
    };
    let instantiate =
        |p: &Plugin<GreeterPlugin>| median_of(200, || timed(|| drop(p.instantiate().unwrap())));
    let baseline = raw::Raw::new(path);
    let raw = median_of(200, || timed(|| drop(baseline.instantiate())));
    let plain = instantiate(plugin);
    let from_snapshot = instantiate(&snapshot);
    let plain_kept = instantiate(kept_plugin);
    let from_snapshot_kept = instantiate(&kept_snapshot);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    format!(
        "{language:<12} {}: raw wasmtime {}; default {} -> snapshot {} ({:.1}x); kept resident \
         {} -> snapshot {} ({:.1}x); snapshot kept resident vs default {:.1}x; a load taking \
         the snapshot {}",
        mode.name(),
        ms(raw),
        ms(plain),
        ms(from_snapshot),
        ratio(plain, from_snapshot),
        ms(plain_kept),
        ms(from_snapshot_kept),
        ratio(plain_kept, from_snapshot_kept),
        ratio(plain, from_snapshot_kept),
        ms(take),
    )
}
