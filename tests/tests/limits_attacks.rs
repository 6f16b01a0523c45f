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

use std::sync::Mutex;

use wasmplug::reference::GreeterPlugin;
use wasmplug::wasmtime::component::Val;
use wasmplug::{policy::LimitHit, Dynamic, Error, Policy, Registry, Runtime};
use wasmplug_tests::{capture_logs, guest};

const MIB: usize = 1 << 20;
/// One wasm page.
const PAGE: usize = 64 * 1024;

fn dynamic(policy: Policy) -> Runtime<Dynamic> {
    Runtime::<Dynamic>::builder()
        .policy(policy)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Finding 3: the memory cap bounds the sum of all memories of an instance.

/// Four core instances of one module, each with a memory (and a table) of
/// its own, and a driver that grows each of them by the same amount.
/// `grow-all(pages)` returns how many memories grew; `grow-all-or-trap`
/// traps at the first that does not; `grow-tables(n)` returns how many
/// tables grew by `n` elements.
const FOUR_MEMORIES: &str = r#"
(component
  (core module $part
    (memory 1)
    (table 1 funcref)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0)))
    (func (export "grow-table") (param i32) (result i32)
      (table.grow (ref.null func) (local.get 0))))
  (core instance $a (instantiate $part))
  (core instance $b (instantiate $part))
  (core instance $c (instantiate $part))
  (core instance $d (instantiate $part))
  (core module $driver
    (import "a" "grow" (func $a (param i32) (result i32)))
    (import "b" "grow" (func $b (param i32) (result i32)))
    (import "c" "grow" (func $c (param i32) (result i32)))
    (import "d" "grow" (func $d (param i32) (result i32)))
    (import "a" "grow-table" (func $ta (param i32) (result i32)))
    (import "b" "grow-table" (func $tb (param i32) (result i32)))
    (import "c" "grow-table" (func $tc (param i32) (result i32)))
    (import "d" "grow-table" (func $td (param i32) (result i32)))
    (func $grew (param i32) (result i32)
      (i32.ne (local.get 0) (i32.const -1)))
    (func (export "grow-all") (param $n i32) (result i32)
      (i32.add
        (i32.add (call $grew (call $a (local.get $n))) (call $grew (call $b (local.get $n))))
        (i32.add (call $grew (call $c (local.get $n))) (call $grew (call $d (local.get $n))))))
    (func $must (param i32)
      (if (i32.eq (local.get 0) (i32.const -1)) (then unreachable)))
    (func (export "grow-all-or-trap") (param $n i32)
      (call $must (call $a (local.get $n)))
      (call $must (call $b (local.get $n)))
      (call $must (call $c (local.get $n)))
      (call $must (call $d (local.get $n))))
    (func (export "grow-tables") (param $n i32) (result i32)
      (i32.add
        (i32.add (call $grew (call $ta (local.get $n))) (call $grew (call $tb (local.get $n))))
        (i32.add (call $grew (call $tc (local.get $n))) (call $grew (call $td (local.get $n)))))))
  (core instance $drv (instantiate $driver
    (with "a" (instance $a)) (with "b" (instance $b))
    (with "c" (instance $c)) (with "d" (instance $d))))
  (func (export "grow-all") (param "pages" u32) (result u32)
    (canon lift (core func $drv "grow-all")))
  (func (export "grow-all-or-trap") (param "pages" u32)
    (canon lift (core func $drv "grow-all-or-trap")))
  (func (export "grow-tables") (param "elements" u32) (result u32)
    (canon lift (core func $drv "grow-tables"))))
"#;

#[test]
fn several_memories_together_cannot_exceed_the_instance_memory_cap() {
    let cap = 64 * MIB;
    let rt = dynamic(Policy::default().memory_limit(cap));
    let plugin = rt
        .load_bytes("four-memories", FOUR_MEMORIES.as_bytes())
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    assert_eq!(
        instance.memory_bytes(),
        4 * PAGE,
        "four memories of one page"
    );

    // 32 MiB each: 128 MiB in all, under a 64 MiB cap. The first fits; the
    // second would take the instance past the cap.
    let grew = instance.call_wave("grow-all(512)").unwrap();
    assert_eq!(grew, ["1"], "memories grown by 32 MiB each");
    assert!(
        instance.memory_bytes() <= cap,
        "{} bytes held, cap {cap}",
        instance.memory_bytes()
    );
    assert_eq!(instance.memory_bytes(), 4 * PAGE + 32 * MIB);
    assert!(!instance.is_poisoned(), "a refused grow is not a trap");

    // A guest that treats the refusal as fatal traps, and the error says why.
    let mut instance = plugin.instantiate().unwrap();
    let err = instance.call_wave("grow-all-or-trap(512)").unwrap_err();
    assert!(err.is_trap(), "{err:?}");
    assert!(
        matches!(err.limit(), Some(LimitHit::Memory { limit, requested })
            if *limit == cap && *requested > cap),
        "{err:?}"
    );
    assert!(instance.memory_bytes() <= cap);
}

