//! wasmplug's own cost over raw wasmtime, measured in the same run: the
//! same engine configuration (component model, concurrency off, pooling
//! allocator, epoch interruption), the same component (Rust hello v1), and
//! the code a user would write with wasmtime directly (its own `bindgen!`,
//! its own Store and WASI context) as the baseline.
//!
//! Timed with criterion: a typed call with no arguments (`count`), a
//! record-in/string-out call (`hello(user)`), and instantiation (new Store +
//! instance + `init`), each as a `wasmplug` and a `raw` function of one
//! group. After criterion's own report, the ratios wasmplug / raw of the
//! medians it measured are printed (and `Handle::call` through a registry
//! against the same call on an `Instance`), then what criterion does not time:
//! memory per idle instance, and calls per second on 1 and 2 threads, with an
//! instance per thread and through a `Registry` with a pool of 2.
//!
//! The `versions-*` groups put a call through a versioned world
//! (`reference::versions::Greeter`, serving 1.1 and 1.0) beside the same
//! call through the world's own `bindgen!` bindings, on the same 1.0
//! component.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench overhead`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;

use support::guest;
use wasmplug::reference::versions::{Greeter as Versioned, User as VUser};
use wasmplug::reference::{GreeterPlugin as Wp, User as WpUser};

mod raw;

/// Where criterion writes its estimates, so the ratios can be read back.
fn criterion_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion")
}

