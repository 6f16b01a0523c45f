//! Canary and shadow rollouts with real components: a new version tried on
//! real calls beside the serving one, rolled back on its traps or its
//! latency, promoted when healthy, and, in shadow, never answering a caller.
//! The figures each test decides on are printed (`--nocapture`).

use std::sync::mpsc::Receiver;
use std::time::Duration;

use wasmplug::canary::{Canary, Rollout, Shadow};
use wasmplug::reference::GreeterPlugin;
use wasmplug::registry::Activation;
use wasmplug::{Event, Registry, Runtime};
use wasmplug_tests::{guest_bytes, wait_for_event, with_custom_section};

const WAIT: Duration = Duration::from_secs(60);

/// The tests of this file take turns: a latency decision made while
/// another test computes on the same two cores would judge the machine,
/// not the version.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registry serving `hello` v1 under `rollout`, then `candidate` loaded
/// from the same source (so it would replace v1), and its events.
fn trial(
    rollout: Rollout,
    candidate: &[u8],
) -> (Registry<GreeterPlugin>, Receiver<Event>, Activation) {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new().with_rollout(rollout);
    let events = registry.subscribe();
    let v1 = rt.load_bytes("hello", &guest_bytes("hello-v1")).unwrap();
    assert_eq!(registry.activate(v1).unwrap(), Activation::Installed);
    let v2 = rt.load_bytes("hello", candidate).unwrap();
    let activation = registry.activate(v2).unwrap();
    (registry, events, activation)
}

