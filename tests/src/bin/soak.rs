//! Memory soak: does a long-lived service that loads, calls and unloads
//! plugins stay flat? Prints an RSS table beside Go's `plugin` baseline
//! (from `../shared/DESIGN.md`: +1,836 KiB per version, never returned).
//!
//! Two phases, each after a warm-up whose RSS is the baseline:
//! 1. 10,000 full cycles of load → instantiate → call → unload of the Rust
//!    hello plugin. Every cycle is a real load: the previous one dropped the
//!    last reference, so the compiled code is gone and comes back from the
//!    on-disk cache (compiling 10,000 times would take minutes).
//! 2. 200 distinct versions (each its own content hash, so each compiled
//!    from scratch), loaded, called and unloaded.
//!
//! Target: RSS growth ≤ 1 MiB over the warmed-up baseline after each phase.
//! Exits non-zero when it is missed. Run: `just soak`.

use std::process::ExitCode;

use wasmplug::reference::GreeterPlugin;
use wasmplug::Runtime;
use wasmplug_tests::{guest_bytes, rss_kib, with_custom_section, TempDir};

const BUDGET_KIB: i64 = 1024;

fn main() -> anyhow::Result<ExitCode> {
    let cache = TempDir::new("soak-cache");
    let rt: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(cache.path()).build()?;
    let hello = guest_bytes("hello-v1");
    let cycle = |label: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let plugin = rt.load_bytes(label, bytes)?;
        let mut instance = plugin.instantiate()?;
        instance.welcome("Gopher")?;
        instance.count()?;
        Ok(()) // instance, then plugin (and its compiled code) dropped
    };

    println!("{:<44} {:>10} {:>10}", "", "RSS KiB", "growth");
    let mut worst = 0i64;
    let mut row = |what: &str, baseline: u64| {
        let rss = rss_kib();
        let growth = rss as i64 - baseline as i64;
        worst = worst.max(growth);
        println!("{what:<44} {rss:>10} {growth:>+10}");
    };

    // Phase 1: load → call → unload, 10,000 times.
    for _ in 0..200 {
        cycle("hello-v1", &hello)?; // warm-up: allocator pools, cache entry
    }
    let baseline = rss_kib();
    row("load → call → unload: after warm-up", baseline);
    for n in 1..=10_000 {
        cycle("hello-v1", &hello)?;
        if n % 2_500 == 0 {
            row(&format!("  after {n} cycles"), baseline);
        }
    }
    assert_eq!(rt.compiled_count(), 0, "every cycle's code was freed");

    // Phase 2: 200 distinct versions, each compiled.
    let version = |n: u32| with_custom_section(&hello, "wasmplug-soak-version", &n.to_le_bytes());
    for n in 0..20 {
        cycle("hello-warmup", &version(n))?;
    }
    let baseline = rss_kib();
    row("200 distinct versions: after warm-up", baseline);
    for n in 1..=200 {
        cycle(&format!("hello-build-{n}"), &version(1_000 + n))?;
        if n % 50 == 0 {
            row(&format!("  after {n} versions"), baseline);
        }
    }
    assert_eq!(rt.compiled_count(), 0, "every version's code was freed");
    println!(
        "{:<44} {:>10} {:>+10}",
        "Go plugin, 200 versions (DESIGN.md)",
        "",
        200 * 1836
    );
    println!(
        "cache: {:?}",
        rt.cache_stats().expect("the soak runtime has a cache")
    );

    if worst > BUDGET_KIB {
        println!("FAILED: RSS grew {worst} KiB, budget {BUDGET_KIB} KiB");
        return Ok(ExitCode::FAILURE);
    }
    println!("ok: worst growth {worst:+} KiB, budget {BUDGET_KIB} KiB");
    Ok(ExitCode::SUCCESS)
}
