//! `wasmplug test PLUGIN CASES`, the plugin author's harness, run as the
//! real binary: against the reference guest, and against a component in
//! the text format whose every behaviour (a counter, a trap, imports with
//! and without results) the tests know.

use std::path::PathBuf;
use std::process::Command;

mod support;
use support::guest;

/// A scratch directory per test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wasmplug-harness-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wasmplug test PLUGIN CASES`: (exit code, stdout, stderr).
fn run_test(plugin: &str, cases: &str) -> (Option<i32>, String, String) {
    run_test_with(plugin, cases, &[])
}

fn run_test_with(plugin: &str, cases: &str, flags: &[&str]) -> (Option<i32>, String, String) {
    let cache = std::env::temp_dir().join(format!("wasmplug-harness-cache-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_wasmplug"))
        .env("RUST_LOG", "warn")
        .env("WASMPLUG_CACHE_DIR", cache)
        .args(["test", plugin, cases])
        .args(flags)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Imports `example:mock/host` (`now` returns a value, `say` does not);
/// exports `bump` (a per-instance counter that tells `say` each new value),
/// `boom` (traps), `time` (asks `now`), `spin` (never returns), `huge` (a
/// 1 MiB string) and `chatty` (calls `say` 200,000 times).
const COUNTER: &str = r#"
(component
  (import "example:mock/host" (instance $host
    (export "now" (func (result u64)))
    (export "say" (func (param "n" u32)))))
  (core func $now (canon lower (func $host "now")))
  (core func $say (canon lower (func $host "say")))
  (core module $m
    (import "host" "now" (func $now (result i64)))
    (import "host" "say" (func $say (param i32)))
    (memory (export "memory") 17)
    (global $n (mut i32) (i32.const 0))
    (func (export "spin") (loop $l (br $l)))
    (func (export "huge") (result i32)
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 1048576))
      (i32.const 0))
    (func (export "chatty") (local $i i32)
      (loop $l
        (call $say (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 200000)))))
    (func (export "bump") (result i32)
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (call $say (global.get $n))
      (global.get $n))
    (func (export "boom") unreachable)
    (func (export "time") (result i64) (call $now)))
  (core instance $i (instantiate $m
    (with "host" (instance (export "now" (func $now)) (export "say" (func $say))))))
  (func (export "bump") (result u32) (canon lift (core func $i "bump")))
  (func (export "boom") (canon lift (core func $i "boom")))
  (func (export "time") (result u64) (canon lift (core func $i "time")))
  (func (export "spin") (canon lift (core func $i "spin")))
  (alias core export $i "memory" (core memory $mem))
  (func (export "huge") (result string) (canon lift (core func $i "huge") (memory $mem)))
  (func (export "chatty") (canon lift (core func $i "chatty"))))
"#;

#[test]
fn cases_pass_against_the_reference_guest_with_mocked_and_recorded_imports() {
    let scratch = Scratch::new("reference");
    let cases = scratch.write(
        "cases.toml",
        r#"
[mocks]
"config.get" = 'some("Hej")'

[[case]]
name = "greets with the setting"
call = 'welcome("Ann")'
expect = '"Hej, Ann!"'
imports = ['config.get("greeting")']

[[case]]
name = "without the setting"
call = 'greeter.welcome("Ann")'
mocks = { "wasmplug:plugin/config#get" = 'none' }
expect = '"Welcome, Ann!"'

[[case]]
call = 'birthday({name: "Ann", age: 41})'
expect = 'ok({name: "Ann", age: 42})'
imports = []
"#,
    );
    let (code, out, err) = run_test(guest("hello-v1.1").to_str().unwrap(), &cases);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok    greets with the setting"), "{out}");
    assert!(out.contains("ok    without the setting"), "{out}");
    assert!(out.contains("3 passed, 0 failed (hello@1.1.0"), "{out}");
}

#[test]
fn a_mismatch_prints_the_call_expected_and_got_and_exits_non_zero() {
    let scratch = Scratch::new("mismatch");
    let plugin = scratch.write("counter.wat", COUNTER);
    let cases = scratch.write(
        "cases.toml",
        r#"
[[case]]
call = 'bump()'
expect = '1'
imports = ['host.say(1)']

[[case]]
name = "counts wrong on purpose"
call = 'bump()'
expect = '7'

[[case]]
name = "tells the host the wrong number"
call = 'bump()'
expect = '3'
imports = ['host.say(30)']
"#,
    );
    let (code, out, err) = run_test(&plugin, &cases);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("ok    bump()"), "{out}");
    assert!(out.contains("FAIL  counts wrong on purpose"), "{out}");
    // A named case shows its call; an unnamed one is named by it.
    assert!(out.contains("call:     bump()"), "{out}");
    assert_eq!(out.matches("call:").count(), 2, "{out}");
    assert!(out.contains("expected: 7"), "{out}");
    assert!(out.contains("got:      2"), "{out}");
    // The calls it made are shown beside a failure.
    assert!(out.contains("imports called:   host.say(2)"), "{out}");
    assert!(
        out.contains("FAIL  tells the host the wrong number"),
        "{out}"
    );
    assert!(out.contains("expected imports: host.say(30)"), "{out}");
    assert!(out.contains("imports called:   host.say(3)"), "{out}");
    assert!(out.contains("1 passed, 2 failed"), "{out}");
}

