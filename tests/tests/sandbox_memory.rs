//! Memory is back at its baseline after hostile instances are dropped: every
//! attack, five times over, leaves this process's RSS where it was.
//!
//! Alone in its binary: it measures RSS.

use std::time::Duration;

use wasmplug::reference::GreeterPlugin;
use wasmplug::{Policy, Runtime};
use wasmplug_tests::{guest, live_rss_kib};

const BUDGET_KIB: u64 = 2048;

fn all_attacks(rt: &Runtime<GreeterPlugin>) {
    let policy = Policy::default()
        .memory_limit(64 << 20)
        .deadline(Duration::from_millis(100))
        .output_limit(64 * 1024);
    let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();
    for attack in [
        "loop",
        "alloc",
        "recurse",
        "huge:100000000",
        "flood:10000000",
        "read:/etc/passwd",
        "env",
    ] {
        let mut instance = plugin.instantiate().unwrap();
        let _ = instance.welcome(attack); // the outcome is sandbox.rs's business
    }
    assert!(rt.load(guest("hostile-import")).is_err());
}

#[test]
fn memory_returns_to_baseline_after_every_attack() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    for _ in 0..3 {
        all_attacks(&rt); // warm-up: allocator and pools reach working size
    }
    let baseline = live_rss_kib();
    for _ in 0..5 {
        all_attacks(&rt);
    }
    let after = live_rss_kib();
    println!("RSS: baseline {baseline} KiB, after 5 rounds of attacks {after} KiB");
    assert!(
        after.saturating_sub(baseline) < BUDGET_KIB,
        "RSS grew by {} KiB over 5 rounds of attacks (budget {BUDGET_KIB} KiB)",
        after - baseline
    );
    assert_eq!(
        rt.compiled_count(),
        0,
        "the hostile plugin's code was freed"
    );
}
