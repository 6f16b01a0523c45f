//! wasmplug against Extism (crate `extism`), measured in the same run, on
//! the reference greeter's trivial calls:
//!
//! - wasmplug: the Rust hello v1 component (`guest-plugins/dist/hello-v1.wasm`)
//!   through `Runtime::<GreeterPlugin>`, its typed calls.
//! - Extism: the same two functions as an Extism plugin (`guest/`, built
//!   with extism-pdk for `wasm32-unknown-unknown`), through `Plugin::call`.
//!
//! Rows: a trivial call (`count`: no input, a 4-byte number out), a
//! string-in/string-out call (`welcome("Gopher")`), a new instance from
//! already-compiled code (wasmplug `Plugin::instantiate` against Extism
//! `Plugin::new_from_compiled`), and a new instance answering its first
//! `count` (Extism instantiates the module lazily, on the first call).
//! Medians of 15 rounds; the ratio is Extism / wasmplug.
//!
//! Run from the repository root: `just bench-extism`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use extism::{CompiledPlugin, Manifest, PluginBuilder, Wasm};
use wasmplug::reference::GreeterPlugin;

const ROUNDS: usize = 15;

/// The build command for both guests, named when one is missing.
const BUILD: &str = "`just bench-extism` from the repository root builds both";

/// Median time per iteration over ROUNDS rounds of `iters` iterations.
fn per_iter(iters: u32, mut f: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

/// A duration with a unit that suits it.
fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

fn row(what: &str, ours: Duration, extism: Duration, target: &str) {
    let ratio = extism.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{what:<44} wasmplug {:>10}   extism {:>10}   ratio {ratio:>6.1}x   target {target}",
        fmt(ours),
        fmt(extism),
    );
}

/// `path` if it is a file; otherwise fail, naming the command that builds it.
fn require(path: PathBuf, build: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: build it with {build} ({BUILD})",
        path.display()
    );
    path
}

fn main() {
    // Error values capture no backtrace, whatever the caller's environment:
    // Extism builds an error on every call (it asks the Store for its fuel,
    // and fuel is off), and with `RUST_BACKTRACE=1` capturing its backtrace
    // would triple Extism's call cost. Panics still honour RUST_BACKTRACE.
    // Set before anything captures one: std reads it once per process.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");

    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hello = require(
        here.join("../../../guest-plugins/dist/hello-v1.wasm"),
        "`just guests-rust`",
    );
    let extism_guest = require(
        here.join("guest/target/wasm32-unknown-unknown/release/wasmplug_extism_guest.wasm"),
        "`cargo build --release --target wasm32-unknown-unknown \
         --manifest-path host/benches/extism/guest/Cargo.toml \
         --target-dir host/benches/extism/guest/target`",
    );

    // wasmplug: compiled, linked and type-checked once.
    let runtime = wasmplug::Runtime::<GreeterPlugin>::new().unwrap();
    let plugin = runtime.load(&hello).unwrap();
    let mut ours = plugin.instantiate().unwrap();

    // Extism: compiled once (no WASI: the guest doesn't import it; no
    // on-disk cache, so the run touches nothing outside the target dir).
    let compiled = CompiledPlugin::new(
        PluginBuilder::new(Manifest::new([Wasm::file(&extism_guest)]))
            .with_wasi(false)
            .with_cache_disabled(),
    )
    .unwrap();
    let mut theirs = extism::Plugin::new_from_compiled(&compiled).unwrap();

    // Both sides answer the same thing before anything is timed.
    assert_eq!(ours.count().unwrap(), 1);
    assert_eq!(theirs.call::<(), u32>("count", ()).unwrap(), 1);
    assert_eq!(ours.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(
        theirs.call::<&str, String>("welcome", "Gopher").unwrap(),
        "Welcome, Gopher!"
    );

    println!(
        "wasmplug vs Extism {}, Rust guests, medians of {ROUNDS} rounds, \
         RUST_LIB_BACKTRACE=0; ratio = Extism / wasmplug",
        extism::extism_version().trim_end_matches('\0')
    );

    let our_count = per_iter(20_000, || {
        black_box(ours.count().unwrap());
    });
    let their_count = per_iter(20_000, || {
        black_box(theirs.call::<(), u32>("count", ()).unwrap());
    });
    row(
        "trivial call: count()",
        our_count,
        their_count,
        &target(our_count, their_count, 50.0),
    );

    let our_welcome = per_iter(20_000, || {
        black_box(ours.welcome("Gopher").unwrap());
    });
    let their_welcome = per_iter(20_000, || {
        black_box(theirs.call::<&str, String>("welcome", "Gopher").unwrap());
    });
    row(
        "string in, string out: welcome(\"Gopher\")",
        our_welcome,
        their_welcome,
        "—",
    );

    let our_new = per_iter(1_000, || drop(black_box(plugin.instantiate().unwrap())));
    let their_new = per_iter(1_000, || {
        drop(black_box(
            extism::Plugin::new_from_compiled(&compiled).unwrap(),
        ))
    });
    row("new instance from compiled code", our_new, their_new, "—");

    let our_first = per_iter(1_000, || {
        let mut instance = plugin.instantiate().unwrap();
        black_box(instance.count().unwrap());
    });
    let their_first = per_iter(1_000, || {
        let mut instance = extism::Plugin::new_from_compiled(&compiled).unwrap();
        black_box(instance.call::<(), u32>("count", ()).unwrap());
    });
    row(
        "new instance answering its first count()",
        our_first,
        their_first,
        "—",
    );
    println!(
        "(a wasmplug instance is a Store, the instance and its `init` call; an Extism \
         plugin from compiled code is a Store and a Linker, and its module is \
         instantiated on the first call)"
    );
}

/// The target column: `≥ {min}x`, with a mark for met or missed.
fn target(ours: Duration, extism: Duration, min: f64) -> String {
    let met = extism.as_secs_f64() / ours.as_secs_f64() >= min;
    format!("≥ {min}x {}", if met { "✓" } else { "✗" })
}