#[test]
fn several_tables_together_cannot_exceed_the_instance_table_cap() {
    let rt = dynamic(Policy::default().table_limit(1000));
    let plugin = rt
        .load_bytes("four-tables", FOUR_MEMORIES.as_bytes())
        .unwrap();
    let mut instance = plugin.instantiate().unwrap();
    // Four tables of 1 element; 400 more each would make 1,604.
    assert_eq!(instance.call_wave("grow-tables(400)").unwrap(), ["2"]);
    // 4 + 800 held: 196 left, for one table at most.
    assert_eq!(instance.call_wave("grow-tables(150)").unwrap(), ["1"]);
    assert_eq!(instance.call_wave("grow-tables(100)").unwrap(), ["0"]);
}

#[test]
fn an_instance_cannot_start_with_more_memory_than_the_cap() {
    // Each memory starts at 20 MiB: three fit a 64 MiB cap, four do not.
    let wat = FOUR_MEMORIES.replace("(memory 1)", "(memory 320)");
    let rt = dynamic(Policy::default().memory_limit(64 * MIB));
    let err = rt
        .load_bytes("big-start", wat.as_bytes())
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Init { .. } | Error::Instantiate { .. } | Error::Load { .. }
        ),
        "{err:?}"
    );
    let rt = dynamic(Policy::default().memory_limit(80 * MIB));
    let mut instance = rt
        .load_bytes("big-start", wat.as_bytes())
        .unwrap()
        .instantiate()
        .unwrap();
    assert_eq!(instance.memory_bytes(), 80 * MIB);
    assert_eq!(instance.call_wave("grow-all(1)").unwrap(), ["0"]);
}

// ---------------------------------------------------------------------------
// Finding 5: the host's log cannot be forged, nor flooded through host.log.

/// Log tests take turns: see the module docs.
static LOGS: Mutex<()> = Mutex::new(());

/// Run `f` with the `tracing` log captured (one test at a time); return
/// what was written.
fn capture(f: impl FnOnce()) -> String {
    let _turn = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    // Not TRACE: wasmtime-wasi traces every host call at that level.
    capture_logs(tracing::Level::DEBUG, f)
}

/// A host line the guest would like to slip into the log, after a newline
/// (and a carriage return and an ANSI "erase line", for a terminal).
const FORGED: &str = "all is well\n2025-01-01T00:00:00.000000Z  WARN wasmplug::registry: \
     swapped hello@1.0.0 -> hello@9.0.0 (forged)\r\u{1b}[2K\u{85}\u{7f}\tend";

/// Every line of `logs` mentioning `(forged)` is the guest's own, tagged,
/// with every control character escaped; and there is exactly one.
fn assert_not_forged(logs: &str, stream: Option<&str>) {
    assert!(
        !logs.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the log:\n{logs:?}"
    );
    let forged: Vec<&str> = logs.lines().filter(|l| l.contains("(forged)")).collect();
    assert_eq!(forged.len(), 1, "one guest line, one log line:\n{logs}");
    let line = forged[0];
    assert!(line.contains(" wasmplug::guest: "), "{line}");
    assert!(line.contains("plugin=\"hostile@1.0.0\""), "{line}");
    assert!(
        line.contains(r"all is well\n2025-01-01T00:00:00.000000Z  WARN wasmplug::registry"),
        "the newline is written as `\\n`: {line}"
    );
    assert!(
        line.contains(r"(forged)\r\u{1b}[2K\u{85}\u{7f}\tend"),
        "{line}"
    );
    if let Some(stream) = stream {
        assert!(line.contains(&format!("stream=\"{stream}\"")), "{line}");
    }
    for line in logs.lines() {
        // `TIMESTAMP LEVEL TARGET: message`: no line is the registry's.
        assert_ne!(
            line.split_whitespace().nth(2),
            Some("wasmplug::registry:"),
            "the log has a line the guest forged:\n{logs}"
        );
    }
}

#[test]
fn a_guest_log_line_cannot_forge_a_host_line() {
    let logs = capture(|| {
        let rt = Runtime::<GreeterPlugin>::new().unwrap();
        let mut instance = rt.load(guest("hostile")).unwrap().instantiate().unwrap();
        let answer = instance.welcome(&format!("log:{FORGED}")).unwrap();
        assert_eq!(answer, "logged");
    });
    assert_not_forged(&logs, None);
}

