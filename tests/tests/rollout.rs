//! Safe rollouts: a new version that reaches further than the one it would
//! replace is held until approved, and a swap can be undone at once while
//! the replaced version is kept warm. Real components, a real watcher on a
//! real directory; every test tries the way around the promise too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use wasmplug::policy::Grant;
use wasmplug::reference::GreeterPlugin;
use wasmplug::registry::{Activation, Guard};
use wasmplug::watcher::WatchOptions;
use wasmplug::{manifest::Allowance, Error, Event, Policy, Registry, Runtime};
use wasmplug_tests::{
    events_within, guest_bytes, replace_atomically, wait_for_event, welcome, with_custom_section,
    Deployment, TempDir,
};

const WAIT: Duration = Duration::from_secs(60);

fn wait_held(events: &mpsc::Receiver<Event>) -> Event {
    wait_for_event(events, WAIT, "held", |e| matches!(e, Event::Held { .. }))
}

/// The events that say a version went live (or was looked at again).
fn activity(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Loaded { .. } | Event::Swapped { .. } | Event::Held { .. }
            )
        })
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_version_importing_sockets_is_held_by_the_watcher_until_approved() {
    let d = Deployment::hello_v1("held-sockets");
    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    let Event::Held {
        name,
        serving,
        widening,
        source,
    } = wait_held(&d.events)
    else {
        unreachable!()
    };
    assert_eq!(name, "hello");
    assert_eq!(serving.to_string(), "hello@1.0.0");
    assert_eq!(source, wasmplug::Source::File(d.file.clone()));
    assert!(
        widening
            .imports
            .iter()
            .any(|i| i.starts_with("wasi:sockets/")),
        "the widening names the socket imports: {widening}"
    );
    assert!(widening.grants.is_empty(), "{widening}");

    // v1 goes on serving; the held version was compiled, never run: no
    // version of it is loaded, and it has not said who it is.
    assert_eq!(welcome(&d.registry), "Welcome, Gopher!");
    let listed = d.registry.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let held = d.registry.held();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].candidate, None);
    assert_eq!(held[0].content_hash.to_string().len(), 64);

    let activation = d.registry.approve("hello").unwrap();
    assert!(
        matches!(&activation, Activation::Swapped { from, .. } if from.to_string() == "hello@1.0.0"),
        "{activation:?}"
    );
    wait_for_event(
        &d.events,
        WAIT,
        "approved",
        |e| matches!(e, Event::Approved { identity, .. } if identity.to_string() == "hello@2.0.0"),
    );
    assert_eq!(welcome(&d.registry), "Welcome back, Gopher!");
    assert!(d.registry.held().is_empty());
    assert_eq!(d.registry.list().len(), 1, "the file's v1 is gone");
    // Nothing is held any more: a second approval is an error, not a swap.
    let err = d.registry.approve("hello").unwrap_err();
    assert_eq!(err.kind(), "rollout", "{err}");
    assert!(err.to_string().contains("hello"), "{err}");
}

#[test]
fn refusing_keeps_v1_and_the_refused_bytes_are_not_loaded_again() {
    let d = Deployment::hello_v1("held-refused");
    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    wait_held(&d.events);

    let refused = d.registry.refuse("hello").unwrap();
    assert!(!refused.widening.is_empty());
    wait_for_event(&d.events, WAIT, "refused", |e| {
        matches!(e, Event::Refused { .. })
    });
    assert_eq!(welcome(&d.registry), "Welcome, Gopher!");
    assert!(d.registry.held().is_empty());

    // The same bytes written again: declined already, nothing happens.
    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    let later = events_within(&d.events, Duration::from_secs(1));
    assert!(activity(&later).is_empty(), "{:?}", activity(&later));
    assert_eq!(welcome(&d.registry), "Welcome, Gopher!");

    // A version that reaches no further goes live as usual.
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    d.wait_swapped_to("2.0.0");
    assert_eq!(welcome(&d.registry), "Welcome back, Gopher!");
}

