//! The Go `plugin` package's pitfalls 1–5, each as the scenario wasmplug must
//! get right (pitfall 6, unloading, is `unload_returns_memory.rs`). Each test
//! asserts the opposite of what Go does; the Go behaviour is quoted above it.

use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::{Error, Runtime};
use wasmplug_tests::{guest, TempDir};

fn runtime() -> Runtime<GreeterPlugin> {
    Runtime::new().expect("a default runtime")
}

fn gopher() -> User {
    User {
        name: "Gopher".into(),
        age: 13,
    }
}

// Go 1: opening the same file twice returns the same object; `init()` runs
// once. There is no second, independent copy.
#[test]
fn same_file_loaded_twice_gives_two_isolated_instances() {
    let rt = runtime();
    let first = rt.load(guest("hello-v1")).unwrap();
    let second = rt.load(guest("hello-v1")).unwrap();

    // The same bytes compile once and share the compiled code...
    assert!(first.shares_code_with(&second));
    assert_eq!(rt.compiled_count(), 1);

    // ...but every instance is its own copy. The guest traps on any greeter
    // call made before its `init`, so an answer proves `init` ran in it.
    let mut a = first.instantiate().unwrap();
    let mut b = second.instantiate().unwrap();
    let mut c = first.instantiate().unwrap();
    assert_eq!(a.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(b.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(c.welcome("Gopher").unwrap(), "Welcome, Gopher!");

    // Counters are per instance: a counts to 3, b and c start from 1.
    assert_eq!(
        [a.count(), a.count(), a.count()].map(Result::unwrap),
        [1, 2, 3]
    );
    assert_eq!(b.count().unwrap(), 1);
    assert_eq!(c.count().unwrap(), 1);
    assert_eq!(a.count().unwrap(), 4);
    assert_eq!(first.live_instances(), 2);
}

// Go 2: a second version of a plugin is refused:
// `plugin.Open("./lib/welcom"): plugin already loaded`.
#[test]
fn two_versions_of_one_plugin_load_and_answer_side_by_side() {
    let rt = runtime();
    let v1 = rt.load(guest("hello-v1")).unwrap();
    let v2 = rt.load(guest("hello-v2")).unwrap();

    assert_eq!(v1.identity().name, "hello");
    assert_eq!(v2.identity().name, "hello");
    assert_eq!(v1.identity().version.to_string(), "1.0.0");
    assert_eq!(v2.identity().version.to_string(), "2.0.0");
    assert_ne!(v1.content_hash(), v2.content_hash());
    assert_eq!(rt.compiled_count(), 2);

    let mut one = v1.instantiate().unwrap();
    let mut two = v2.instantiate().unwrap();
    assert_eq!(one.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(two.welcome("Gopher").unwrap(), "Welcome back, Gopher!");
    // And back again: neither load disturbed the other.
    assert_eq!(one.welcome("Ferris").unwrap(), "Welcome, Ferris!");
}

// Go 3: a byte-identical copy under another file name is refused:
// `plugin already loaded`.
#[test]
fn byte_identical_copy_under_another_name_loads_beside_the_original() {
    let dir = TempDir::new("copy");
    let copy = dir.path().join("hello-copy.wasm");
    std::fs::copy(guest("hello-v1"), &copy).unwrap();

    let rt = runtime();
    let original = rt.load(guest("hello-v1")).unwrap();
    let twin = rt.load(&copy).unwrap();

    assert_eq!(original.content_hash(), twin.content_hash());
    assert!(
        original.shares_code_with(&twin),
        "identical bytes compile once"
    );
    assert_ne!(original.source(), twin.source());
    assert!(twin.source().to_string().ends_with("hello-copy.wasm"));

    let mut a = original.instantiate().unwrap();
    let mut b = twin.instantiate().unwrap();
    assert_eq!(a.count().unwrap(), 1);
    assert_eq!(b.count().unwrap(), 1);
    assert_eq!(b.welcome("Gopher").unwrap(), "Welcome, Gopher!");
}

// Go 4: dependencies shared by plugins load once and their globals are
// shared; a plugin built against another version of a shared package is
// refused: `plugin was built with a different version of package
// test_plugin/shared`.
#[test]
fn plugins_built_against_two_versions_of_a_crate_load_and_share_no_global() {
    let rt = runtime();
    let with_v1 = rt.load(guest("uses-shared-v1")).unwrap();
    let with_v2 = rt.load(guest("uses-shared-v2")).unwrap();

    let mut a = with_v1.instantiate().unwrap();
    let mut b = with_v2.instantiate().unwrap();
    assert_eq!(
        a.welcome("Gopher").unwrap(),
        "Welcome, Gopher! (shared-dep 1.0.0)"
    );
    assert_eq!(
        b.welcome("Gopher").unwrap(),
        "Welcome, Gopher! (shared-dep 2.0.0)"
    );

    // `count` is the shared crate's global counter. Were the global shared,
    // b would continue from a's 3.
    assert_eq!(
        [a.count(), a.count(), a.count()].map(Result::unwrap),
        [1, 2, 3]
    );
    assert_eq!(b.count().unwrap(), 1);
    // Nor is it shared between two instances of the same plugin.
    assert_eq!(with_v1.instantiate().unwrap().count().unwrap(), 1);
}

// Go 5: the host's `User` and the plugin's `User` are different types:
// `interface conversion: plugin.Symbol is func(*main.User), not
// func(*main.User) (types from different scopes)`.
#[test]
fn user_record_passes_from_host_to_plugin_and_back() {
    let rt = runtime();
    let mut v1 = rt.load(guest("hello-v1")).unwrap().instantiate().unwrap();
    let mut v2 = rt.load(guest("hello-v2")).unwrap().instantiate().unwrap();
    assert_eq!(v1.hello(&gopher()).unwrap(), "Hello, Gopher!");
    assert_eq!(
        v2.hello(&gopher()).unwrap(),
        "Hello, Gopher, age 13! Next year 14."
    );

    let older = v1.birthday(&gopher()).unwrap();
    assert_eq!(
        older,
        User {
            name: "Gopher".into(),
            age: 14
        }
    );

    let zoe = User {
        name: "Zoë 🌍 Ωmega".into(),
        age: 30,
    };
    assert_eq!(v1.hello(&zoe).unwrap(), "Hello, Zoë 🌍 Ωmega!");
}

// Go 5, continued: there the mismatch surfaces at the first call, as a
// panic. Here a plugin whose `hello` takes a string instead of a `user` is
// refused when it is loaded, and the error names the item and both types.
#[test]
fn mistyped_plugin_is_refused_at_load_naming_expected_and_found_types() {
    let rt = runtime();
    let err = rt.load(guest("hello-mistyped")).unwrap_err();
    let Error::Load { plugin, .. } = &err else {
        panic!("expected a load error, got {err:?}");
    };
    assert!(plugin.source.ends_with("hello-mistyped.wasm"), "{plugin}");
    let message = err.to_string();
    for needle in [
        "hello-mistyped.wasm",
        "greeter@1.0.0#hello`",
        "expected `record`",
        "found `string`",
    ] {
        assert!(message.contains(needle), "missing {needle:?} in: {message}");
    }
    assert_eq!(
        rt.compiled_count(),
        0,
        "nothing of a refused plugin stays loaded"
    );
}
