//! Starting instances faster must not let one instance see another's
//! memory. `RuntimeBuilder::keep_resident` keeps a dropped instance's pages
//! in its pool slot and resets them in place for the next instance: these
//! tests dirty that memory every way a guest can (counters, large strings,
//! a garbage-collected runtime) and check each new instance starts exactly
//! as a fresh one in a runtime without it.

use wasmplug::reference::GreeterPlugin;
use wasmplug::Runtime;
use wasmplug_tests::guest;

const KEEP: usize = 8 << 20;

/// What a new instance answers first: its counter, and a greeting.
fn first_answers(plugin: &wasmplug::Plugin<GreeterPlugin>) -> (u32, String) {
    let mut instance = plugin.instantiate().unwrap();
    (instance.count().unwrap(), instance.welcome("Ada").unwrap())
}

fn every_instance_starts_fresh(component: &str) {
    let fresh = Runtime::<GreeterPlugin>::new().unwrap();
    let expected = first_answers(&fresh.load(guest(component)).unwrap());

    let rt = Runtime::<GreeterPlugin>::builder()
        .keep_resident(KEEP)
        .build()
        .unwrap();
    let plugin = rt.load(guest(component)).unwrap();
    for round in 0..40u32 {
        let mut instance = plugin.instantiate().unwrap();
        assert_eq!(
            (instance.count().unwrap(), instance.welcome("Ada").unwrap()),
            expected,
            "{component}: instance {round} did not start fresh in a reused slot"
        );
        // Dirty the slot before it is reused: the counter, and pages of
        // heap well past the initial image (up to 2 MiB of string in and
        // out, under and over what is kept resident per page run).
        for _ in 0..round % 7 {
            instance.count().unwrap();
        }
        let name = "x".repeat(1 << (10 + round % 12));
        assert!(instance.welcome(&name).unwrap().contains(&name));
    }
    // Several live at once take several slots; each starts fresh.
    let live: Vec<_> = (0..4).map(|_| plugin.instantiate().unwrap()).collect();
    for mut instance in live {
        assert_eq!(instance.count().unwrap(), expected.0, "{component}");
    }
}

#[test]
fn a_kept_resident_slot_starts_the_rust_guest_fresh() {
    every_instance_starts_fresh("hello-v1");
}

#[test]
fn a_kept_resident_slot_starts_the_go_guest_fresh() {
    every_instance_starts_fresh("hello-go");
}

#[test]
fn a_kept_resident_slot_starts_the_javascript_guest_fresh() {
    every_instance_starts_fresh("hello-js");
}