/// The median criterion measured for `group/function`, in nanoseconds.
fn median_ns(group: &str, function: &str) -> f64 {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("criterion wrote no {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["median"]["point_estimate"]
        .as_f64()
        .expect("a median in criterion's estimates")
}

fn main() {
    let path = guest("hello-v1");

    // Raw wasmtime, configured like wasmplug's runtime.
    let raw = raw::Raw::new(&path);
    let raw_instance = || raw.instantiate();

    // wasmplug.
    let runtime = wasmplug::Runtime::<Wp>::new().unwrap();
    let plugin = runtime.load(&path).unwrap();

    let (mut store, bindings) = raw_instance();
    let mut ours = plugin.instantiate().unwrap();
    let user = WpUser {
        name: "Gopher".into(),
        age: 13,
    };
    let raw_user = raw::wasmplug::plugin::types::User {
        name: "Gopher".into(),
        age: 13,
    };

    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .configure_from_args();
    {
        let mut group = c.benchmark_group("count");
        group.bench_function("raw", |b| {
            b.iter(|| {
                bindings
                    .wasmplug_plugin_greeter()
                    .call_count(&mut store)
                    .unwrap()
            })
        });
        group.bench_function("wasmplug", |b| b.iter(|| ours.count().unwrap()));
        // The registry's path: resolve the current version, check its one
        // instance out of the pool, call, give it back.
        let registry = wasmplug::Registry::new();
        registry.activate(plugin.clone()).unwrap();
        let handle = registry.get("hello").unwrap();
        group.bench_function("handle", |b| b.iter(|| handle.call(|i| i.count()).unwrap()));
        group.finish();
    }
    {
        let mut group = c.benchmark_group("hello");
        group.bench_function("raw", |b| {
            b.iter(|| {
                bindings
                    .wasmplug_plugin_greeter()
                    .call_hello(&mut store, &raw_user)
                    .unwrap()
            })
        });
        group.bench_function("wasmplug", |b| b.iter(|| ours.hello(&user).unwrap()));
        group.finish();
    }
    {
        let mut group = c.benchmark_group("instantiate");
        group.bench_function("raw", |b| b.iter(|| drop(black_box(raw_instance()))));
        group.bench_function("wasmplug", |b| {
            b.iter(|| drop(black_box(plugin.instantiate().unwrap())))
        });
        group.finish();
    }
    {
        // A versioned world against the world's own `bindgen!` bindings, on
        // the same component bytes (hello 1.0): what serving several world
        // versions costs a call.
        let versioned = wasmplug::Runtime::<Versioned>::new().unwrap();
        let mut v = versioned.load(&path).unwrap().instantiate().unwrap();
        let v_user = VUser {
            name: "Gopher".into(),
            age: 13,
        };
        let mut group = c.benchmark_group("versions-count");
        group.bench_function("direct", |b| {
            b.iter(|| {
                ours.call(|p, s| p.wasmplug_plugin_greeter().call_count(s))
                    .unwrap()
            })
        });
        group.bench_function("versioned", |b| {
            b.iter(|| v.call(|p, s| p.greeter().count(s)).unwrap())
        });
        group.finish();
        let mut group = c.benchmark_group("versions-hello");
        group.bench_function("direct", |b| {
            b.iter(|| {
                ours.call(|p, s| p.wasmplug_plugin_greeter().call_hello(s, &user))
                    .unwrap()
            })
        });
        group.bench_function("versioned", |b| {
            b.iter(|| v.call(|p, s| p.greeter().hello(s, &v_user)).unwrap())
        });
        group.finish();
    }
    c.final_summary();

    println!();
    println!(
        "wasmplug vs raw wasmtime, Rust hello v1, same engine configuration (criterion medians)"
    );
    for (group, what, target) in [
        ("count", "typed call, no arguments: count()", 1.2),
        ("hello", "record in, string out: hello(user)", 1.2),
        ("instantiate", "instantiate: Store + instance + init", 1.2),
    ] {
        let (ours, raw) = (median_ns(group, "wasmplug"), median_ns(group, "raw"));
        let ratio = ours / raw;
        let verdict = if ratio <= target { "met" } else { "MISSED" };
        println!(
            "{what:<40} wasmplug {ours:>9.1} ns   raw {raw:>9.1} ns   ratio {ratio:.2}x   (target <= {target}x: {verdict})"
        );
    }

    for (group, what) in [
        ("versions-count", "versioned world vs bindgen!: count()"),
        ("versions-hello", "versioned world vs bindgen!: hello(user)"),
    ] {
        let (versioned, direct) = (median_ns(group, "versioned"), median_ns(group, "direct"));
        let ratio = versioned / direct;
        let verdict = if ratio <= 1.1 { "met" } else { "MISSED" };
        println!(
            "{what:<40} versioned {versioned:>8.1} ns   direct {direct:>9.1} ns   ratio {ratio:.2}x   (target <= 1.1x: {verdict})"
        );
    }

    let (handle, instance) = (median_ns("count", "handle"), median_ns("count", "wasmplug"));
    let ratio = handle / instance;
    let verdict = if ratio <= 1.1 { "met" } else { "MISSED" };
    println!(
        "{:<40} handle   {handle:>9.1} ns   instance {instance:>5.1} ns   ratio {ratio:.2}x   (target <= 1.1x: {verdict})",
        "Handle::call vs Instance call: count()"
    );

    // Memory per live, idle instance: RSS before and after holding 500.
    let before = rss_kib();
    let held: Vec<_> = (0..500).map(|_| plugin.instantiate().unwrap()).collect();
    let after = rss_kib();
    println!(
        "memory per live idle instance (500 held): {:.1} KiB   (aim <= 100 KiB)",
        (after.saturating_sub(before)) as f64 / held.len() as f64
    );
    drop(held);

    // Throughput on 2 cores: each thread calls in a loop for a window.
    let window = Duration::from_millis(500);
    let calls_per_sec = |threads: usize, call: &(dyn Fn() -> Box<dyn FnMut() + Send> + Sync)| {
        let median_of = (0..5)
            .map(|_| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let mut f = call();
                        std::thread::spawn(move || {
                            let (start, mut calls) = (Instant::now(), 0u64);
                            while start.elapsed() < window {
                                for _ in 0..100 {
                                    f();
                                }
                                calls += 100;
                            }
                            calls as f64 / start.elapsed().as_secs_f64()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<f64>()
            })
            .collect::<Vec<f64>>();
        let mut sorted = median_of;
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let per_thread = || -> Box<dyn FnMut() + Send> {
        let mut instance = plugin.instantiate().unwrap();
        Box::new(move || {
            black_box(instance.count().unwrap());
        })
    };
    let registry = wasmplug::Registry::with_pool_size(2);
    registry.activate(plugin.clone()).unwrap();
    let handle = registry.get("hello").unwrap();
    let pooled = || -> Box<dyn FnMut() + Send> {
        let handle = handle.clone();
        Box::new(move || {
            black_box(handle.call(|i| i.count()).unwrap());
        })
    };
    for (what, call) in [
        (
            "an instance per thread",
            &per_thread as &(dyn Fn() -> _ + Sync),
        ),
        ("Registry, pool of 2, Handle::call", &pooled),
    ] {
        let (one, two) = (calls_per_sec(1, call), calls_per_sec(2, call));
        println!(
            "calls/s, {what}: 1 thread {one:.0}, 2 threads {two:.0}: {:.2}x   (target >= 1.8x)",
            two / one
        );
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
