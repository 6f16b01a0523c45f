//! One host, plugins of several world versions: the reference world at
//! 1.1.0 and 1.0.0 through `wasmplug::reference::versions::Greeter`.
//!
//! The conformance part runs per world version: every 1.0 guest (four
//! languages, the very bytes a 1.0 host loads) and every 1.1 guest (Rust
//! and C) against the one 1.1 host. The rest tries to break the promise:
//! a mistyped 1.1 plugin, a 2.0 plugin, components that lie about their
//! versions, a swap 1.0 → 1.1 → 1.0 under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use wasmplug::reference::versions::{Greeter, Settings, User};
use wasmplug::reference::GreeterPlugin;
use wasmplug::{Error, Instance, Plugin, Registry, Runtime};
use wasmplug_tests::{guest, guest_bytes, repo_root, TempDir};

/// The 1.1 host every test shares, with the on-disk cache of the
/// conformance suite (the interpreter guests compile in seconds).
fn host() -> &'static Runtime<Greeter> {
    static RUNTIME: OnceLock<Runtime<Greeter>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let cache = repo_root().join("target").join("wasmplug-test-cache");
        Runtime::builder().cache_dir(cache).build().unwrap()
    })
}

fn load(component: &str) -> Plugin<Greeter> {
    host().load(guest(component)).unwrap()
}

fn user(name: &str, age: u32) -> User {
    User {
        name: name.into(),
        age,
    }
}

fn welcome(instance: &mut Instance<Greeter>, name: &str) -> wasmplug::Result<String> {
    instance.call(|plugin, store| plugin.greeter().welcome(store, name))
}

fn farewell(instance: &mut Instance<Greeter>, name: &str) -> wasmplug::Result<String> {
    instance.call(|plugin, store| plugin.greeter().farewell(store, name))
}

fn count(instance: &mut Instance<Greeter>) -> wasmplug::Result<u32> {
    instance.call(|plugin, store| plugin.greeter().count(store))
}

/// What every guest of any 1.x version answers the same way.
fn serves_every_1_0_function(component: &str, version: &str) {
    let plugin = load(component);
    assert_eq!(plugin.world_version(), Some(version));
    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(
        welcome(&mut instance, "Zoë 🌍").unwrap(),
        "Welcome, Zoë 🌍!"
    );
    let hello = instance.call(|p, s| p.greeter().hello(s, &user("Gopher", 13)));
    assert_eq!(hello.unwrap(), "Hello, Gopher!");
    assert_eq!([1, 2].map(|_| count(&mut instance).unwrap()), [1, 2]);
    let older = instance.call(|p, s| p.greeter().birthday(s, &user("Gopher", 13)));
    assert_eq!(older.unwrap(), Ok(user("Gopher", 14)));
    let refused = instance.call(|p, s| p.greeter().birthday(s, &user("", 1)));
    assert_eq!(refused.unwrap(), Err("a user needs a name".to_string()));
}

fn farewell_is_unsupported_and_the_instance_serves_on(component: &str) {
    let mut instance = load(component).instantiate().unwrap();
    assert_eq!(count(&mut instance).unwrap(), 1);
    let err = farewell(&mut instance, "Ann").unwrap_err();
    let Error::Unsupported { call, .. } = &err else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(
        (call.function.as_str(), call.world_version, call.since),
        ("greeter.farewell", "1.0.0", Some("1.1.0"))
    );
    assert_eq!(err.kind(), "unsupported");
    let message = err.to_string();
    assert!(
        message.contains("greeter.farewell") && message.contains("world version 1.0.0"),
        "{message}"
    );
    assert!(!instance.is_poisoned(), "nothing ran: the instance is fine");
    assert_eq!(count(&mut instance).unwrap(), 2, "and keeps its state");
}