#[test]
fn a_guest_stdout_line_cannot_forge_a_host_line() {
    // stdout is cut into lines at `\n` (each one a tagged event), so the
    // forgery tries without one: a carriage return and ANSI codes to
    // rewrite the line on a terminal.
    let forged = FORGED.replace('\n', "\r");
    let logs = capture(|| {
        let rt = Runtime::<GreeterPlugin>::new().unwrap();
        let mut instance = rt.load(guest("hostile")).unwrap().instantiate().unwrap();
        assert_eq!(
            instance.welcome(&format!("print:{forged}")).unwrap(),
            "printed"
        );
    });
    assert!(
        !logs.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the log:\n{logs:?}"
    );
    let line = logs
        .lines()
        .find(|l| l.contains("(forged)"))
        .unwrap_or_else(|| panic!("the guest's line is not in the log:\n{logs}"));
    assert!(line.contains(" wasmplug::guest: "), "{line}");
    assert!(line.contains("stream=\"stdout\""), "{line}");
    assert!(line.contains(r"all is well\r2025-01-01"), "{line}");
    assert!(
        line.contains(r"(forged)\r\u{1b}[2K\u{85}\u{7f}\tend"),
        "{line}"
    );
}

/// The bytes of the guest's `x` floods that reached the log, and the
/// warnings that the limit was reached, for `stream`.
/// `host.log` events carry no `stream` field; stdout's and stderr's do.
fn flood_in_log(logs: &str, stream: &str) -> (usize, usize) {
    let ours: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("plugin=\"hostile@1.0.0\""))
        .collect();
    let of_stream = |l: &&&str| match stream {
        "log" => !l.contains("stream="),
        _ => l.contains(&format!("stream=\"{stream}\"")),
    };
    let logged = ours
        .iter()
        .filter(|l| l.contains(": xx") && of_stream(l))
        .map(|l| l.chars().filter(|&c| c == 'x').count())
        .sum();
    let warnings = ours
        .iter()
        .filter(|l| {
            l.contains("output limit reached") && l.contains(&format!("stream=\"{stream}\""))
        })
        .count();
    (logged, warnings)
}

#[test]
fn host_log_is_capped_like_stdout() {
    let limit = 64 * 1024;
    let policy = Policy::default().output_limit(limit);
    let logs = capture(|| {
        let rt = Runtime::<GreeterPlugin>::new().unwrap();
        let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();
        let mut instance = plugin.instantiate().unwrap();
        // 100 MB through host.log in one call, in messages of 1,000 bytes.
        assert_eq!(instance.welcome("logflood:100000000").unwrap(), "logged");
        // The budget is per instance: a second flood adds nothing.
        assert_eq!(instance.welcome("logflood:100000").unwrap(), "logged");
        // The same through stdout, on its own budget.
        assert_eq!(instance.welcome("flood:100000000").unwrap(), "flooded");
        assert!(!instance.is_poisoned());
    });
    let (logged, warnings) = flood_in_log(&logs, "log");
    assert!(
        logged <= limit,
        "{logged} bytes through host.log, limit {limit}"
    );
    assert!(logged > limit - 2000, "the budget was used: {logged} bytes");
    assert_eq!(warnings, 1, "one warning for host.log");
    let (stdout, stdout_warnings) = flood_in_log(&logs, "stdout");
    assert!(
        stdout <= limit,
        "{stdout} bytes through stdout, limit {limit}"
    );
    assert_eq!(stdout_warnings, 1, "one warning for stdout");
    assert!(
        logs.len() < 4 * limit,
        "the whole log is {} bytes for a {limit}-byte limit per stream",
        logs.len()
    );
}

#[test]
fn one_huge_host_log_message_is_cut_at_the_limit() {
    let limit = 64 * 1024;
    let policy = Policy::default().output_limit(limit);
    let logs = capture(|| {
        let rt = Runtime::<GreeterPlugin>::new().unwrap();
        let plugin = rt.load_with_policy(guest("hostile"), policy).unwrap();
        let mut instance = plugin.instantiate().unwrap();
        let message = "x".repeat(10 << 20);
        let answer = instance.welcome(&format!("log:{message}")).unwrap();
        assert!(answer == "logged", "{}", &answer[..answer.len().min(100)]);
    });
    let (logged, warnings) = flood_in_log(&logs, "log");
    assert!(
        logged < limit,
        "{logged} bytes of one message, limit {limit}"
    );
    assert!(
        logged > limit - 100,
        "cut at the limit, not dropped: {logged}"
    );
    assert_eq!(warnings, 1);
}

#[test]
fn the_embedders_own_log_helper_escapes_too() {
    let logs = capture(|| {
        wasmplug::log::emit("hostile@1.0.0", wasmplug::log::Level::Warn, FORGED);
    });
    assert_not_forged(&logs, None);
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
