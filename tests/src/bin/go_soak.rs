//! The Go guest under a soak: ≥ 1 M calls with allocation pressure, through
//! a registry whose plugin is hot-swapped all along, counting every failed
//! call and every trap in `cabi_realloc` ("cannot leave component
//! instance", Go's GC reading a clock where imports are forbidden).
//!
//! Two callers make calls of every export (strings of 10 B to 64 KiB in and
//! out, records, results) while a third thread swaps the name between the
//! 1.0 and the 1.1 build of hello-go every 50 ms. The baseline, in the same
//! process and under the same load: the same calls on the build without
//! the vendored `procPin` patch (`UNPATCHED=1 hello-go/build.sh`), which
//! traps. Target: 0 traps and 0 failed calls for the patched build.
//!
//! Run: `cargo run --release -p wasmplug-tests --bin go_soak [CALLS]`
//! (default 1,000,000; the baseline makes a tenth as many).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmplug::reference::versions::{Greeter, User};
use wasmplug::{Registry, Runtime};
use wasmplug_tests::{guest_bytes, rss_kib};

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    realloc_traps: AtomicU64,
    backing_off: AtomicU64,
    other_failures: AtomicU64,
}

/// `calls` calls from two threads on `builds` (swapped every 50 ms when
/// there are two); what failed, how long it took and how many swaps ran.
fn run(builds: &[&str], calls: u64) -> anyhow::Result<(Arc<Tally>, Duration, u64)> {
    let runtime: Runtime<Greeter> = Runtime::new()?;
    let registry: Registry<Greeter> = Registry::with_pool_size(2);
    // Loaded once: a swap activates an already compiled version, as an
    // operator's second deploy of a build would.
    let plugins = builds
        .iter()
        .map(|b| runtime.load_bytes("hello-go", &guest_bytes(b)))
        .collect::<Result<Vec<_>, _>>()?;
    registry.activate(plugins[0].clone())?;
    let handle = registry.get("hello-go")?;
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let callers: Vec<_> = (0..2u64)
        .map(|t| {
            let (handle, tally) = (handle.clone(), tally.clone());
            std::thread::spawn(move || {
                for i in 0..calls / 2 {
                    let size = [10, 200, 4 << 10, 64 << 10][((i + t) % 4) as usize];
                    let name = "g".repeat(size);
                    let who = User {
                        name: name.clone(),
                        age: i as u32,
                    };
                    let outcome = handle.call(|instance| {
                        instance.call(|p, s| match i % 4 {
                            0 => p.greeter().welcome(s, &name).map(|a| a.len()),
                            1 => p.greeter().hello(s, &who).map(|a| a.len()),
                            2 => p
                                .greeter()
                                .birthday(s, &who)
                                .map(|r| r.map_or(0, |u| u.name.len())),
                            _ => p.greeter().count(s).map(|n| n as usize),
                        })
                    });
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = outcome {
                        let text = format!("{err:#}");
                        if text.contains("cannot leave component instance") {
                            tally.realloc_traps.fetch_add(1, Ordering::Relaxed);
                        } else if err.kind() == "unavailable" {
                            // The registry backing off after traps: their
                            // consequence, counted with them.
                            tally.backing_off.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.other_failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed call: {text}");
                        }
                    }
                }
            })
        })
        .collect();
    let swapper = {
        let done = done.clone();
        let registry = registry.clone();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut swaps = 0;
            while plugins.len() > 1 && !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let next = (swaps + 1) as usize % plugins.len();
                registry.activate(plugins[next].clone())?;
                swaps += 1;
            }
            Ok(swaps)
        })
    };
    for caller in callers {
        caller.join().expect("a caller panicked");
    }
    let took = began.elapsed();
    done.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("the swapper panicked")?;
    Ok((tally, took, swaps))
}

fn main() -> anyhow::Result<ExitCode> {
    let calls: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |n| n.parse())?;
    let rss_before = rss_kib();
    let (tally, took, swaps) = run(&["hello-go", "hello-go-v1.1"], calls)?;
    let rss_after = rss_kib();
    let (baseline, base_took, _) = run(&["hello-go-unpatched"], calls / 10)?;
    let per_second = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
    let traps = tally.realloc_traps.load(Ordering::Relaxed);
    let failed =
        tally.other_failures.load(Ordering::Relaxed) + tally.backing_off.load(Ordering::Relaxed);
    let made = tally.calls.load(Ordering::Relaxed);
    println!(
        "hello-go (procPin patch), 1.0 <-> 1.1 swapped every 50 ms: {made} calls in {:.1} s ({:.0}/s), \
         {swaps} swaps, {traps} traps in cabi_realloc, {failed} other failed calls; \
         RSS {rss_before} -> {rss_after} KiB",
        took.as_secs_f64(),
        per_second(made, took)
    );
    let base_made = baseline.calls.load(Ordering::Relaxed);
    let base_traps = baseline.realloc_traps.load(Ordering::Relaxed);
    println!(
        "baseline, hello-go without the patch, same calls: {base_made} calls in {:.1} s, \
         {base_traps} traps in cabi_realloc ({:.2} per 10,000 calls), {} refused while the \
         registry backed off after them, {} other failed calls",
        base_took.as_secs_f64(),
        base_traps as f64 * 10_000.0 / base_made.max(1) as f64,
        baseline.backing_off.load(Ordering::Relaxed),
        baseline.other_failures.load(Ordering::Relaxed)
    );
    let met = traps == 0 && failed == 0 && made >= calls;
    println!(
        "target: 0 traps and 0 failed calls in >= {calls} calls: {}",
        if met { "met" } else { "MISSED" }
    );
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