fn farewell_and_the_embedders_settings(component: &str) {
    let plugin = load(component);
    assert_eq!(plugin.world_version(), Some("1.1.0"));
    assert_eq!(plugin.identity().version.to_string(), "1.1.0");
    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(
        farewell(&mut instance, "Zoë 🌍").unwrap(),
        "Goodbye, Zoë 🌍!"
    );
    // No setting: the 1.0 answer.
    assert_eq!(welcome(&mut instance, "Ann").unwrap(), "Welcome, Ann!");

    // The embedder's settings reach every instance, through `config.get`.
    let configured: Runtime<Greeter> = Runtime::builder()
        .instance_data(|| Settings::from_iter([("greeting", "Hej")]))
        .build()
        .unwrap();
    let plugin = configured.load(guest(component)).unwrap();
    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(welcome(&mut instance, "Ann").unwrap(), "Hej, Ann!");
    // `instantiate_with` still gives one instance its own.
    let own = Settings::from_iter([("greeting", "Moin")]);
    let mut instance = plugin.instantiate_with(own).unwrap();
    assert_eq!(welcome(&mut instance, "Ann").unwrap(), "Moin, Ann!");
}

fn a_1_0_host_refuses_it_naming_the_import_it_lacks(component: &str) {
    let old: Runtime<GreeterPlugin> = Runtime::new().unwrap();
    let err = old.load(guest(component)).unwrap_err();
    let message = format!("{err:#}");
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    assert!(
        message.contains("wasmplug:plugin/config@1.1.0") && message.contains(component),
        "{message}"
    );
}

macro_rules! per_world_version {
    (
        1.0: $($old:ident => $old_component:literal),* ;
        1.1: $($new:ident => $new_component:literal),* $(;)?
    ) => {
        mod world_1_0 {$(
            mod $old {
                const COMPONENT: &str = $old_component;
                #[test] fn serves_every_1_0_function() { crate::serves_every_1_0_function(COMPONENT, "1.0.0") }
                #[test] fn farewell_is_unsupported_and_the_instance_serves_on() { crate::farewell_is_unsupported_and_the_instance_serves_on(COMPONENT) }
            }
        )*}
        mod world_1_1 {$(
            mod $new {
                const COMPONENT: &str = $new_component;
                #[test] fn serves_every_1_0_function() { crate::serves_every_1_0_function(COMPONENT, "1.1.0") }
                #[test] fn farewell_and_the_embedders_settings() { crate::farewell_and_the_embedders_settings(COMPONENT) }
                #[test] fn a_1_0_host_refuses_it_naming_the_import_it_lacks() { crate::a_1_0_host_refuses_it_naming_the_import_it_lacks(COMPONENT) }
            }
        )*}
    };
}

per_world_version! {
    1.0: rust => "hello-v1", c => "hello-c", javascript => "hello-js", python => "hello-py", go => "hello-go";
    1.1: rust => "hello-v1.1", c => "hello-c-v1.1", go => "hello-go-v1.1";
}

#[test]
fn the_bytes_a_1_0_host_loads_load_unchanged_in_the_1_1_host() {
    let bytes = guest_bytes("hello-v1");
    let old: Runtime<GreeterPlugin> = Runtime::new().unwrap();
    let new: Runtime<Greeter> = Runtime::new().unwrap();
    let (a, b) = (
        old.load_bytes("hello-v1", &bytes).unwrap(),
        new.load_bytes("hello-v1", &bytes).unwrap(),
    );
    assert_eq!(a.content_hash(), b.content_hash());
    assert_eq!(
        (a.world_version(), b.world_version()),
        (None, Some("1.0.0"))
    );
    let (mut a, mut b) = (a.instantiate().unwrap(), b.instantiate().unwrap());
    assert_eq!(a.welcome("Ann").unwrap(), welcome(&mut b, "Ann").unwrap());
}

