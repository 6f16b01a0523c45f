//! Hot swap through the watcher, with real files and the real watcher:
//! operators drop component files into a directory; the service picks them
//! up, never replaces a working version with a broken one, and unloads what
//! is removed.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use wasmplug::{Error, Event, Registry};
use wasmplug_tests::{guest, guest_bytes, replace_atomically, wait_for_event, welcome, Deployment};

fn wait_failed(d: &Deployment, what: &str) -> std::sync::Arc<Error> {
    let event = wait_for_event(&d.events, d.wait, what, |e| {
        matches!(e, Event::Failed { .. })
    });
    let Event::Failed { path, error } = event else {
        unreachable!()
    };
    assert_eq!(path, d.file, "the failed event names the file");
    error
}

#[test]
fn a_changed_file_is_swapped_in_and_a_new_file_loaded() {
    let d = Deployment::hello_v1("swap");
    assert_eq!(welcome(&d.registry), "Welcome, Gopher!");

    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    d.wait_swapped_to("2.0.0");
    assert_eq!(welcome(&d.registry), "Welcome back, Gopher!");
    assert_eq!(d.registry.list().len(), 1, "the file's old version is gone");

    let other = d.file.with_file_name("shared.wasm");
    std::fs::copy(guest("uses-shared-v1"), &other).unwrap();
    wait_for_event(
        &d.events,
        d.wait,
        "load of a new file",
        |e| matches!(e, Event::Loaded { identity, .. } if identity.name == "uses-shared-v1"),
    );
    let shared = d.registry.get("uses-shared-v1").unwrap();
    assert_eq!(
        shared.call(|i| i.welcome("A")).unwrap(),
        "Welcome, A! (shared-dep 1.0.0)"
    );
}

#[test]
fn broken_replacements_never_replace_the_working_version() {
    let d = Deployment::hello_v1("broken");
    let good = guest_bytes("hello-v1");
    let truncated = good[..good.len() / 2].to_vec();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("truncated file", truncated, "refused at load"),
        (
            "garbage bytes",
            b"\0asm garbage, not a component".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "mistyped component",
            guest_bytes("hello-mistyped"),
            "greeter@1.0.0#hello` has the wrong type",
        ),
        (
            "init that traps",
            guest_bytes("broken-init-trap"),
            "init trapped",
        ),
        (
            "init that returns an error",
            guest_bytes("broken-init-error"),
            "missing configuration: greeting",
        ),
    ];
    let hello = d.registry.get("hello").unwrap();
    assert_eq!(hello.call(|i| i.count()).unwrap(), 1);
    for (what, bytes, cause) in cases {
        replace_atomically(&d.file, &bytes);
        let error = wait_failed(&d, what);
        assert!(error.to_string().contains(cause), "{what}: {error}");
        assert!(error.to_string().contains("hello.wasm"), "{what}: {error}");
        // The old version keeps serving, with its state.
        assert_eq!(welcome(&d.registry), "Welcome, Gopher!", "{what}");
        assert!(hello.call(|i| i.count()).unwrap() > 1, "{what}");
    }
    // And a good file after all that is picked up.
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    d.wait_swapped_to("2.0.0");
}

#[test]
fn a_partly_written_file_is_picked_up_once_complete() {
    let d = Deployment::hello_v1("partial");
    let v2 = guest_bytes("hello-v2");
    // Written in place, not renamed: the watcher first sees half a file.
    std::fs::write(&d.file, &v2[..v2.len() / 2]).unwrap();
    wait_failed(&d, "half-written file");
    assert_eq!(welcome(&d.registry), "Welcome, Gopher!");

    std::fs::write(&d.file, &v2).unwrap();
    d.wait_swapped_to("2.0.0");
    assert_eq!(welcome(&d.registry), "Welcome back, Gopher!");
}

#[test]
fn a_deleted_file_is_unloaded_after_its_call_in_flight_and_reloaded_when_put_back() {
    let d = Deployment::hello_v1("delete");
    let handle = d.registry.get("hello").unwrap();
    let (started_tx, started) = mpsc::channel();
    let in_flight = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            handle.call(|instance| {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300)); // in flight
                instance.welcome("Gopher")
            })
        })
    };
    started.recv().unwrap();
    std::fs::remove_file(&d.file).unwrap();

    assert_eq!(
        in_flight.join().unwrap().unwrap(),
        "Welcome, Gopher!",
        "the call in flight finished"
    );
    wait_for_event(&d.events, d.wait, "unload", |e| {
        matches!(e, Event::Unloaded { .. })
    });
    let err = handle.call(|i| i.welcome("Gopher")).unwrap_err();
    assert!(matches!(err, Error::NotLoaded { .. }), "{err:?}");
    assert!(d.registry.list().is_empty());

    std::fs::copy(guest("hello-v1"), &d.file).unwrap();
    wait_for_event(&d.events, d.wait, "reload", |e| {
        matches!(e, Event::Loaded { .. })
    });
    assert_eq!(
        handle.call(|i| i.welcome("Gopher")).unwrap(),
        "Welcome, Gopher!"
    );
}