#[test]
fn a_trap_fails_its_case_and_the_next_case_runs_on_a_fresh_instance() {
    let scratch = Scratch::new("trap");
    let plugin = scratch.write("counter.wat", COUNTER);
    let cases = scratch.write(
        "cases.toml",
        r#"
[[case]]
call = 'bump()'
expect = '1'

[[case]]
call = 'bump()'
expect = '2'

[[case]]
name = "traps, as it should"
call = 'boom()'
expect-error = "trapped"

[[case]]
name = "counts from 1 again"
call = 'bump()'
expect = '1'

[[case]]
name = "an unexpected trap"
call = 'boom()'

[[case]]
call = 'bump()'
expect = '1'

[[case]]
call = 'bump()'
expect = '2'

[[case]]
name = "fresh on request"
fresh = true
call = 'bump()'
expect = '1'
"#,
    );
    let (code, out, err) = run_test(&plugin, &cases);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("ok    traps, as it should"), "{out}");
    assert!(out.contains("ok    counts from 1 again"), "{out}");
    assert!(out.contains("FAIL  an unexpected trap"), "{out}");
    assert!(out.contains("unreachable"), "the trap's cause: {out}");
    assert!(out.contains("ok    fresh on request"), "{out}");
    assert!(out.contains("7 passed, 1 failed"), "{out}");
}

#[test]
fn an_import_without_an_answer_fails_the_call_naming_it_and_its_type() {
    let scratch = Scratch::new("unanswered");
    let plugin = scratch.write("counter.wat", COUNTER);
    let cases = scratch.write(
        "cases.toml",
        r#"
[[case]]
name = "no answer"
call = 'time()'

[[case]]
name = "answered"
call = 'time()'
mocks = { "example:mock/host#now" = '1700000000' }
expect = '1700000000'
imports = ['host.now()']
"#,
    );
    let (code, out, err) = run_test(&plugin, &cases);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("FAIL  no answer"), "{out}");
    assert!(
        out.contains("the plugin called `host.now`, but the case file gives it no answer"),
        "{out}"
    );
    assert!(out.contains("func() -> u64"), "{out}");
    assert!(out.contains("ok    answered"), "{out}");
}