#[test]
fn a_mistyped_1_1_plugin_is_refused_naming_farewell_and_both_types() {
    // It fits 1.0 perfectly; binding it as 1.0 would hide the mistake.
    let err = host().load(guest("hello-mistyped-v1.1")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    for expected in [
        "hello-mistyped-v1.1",
        "wasmplug:plugin/greeter#farewell",
        "fn farewell(name: &str) -> String",
        "func(name: string) -> u32",
    ] {
        assert!(message.contains(expected), "`{expected}` in: {message}");
    }
}

#[test]
fn a_2_0_plugin_is_refused_naming_its_world_and_the_versions_served() {
    let registry = Registry::new();
    registry
        .activate(load("hello-v1"))
        .expect("a 1.0 plugin serves");
    let err = host().load(guest("hello-major2")).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    for expected in [
        "hello-major2",
        "targets world `wasmplug:plugin@2.0.0`",
        "the host serves wasmplug:plugin@1.1.0, wasmplug:plugin@1.0.0",
    ] {
        assert!(message.contains(expected), "`{expected}` in: {message}");
    }
    let answer = registry.get("hello").unwrap().call(|i| welcome(i, "Ann"));
    assert_eq!(answer.unwrap(), "Welcome, Ann!", "what served, serves on");
}

/// Components that lie about, or say nothing of, their world's version:
/// each refused before linking with the reason, none bound by accident.
#[test]
fn components_naming_no_or_mixed_versions_are_refused_with_the_reason() {
    let cases = [
        (
            "mixed majors",
            r#"(component
                (instance $a) (instance $b)
                (export "wasmplug:plugin/lifecycle@1.0.0" (instance $a))
                (export "wasmplug:plugin/greeter@2.0.0" (instance $b)))"#,
            "targets world `wasmplug:plugin@2.0.0` (it uses `wasmplug:plugin/greeter@2.0.0`)",
        ),
        (
            "no version",
            r#"(component (instance $a) (export "wasmplug:plugin/greeter" (instance $a)))"#,
            "`wasmplug:plugin/greeter` names no version of `wasmplug:plugin`",
        ),
        (
            "a pre-release",
            r#"(component (instance $a) (export "wasmplug:plugin/greeter@1.1.0-rc.1" (instance $a)))"#,
            "wasmplug:plugin@1.1.0-rc.1",
        ),
        (
            "another world",
            r#"(component (instance $a) (export "acme:other/greeter@1.0.0" (instance $a)))"#,
            "imports and exports nothing of `wasmplug:plugin`",
        ),
        (
            "an old major",
            r#"(component (instance $a) (export "wasmplug:plugin/greeter@0.9.0" (instance $a)))"#,
            "targets world `wasmplug:plugin@0.9.0`",
        ),
    ];
    for (case, wat, expected) in cases {
        let err = host().load_bytes(case, wat.as_bytes()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "{case}: `{expected}` in: {message}"
        );
    }
}

/// A version a plugin of a newer minor than the host's newest targets is
/// bound as the host's newest; one that lacks what its own version has
/// is refused (it cannot be a real 1.1 build).
#[test]
fn a_1_1_plugin_missing_a_1_1_function_is_refused_not_bound_as_1_0() {
    // hello 1.0's bytes, with its interfaces renamed to 1.1.0: a 1.1
    // plugin without `farewell`.
    let bytes = guest_bytes("hello-v1");
    let renamed = rename_versions(&bytes, b"@1.0.0", b"@1.1.0");
    let err = host().load_bytes("renamed", &renamed).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("targets `wasmplug:plugin@1.1.0` but does not export `wasmplug:plugin/greeter#farewell`"),
        "{message}"
    );
}

/// `from` → `to` (same length) throughout `bytes`: a component's import and
/// export names are plain strings in its binary.
fn rename_versions(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    let mut renamed = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            renamed += 1;
        }
        i += 1;
    }
    assert!(renamed > 0, "nothing to rename");
    out
}

