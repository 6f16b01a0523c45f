//! Attacks on the caps and on the host's log, and guests that answer with
//! what the host cannot use: each test is named for the attack it repels.
//!
//! * memory and tables: a component with several memories (or tables)
//!   cannot hold more in all than the one cap allows;
//! * the log: a guest line never starts a host line, and `host.log` is
//!   capped like stdout;
//! * results: a resource where WAVE needs text is an error, not a panic; a
//!   string out of bounds or invalid UTF-8 is the guest's crash, not a bad
//!   call.
//!
//! The log tests capture `tracing` with a subscriber of their own. `tracing`
//! keeps per-callsite interest globally, so they take turns (`LOGS`), and
//! the other tests here use inline WAT components that log nothing.

use wasmplug::wasmtime::component::Val;
use wasmplug::{Dynamic, Error, Policy, Registry, Runtime};
use wasmplug_tests::guest;

fn dynamic(policy: Policy) -> Runtime<Dynamic> {
    Runtime::<Dynamic>::builder()
        .policy(policy)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Finding 14: a result WAVE cannot write is an error, never a panic.

/// A component with a resource `counter` (and a second resource type,
/// `other`): `make-counter(n)` returns `own<counter>` of rep `n`,
/// `counter-value(c)` reads a borrowed counter's rep back, and
/// `make-other(n)` returns `own<other>`.
const RESOURCES: &str = r#"
(component
  (type $r (resource (rep i32)))
  (export $counter "counter" (type $r))
  (type $o (resource (rep i32)))
  (export $other "other" (type $o))
  (core func $new (canon resource.new $r))
  (core func $new-other (canon resource.new $o))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (import "" "new-other" (func $new-other (param i32) (result i32)))
    (func (export "make") (param i32) (result i32) (call $new (local.get 0)))
    (func (export "make-other") (param i32) (result i32) (call $new-other (local.get 0)))
    (func (export "value") (param i32) (result i32) (local.get 0)))
  (core instance $i (instantiate $m
    (with "" (instance (export "new" (func $new)) (export "new-other" (func $new-other))))))
  (func (export "make-counter") (param "start" u32) (result (own $counter))
    (canon lift (core func $i "make")))
  (func (export "make-other") (param "start" u32) (result (own $other))
    (canon lift (core func $i "make-other")))
  (func (export "counter-value") (param "c" (borrow $counter)) (result u32)
    (canon lift (core func $i "value"))))
"#;

#[test]
fn a_resource_result_is_an_error_not_a_panic() {
    let rt = dynamic(Policy::default());
    let plugin = rt.load_bytes("resources", RESOURCES.as_bytes()).unwrap();
    let mut instance = plugin.instantiate().unwrap();

    let err = instance.call_wave("make-counter(1)").unwrap_err();
    assert!(matches!(err, Error::BadCall { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("`make-counter`"), "{message}");
    assert!(message.contains("unsupported in WAVE"), "{message}");
    assert!(message.contains("own<"), "names the type: {message}");
    assert!(
        !instance.is_poisoned(),
        "the call ran and the instance is fine"
    );
    // Again: the handle was given back, the instance still answers.
    instance.call_wave("make-counter(2)").unwrap_err();

    // The same export through `call_dynamic` gives the resource itself, and
    // it can be passed back: the argument check knows its type.
    let counter = match instance
        .call_dynamic("make-counter", &[Val::U32(7)])
        .unwrap()
        .as_slice()
    {
        [Val::Resource(counter)] => *counter,
        other => panic!("{other:?}"),
    };
    let value = instance
        .call_dynamic("counter-value", &[Val::Resource(counter)])
        .unwrap();
    assert_eq!(value, [Val::U32(7)]);

    // A resource of another type is a bad call, and nothing ran.
    let other = match instance
        .call_dynamic("make-other", &[Val::U32(1)])
        .unwrap()
        .as_slice()
    {
        [Val::Resource(other)] => *other,
        other => panic!("{other:?}"),
    };
    let err = instance
        .call_dynamic("counter-value", &[Val::Resource(other)])
        .unwrap_err();
    assert!(matches!(err, Error::BadCall { .. }), "{err:?}");
    assert!(!instance.is_poisoned());
}

// ---------------------------------------------------------------------------
// Finding 15: a guest whose answer breaks the canonical ABI has crashed.

/// `oob` returns a string whose pointer is past the end of memory;
/// `bad-utf8` one of bytes that are not UTF-8; `fine` returns "fine".
/// `two(s, n)` takes a string and a u32, with a `realloc` that traps, so
/// any call that gets as far as copying its string into the guest traps.
const BAD_STRINGS: &str = r#"
(component
  (core module $m
    (memory (export "mem") 1)
    (data (i32.const 64) "\ff\fe\c0\80")
    (data (i32.const 96) "fine")
    (func $answer (param $ptr i32) (param $len i32) (result i32)
      (i32.store (i32.const 0) (local.get $ptr))
      (i32.store (i32.const 4) (local.get $len))
      (i32.const 0))
    (func (export "oob") (result i32) (call $answer (i32.const 0x7fff0000) (i32.const 16)))
    (func (export "bad-utf8") (result i32) (call $answer (i32.const 64) (i32.const 4)))
    (func (export "fine") (result i32) (call $answer (i32.const 96) (i32.const 4)))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) unreachable)
    (func (export "two") (param i32 i32 i32) (result i32) (local.get 2)))
  (core instance $i (instantiate $m))
  (func (export "oob") (result string)
    (canon lift (core func $i "oob") (memory (core memory $i "mem"))))
  (func (export "bad-utf8") (result string)
    (canon lift (core func $i "bad-utf8") (memory (core memory $i "mem"))))
  (func (export "fine") (result string)
    (canon lift (core func $i "fine") (memory (core memory $i "mem"))))
  (func (export "two") (param "s" string) (param "n" u32) (result u32)
    (canon lift (core func $i "two") (memory (core memory $i "mem")) (realloc (core func $i "realloc")))))
