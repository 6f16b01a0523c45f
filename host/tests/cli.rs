//! The `wasmplug` command line, run as the real binary. (Here rather than in
//! `tests/`: cargo gives the binary's path only to its own package's tests.)

use std::io::{BufRead, BufReader, Write};

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;
use support::guest;

/// A cache directory of this test binary's own, so runs never touch the
/// user's `~/.cache/wasmplug`.
fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wasmplug-cli-cache-{}", std::process::id()))
}

fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmplug"));
    command
        .env("RUST_LOG", "warn")
        .env("WASMPLUG_CACHE_DIR", cache_dir());
    command
}

fn wasmplug(args: &[&str]) -> (bool, String, String) {
    wasmplug_with_stdin(args, "")
}

fn wasmplug_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn inspect_shows_identity_exports_as_wit_and_world_fit() {
    let hello = guest("hello-v1");
    let (ok, out, _) = wasmplug(&["inspect", hello.to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("identity   hello@1.0.0"), "{out}");
    assert!(
        out.contains("fits wasmplug:plugin/greeter-plugin@1.0.0"),
        "{out}"
    );
    assert!(
        out.contains("greeter@1.0.0#hello: func(who: record { name: string, age: u32 }) -> string"),
        "{out}"
    );

    let mistyped = guest("hello-mistyped");
    let (ok, out, _) = wasmplug(&["inspect", mistyped.to_str().unwrap()]);
    assert!(ok, "inspecting a mistyped plugin is not an error");
    assert!(out.contains("does not fit"), "{out}");
    assert!(out.contains("expected `record` found `string`"), "{out}");
}

#[test]
fn call_takes_and_prints_wave() {
    let v2 = guest("hello-v2");
    let (ok, out, _) = wasmplug(&[
        "call",
        v2.to_str().unwrap(),
        r#"hello({name: "Zoë", age: 30})"#,
    ]);
    assert!(ok);
    assert_eq!(out.trim(), r#""Hello, Zoë, age 30! Next year 31.""#);
    let (ok, out, _) = wasmplug(&[
        "call",
        v2.to_str().unwrap(),
        r#"birthday({name: "", age: 1})"#,
    ]);
    assert!(ok);
    assert_eq!(out.trim(), r#"err("a user needs a name")"#);
}

#[test]
fn call_pre_initialized_answers_and_a_refused_snapshot_says_why() {
    let v1 = guest("hello-v1");
    let (ok, out, err) = wasmplug(&[
        "call",
        "--pre-initialize",
        "deterministic",
        v1.to_str().unwrap(),
        r#"welcome("Zoë")"#,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#""Welcome, Zoë!""#);
    let random = guest("hello-v1-random-init");
    let (ok, _, err) = wasmplug(&[
        "call",
        "--pre-initialize",
        "deterministic",
        random.to_str().unwrap(),
        "count()",
    ]);
    assert!(!ok);
    assert!(err.contains("not deterministic"), "{err}");
    assert!(err.contains("freeze-clocks-and-entropy"), "{err}");
    let (ok, _, err) = wasmplug(&["call", "--pre-initialize", "always", "x.wasm", "x()"]);
    assert!(!ok);
    assert!(err.contains("`always` is not a mode"), "{err}");
}

#[test]
fn call_errors_say_what_to_fix() {
    let v1 = guest("hello-v1");
    let (ok, _, err) = wasmplug(&["call", v1.to_str().unwrap(), r#"welcome("x""#]);
    assert!(!ok);
    assert!(err.contains("bad WAVE at column 12"), "{err}");

    let (ok, _, err) = wasmplug(&["call", v1.to_str().unwrap(), "farewell()"]);
    assert!(!ok);
    assert!(err.contains("no exported function by that name"), "{err}");

    let (ok, _, err) = wasmplug(&["call", "/no/such/plugin.wasm", "x()"]);
    assert!(!ok);
    assert!(err.contains("reading /no/such/plugin.wasm"), "{err}");

    let not_a_component =
        std::env::temp_dir().join(format!("wasmplug-cli-{}.wasm", std::process::id()));
    std::fs::write(&not_a_component, "hello").unwrap();
    let (ok, _, err) = wasmplug(&["call", not_a_component.to_str().unwrap(), "x()"]);
    std::fs::remove_file(&not_a_component).unwrap();
    assert!(!ok);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

/// A component exporting a resource and a function returning it (the
/// text format: wasmtime reads it as it reads the binary one).
const RESOURCE_COMPONENT: &str = r#"
(component
  (type $r (resource (rep i32)))
  (export $counter "counter" (type $r))
  (core func $new (canon resource.new $r))
  (core module $m
    (import "" "new" (func $new (param i32) (result i32)))
    (func (export "make") (param i32) (result i32) (call $new (local.get 0))))
  (core instance $i (instantiate $m (with "" (instance (export "new" (func $new))))))
  (func (export "make-counter") (param "start" u32) (result (own $counter))
    (canon lift (core func $i "make"))))
"#;

#[test]
fn call_of_an_export_returning_a_resource_is_an_error_not_a_crash() {
    let path = std::env::temp_dir().join(format!("wasmplug-cli-audit-{}.wasm", std::process::id()));
    std::fs::write(&path, RESOURCE_COMPONENT).unwrap();
    let out = command()
        .args(["call", path.to_str().unwrap(), "make-counter(1)"])
        .output()
        .unwrap();
    let (ok, inspected, _) = wasmplug(&["inspect", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error, not a panic (101): {stderr}"
    );
    assert!(stderr.contains("`make-counter`"), "{stderr}");
    assert!(stderr.contains("unsupported in WAVE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(ok, "inspect works on it");
    assert!(
        inspected.contains("make-counter: func(start: u32) -> own<resource>"),
        "{inspected}"
    );
}

/// `wasmplug run DIR --watch ARGS` on a fresh directory holding hello v1:
/// lines to its stdin, the lines it prints, files swapped in; killed and
/// cleaned up when dropped.
struct Watching {
    dir: std::path::PathBuf,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<String>,
    /// How long [`wait_for`](Self::wait_for) waits for its line.
    patience: Duration,
}

impl Watching {
    fn start(tag: &str, args: &[&str], patience: Duration) -> Self {
        let dir = std::env::temp_dir().join(format!("wasmplug-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(guest("hello-v1"), dir.join("hello.wasm")).unwrap();
        let mut child = command()
            .args(["run", dir.to_str().unwrap(), "--watch"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .for_each(|l| drop(tx.send(l)))
        });
        Watching {
            dir,
            child,
            stdin,
            lines,
            patience,
        }
    }

    /// The next printed line containing `want`.
    fn wait_for(&self, want: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(self.patience)
                .unwrap_or_else(|_| panic!("no line containing {want:?}"));
            if line.contains(want) {
                return line;
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// Put the guest `name` in place of hello.wasm, as deploy tools do.
    fn replace(&self, name: &str) {
        std::fs::copy(guest(name), self.dir.join("hello.wasm.tmp")).unwrap();
        std::fs::rename(self.dir.join("hello.wasm.tmp"), self.dir.join("hello.wasm")).unwrap();
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_watch_shows_events_and_calls_the_current_version_while_files_are_swapped() {
    let mut w = Watching::start("watch", &[], Duration::from_secs(10));
    w.wait_for("watching");
    w.send(r#"hello welcome("Zoë")"#);
    assert_eq!(w.wait_for("Welcome"), r#""Welcome, Zoë!""#);

    w.replace("hello-v2");
    w.wait_for("swapped hello@1.0.0 -> hello@2.0.0");
    w.send(r#"hello welcome("Zoë")"#);
    assert_eq!(w.wait_for("Welcome"), r#""Welcome back, Zoë!""#);
}

#[test]
fn run_watch_holds_a_widening_version_until_approved_and_rolls_back_on_demand() {
    let mut w = Watching::start("rollout", &["--grace", "5m"], Duration::from_secs(20));
    w.wait_for("watching");
    w.replace("hello-v2-sockets");
    let held = w.wait_for("held");
    assert!(held.contains("wasi:sockets/"), "{held}");
    w.send(r#"hello welcome("Zoë")"#);
    assert_eq!(
        w.wait_for("Welcome"),
        r#""Welcome, Zoë!""#,
        "v1 still serves"
    );
    w.send("held");
    assert!(w.wait_for("held,").contains("hello@1.0.0 serving"));

    w.send("approve hello");
    w.wait_for("swapped hello@1.0.0 -> hello@2.0.0");
    w.wait_for("approved hello@2.0.0");
    w.send(r#"hello welcome("Zoë")"#);
    assert_eq!(w.wait_for("Welcome"), r#""Welcome back, Zoë!""#);

    w.send("rollback hello");
    w.wait_for("rolled back hello@2.0.0 -> hello@1.0.0");
    w.send(r#"hello welcome("Zoë")"#);
    assert_eq!(w.wait_for("Welcome"), r#""Welcome, Zoë!""#);
    // Nothing kept any more, nothing held: each says so.
    w.send("rollback hello");
    assert!(w.wait_for("error").contains("no previous version"));
    w.send("refuse hello");
    assert!(w.wait_for("error").contains("no version is held"));
}

#[test]
fn run_watch_with_a_canary_promotes_a_healthy_version_and_refuses_a_bad_share() {
    let (ok, _, err) = wasmplug(&["run", "plugins", "--watch", "--canary", "150%"]);
    assert!(
        !ok && err.contains("`150%` is not a share of calls"),
        "{err}"
    );

    let args = ["--canary", "50%", "--promote-after", "20"];
    let mut w = Watching::start("canary", &args, Duration::from_secs(20));
    w.wait_for("watching");
    w.replace("hello-v2");
    w.wait_for("trying hello@2.0.0 beside hello@1.0.0 (canary, 50% of calls)");
    w.send("list");
    assert!(
        w.wait_for("hello@2.0.0").starts_with('~'),
        "the candidate is marked"
    );
    for _ in 0..200 {
        w.send(r#"hello welcome("Zoë")"#);
    }
    let promoted = w.wait_for("promoted hello@2.0.0 over hello@1.0.0");
    assert!(promoted.contains("new: 20 calls"), "{promoted}");
}

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn inspect_checks_a_component_against_the_world_of_a_wit_file() {
    let filter = guest("text-filter");
    let (ok, out, err) = wasmplug(&[
        "inspect",
        filter.to_str().unwrap(),
        "--wit",
        &repo("tests/wit/filter.wit"),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("world      fits acme:text/filter@0.1.0"),
        "{out}"
    );
    // This host cannot link its `settings` import, yet it can be inspected.
    assert!(out.contains("identity   unknown"), "{out}");
    assert!(
        out.contains("apply: func(input: string) -> string"),
        "{out}"
    );

    let mistyped = guest("hello-mistyped");
    let (ok, out, _) = wasmplug(&[
        "inspect",
        mistyped.to_str().unwrap(),
        "--wit",
        &repo("wit/plugin.wit"),
        "--world",
        "greeter-plugin",
    ]);
    assert!(!ok, "a requested fit that fails is the exit status");
    assert!(
        out.contains("does not fit wasmplug:plugin/greeter-plugin@1.0.0"),
        "{out}"
    );
    assert!(
        out.contains("export `wasmplug:plugin/greeter@1.0.0#hello` is `func(who: string) -> string`, the world says `func(who: record { name: string, age: u32 }) -> string`"),
        "{out}"
    );

    let hello = guest("hello-v1");
    let (ok, out, _) = wasmplug(&[
        "inspect",
        hello.to_str().unwrap(),
        "--wit",
        &repo("tests/wit/filter.wit"),
    ]);
    assert!(!ok);
    assert!(out.contains("missing export `apply`"), "{out}");
    assert!(
        out.contains("imports `wasmplug:plugin/host@1.0.0#log`, which the world does not offer"),
        "{out}"
    );
}

#[test]
fn wit_errors_point_at_the_line_and_column_and_ambiguity_asks_for_a_world() {
    let hello = guest("hello-v1");
    let bad = std::env::temp_dir().join(format!("wasmplug-cli-bad-{}.wit", std::process::id()));
    std::fs::write(
        &bad,
        "package a:b;\nworld w {\n  export f: func(x: u32) -> strin;\n}\n",
    )
    .unwrap();
    let (ok, _, err) = wasmplug(&[
        "inspect",
        hello.to_str().unwrap(),
        "--wit",
        bad.to_str().unwrap(),
    ]);
    std::fs::remove_file(&bad).unwrap();
    assert!(!ok);
    assert!(err.contains("name `strin` does not exist"), "{err}");
    assert!(err.contains(&format!("{}:3:29", bad.display())), "{err}");

    let (ok, _, err) = wasmplug(&[
        "inspect",
        hello.to_str().unwrap(),
        "--wit",
        &repo("wit/plugin.wit"),
    ]);
    assert!(!ok);
    assert!(err.contains("see --world"), "{err}");
    assert!(err.contains("greeter-plugin-stateful"), "{err}");
}

#[test]
fn call_applies_grants_and_limits_from_flags() {
    let hostile = guest("hostile");
    let hostile = hostile.to_str().unwrap();
    let (ok, out, _) = wasmplug(&["call", hostile, r#"welcome("env")"#]);
    assert!(ok);
    assert_eq!(out.trim(), r#""""#, "no environment without a grant");
    let (ok, out, _) = wasmplug(&["call", hostile, r#"welcome("env")"#, "--env", "GREETING=hi"]);
    assert!(ok);
    assert_eq!(out.trim(), r#""GREETING=hi""#);

    let dir = std::env::temp_dir().join(format!("wasmplug-cli-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("note.txt"), "granted").unwrap();
    let grant = format!("{}::/data", dir.display());
    let (ok, out, _) = wasmplug(&[
        "call",
        hostile,
        r#"welcome("read:/data/note.txt")"#,
        "--dir",
        &grant,
    ]);
    assert!(ok);
    assert_eq!(out.trim(), r#""ok:granted""#);
    let (ok, out, _) = wasmplug(&[
        "call",
        hostile,
        r#"welcome("write:/data/new.txt")"#,
        "--dir",
        &grant,
    ]);
    assert!(ok);
    assert!(out.starts_with(r#""error:"#), "--dir is read-only: {out}");
    std::fs::remove_dir_all(&dir).unwrap();

    let (ok, _, err) = wasmplug(&["call", hostile, r#"welcome("loop")"#, "--timeout", "100ms"]);
    assert!(!ok);
    assert!(err.contains("trapped (its deadline passed)"), "{err}");
    let (ok, _, err) = wasmplug(&["call", hostile, r#"welcome("alloc")"#, "--memory", "16MiB"]);
    assert!(!ok);
    assert!(err.contains("memory limit of 16777216 bytes"), "{err}");

    let (ok, _, err) = wasmplug(&["call", hostile, "x()", "--memory", "lots"]);
    assert!(!ok);
    assert!(err.contains("not a size"), "{err}");
    let (ok, _, err) = wasmplug(&["call", hostile, "x()", "--timeout", "soon"]);
    assert!(!ok);
    assert!(err.contains("not a duration"), "{err}");
}

#[test]
fn run_loads_a_directory_serves_calls_from_stdin_and_reports_bad_files() {
    let dir = std::env::temp_dir().join(format!("wasmplug-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(guest("hello-v1"), dir.join("hello.wasm")).unwrap();
    std::fs::copy(guest("hello-mistyped"), dir.join("mistyped.wasm")).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let (ok, out, _) = wasmplug_with_stdin(
        &["run", dir.to_str().unwrap()],
        "hello welcome(\"Zoë\")\nlist\nnobody f()\n",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "ends when stdin ends: {out}");
    assert!(out.contains("loaded hello@1.0.0"), "{out}");
    // The Dynamic host accepts any world, so the mistyped plugin loads too.
    assert!(out.contains("loaded hello-mistyped@1.0.0"), "{out}");
    assert!(out.contains(r#""Welcome, Zoë!""#), "{out}");
    assert!(out.contains("* hello@1.0.0"), "{out}");
    assert!(out.contains("error: no plugin `nobody` is loaded"), "{out}");

    let (ok, _, err) = wasmplug(&["run", "/no/such/dir"]);
    assert!(!ok);
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn compile_fills_the_cache_once_and_names_what_it_could_not_compile() {
    let cache = std::env::temp_dir().join(format!("wasmplug-cli-compile-{}", std::process::id()));
    let v2 = guest("hello-v2");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "compile",
            v2.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        wasmplug(&refs)
    };
    let (ok, out, _) = run(args(&[]));
    assert!(ok);
    assert!(out.contains("compiled        hello@2.0.0"), "{out}");
    let entries = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("cwasm".as_ref()))
        .count();
    assert_eq!(entries, 1, "one entry written (beside the cache's key)");
    let (ok, out, _) = run(args(&[]));
    assert!(ok);
    assert!(out.contains("already cached  hello@2.0.0"), "{out}");

    let (ok, out, err) = run(args(&["/no/such/plugin.wasm"]));
    assert!(!ok);
    assert!(
        out.contains("already cached"),
        "the good one still counts: {out}"
    );
    assert!(err.contains("reading /no/such/plugin.wasm"), "{err}");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn every_command_has_help_with_an_example_and_completions_are_generated() {
    for cmd in ["inspect", "call", "run", "compile", "completions"] {
        let (ok, out, _) = wasmplug(&[cmd, "--help"]);
        assert!(ok, "{cmd} --help");
        assert!(
            out.contains("Example"),
            "{cmd} --help has an example:\n{out}"
        );
    }
    let (ok, out, _) = wasmplug(&["--help"]);
    assert!(ok && out.contains("Examples:"), "{out}");
    for (shell, marker) in [
        ("bash", "_wasmplug()"),
        ("zsh", "#compdef wasmplug"),
        ("fish", "complete -c wasmplug"),
    ] {
        let (ok, out, _) = wasmplug(&["completions", shell]);
        assert!(ok, "{shell}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("inspect") && out.contains("timeout"),
            "{shell}"
        );
    }
}

#[test]
fn inspect_names_the_world_versions_a_component_fits() {
    let cases = [
        (
            "hello-v1",
            "world      fits wasmplug:plugin/greeter-plugin@1.0.0\n",
        ),
        (
            "hello-v1.1",
            "world      fits wasmplug:plugin/greeter-plugin@1.1.0\n",
        ),
        (
            "hello-c-v1.1",
            "world      fits wasmplug:plugin/greeter-plugin@1.1.0\n",
        ),
        (
            "hello-major2",
            "targets world `wasmplug:plugin@2.0.0` (it uses `wasmplug:plugin/types@2.0.0`)",
        ),
    ];
    for (component, expected) in cases {
        let path = guest(component);
        let (ok, out, err) = wasmplug(&["inspect", path.to_str().unwrap()]);
        assert!(ok, "{out}{err}");
        assert!(out.contains(expected), "{component}: `{expected}` in {out}");
    }

    // A WIT directory with two versions: one verdict per version, newest
    // first; the exit status says whether one of them fits.
    let wit = repo("wit");
    let inspect = |component: &str| {
        let path = guest(component);
        let args = [
            "inspect",
            path.to_str().unwrap(),
            "--wit",
            &wit,
            "--world",
            "greeter-plugin",
        ];
        wasmplug(&args)
    };
    let (ok, out, _) = inspect("hello-v1");
    assert!(ok, "{out}");
    let lines = [
        "world      does not fit wasmplug:plugin/greeter-plugin@1.1.0",
        "- missing export `wasmplug:plugin/greeter@1.1.0#farewell`: func(name: string) -> string",
        "           fits wasmplug:plugin/greeter-plugin@1.0.0",
    ];
    for line in lines {
        assert!(out.contains(line), "`{line}` in {out}");
    }
    let (ok, out, _) = inspect("hello-v1.1");
    assert!(ok, "{out}");
    assert!(
        out.contains("world      fits wasmplug:plugin/greeter-plugin@1.1.0"),
        "{out}"
    );
    assert!(
        out.contains("imports `wasmplug:plugin/config@1.1.0#get`, which the world does not offer"),
        "{out}"
    );
    let (ok, out, _) = inspect("hello-major2");
    assert!(!ok, "fits no version: exit status 1\n{out}");
    assert_eq!(out.matches("does not fit").count(), 2, "{out}");
}
