//! The registry without the watcher: versions side by side, semver
//! resolution, pinning, atomic swap, state handoff and held instances.

use std::sync::mpsc;
use std::time::Duration;

use wasmplug::reference::GreeterPlugin;
use wasmplug::{registry::Activation, Error, Registry, Runtime};
use wasmplug_tests::{guest, TempDir};

fn setup() -> (Runtime<GreeterPlugin>, Registry<GreeterPlugin>) {
    (Runtime::new().unwrap(), Registry::new())
}

fn welcome(registry: &Registry<GreeterPlugin>, name: &str) -> String {
    registry
        .get(name)
        .unwrap()
        .call(|i| i.welcome("Gopher"))
        .unwrap()
}

#[test]
fn two_versions_side_by_side_are_resolved_by_semver_requirement() {
    let (rt, registry) = setup();
    assert_eq!(
        registry
            .activate(rt.load(guest("hello-v1")).unwrap())
            .unwrap(),
        Activation::Installed
    );
    let swapped = registry
        .activate(rt.load(guest("hello-v2")).unwrap())
        .unwrap();
    assert!(matches!(swapped, Activation::Swapped { .. }), "{swapped:?}");

    assert_eq!(welcome(&registry, "hello"), "Welcome back, Gopher!");
    let v1 = registry.get_matching("hello", "^1").unwrap();
    assert_eq!(
        v1.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome, Gopher!"
    );
    let any = registry.get_matching("hello", ">=1, <3").unwrap();
    assert_eq!(
        any.plugin().unwrap().identity().version.to_string(),
        "2.0.0"
    );

    let err = registry.get_matching("hello", "^7").err().unwrap();
    assert!(matches!(err, Error::NotLoaded { .. }), "{err:?}");
    assert!(err.to_string().contains("matching `^7`"), "{err}");
    assert!(matches!(
        registry.get("nobody"),
        Err(Error::NotLoaded { .. })
    ));
    assert!(registry.get_matching("hello", "not a requirement").is_err());

    let listing = registry.list();
    assert_eq!(listing.len(), 2);
    assert_eq!(listing[0].identity.to_string(), "hello@1.0.0");
    assert!(!listing[0].current && listing[1].current);
    assert!(listing[1].source.to_string().ends_with("hello-v2.wasm"));
    assert_eq!(
        listing[1].content_hash,
        rt.load(guest("hello-v2")).unwrap().content_hash()
    );
    assert_eq!(listing[1].live_instances, 1, "the serving instance");
}

#[test]
fn a_pinned_version_stays_current_while_others_are_activated() {
    let (rt, registry) = setup();
    registry
        .activate(rt.load(guest("hello-v1")).unwrap())
        .unwrap();
    registry
        .activate(rt.load(guest("hello-v2")).unwrap())
        .unwrap();
    registry
        .pin("hello", &semver::Version::new(1, 0, 0))
        .unwrap();
    assert_eq!(welcome(&registry, "hello"), "Welcome, Gopher!");

    let v3 = rt.load(guest("hello-v3")).unwrap();
    assert_eq!(registry.activate(v3).unwrap(), Activation::Added);
    assert_eq!(welcome(&registry, "hello"), "Welcome, Gopher!");
    assert!(registry.list().iter().any(|v| v.pinned && v.current));

    registry.unpin("hello");
    assert!(registry
        .pin("hello", &semver::Version::new(9, 0, 0))
        .is_err());
}

