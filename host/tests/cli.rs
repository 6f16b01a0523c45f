//! The `wasmplug` command line, run as the real binary. (Here rather than in
//! `tests/`: cargo gives the binary's path only to its own package's tests.)

use std::io::{BufRead, BufReader, Write};

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;
use support::guest;

fn wasmplug(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmplug"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
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

#[test]
fn watch_shows_events_and_calls_the_current_version_while_files_are_swapped() {
    let dir = std::env::temp_dir().join(format!("wasmplug-cli-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hello.wasm");
    std::fs::copy(guest("hello-v1"), &file).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmplug"))
        .args(["watch", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    let wait_for = |want: &str| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no line containing {want:?}"));
        if line.contains(want) {
            return line;
        }
    };

    wait_for("watching");
    writeln!(stdin, r#"hello welcome("Zoë")"#).unwrap();
    assert_eq!(wait_for("Welcome"), r#""Welcome, Zoë!""#);

    std::fs::copy(guest("hello-v2"), dir.join("hello.wasm.tmp")).unwrap();
    std::fs::rename(dir.join("hello.wasm.tmp"), &file).unwrap();
    wait_for("swapped hello@1.0.0 -> hello@2.0.0");
    writeln!(stdin, r#"hello welcome("Zoë")"#).unwrap();
    assert_eq!(wait_for("Welcome"), r#""Welcome back, Zoë!""#);

    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
