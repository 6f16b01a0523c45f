//! Swap latency: from the rename of a new component file to the first call
//! answered by the new version, through the real watcher, for the Rust hello
//! plugin. Printed, not asserted (machines here are shared and noisy).
//!
//! Baseline, measured in the same run: the same swap done directly
//! (`Runtime::load` + `Registry::activate`, no file watching), so the
//! watcher's own share (debounce window + notification) is visible.
//!
//! Run: `just bench` (or `cargo bench -p wasmplug --bench swap_latency`
//! after `just guests`).

use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;
use support::guest;

use wasmplug::reference::GreeterPlugin;
use wasmplug::{watcher::DEFAULT_DEBOUNCE, Registry, Runtime, Watcher};

const SWAPS: usize = 60;
/// Pause between swaps, so each is measured in isolation.
const SETTLE: Duration = Duration::from_millis(250);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn report(what: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = percentile(&samples, 0.50);
    println!(
        "{what:<44} n={:<3} p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        samples.len(),
        ms(p50),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap()),
    );
    p50
}

fn main() {
    let versions = [
        (std::fs::read(guest("hello-v1")).unwrap(), "Welcome, bench!"),
        (
            std::fs::read(guest("hello-v2")).unwrap(),
            "Welcome back, bench!",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("wasmplug-bench-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hello.wasm");
    std::fs::write(&file, &versions[0].0).unwrap();

    // Baseline: load + activate directly, same runtime configuration.
    let runtime = Runtime::<GreeterPlugin>::new().unwrap();
    let direct = Registry::new();
    direct.activate(runtime.load(&file).unwrap()).unwrap();
    let mut baseline = Vec::new();
    for swap in 0..SWAPS {
        let (bytes, _) = &versions[(swap + 1) % 2];
        // Distinct bytes every time, as a new build would be: no cache hit.
        let bytes = with_build_number(bytes, swap as u32);
        let start = Instant::now();
        let plugin = runtime.load_bytes("hello.wasm", &bytes).unwrap();
        direct.activate(plugin).unwrap();
        baseline.push(start.elapsed());
    }
    drop(direct);

    // Through the watcher.
    let registry = Registry::new();
    let _watcher = Watcher::start(&dir, runtime.clone(), registry.clone()).unwrap();
    let hello = registry.get("hello").unwrap();
    let mut latencies = Vec::new();
    for swap in 0..SWAPS {
        let (bytes, answer) = &versions[(swap + 1) % 2];
        let bytes = with_build_number(bytes, 1_000 + swap as u32);
        let tmp = dir.join("hello.wasm.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let start = Instant::now();
        loop {
            if hello.call(|i| i.welcome("bench")).unwrap() == *answer {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swap {swap} never happened"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(start.elapsed());
        // Let the watcher go quiet: a late event from this swap would
        // otherwise reconcile the next file early and flatter the figure.
        std::thread::sleep(SETTLE);
    }

    println!(
        "swap latency, Rust hello plugin ({} KB), {SWAPS} swaps each",
        versions[0].0.len() / 1000
    );
    let direct_p50 = report("baseline: load + activate, no watcher", baseline);
    let p50 = report("watcher: rename -> first call on new version", latencies);
    println!(
        "debounce window {} ms; watcher p50 beyond the window {:+.2} ms; watcher p50 / baseline p50 = {:.2}x",
        DEFAULT_DEBOUNCE.as_millis(),
        (p50.as_secs_f64() - DEFAULT_DEBOUNCE.as_secs_f64()) * 1000.0,
        p50.as_secs_f64() / direct_p50.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A custom section with a build number: new bytes, same behaviour.
fn with_build_number(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"wasmplug-bench-build";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&n.to_le_bytes());
    let mut out = component.to_vec();
    out.push(0);
    out.push(section.len() as u8); // < 128: a one-byte LEB128
    out.extend_from_slice(&section);
    out
}
