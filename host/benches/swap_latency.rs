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

    large_beside_small(&dir, &registry, &versions);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rounds of the large swap beside a small one.
const LARGE_ROUNDS: usize = 3;

/// A 12 MB JavaScript component and the small Rust one renamed into the
/// watched directory at the same moment, the large one first: how long the
/// small swap takes beside the large one's compile, how long the large one
/// takes, and whether the JavaScript plugin served every call meanwhile.
fn large_beside_small(
    dir: &std::path::Path,
    registry: &Registry<GreeterPlugin>,
    versions: &[(Vec<u8>, &str); 2],
) {
    let js = std::fs::read(guest("hello-js")).unwrap();
    let js_file = dir.join("hello-js.wasm");
    std::fs::write(&js_file, with_build_number(&js, 0)).unwrap();
    let began = Instant::now();
    let js_handle = loop {
        if let Ok(handle) = registry.get("hello-js") {
            break handle;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "hello-js never loaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let hello = registry.get("hello").unwrap();
    let events = registry.subscribe();
    let (mut small, mut large, mut served, mut failed) = (Vec::new(), Vec::new(), 0u64, 0u64);
    for round in 0..LARGE_ROUNDS {
        // Which answer hello gives now decides which version comes next.
        let next = if hello.call(|i| i.welcome("bench")).unwrap() == versions[0].1 {
            1
        } else {
            0
        };
        let (bytes, answer) = &versions[next];
        for (file, bytes) in [
            (&js_file, with_build_number(&js, 1 + round as u32)),
            (
                &dir.join("hello.wasm"),
                with_build_number(bytes, 5_000 + round as u32),
            ),
        ] {
            let tmp = file.with_extension("wasm.tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, file).unwrap();
        }
        let start = Instant::now();
        let (mut small_at, mut large_at) = (None, None);
        while small_at.is_none() || large_at.is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "round {round}: a swap never happened"
            );
            if small_at.is_none() && hello.call(|i| i.welcome("bench")).unwrap() == *answer {
                small_at = Some(start.elapsed());
            }
            match js_handle.call(|i| i.welcome("bench")) {
                Ok(_) => served += 1,
                Err(_) => failed += 1,
            }
            while let Ok(event) = events.try_recv() {
                if let wasmplug::Event::Swapped { to, .. } = event {
                    if to.name == "hello-js" && large_at.is_none() {
                        large_at = Some(start.elapsed());
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        small.push(small_at.unwrap());
        large.push(large_at.unwrap());
        std::thread::sleep(SETTLE);
    }
    println!(
        "\na 12 MB JavaScript swap and the Rust hello swap renamed in together, {LARGE_ROUNDS} rounds (load threads: one per core, at least 2)"
    );
    report("Rust hello swap, beside the JavaScript one", small);
    report("JavaScript swap (compile included)", large);
    println!("JavaScript plugin meanwhile: {served} calls answered by the serving version, {failed} failed");
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
