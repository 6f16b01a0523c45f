//! Bad input gets a clear error of the right kind, names the file and the
//! plugin, and loses nothing: plugins already serving keep serving.

use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::wasmtime::component::Val;
use wasmplug::{Error, Runtime};
use wasmplug_tests::{guest, guest_bytes, TempDir};

fn runtime() -> Runtime<GreeterPlugin> {
    Runtime::new().unwrap()
}

fn assert_load_error(err: Error, source: &str, needles: &[&str]) {
    let Error::Load { plugin, .. } = &err else {
        panic!("expected a load error, got {err:?}");
    };
    assert!(
        plugin.source.contains(source),
        "{plugin} should name {source}"
    );
    let message = err.to_string();
    for needle in needles {
        assert!(message.contains(needle), "missing {needle:?} in: {message}");
    }
}

#[test]
fn missing_file_is_refused_naming_the_path() {
    let err = runtime().load("/nonexistent/dir/plugin.wasm").unwrap_err();
    assert_load_error(
        err,
        "/nonexistent/dir/plugin.wasm",
        &["reading /nonexistent/dir/plugin.wasm"],
    );
}

#[test]
fn garbage_bytes_are_refused_as_not_a_component() {
    let dir = TempDir::new("garbage");
    let path = dir.path().join("garbage.wasm");
    std::fs::write(&path, b"this is not webassembly at all").unwrap();
    let err = runtime().load(&path).unwrap_err();
    assert_load_error(
        err,
        "garbage.wasm",
        &["plugin `garbage`", "not a valid WebAssembly component"],
    );
}

#[test]
fn truncated_component_is_refused_and_serving_plugins_keep_serving() {
    let rt = runtime();
    let mut serving = rt.load(guest("hello-v1")).unwrap().instantiate().unwrap();

    let bytes = guest_bytes("hello-v1");
    for cut in [8, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let err = rt.load_bytes("hello-truncated", &bytes[..cut]).unwrap_err();
        // Depending on where the cut falls, the parser or the export check
        // refuses it; either way it is refused at load, naming the source.
        assert_load_error(err, "hello-truncated", &["refused at load"]);
        assert_eq!(
            serving.welcome("still here").unwrap(),
            "Welcome, still here!"
        );
    }
}

#[test]
fn core_module_is_refused_as_not_a_component() {
    let err = runtime()
        .load_bytes("core-module", b"(module)")
        .unwrap_err();
    assert_load_error(err, "core-module", &["not a valid WebAssembly component"]);
}

#[test]
fn component_of_another_world_is_refused_naming_the_missing_export() {
    // text-filter implements `acme:text/filter`, not the reference world.
    let err = runtime().load(guest("text-filter")).unwrap_err();
    assert_load_error(err, "text-filter.wasm", &["import"]);
}

#[test]
fn init_returning_an_error_refuses_the_plugin_with_the_guest_message() {
    let err = runtime().load(guest("broken-init-error")).unwrap_err();
    let Error::Init { plugin, .. } = &err else {
        panic!("expected an init error, got {err:?}");
    };
    assert_eq!(
        plugin.to_string().split_whitespace().nth(1),
        Some("`broken-init@1.0.0`")
    );
    assert!(
        err.to_string().contains("missing configuration: greeting"),
        "{err}"
    );
}

#[test]
fn init_trapping_refuses_the_plugin_as_an_init_failure() {
    let err = runtime().load(guest("broken-init-trap")).unwrap_err();
    assert!(matches!(err, Error::Init { .. }), "{err:?}");
    assert!(err.to_string().contains("init trapped"), "{err}");
    assert!(err.to_string().contains("broken-init-trap.wasm"), "{err}");
}

#[test]
fn guest_returned_error_is_the_plugin_saying_no_and_the_instance_stays_healthy() {
    let rt = runtime();
    let mut instance = rt.load(guest("hello-v1")).unwrap().instantiate().unwrap();
    let nameless = User {
        name: String::new(),
        age: 3,
    };
    let err = instance.birthday(&nameless).unwrap_err();
    let Error::Guest { plugin, message } = &err else {
        panic!("expected a guest error, got {err:?}");
    };
    assert_eq!(message, "a user needs a name");
    assert_eq!(
        plugin.version.as_ref().map(ToString::to_string).as_deref(),
        Some("1.0.0")
    );
    assert!(!err.is_trap());
    assert!(!instance.is_poisoned());
    assert_eq!(instance.count().unwrap(), 1);
}

#[test]
fn trap_poisons_only_its_own_instance() {
    let rt = runtime();
    let v2 = rt.load(guest("hello-v2")).unwrap();
    let mut crashing = v2.instantiate().unwrap();
    let mut sibling = v2.instantiate().unwrap();
    let mut other_plugin = rt.load(guest("hello-v1")).unwrap().instantiate().unwrap();
    assert_eq!(crashing.count().unwrap(), 1);

    // hello v2 has a deliberate overflow bug for this age.
    let ancient = User {
        name: "Methuselah".into(),
        age: u32::MAX,
    };
    let err = crashing.hello(&ancient).unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert!(!err.is_timeout());
    assert!(err.to_string().contains("hello@2.0.0"), "{err}");
    assert!(crashing.is_poisoned());

    // The crashed instance refuses further calls instead of running on
    // undefined state...
    let again = crashing.count().unwrap_err();
    assert!(again.to_string().contains("trapped earlier"), "{again}");
    // ...while everything else keeps serving, and a fresh instance is fine.
    assert_eq!(sibling.count().unwrap(), 1);
    assert_eq!(other_plugin.welcome("Gopher").unwrap(), "Welcome, Gopher!");
    assert_eq!(v2.instantiate().unwrap().count().unwrap(), 1);
}

#[test]
fn dynamic_calls_reach_exports_by_name_and_refuse_bad_calls() {
    let rt = runtime();
    let plugin = rt.load(guest("hello-v1")).unwrap();
    assert!(plugin
        .exports()
        .contains(&"wasmplug:plugin/greeter@1.0.0#welcome".to_string()));
    let mut instance = plugin.instantiate().unwrap();

    let out = instance
        .call_dynamic("welcome", &[Val::String("Zoë".into())])
        .unwrap();
    assert_eq!(out, vec![Val::String("Welcome, Zoë!".into())]);
    let out = instance.call_dynamic("greeter.count", &[]).unwrap();
    assert_eq!(out, vec![Val::U32(1)]);
    let out = instance
        .call_dynamic("wasmplug:plugin/greeter@1.0.0#count", &[])
        .unwrap();
    assert_eq!(out, vec![Val::U32(2)]);

    let err = instance.call_dynamic("farewell", &[]).unwrap_err();
    assert!(matches!(err, Error::BadCall { .. }), "{err:?}");
    assert!(err.to_string().contains("it exports"), "{err}");

    let err = instance
        .call_dynamic("welcome", &[Val::U32(7)])
        .unwrap_err();
    assert!(matches!(err, Error::BadCall { .. }), "{err:?}");
    assert!(
        !instance.is_poisoned(),
        "a mistyped call never entered the guest"
    );
    assert_eq!(
        instance.call_dynamic("count", &[]).unwrap(),
        vec![Val::U32(3)]
    );
}

#[test]
fn identity_version_must_be_semver() {
    let err = wasmplug::Identity::parse("hello", "one point oh").unwrap_err();
    assert!(err
        .to_string()
        .contains("expected a semver version like `1.2.3`, found `one point oh`"));
    assert!(wasmplug::Identity::parse(" ", "1.0.0").is_err());
}