#[test]
fn state_is_handed_over_across_a_file_swap_and_a_refused_restore_keeps_the_old_version() {
    let d = Deployment::hello_v1("handoff");
    let hello = d.registry.get("hello").unwrap();
    for expected in 1..=3 {
        assert_eq!(hello.call(|i| i.count()).unwrap(), expected);
    }
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    let event = wait_for_event(&d.events, d.wait, "swap", |e| {
        matches!(e, Event::Swapped { .. })
    });
    assert!(
        matches!(
            event,
            Event::Swapped {
                state_carried: true,
                ..
            }
        ),
        "{event}"
    );
    assert_eq!(
        hello.call(|i| i.count()).unwrap(),
        4,
        "the counter goes on counting"
    );

    replace_atomically(&d.file, &guest_bytes("hello-v3"));
    let error = wait_failed(&d, "refused handoff");
    assert!(matches!(*error, Error::Handoff { .. }), "{error:?}");
    assert_eq!(welcome(&d.registry), "Welcome back, Gopher!");
    assert_eq!(hello.call(|i| i.count()).unwrap(), 5);
}

#[test]
fn the_watcher_ignores_files_that_are_not_components() {
    let d = Deployment::hello_v1("ignore");
    let dir: &Path = d.file.parent().unwrap();
    std::fs::write(dir.join("notes.txt"), "not a plugin").unwrap();
    std::fs::write(dir.join("hello.wasm.tmp"), "half a plugin").unwrap();
    // A real change after the noise is the next event we see.
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    let event = wait_for_event(&d.events, d.wait, "any", |_| true);
    assert!(matches!(event, Event::Loaded { .. }), "{event}");
}

#[test]
fn a_manifest_beside_a_component_asks_for_grants_and_the_host_decides() {
    let dir = wasmplug_tests::TempDir::new("manifest");
    let component = dir.path().join("hostile.wasm");
    let manifest = dir.path().join("hostile.toml");
    std::fs::copy(guest("hostile"), &component).unwrap();
    std::fs::write(&manifest, "env = [\"PATH\"]\n").unwrap();

    let registry = Registry::<wasmplug::reference::GreeterPlugin>::new();
    let events = registry.subscribe();
    let options = wasmplug::watcher::WatchOptions {
        allowance: wasmplug::manifest::Allowance::none().env("PATH"),
        ..Default::default()
    };
    let runtime = wasmplug::Runtime::new().unwrap();
    let _watcher =
        wasmplug::Watcher::start_with(dir.path(), runtime, registry.clone(), options).unwrap();
    let wait = Duration::from_secs(10);
    wait_for_event(&events, wait, "load", |e| matches!(e, Event::Loaded { .. }));
    let hostile = registry.get("hostile").unwrap();
    let env = hostile.call(|i| i.welcome("env")).unwrap();
    assert!(env.starts_with("PATH="), "granted by the manifest: {env:?}");

    // Asking for more than the host allows refuses the reload; the running
    // version keeps its grants and keeps serving.
    // Written atomically, as an operator should: a plain write truncates
    // first, and the watcher may load the empty manifest (no grants) before
    // the new text lands.
    replace_atomically(&manifest, b"env = [\"PATH\", \"HOME\"]\n");
    let event = wait_for_event(&events, wait, "failure", |e| {
        matches!(e, Event::Failed { .. })
    });
    let message = event.to_string();
    assert!(
        message.contains("`HOME`") && message.contains("hostile.toml"),
        "{message}"
    );
    assert_eq!(hostile.call(|i| i.welcome("env")).unwrap(), env);
}

/// The review's takeover: a new `evil.wasm` claiming `hello` became current
/// and received hello's handoff state. A name belongs to the file that
/// first claimed it: the claim is a `Failed` event naming both files, and
/// hello keeps serving with its state.
#[test]
fn a_new_file_claiming_another_plugins_name_is_refused_and_gets_no_state() {
    let d = Deployment::hello_v1("claim");
    let hello = d.registry.get("hello").unwrap();
    assert_eq!(hello.call(|i| i.count()).unwrap(), 1);
    let evil = d.file.with_file_name("evil.wasm");
    std::fs::copy(guest("hello-v2"), &evil).unwrap();
    let event = wait_for_event(&d.events, d.wait, "refused claim", |e| {
        matches!(e, Event::Failed { .. })
    });
    let Event::Failed { path, error } = event else {
        unreachable!()
    };
    assert_eq!(path, evil);
    let message = error.to_string();
    assert!(
        message.contains("hello.wasm") && message.contains("evil.wasm"),
        "{message}"
    );
    let serving = hello.plugin().unwrap();
    assert_eq!(serving.source(), &wasmplug::Source::File(d.file.clone()));
    assert_eq!(
        hello.call(|i| i.count()).unwrap(),
        2,
        "state stayed with hello"
    );
    assert_eq!(d.registry.list().len(), 1, "evil was not added beside it");
}

#[test]
fn a_swap_from_a_watched_file_compiles_the_new_version_once() {
    // The escalation guard compiles new bytes to read their imports before
    // they are loaded; the load must use that compile, not make another.
    // With a disk cache a second compile shows as a cache hit: a 12 MB
    // component paid 8 s for it.
    let cache = wasmplug_tests::TempDir::new("swap-compiles-once-cache");
    let runtime = wasmplug::Runtime::builder()
        .cache_dir(cache.path().join("cache"))
        .build()
        .unwrap();
    let d = Deployment::hello_v1_on(
        runtime,
        "swap-compiles-once",
        wasmplug::watcher::WatchOptions::default(),
    );
    replace_atomically(&d.file, &guest_bytes("hello-v2"));
    d.wait_swapped_to("2.0.0");
    let stats = d.runtime.cache_stats().unwrap();
    assert_eq!(
        (stats.misses, stats.hits),
        (2, 0),
        "v1 and v2 compiled once each, and nothing read back: {stats:?}"
    );
}