"#;

fn bad_strings() -> Runtime<Dynamic> {
    dynamic(Policy::default())
}

#[test]
fn a_guest_returning_an_out_of_bounds_string_is_a_trap_not_a_bad_call() {
    let rt = bad_strings();
    let plugin = rt
        .load_bytes("bad-strings", BAD_STRINGS.as_bytes())
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(instance.call_wave("fine()").unwrap(), [r#""fine""#]);
    let err = instance.call_dynamic("oob", &[]).unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert!(
        instance.is_poisoned(),
        "the guest's state is not trusted again"
    );
    let again = instance.call_wave("fine()").unwrap_err();
    assert!(again.is_trap(), "{again:?}");
}

#[test]
fn invalid_utf8_from_the_guest_is_a_trap() {
    let rt = bad_strings();
    let plugin = rt
        .load_bytes("bad-strings", BAD_STRINGS.as_bytes())
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let err = instance.call_wave("bad-utf8()").unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert!(instance.is_poisoned());
}

#[test]
fn a_registry_counts_a_bad_string_from_the_guest_as_a_trap() {
    let rt = bad_strings();
    let registry = Registry::<Dynamic>::new();
    registry
        .activate(
            rt.load_bytes("bad-strings", BAD_STRINGS.as_bytes())
                .unwrap(),
        )
        .unwrap();
    let handle = registry.get("bad-strings").unwrap();
    assert_eq!(handle.health().unwrap().traps, 0);
    let err = handle
        .call(|i| i.call_dynamic("bad-utf8", &[]))
        .unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert_eq!(handle.health().unwrap().traps, 1);
    // The crashed instance was dropped: a fresh one answers.
    let fine = handle.call(|i| i.call_wave("fine()")).unwrap();
    assert_eq!(fine, [r#""fine""#]);
    let err = handle.call(|i| i.call_dynamic("oob", &[])).unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    let health = handle.health().unwrap();
    assert_eq!((health.traps, health.restarts), (2, 1), "{health:?}");
}

#[test]
fn wrong_arguments_are_a_bad_call_and_nothing_runs() {
    let rt = bad_strings();
    let plugin = rt
        .load_bytes("bad-strings", BAD_STRINGS.as_bytes())
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    let wrong: [&[Val]; 5] = [
        // Right first argument, wrong second: wasmtime would copy the string
        // into the guest (running its trapping `realloc`) before noticing.
        &[Val::String("a".into()), Val::String("b".into())],
        &[Val::String("a".into())],
        &[Val::U32(1), Val::U32(1)],
        &[Val::String("a".into()), Val::U32(1), Val::U32(2)],
        &[Val::String("a".into()), Val::S32(1)],
    ];
    for args in wrong {
        let err = instance.call_dynamic("two", args).unwrap_err();
        assert!(matches!(err, Error::BadCall { .. }), "{args:?}: {err:?}");
        assert!(
            !instance.is_poisoned(),
            "{args:?}: a wrong call is the caller's"
        );
    }
    assert_eq!(instance.call_wave("fine()").unwrap(), [r#""fine""#]);
}

#[test]
fn nested_wrong_arguments_are_named_in_the_bad_call() {
    let rt = Runtime::<Dynamic>::new().unwrap();
    let mut instance = rt.load(guest("hello-v2")).unwrap().instantiate().unwrap();
    let who = |age: Val| {
        Val::Record(vec![
            ("name".into(), Val::String("Zoë".into())),
            ("age".into(), age),
        ])
    };
    let err = instance
        .call_dynamic("hello", &[who(Val::String("30".into()))])
        .unwrap_err();
    assert!(matches!(err, Error::BadCall { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("field `age`"), "{message}");
    assert!(
        message.contains("expected `u32`, got a string"),
        "{message}"
    );
    assert!(!instance.is_poisoned());
    let fine = instance
        .call_dynamic("hello", &[who(Val::U32(30))])
        .unwrap();
    assert!(matches!(fine.as_slice(), [Val::String(_)]), "{fine:?}");
}