#[test]
fn a_held_file_replaced_or_deleted_is_no_longer_held() {
    let d = Deployment::hello_v1("held-replaced");
    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    wait_held(&d.events);
    // Replaced by a version that adds nothing: it goes live, and the held
    // one is forgotten (approving it later must not swap it in).
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    d.wait_swapped_to("2.0.0");
    assert!(d.registry.held().is_empty());
    assert_eq!(d.registry.approve("hello").unwrap_err().kind(), "rollout");

    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    wait_held(&d.events);
    std::fs::remove_file(&d.file).unwrap();
    wait_for_event(&d.events, WAIT, "unloaded", |e| {
        matches!(e, Event::Unloaded { .. })
    });
    assert!(d.registry.held().is_empty(), "{:?}", d.registry.held());
    assert_eq!(d.registry.approve("hello").unwrap_err().kind(), "rollout");
    assert!(d.registry.get("hello").unwrap().plugin().is_err());
}

#[test]
fn a_new_manifest_grant_is_held_and_granted_only_when_approved() {
    let options = WatchOptions {
        allowance: Allowance::none().env("LANG"),
        ..WatchOptions::default()
    };
    let d = Deployment::hello_v1_with("held-manifest", options);
    // The same component, now asking for the host's LANG.
    std::fs::write(d.dir.join("hello.toml"), "env = [\"LANG\"]\n").unwrap();
    let Event::Held { widening, .. } = wait_held(&d.events) else {
        unreachable!()
    };
    assert_eq!(widening.grants, vec![Grant::InheritEnv("LANG".into())]);
    assert!(widening.imports.is_empty(), "{widening}");
    let serving = d.registry.get("hello").unwrap().plugin().unwrap();
    assert!(serving.policy().grants().is_empty(), "not granted yet");

    d.registry.approve("hello").unwrap();
    let now = d.registry.get("hello").unwrap().plugin().unwrap();
    assert_eq!(
        now.policy().grants(),
        vec![Grant::InheritEnv("LANG".into())]
    );
}

#[test]
fn a_guard_that_allows_widening_swaps_at_once() {
    let mut options = WatchOptions::default();
    options.guard.widening = true;
    let d = Deployment::hello_v1_with("widening-allowed", options);
    replace_atomically(&d.file, &guest_bytes("hello-v2-sockets"));
    d.wait_swapped_to("2.0.0");
    assert!(d.registry.held().is_empty());
}

#[test]
fn the_registry_holds_a_wider_policy_unless_the_activation_is_trusted() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    let events = registry.subscribe();
    // One label, one source: each load replaces the last.
    let load = |name: &str, policy: Policy| {
        rt.load_bytes_with_policy("hello", &guest_bytes(name), policy)
            .unwrap()
    };
    registry
        .activate(load("hello-v1", Policy::default()))
        .unwrap();

    let addr = "127.0.0.1:9".parse().unwrap();
    let wider = load("hello-v2", Policy::default().allow_connect(addr));
    let held = registry
        .activate_guarded(wider.clone(), &Guard::default())
        .unwrap();
    let Activation::Held { serving, widening } = held else {
        panic!("not held: {held:?}")
    };
    assert_eq!(serving.to_string(), "hello@1.0.0");
    assert_eq!(widening.grants, vec![Grant::Connect(addr)]);
    assert_eq!(welcome(&registry), "Welcome, Gopher!");
    assert_eq!(
        registry.held()[0]
            .candidate
            .as_ref()
            .map(ToString::to_string),
        Some("hello@2.0.0".to_string())
    );
    wait_held(&events);

    // The same version with nothing new is not held; nor is anything the
    // embedder activates itself (`activate` trusts its caller).
    let narrower = load("hello-v2", Policy::default());
    assert!(matches!(
        registry
            .activate_guarded(narrower, &Guard::default())
            .unwrap(),
        Activation::Swapped { .. }
    ));
    registry
        .activate(load("hello-v1", Policy::default()))
        .unwrap();
    let trusted = registry.activate(wider).unwrap();
    assert!(matches!(trusted, Activation::Swapped { .. }), "{trusted:?}");
}

