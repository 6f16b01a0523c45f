//! The conformance suite: the same tests against the reference world's
//! hello plugin in every guest language. Adding a language is one line in
//! the `conformance!` list at the bottom.
//!
//! Big interpreter components (JavaScript, Python) compile in seconds, so
//! the suite's runtime keeps compiled code in an on-disk cache under
//! `target/`: each component is compiled once per machine, not per test.

use std::sync::OnceLock;

use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::{Error, Plugin, Runtime};
use wasmplug_tests::{guest, guest_bytes, repo_root, TempDir};

fn runtime() -> &'static Runtime<GreeterPlugin> {
    static RUNTIME: OnceLock<Runtime<GreeterPlugin>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let cache = repo_root().join("target").join("wasmplug-test-cache");
        Runtime::builder().cache_dir(cache).build().unwrap()
    })
}

fn load(component: &str) -> Plugin<GreeterPlugin> {
    runtime().load(guest(component)).unwrap()
}

fn user(name: &str, age: u32) -> User {
    User {
        name: name.into(),
        age,
    }
}

pub fn identity_is_its_name_and_a_semver_version(component: &str, name: &str) {
    let plugin = load(component);
    assert_eq!(plugin.identity().name, name);
    assert_eq!(plugin.identity().version.to_string(), "1.0.0");
    assert_eq!(plugin.label(), format!("{name}@1.0.0"));
}

pub fn welcome_round_trips_ascii_empty_and_non_ascii_text(component: &str) {
    let mut instance = load(component).instantiate().unwrap();
    assert_eq!(instance.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(instance.welcome("").unwrap(), "Welcome, !");
    assert_eq!(
        instance.welcome("Zoë 🌍 Ωmega 日本").unwrap(),
        "Welcome, Zoë 🌍 Ωmega 日本!"
    );
}

pub fn hello_takes_the_user_record(component: &str) {
    let mut instance = load(component).instantiate().unwrap();
    assert_eq!(
        instance.hello(&user("Gopher", 13)).unwrap(),
        "Hello, Gopher!"
    );
    assert_eq!(instance.hello(&user("Zoë", 30)).unwrap(), "Hello, Zoë!");
}

pub fn the_counter_is_per_instance_and_init_ran_in_each(component: &str) {
    // Every greeter export traps before `init`: answers prove it ran.
    let plugin = load(component);
    let mut a = plugin.instantiate().unwrap();
    let mut b = plugin.instantiate().unwrap();
    assert_eq!(
        [a.count(), a.count(), a.count()].map(Result::unwrap),
        [1, 2, 3]
    );
    assert_eq!(b.count().unwrap(), 1);
    assert_eq!(a.count().unwrap(), 4);
}

pub fn birthday_returns_a_record_or_the_guests_own_error(component: &str) {
    let mut instance = load(component).instantiate().unwrap();
    assert_eq!(
        instance.birthday(&user("Gopher", 13)).unwrap(),
        user("Gopher", 14)
    );
    assert_eq!(
        instance.birthday(&user("Old", u32::MAX)).unwrap(),
        user("Old", u32::MAX)
    );
    let err = instance.birthday(&user("", 1)).unwrap_err();
    let Error::Guest { message, .. } = &err else {
        panic!("expected the guest's own error, got {err:?}");
    };
    assert_eq!(message, "a user needs a name");
    assert!(
        !instance.is_poisoned(),
        "a guest error leaves the instance healthy"
    );
    assert_eq!(instance.count().unwrap(), 1);
}

pub fn every_export_answers_the_dynamic_path(component: &str) {
    let mut instance = load(component).instantiate().unwrap();
    assert_eq!(
        instance.call_wave(r#"welcome("Zoë")"#).unwrap(),
        [r#""Welcome, Zoë!""#]
    );
    assert_eq!(
        instance.call_wave(r#"hello({name: "G", age: 1})"#).unwrap(),
        [r#""Hello, G!""#]
    );
    assert_eq!(instance.call_wave("count()").unwrap(), ["1"]);
    assert_eq!(
        instance
            .call_wave(r#"birthday({name: "G", age: 1})"#)
            .unwrap(),
        [r#"ok({name: "G", age: 2})"#]
    );
    // Qualified: componentize-py also exports an `init` of its own.
    assert_eq!(instance.call_wave("lifecycle.init()").unwrap(), ["ok"]);
}

pub fn a_second_load_comes_from_the_disk_cache(component: &str) {
    let dir = TempDir::new("conformance-cache");
    let first: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(dir.path()).build().unwrap();
    first.load(guest(component)).unwrap();
    assert_eq!(first.cache_stats().unwrap().misses, 1);
    let second: Runtime<GreeterPlugin> = Runtime::builder().cache_dir(dir.path()).build().unwrap();
    let plugin = second.load(guest(component)).unwrap();
    assert_eq!(
        second.cache_stats().unwrap().hits,
        1,
        "the second load came from the cache"
    );
    assert_eq!(
        plugin.instantiate().unwrap().welcome("cached").unwrap(),
        "Welcome, cached!"
    );
}

pub fn unloading_frees_its_compiled_code(component: &str) {
    let rt: Runtime<GreeterPlugin> = Runtime::new().unwrap();
    let plugin = rt.load_bytes(component, &guest_bytes(component)).unwrap();
    let instance = plugin.instantiate().unwrap();
    assert_eq!(rt.compiled_count(), 1);
    drop((plugin, instance));
    assert_eq!(rt.compiled_count(), 0);
}

macro_rules! conformance {
    ($($language:ident => ($component:literal, $name:literal)),* $(,)?) => {$(
        mod $language {
            const COMPONENT: &str = $component;
            #[test] fn identity_is_its_name_and_a_semver_version() { super::identity_is_its_name_and_a_semver_version(COMPONENT, $name) }
            #[test] fn welcome_round_trips_ascii_empty_and_non_ascii_text() { super::welcome_round_trips_ascii_empty_and_non_ascii_text(COMPONENT) }
            #[test] fn hello_takes_the_user_record() { super::hello_takes_the_user_record(COMPONENT) }
            #[test] fn the_counter_is_per_instance_and_init_ran_in_each() { super::the_counter_is_per_instance_and_init_ran_in_each(COMPONENT) }
            #[test] fn birthday_returns_a_record_or_the_guests_own_error() { super::birthday_returns_a_record_or_the_guests_own_error(COMPONENT) }
            #[test] fn every_export_answers_the_dynamic_path() { super::every_export_answers_the_dynamic_path(COMPONENT) }
            #[test] fn a_second_load_comes_from_the_disk_cache() { super::a_second_load_comes_from_the_disk_cache(COMPONENT) }
            #[test] fn unloading_frees_its_compiled_code() { super::unloading_frees_its_compiled_code(COMPONENT) }
        }
    )*};
}

conformance! {
    rust => ("hello-v1", "hello"),
    c => ("hello-c", "hello-c"),
    javascript => ("hello-js", "hello-js"),
    python => ("hello-py", "hello-py"),
    go => ("hello-go", "hello-go"),
}