/// Operators move a name from a 1.0 plugin to a 1.1 one and back while it
/// serves: no call fails, the counter rides the handoff both ways, and
/// `farewell` answers exactly while 1.1 serves.
#[test]
fn a_swap_1_0_to_1_1_to_1_0_under_load_fails_no_call() {
    let dir = TempDir::new("world-versions-swap");
    let file = dir.path().join("hello.wasm");
    // One instance: the counter read is the one handed over.
    let registry: Registry<Greeter> = Registry::with_pool_size(1);
    let activate = |component: &str| {
        std::fs::write(&file, guest_bytes(component)).unwrap();
        registry.activate(host().load(&file).unwrap()).unwrap();
    };
    activate("hello-v1");
    let handle = registry.get("hello").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop, calls) = (handle.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = handle.call(|i| welcome(i, "Ann"));
                    assert_eq!(answer.unwrap(), "Welcome, Ann!");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let counted = |expected: u32| {
        let n = handle
            .call(|i| i.call(|p, s| p.greeter().count(s)))
            .unwrap();
        assert!(
            n >= expected,
            "the counter was carried over: {n} < {expected}"
        );
        n
    };
    let bye = || handle.call(|i| farewell(i, "Ann"));
    let mut n = counted(1);
    assert!(bye().unwrap_err().is_unsupported());
    for (component, version) in [("hello-v1.1", "1.1.0"), ("hello-v1", "1.0.0")] {
        std::thread::sleep(std::time::Duration::from_millis(100));
        activate(component);
        assert_eq!(handle.plugin().unwrap().world_version(), Some(version));
        n = counted(n + 1);
        match version {
            "1.1.0" => assert_eq!(bye().unwrap(), "Goodbye, Ann!"),
            _ => assert!(bye().unwrap_err().is_unsupported()),
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("no call failed");
    }
    assert!(calls.load(Ordering::Relaxed) > 0);
}

/// An operator drops a 1.1 build over a 1.0 one in a watched directory,
/// then a 2.0 build (refused, 1.1 serves on), then the 1.0 build again.
#[test]
fn the_watcher_swaps_across_world_versions_and_refuses_another_major() {
    use wasmplug::{Event, Watcher};
    use wasmplug_tests::{replace_atomically, wait_for_event};
    let wait = std::time::Duration::from_secs(30);
    let dir = TempDir::new("world-versions-watch");
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, guest_bytes("hello-v1")).unwrap();
    let registry: Registry<Greeter> = Registry::with_pool_size(1);
    let events = registry.subscribe();
    let _watcher = Watcher::start(dir.path(), host().clone(), registry.clone()).unwrap();
    wait_for_event(&events, wait, "hello 1.0 loaded", |e| {
        matches!(e, Event::Loaded { .. })
    });
    let handle = registry.get("hello").unwrap();
    assert_eq!(handle.call(count).unwrap(), 1);

    replace_atomically(&file, &guest_bytes("hello-v1.1"));
    // 1.1 imports `config`, which 1.0 does not: held until approved.
    let held = wait_for_event(&events, wait, "1.1 held", |e| {
        matches!(e, Event::Held { .. })
    });
    assert!(
        held.to_string().contains("wasmplug:plugin/config"),
        "{held}"
    );
    registry.approve("hello").unwrap();
    let swapped = wait_for_event(&events, wait, "swap to 1.1", |e| {
        matches!(e, Event::Swapped { .. })
    });
    let Event::Swapped { state_carried, .. } = swapped else {
        unreachable!()
    };
    assert!(state_carried, "1.0 and 1.1 both export handoff");
    assert_eq!(handle.call(count).unwrap(), 2);
    assert_eq!(
        handle.call(|i| farewell(i, "Ann")).unwrap(),
        "Goodbye, Ann!"
    );

    replace_atomically(&file, &guest_bytes("hello-major2"));
    let failed = wait_for_event(&events, wait, "2.0 refused", |e| {
        matches!(e, Event::Failed { .. })
    });
    let Event::Failed { error, .. } = failed else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("wasmplug:plugin@2.0.0"),
        "{error}"
    );
    assert_eq!(
        handle.call(|i| farewell(i, "Ann")).unwrap(),
        "Goodbye, Ann!"
    );

    replace_atomically(&file, &guest_bytes("hello-v1"));
    wait_for_event(
        &events,
        wait,
        "back to 1.0",
        |e| matches!(e, Event::Swapped { to, .. } if to.version.to_string() == "1.0.0"),
    );
    assert_eq!(handle.call(count).unwrap(), 3);
    assert!(handle
        .call(|i| farewell(i, "Ann"))
        .unwrap_err()
        .is_unsupported());
}