/// The reason of the first rollback among `events`.
fn rolled_back(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::RolledBack { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

fn current(registry: &Registry<GreeterPlugin>) -> String {
    let info = registry.list();
    let current = info.iter().find(|v| v.current).expect("a current version");
    current.identity.to_string()
}

/// Calls `welcome("user-{i}")` for `calls`; returns the failed calls, and
/// the call after which the trial ended (an event arrived), if it did.
fn drive(
    registry: &Registry<GreeterPlugin>,
    events: &Receiver<Event>,
    calls: usize,
) -> (usize, Option<usize>, Vec<Event>) {
    let handle = registry.get("hello").unwrap();
    let (mut failed, mut ended, mut seen) = (0, None, Vec::new());
    for i in 0..calls {
        if handle.call(|p| p.welcome(&format!("user-{i}"))).is_err() {
            failed += 1;
        }
        for event in events.try_iter() {
            if matches!(event, Event::RolledBack { .. } | Event::Promoted { .. }) {
                ended.get_or_insert(i + 1);
            }
            seen.push(event);
        }
    }
    (failed, ended, seen)
}

#[test]
fn a_canary_trapping_on_5_percent_is_rolled_back_failing_a_fraction_of_all_at_once() {
    let _serial = serial();
    const CALLS: usize = 4000;
    let flaky = guest_bytes("hello-v2-flaky");

    let (all, all_events, _) = trial(Rollout::AllAtOnce, &flaky);
    let (all_failed, _, _) = drive(&all, &all_events, CALLS);

    let canary = Canary::default();
    let share = canary.share;
    let (registry, events, activation) = trial(Rollout::Canary(canary), &flaky);
    assert!(
        matches!(activation, Activation::Trial { .. }),
        "{activation:?}"
    );
    let (failed, ended, seen) = drive(&registry, &events, CALLS);
    let window = ended.expect("the canary was rolled back within the run");
    let bound = (share * window as f64).ceil() as usize;
    println!(
        "all at once: {all_failed} of {CALLS} calls failed; canary {:.0}%: {failed} failed, \
         rolled back after {window} calls (bound share x window = {bound})",
        share * 100.0
    );
    let reason = rolled_back(&seen).expect("rolled back");
    println!("decided on: {reason}");
    assert!(reason.contains("trap rate"), "{reason}");
    assert!(all_failed >= CALLS / 20 - 1, "every 20th input traps on v2");
    assert!(failed >= 1 && failed <= bound, "{failed} > {bound}");
    assert!(failed * 10 < all_failed, "{failed} vs {all_failed}");
    // v1 serves again, and the canary is gone.
    assert_eq!(current(&registry), "hello@1.0.0");
    assert_eq!(registry.list().len(), 1, "{:?}", registry.list());
    let (after, _, _) = drive(&registry, &events, 200);
    assert_eq!(after, 0);
}

#[test]
fn a_canary_three_times_slower_is_rolled_back_on_latency() {
    let _serial = serial();
    let canary = Canary {
        share: 0.5,
        min_calls: 30,
        ..Canary::default()
    };
    let (registry, events, _) = trial(Rollout::Canary(canary), &guest_bytes("hello-v2-slow"));
    let handle = registry.get("hello").unwrap();
    let mut answers = 0;
    let reason = loop {
        handle.call(|p| p.welcome("spin:1000000")).unwrap();
        answers += 1;
        assert!(answers < 10_000, "never decided");
        if let Ok(Event::RolledBack { reason, .. }) = events.try_recv() {
            break reason;
        }
    };
    println!("rolled back after {answers} calls: {reason}");
    assert!(reason.contains("p99 latency"), "{reason}");
    assert_eq!(current(&registry), "hello@1.0.0");
}

#[test]
fn a_healthy_canary_is_promoted_and_the_old_version_unloaded() {
    let _serial = serial();
    let canary = Canary {
        share: 0.2,
        min_calls: 20,
        promote_after_calls: 100,
        // Judged on traps and errors: beside the other tests on two cores,
        // a preempted microsecond call would be a p99.
        max_p99_ratio: f64::INFINITY,
        ..Canary::default()
    };
    let (registry, events, _) = trial(Rollout::Canary(canary), &guest_bytes("hello-v2"));
    let listed = registry.list();
    assert!(listed
        .iter()
        .any(|v| v.on_trial && v.identity.version.major == 2));
    let handle = registry.get("hello").unwrap();
    let (mut old, mut new) = (0, 0);
    let figures = loop {
        match handle.call(|p| p.welcome("Gopher")).unwrap().as_str() {
            "Welcome, Gopher!" => old += 1,
            "Welcome back, Gopher!" => new += 1,
            other => panic!("{other}"),
        }
        assert!(old + new < 10_000, "never promoted");
        if let Some(Event::Promoted { figures, .. }) = events
            .try_iter()
            .find(|e| matches!(e, Event::Promoted { .. }))
        {
            break figures;
        }
    };
    println!(
        "promoted after {} calls ({new} on the canary): {figures}",
        old + new
    );
    assert_eq!(new, 100);
    assert!(old > new, "the canary took its share only");
    assert_eq!(current(&registry), "hello@2.0.0");
    wait_for_event(
        &events,
        WAIT,
        "v1 unloaded",
        |e| matches!(e, Event::Unloaded { identity, .. } if identity.version.major == 1),
    );
    assert_eq!(registry.list().len(), 1);
    for _ in 0..50 {
        assert_eq!(
            handle.call(|p| p.welcome("Gopher")).unwrap(),
            "Welcome back, Gopher!"
        );
    }
}

#[test]
fn a_key_always_reaches_the_same_version_during_a_canary() {
    let _serial = serial();
    let canary = Canary {
        share: 0.5,
        promote_after_calls: u64::MAX,
        max_p99_ratio: f64::INFINITY,
        ..Canary::default()
    };
    let (registry, _events, _) = trial(Rollout::Canary(canary), &guest_bytes("hello-v2"));
    let handle = registry.get("hello").unwrap();
    let mut versions = std::collections::BTreeSet::new();
    for user in 0..200 {
        let key = format!("user-{user}");
        let first = handle.call_keyed(&key, |p| p.welcome("Gopher")).unwrap();
        for _ in 0..10 {
            let again = handle.call_keyed(&key, |p| p.welcome("Gopher")).unwrap();
            assert_eq!(again, first, "{key} moved between versions");
        }
        versions.insert(first);
    }
    assert_eq!(versions.len(), 2, "the keys spread over both versions");
}

#[test]
fn a_shadow_counts_a_wrong_versions_mismatches_and_no_caller_sees_them() {
    let _serial = serial();
    let shadow = Shadow {
        promote_after_calls: 100,
        max_mismatches: 20,
        sample: 3,
    };
    let (registry, events, _) = trial(Rollout::Shadow(shadow), &guest_bytes("hello-v2"));
    let handle = registry.get("hello").unwrap();
    for _ in 0..100 {
        let answer = handle.call_pure(|p| p.welcome("Gopher")).unwrap();
        assert_eq!(
            answer, "Welcome, Gopher!",
            "only the serving version answers"
        );
    }
    let seen: Vec<Event> = events.try_iter().collect();
    let mismatches: Vec<&Event> = seen
        .iter()
        .filter(|e| matches!(e, Event::Mismatch { .. }))
        .collect();
    assert_eq!(mismatches.len(), 3, "a sample of three: {seen:?}");
    let shown = mismatches[0].to_string();
    assert!(
        shown.contains("Welcome back, Gopher!") && shown.contains("Welcome, Gopher!"),
        "{shown}"
    );
    let reason = rolled_back(&seen).expect("rolled back");
    println!("shadow: {reason}");
    assert!(
        reason.starts_with("21 of 21 mirrored calls differed"),
        "{reason}"
    );
    assert_eq!(current(&registry), "hello@1.0.0");
    assert_eq!(registry.list().len(), 1);
}

#[test]
fn a_shadow_whose_answers_agree_is_promoted() {
    let _serial = serial();
    let rebuilt = with_custom_section(&guest_bytes("hello-v1"), "build", b"2");
    let shadow = Shadow {
        promote_after_calls: 50,
        ..Shadow::default()
    };
    let (registry, events, _) = trial(Rollout::Shadow(shadow), &rebuilt);
    let handle = registry.get("hello").unwrap();
    // Plain calls are not mirrored (not declared side-effect-free).
    for _ in 0..100 {
        handle.call(|p| p.count()).unwrap();
    }
    assert!(registry.list().iter().any(|v| v.on_trial));
    for _ in 0..50 {
        handle.call_pure(|p| p.welcome("Gopher")).unwrap();
    }
    let figures = wait_for_event(&events, WAIT, "promoted", |e| {
        matches!(e, Event::Promoted { .. })
    })
    .to_string();
    assert!(
        figures.contains("0 of 50 mirrored calls differed"),
        "{figures}"
    );
    let hash = wasmplug::identity::ContentHash::of(&rebuilt);
    let now = registry.list();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].content_hash, hash, "the rebuilt version serves");
}