/// `name` loaded from memory under one label, as one source: each load
/// replaces the last (as a watched file's new content does).
fn load(rt: &Runtime<GreeterPlugin>, name: &str) -> wasmplug::Plugin<GreeterPlugin> {
    rt.load_bytes("hello", &guest_bytes(name)).unwrap()
}

fn count(registry: &Registry<GreeterPlugin>) -> u32 {
    registry.get("hello").unwrap().call(|i| i.count()).unwrap()
}

#[test]
fn rollback_returns_to_the_warm_previous_version_with_its_state() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new().with_grace(Duration::from_secs(60));
    let events = registry.subscribe();
    registry.activate(load(&rt, "hello-v1")).unwrap();
    for _ in 0..3 {
        count(&registry);
    }
    let v1 = registry.get("hello").unwrap().plugin().unwrap();
    registry.activate(load(&rt, "hello-v2")).unwrap();
    assert_eq!(count(&registry), 4, "the counter was handed over");
    let listed = registry.list();
    assert_eq!(listed.len(), 2, "v1 is kept: {listed:?}");
    assert!(listed[0].standby && !listed[0].current);
    assert_eq!(v1.live_instances(), 1, "v1's instance is kept warm");

    let now = registry.rollback("hello").unwrap();
    assert_eq!(now.to_string(), "hello@1.0.0");
    assert_eq!(welcome(&registry), "Welcome, Gopher!");
    // The same instance, with its state as at the swap: 3, then 4.
    assert_eq!(count(&registry), 4);
    assert_eq!(registry.get("hello").unwrap().health().unwrap().restarts, 0);
    let listed = registry.list();
    assert_eq!(listed.len(), 1, "v2 is unloaded: {listed:?}");
    assert!(listed[0].current && !listed[0].standby);
    wait_for_event(&events, WAIT, "rolled back", |e| {
        matches!(e, Event::RolledBack { from, reason, .. }
            if from.to_string() == "hello@2.0.0" && reason == "on demand")
    });
    wait_for_event(
        &events,
        WAIT,
        "v2 unloaded",
        |e| matches!(e, Event::Unloaded { identity, .. } if identity.version.major == 2),
    );

    // Nothing left to roll back to.
    let err = registry.rollback("hello").unwrap_err();
    assert!(matches!(err, Error::Rollout { .. }), "{err:?}");
    assert!(err.to_string().contains("no previous version"), "{err}");
    assert_eq!(registry.rollback("nobody").unwrap_err().kind(), "rollout");
}