#[test]
fn state_handoff_carries_the_counter_over_and_a_refused_restore_keeps_the_old_version() {
    let (rt, registry) = setup();
    registry
        .activate(rt.load(guest("hello-v1")).unwrap())
        .unwrap();
    let hello = registry.get("hello").unwrap();
    for expected in 1..=3 {
        assert_eq!(hello.call(|i| i.count()).unwrap(), expected);
    }

    let swapped = registry
        .activate(rt.load(guest("hello-v2")).unwrap())
        .unwrap();
    assert!(
        matches!(
            swapped,
            Activation::Swapped {
                state_carried: true,
                ..
            }
        ),
        "{swapped:?}"
    );
    assert_eq!(
        hello.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome back, Gopher!"
    );
    assert_eq!(
        hello.call(|i| i.count()).unwrap(),
        4,
        "the counter goes on counting"
    );

    // v3 refuses the state of earlier versions: the swap is refused.
    let err = registry
        .activate(rt.load(guest("hello-v3")).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Handoff { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot read state of earlier versions"),
        "{err}"
    );
    assert_eq!(
        hello.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome back, Gopher!"
    );
    assert_eq!(hello.call(|i| i.count()).unwrap(), 5);
    assert!(registry
        .list()
        .iter()
        .all(|v| v.identity.version.major != 3));
}

#[test]
fn a_held_instance_keeps_its_version_across_a_swap_and_frees_it_when_dropped() {
    let (rt, registry) = setup();
    registry
        .activate(rt.load(guest("hello-v1")).unwrap())
        .unwrap();
    let handle = registry.get("hello").unwrap();
    let mut held = handle.instantiate().unwrap();

    registry
        .activate(rt.load(guest("hello-v2")).unwrap())
        .unwrap();
    registry.remove("hello", &semver::Version::new(1, 0, 0));
    assert_eq!(
        held.welcome("Gopher").unwrap(),
        "Welcome, Gopher!",
        "held: still v1"
    );
    assert_eq!(
        handle.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome back, Gopher!"
    );
    assert_eq!(rt.compiled_count(), 2, "v1 is alive while held");

    drop(held);
    assert_eq!(rt.compiled_count(), 1, "v1 freed with its last instance");
}

#[test]
fn the_old_version_finishes_its_call_in_flight_and_is_freed_when_it_ends() {
    // The operator's case: the same file now holds a new version.
    let dir = TempDir::new("in-flight");
    let file = dir.path().join("hello.wasm");
    std::fs::copy(guest("hello-v1"), &file).unwrap();
    let (rt, registry) = setup();
    registry.activate(rt.load(&file).unwrap()).unwrap();
    let handle = registry.get("hello").unwrap();

    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let in_flight = std::thread::spawn(move || {
        handle.call(|instance| {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap(); // the call is in flight on v1 here
            instance.welcome("Gopher")
        })
    });
    started.recv().unwrap();

    std::fs::copy(guest("hello-v2"), &file).unwrap();
    let v2 = rt.load(&file).unwrap();
    // The swap waits for the call in flight (it holds v1's serving
    // instance), so it runs on a thread while the call is released.
    let swapper = {
        let registry = registry.clone();
        std::thread::spawn(move || registry.activate(v2))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rt.compiled_count(), 2, "v1 in flight, v2 loaded");
    release.send(()).unwrap();

    assert_eq!(
        in_flight.join().unwrap().unwrap(),
        "Welcome, Gopher!",
        "finished on v1"
    );
    swapper.join().unwrap().unwrap();
    assert_eq!(welcome(&registry, "hello"), "Welcome back, Gopher!");
    assert_eq!(
        registry.list().len(),
        1,
        "the file's old version was replaced"
    );
    assert_eq!(rt.compiled_count(), 1, "v1 freed once its last call ended");
}

#[test]
fn a_pooled_version_serves_concurrent_callers_on_instances_of_their_own() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let registry = Registry::with_pool_size(2);
    registry
        .activate(rt.load(guest("hello-v1")).unwrap())
        .unwrap();
    let hello = registry.get("hello").unwrap();

    // Both callers are inside a call at once: with a pool of one, the
    // second would wait for the first and the barrier would never open.
    let barrier = Arc::new(Barrier::new(2));
    let inside = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (hello, barrier, inside) = (hello.clone(), barrier.clone(), inside.clone());
            std::thread::spawn(move || {
                hello.call(|i| {
                    inside.fetch_add(1, Ordering::SeqCst);
                    barrier.wait();
                    i.count()
                })
            })
        })
        .collect();
    let counts: Vec<u32> = callers
        .into_iter()
        .map(|c| c.join().unwrap().unwrap())
        .collect();
    // Each instance has a counter of its own.
    assert_eq!(counts, [1, 1]);
    assert_eq!(inside.load(Ordering::SeqCst), 2);
    assert_eq!(registry.list()[0].live_instances, 2, "the pool grew to 2");

    // The pool does not grow past its size: many sequential calls reuse it.
    for _ in 0..10 {
        hello.call(|i| i.welcome("Gopher")).unwrap();
    }
    assert_eq!(registry.list()[0].live_instances, 2);

    // A swap between pooled versions is the pointer store: no state to
    // carry, and the old pool is freed.
    let old = registry.list()[0].clone();
    let swapped = registry
        .activate(rt.load(guest("hello-v2")).unwrap())
        .unwrap();
    assert_eq!(
        swapped,
        Activation::Swapped {
            from: old.identity,
            state_carried: false
        }
    );
    assert_eq!(
        hello.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome back, Gopher!"
    );
    assert_eq!(registry.list().len(), 2, "v1 stays side by side");
    assert!(registry.remove("hello", &semver::Version::new(1, 0, 0)));
    assert_eq!(registry.list().len(), 1);
}

#[test]
fn linear_memory_is_counted_per_instance_and_per_version() {
    let rt = Runtime::<GreeterPlugin>::new().unwrap();
    let plugin = rt.load(guest("hello-v1")).unwrap();
    let loaded = plugin.memory_bytes();
    // The instance that loading checked is kept as the first one.
    let first = plugin.instantiate().unwrap();
    let one = first.memory_bytes();
    assert_eq!(loaded, one, "the loaded plugin held its first instance");
    assert!(one >= 64 << 10, "at least a page: {one}");
    let second = plugin.instantiate().unwrap();
    assert_eq!(plugin.memory_bytes(), one + second.memory_bytes());
    drop(first);
    assert_eq!(plugin.memory_bytes(), second.memory_bytes());
    drop(second);
    assert_eq!(plugin.memory_bytes(), 0);

    let registry = Registry::new();
    registry.activate(plugin).unwrap();
    assert_eq!(registry.list()[0].memory_bytes, one, "the serving instance");
}