#[test]
fn mistakes_in_the_case_file_are_refused_before_any_call_naming_file_and_case() {
    let scratch = Scratch::new("mistakes");
    let plugin = scratch.write("counter.wat", COUNTER);
    let refused = |name: &str, cases: &str, wants: &[&str]| {
        let path = scratch.write(name, cases);
        let (code, out, err) = run_test(&plugin, &path);
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        // Nothing ran: no case line, no summary.
        assert_eq!(out, "", "{name}: nothing runs on a bad file: {out}");
        assert!(err.contains(name), "{name}: the file is named: {err}");
        for want in wants {
            assert!(err.contains(want), "{name}: wants {want:?} in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    refused(
        "typo.toml",
        "[[case]]\ncall = 'bump()'\nexpct = '1'\n",
        &["unknown field `expct`", "line 3"],
    );
    refused("empty.toml", "", &["has no cases"]);
    refused(
        "no-such-import.toml",
        "[mocks]\n\"host.later\" = '1'\n[[case]]\ncall = 'bump()'\n",
        &[
            "[mocks]",
            "the plugin imports no function `host.later`",
            "host.now, host.say",
        ],
    );
    refused(
        "mistyped-mock.toml",
        "[[case]]\ncall = 'time()'\nmocks = { \"host.now\" = '\"soon\"' }\n",
        &["case 1 (time())", "expected a value of type u64"],
    );
    refused(
        "needless-mock.toml",
        "[[case]]\ncall = 'bump()'\nmocks = { \"host.say\" = '1' }\n",
        &["`host.say` returns nothing, so it needs no answer"],
    );
    refused(
        "bad-expect.toml",
        "[[case]]\ncall = 'bump()'\n[[case]]\ncall = 'bump()'\nexpect = '1 2'\n",
        &["case 2", "`expect`", "column"],
    );
    refused(
        "no-such-export.toml",
        "[[case]]\ncall = 'bumpp()'\n",
        &[
            "cannot call `bumpp`",
            "bump, boom, time, spin, huge, chatty",
        ],
    );
    refused(
        "bad-args.toml",
        "[[case]]\ncall = 'bump(1)'\n",
        &["arguments of `bump`"],
    );
    refused(
        "bad-imports.toml",
        "[[case]]\ncall = 'bump()'\nimports = ['host.say(\"one\")']\n",
        &[
            "`imports` entry host.say(\"one\")",
            "arguments of `host.say`",
        ],
    );
}

#[test]
fn a_file_that_is_no_component_is_refused_naming_it() {
    let scratch = Scratch::new("not-a-component");
    let plugin = scratch.write("plugin.wasm", "\0asm garbage");
    let cases = scratch.write("cases.toml", "[[case]]\ncall = 'bump()'\n");
    let (code, out, err) = run_test(&plugin, &cases);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("plugin.wasm is not a WebAssembly component"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_plugin_that_hangs_floods_or_shouts_costs_one_case_not_the_run() {
    let scratch = Scratch::new("hostile");
    let plugin = scratch.write("counter.wat", COUNTER);
    let cases = scratch.write(
        "cases.toml",
        r#"
[[case]]
name = "never returns"
call = 'spin()'

[[case]]
name = "answers after the hang"
call = 'bump()'
expect = '1'

[[case]]
name = "a megabyte where a word was expected"
call = 'huge()'
expect = '"short"'

[[case]]
name = "two hundred thousand import calls"
call = 'chatty()'
imports = []

[[case]]
call = 'bump()'
expect = '2'
"#,
    );
    let started = std::time::Instant::now();
    let (code, out, err) = run_test_with(&plugin, &cases, &["--timeout", "300ms"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("FAIL  never returns"), "{out}");
    assert!(out.contains("deadline"), "the hang is named: {out}");
    assert!(out.contains("ok    answers after the hang"), "{out}");
    // The megabyte is cut in the report, saying how much was left out.
    assert!(
        out.contains("FAIL  a megabyte where a word was expected"),
        "{out}"
    );
    assert!(out.contains("more bytes not shown)"), "{out}");
    assert!(
        out.len() < 64 * 1024,
        "the report stays short: {} bytes",
        out.len()
    );
    // Two hundred thousand calls: counted, a few shown.
    assert!(
        out.contains("FAIL  two hundred thousand import calls"),
        "{out}"
    );
    assert!(out.contains("host.say(0), host.say(1)"), "{out}");
    assert!(out.contains("more calls"), "{out}");
    assert!(out.contains("ok    bump()"), "{out}");
    assert!(out.contains("2 passed, 3 failed"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the run ended (a hang would not)"
    );
}

/// Exports `wasmplug:plugin/lifecycle@1.0.0` with only `init`, which asks
/// the host's `now` and keeps the answer; `started` returns it.
const STARTS: &str = r#"
(component
  (import "example:mock/host" (instance $host (export "now" (func (result u64)))))
  (core func $now (canon lower (func $host "now")))
  (core module $m
    (import "host" "now" (func $now (result i64)))
    (memory (export "memory") 1)
    (global $t (mut i64) (i64.const 0))
    (func (export "init") (result i32)
      (global.set $t (call $now))
      (i32.store8 (i32.const 32) (i32.const 0))
      (i32.const 32))
    (func (export "started") (result i64) (global.get $t)))
  (core instance $i (instantiate $m (with "host" (instance (export "now" (func $now))))))
  (alias core export $i "memory" (core memory $mem))
  (func $init (result (result (error string))) (canon lift (core func $i "init") (memory $mem)))
  (instance $lifecycle (export "init" (func $init)))
  (export "wasmplug:plugin/lifecycle@1.0.0" (instance $lifecycle))
  (func (export "started") (result u64) (canon lift (core func $i "started"))))
"#;

#[test]
fn mocks_answer_the_imports_that_init_calls_on_every_instance() {
    let scratch = Scratch::new("init-mocks");
    let plugin = scratch.write("starts.wat", STARTS);
    let cases = scratch.write(
        "cases.toml",
        r#"
[mocks]
"host.now" = '7'

[[case]]
name = "init asked the file's mock"
call = 'started()'
expect = '7'

[[case]]
name = "a fresh instance's init asks the case's mock"
fresh = true
mocks = { "host.now" = '9' }
call = 'started()'
expect = '9'
imports = []
"#,
    );
    let (code, out, err) = run_test(&plugin, &cases);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
}
