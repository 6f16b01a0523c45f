//! Swap under load: several threads call continuously while the plugin file
//! is replaced 100 times, alternating v1 and v2. Zero failed calls, every
//! call answered wholly by one version, no increment of the handed-over
//! counter lost or doubled, and memory back where it was.
//!
//! Alone in its binary: it measures this process's RSS.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wasmplug_tests::{guest_bytes, live_rss_kib, replace_atomically, Deployment};

const SWAPS: usize = 100;
const CALLERS: usize = 3;
const BUDGET_KIB: u64 = 2048;

/// What one caller saw. Answers are checked as they come rather than
/// recorded: millions of recorded answers would be the test's own memory,
/// mixed into the host's.
#[derive(Default)]
struct Tally {
    calls: u64,
    failures: Vec<String>,
    mixed: Vec<String>,
    /// How many counts were seen, their sum, sum of squares and maximum:
    /// together they show every increment happened exactly once.
    counts: u64,
    sum: u128,
    sum_sq: u128,
    max: u64,
    /// Counts not above this caller's previous one.
    went_back: Vec<(u64, u64)>,
}

impl Tally {
    fn record(&mut self, count: u32) {
        let count = u64::from(count);
        if count <= self.max {
            self.went_back.push((self.max, count));
        }
        self.counts += 1;
        self.sum += u128::from(count);
        self.sum_sq += u128::from(count).pow(2);
        self.max = self.max.max(count);
    }
}

fn caller(
    handle: wasmplug::Handle<wasmplug::reference::GreeterPlugin>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        tally.calls += 1;
        // One call: the version it ran on, and two answers from it.
        let answer = handle.call(|i| {
            let major = i.plugin().identity().version.major;
            Ok((major, i.welcome("Gopher")?, i.count()?))
        });
        match answer {
            Err(e) => tally.failures.push(e.to_string()),
            Ok((major, welcome, count)) => {
                let expected = if major == 1 {
                    "Welcome, Gopher!"
                } else {
                    "Welcome back, Gopher!"
                };
                if welcome != expected {
                    tally.mixed.push(format!("v{major} answered {welcome:?}"));
                }
                tally.record(count);
            }
        }
    }
    tally
}

#[test]
fn swap_storm_of_100_replacements_under_load_fails_no_call_and_returns_memory() {
    let d = Deployment::hello_v1("storm");
    let versions = [
        (guest_bytes("hello-v1"), "1.0.0"),
        (guest_bytes("hello-v2"), "2.0.0"),
    ];
    let handle = d.registry.get("hello").unwrap();

    // Warm-up: a few swaps under load, so the allocator, the pools and the
    // caller threads' arenas reach their working size.
    let stop = Arc::new(AtomicBool::new(false));
    let warm: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (handle, stop) = (handle.clone(), stop.clone());
            std::thread::spawn(move || caller(handle, stop))
        })
        .collect();
    for round in 0..6 {
        let (bytes, version) = &versions[(round + 1) % 2];
        replace_atomically(&d.file, bytes);
        d.wait_swapped_to(version);
    }
    stop.store(true, Ordering::Relaxed);
    for t in warm {
        assert!(t.join().unwrap().failures.is_empty());
    }
    let baseline = live_rss_kib();
    let before = handle.call(|i| i.count()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (handle, stop) = (handle.clone(), stop.clone());
            std::thread::spawn(move || caller(handle, stop))
        })
        .collect();
    // Currently 1.0.0 (after 6 warm-up swaps); alternate 2.0.0, 1.0.0, ...
    for swap in 0..SWAPS {
        let (bytes, version) = &versions[(swap + 1) % 2];
        replace_atomically(&d.file, bytes);
        d.wait_swapped_to(version);
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = callers.into_iter().map(|t| t.join().unwrap()).collect();

    let calls: u64 = tallies.iter().map(|t| t.calls).sum();
    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    let mixed: Vec<&String> = tallies.iter().flat_map(|t| &t.mixed).collect();
    let went_back: Vec<&(u64, u64)> = tallies.iter().flat_map(|t| &t.went_back).collect();
    println!(
        "{SWAPS} swaps under {CALLERS} callers: {calls} calls, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    assert!(
        mixed.is_empty(),
        "calls answered by two versions: {mixed:?}"
    );
    assert!(
        calls > SWAPS as u64,
        "the callers kept calling during the storm"
    );

    // The counter was handed over at every swap: the counts seen are exactly
    // before+1 ..= before+n, each once.
    assert!(
        went_back.is_empty(),
        "a caller saw the counter go back: {went_back:?}"
    );
    let n: u64 = tallies.iter().map(|t| t.counts).sum();
    let range = (u64::from(before) + 1)..=(u64::from(before) + n);
    let want_sum: u128 = range.clone().map(u128::from).sum();
    let want_sq: u128 = range.map(|c| u128::from(c).pow(2)).sum();
    assert_eq!(
        tallies.iter().map(|t| t.max).max(),
        Some(u64::from(before) + n)
    );
    assert_eq!(
        tallies.iter().map(|t| t.sum).sum::<u128>(),
        want_sum,
        "increments lost or repeated"
    );
    assert_eq!(
        tallies.iter().map(|t| t.sum_sq).sum::<u128>(),
        want_sq,
        "increments lost or repeated"
    );

    assert_eq!(
        d.registry.list().len(),
        1,
        "only the current version is loaded"
    );
    assert_eq!(
        d.runtime.compiled_count(),
        1,
        "every replaced version was freed"
    );
    let after = live_rss_kib();
    println!(
        "RSS: before the storm {baseline} KiB, after {after} KiB ({:+} KiB)",
        after as i64 - baseline as i64
    );
    assert!(
        after.saturating_sub(baseline) < BUDGET_KIB,
        "RSS grew by {} KiB over {SWAPS} swaps (budget {BUDGET_KIB} KiB)",
        after - baseline
    );
}