#[test]
fn async_calls_take_part_in_a_canary() {
    use wasmplug::reference::async_world::GreeterPlugin as AsyncGreeter;
    let _serial = serial();
    let rt = Runtime::<AsyncGreeter>::new().unwrap();
    let canary = Canary {
        share: 0.3,
        min_calls: 20,
        promote_after_calls: 60,
        max_p99_ratio: f64::INFINITY,
        ..Canary::default()
    };
    let registry = Registry::new().with_rollout(Rollout::Canary(canary));
    let events = registry.subscribe();
    for name in ["hello-v1", "hello-v2"] {
        let plugin = rt.load_bytes("hello", &guest_bytes(name)).unwrap();
        registry.activate(plugin).unwrap();
    }
    let handle = registry.get("hello").unwrap();
    let executor = wasmplug_tests::current_thread();
    let answers: Vec<String> = executor.block_on(async {
        let mut answers = Vec::new();
        for _ in 0..400 {
            let answer = handle
                .call_async(|plugin, store| {
                    Box::pin(async move {
                        plugin
                            .wasmplug_plugin_greeter()
                            .call_welcome(store, "Gopher")
                            .await
                    })
                })
                .await
                .unwrap();
            answers.push(answer);
        }
        answers
    });
    let new = answers.iter().filter(|a| a.contains("back")).count();
    wait_for_event(&events, WAIT, "promoted", |e| {
        matches!(e, Event::Promoted { .. })
    });
    println!("async canary: {new} of {} answers from v2", answers.len());
    assert!(
        new >= 60,
        "the canary took its share, then everything: {new}"
    );
    assert!(
        answers[..100].iter().any(|a| !a.contains("back")),
        "v1 served during the trial"
    );
    assert_eq!(answers.last().unwrap(), "Welcome back, Gopher!");
}