#[test]
fn without_grace_nothing_is_kept_and_after_it_the_previous_version_is_unloaded() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new();
    registry.activate(load(&rt, "hello-v1")).unwrap();
    let v1 = registry.get("hello").unwrap().plugin().unwrap();
    registry.activate(load(&rt, "hello-v2")).unwrap();
    assert_eq!(v1.live_instances(), 0, "the default keeps nothing");
    assert_eq!(registry.rollback("hello").unwrap_err().kind(), "rollout");

    let registry = Registry::new().with_grace(Duration::from_millis(300));
    let events = registry.subscribe();
    registry.activate(load(&rt, "hello-v1")).unwrap();
    let v1 = registry.get("hello").unwrap().plugin().unwrap();
    registry.activate(load(&rt, "hello-v2")).unwrap();
    assert_eq!(v1.live_instances(), 1);
    wait_for_event(
        &events,
        WAIT,
        "v1 unloaded at the end of its grace",
        |e| matches!(e, Event::Unloaded { identity, .. } if identity.version.major == 1),
    );
    assert_eq!(v1.live_instances(), 0, "its instance is freed");
    assert_eq!(registry.list().len(), 1);
    assert_eq!(registry.rollback("hello").unwrap_err().kind(), "rollout");
    assert_eq!(welcome(&registry), "Welcome back, Gopher!");

    // A third version: the kept one is the second, and the first is not
    // brought back by anything.
    let registry = Registry::new().with_grace(Duration::from_secs(60));
    registry.activate(load(&rt, "hello-v1")).unwrap();
    let v1 = registry.get("hello").unwrap().plugin().unwrap();
    registry.activate(load(&rt, "hello-v2")).unwrap();
    let rebuilt = with_custom_section(&guest_bytes("hello-v1"), "build", b"3");
    registry
        .activate(rt.load_bytes("hello", &rebuilt).unwrap())
        .unwrap();
    assert_eq!(v1.live_instances(), 0, "only one version is kept");
    assert_eq!(
        registry.rollback("hello").unwrap().to_string(),
        "hello@2.0.0"
    );
    assert_eq!(registry.rollback("hello").unwrap_err().kind(), "rollout");
}

#[test]
fn rollback_under_load_fails_no_call() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::with_pool_size(2).with_grace(Duration::from_secs(60));
    registry.activate(load(&rt, "hello-v1")).unwrap();
    registry.activate(load(&rt, "hello-v2")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, v1_answers) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (registry, stop) = (registry.clone(), stop.clone());
            let (calls, v1_answers) = (calls.clone(), v1_answers.clone());
            std::thread::spawn(move || {
                let handle = registry.get("hello").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let answer = handle.call(|i| i.welcome("Gopher")).unwrap();
                    if answer == "Welcome, Gopher!" {
                        v1_answers.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert_eq!(answer, "Welcome back, Gopher!");
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while calls.load(Ordering::Relaxed) < 1000 {
        std::thread::yield_now();
    }
    registry.rollback("hello").unwrap();
    let at_rollback = calls.load(Ordering::Relaxed);
    while calls.load(Ordering::Relaxed) < at_rollback + 1000 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("no call failed");
    }
    assert!(v1_answers.load(Ordering::Relaxed) >= 1000 - 2);
    assert_eq!(welcome(&registry), "Welcome, Gopher!");
}

#[test]
fn a_rolled_back_file_is_left_alone_by_the_watcher_until_it_changes() {
    let dir = TempDir::new("rollback-watch");
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, guest_bytes("hello-v1")).unwrap();
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::new().with_grace(Duration::from_secs(60));
    let events = registry.subscribe();
    let _watcher =
        wasmplug::Watcher::start_with(dir.path(), rt, registry.clone(), WatchOptions::default())
            .unwrap();
    replace_atomically(&file, &guest_bytes("hello-v2"));
    wait_for_event(
        &events,
        WAIT,
        "swap to v2",
        |e| matches!(e, Event::Swapped { to, .. } if to.version.major == 2),
    );

    registry.rollback("hello").unwrap();
    assert_eq!(welcome(&registry), "Welcome, Gopher!");
    // The watcher sees the file still holds v2, declined: nothing happens,
    // even when the same bytes are written again.
    replace_atomically(&file, &guest_bytes("hello-v2"));
    let later = events_within(&events, Duration::from_secs(1));
    assert!(activity(&later).is_empty(), "{:?}", activity(&later));
    assert_eq!(welcome(&registry), "Welcome, Gopher!");

    // A new content (v2 rebuilt: a custom section more) is a new decision.
    let rebuilt = with_custom_section(&guest_bytes("hello-v2"), "build", b"2");
    replace_atomically(&file, &rebuilt);
    wait_for_event(
        &events,
        WAIT,
        "swap to the rebuilt v2",
        |e| matches!(e, Event::Swapped { to, .. } if to.version.major == 2),
    );
}
