//! The `wasmplug` command line attacked as a user's shell would: a cache
//! directory that cannot be used, an empty `XDG_CACHE_HOME`, another
//! plugin's cache entry under this one's name, and a stdout that closes
//! early (`| head -1`).
//!
//! These run the real release binary, `target/release/wasmplug`, which
//! `cargo test --release --workspace` (and so `just test`) builds. Run
//! alone, build it first: `cargo build --release -p wasmplug`.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use wasmplug_tests::{guest, wasmplug_binary, TempDir};

/// The binary with a cache of its own (never the user's) and only warnings
/// logged.
fn wasmplug(cache: &Path) -> Command {
    let mut command = Command::new(wasmplug_binary());
    command
        .env("RUST_LOG", "warn")
        .env_remove("XDG_CACHE_HOME")
        .env("WASMPLUG_CACHE_DIR", cache)
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(command: &mut Command) -> (Output, String, String) {
    let out = command.output().expect("running wasmplug");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    (out, stdout, stderr)
}

fn hello() -> String {
    guest("hello-v1").display().to_string()
}

#[test]
fn a_cache_directory_that_cannot_be_created_warns_once_and_the_command_still_runs() {
    for args in [
        vec!["call", &hello(), r#"welcome("x")"#],
        // `inspect` builds two runtimes: still one warning.
        vec!["inspect", &hello()],
    ] {
        let (out, stdout, stderr) = run(Command::new(wasmplug_binary())
            .args(&args)
            .env("RUST_LOG", "warn")
            .env("HOME", "/proc/nonexistent")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("WASMPLUG_CACHE_DIR"));
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stdout.contains(r#""Welcome, x!""#) || stdout.contains("hello@1.0.0"),
            "{args:?}: {stdout}"
        );
        assert_eq!(stderr.matches("warning:").count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("/proc/nonexistent/.cache/wasmplug"),
            "{stderr}"
        );
    }
}

#[test]
fn an_empty_xdg_cache_home_does_not_put_the_cache_in_the_working_directory() {
    let cwd = TempDir::new("cli-cwd");
    let home = TempDir::new("cli-home");
    let (out, stdout, stderr) = run(Command::new(wasmplug_binary())
        .args(["call", &hello(), r#"welcome("x")"#])
        .current_dir(cwd.path())
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", "")
        .env("HOME", home.path())
        .env_remove("WASMPLUG_CACHE_DIR"));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "\"Welcome, x!\"\n");
    assert!(!cwd.path().join("wasmplug").exists(), "./wasmplug created");
    assert!(
        home.path()
            .join(".cache")
            .join("wasmplug")
            .join("key")
            .is_file(),
        "the cache went to $HOME/.cache/wasmplug"
    );
}

#[test]
fn a_cache_directory_other_users_can_write_is_refused_with_a_warning() {
    let cache = TempDir::new("cli-shared");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, stdout, stderr) =
        run(wasmplug(cache.path()).args(["call", &hello(), r#"welcome("x")"#]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "\"Welcome, x!\"\n");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&cache.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("0777"), "{stderr}");
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "nothing cached in a shared directory"
    );
    // `compile` exists to fill the cache: there it is an error.
    let (out, _, stderr) = run(wasmplug(cache.path()).args(["compile", &hello()]));
    assert!(!out.status.success());
    assert!(stderr.contains("0777"), "{stderr}");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_cache_entry_copied_over_another_plugins_entry_never_runs_as_that_plugin() {
    // The issue's reproduction: hostile's entry copied over hello-v1's file
    // name, then hello-v1 called.
    let cache = TempDir::new("cli-swap");
    let hostile = guest("hostile").display().to_string();
    let (out, _, stderr) = run(wasmplug(cache.path()).args(["compile", &hello(), &hostile]));
    assert!(out.status.success(), "{stderr}");
    let entry_of = |hash: &str| {
        std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(hash))
            .unwrap_or_else(|| panic!("no entry for {hash}"))
    };
    let sha256 = |path: &str| {
        let (_, stdout, _) = run(wasmplug(cache.path()).args(["inspect", path]));
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("sha256     "))
            .expect("inspect prints sha256")
            .to_string()
    };
    let hello_entry = entry_of(&sha256(&hello()));
    std::fs::copy(entry_of(&sha256(&hostile)), &hello_entry).unwrap();

    let (out, stdout, stderr) =
        run(wasmplug(cache.path()).args(["call", &hello(), r#"welcome("time")"#]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "\"Welcome, time!\"\n", "hello-v1 ran, not hostile");
    assert!(stderr.contains("discarding cache entry"), "{stderr}");
    let (_, stdout, _) = run(wasmplug(cache.path()).args(["inspect", &hello()]));
    assert!(stdout.contains("identity   hello@1.0.0"), "{stdout}");
}

#[test]
fn inspect_into_a_pipe_closed_early_exits_quietly() {
    let cache = TempDir::new("cli-pipe");
    let mut child = wasmplug(cache.path())
        .args(["inspect", &hello()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running wasmplug");
    // `| head -0`: the reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// A stdout whose reader is already gone: a socket whose peer is closed,
/// so every write fails with `BrokenPipe`, as a pipe whose reader exited.
fn closed_stdout() -> Stdio {
    let (reader, writer) = UnixStream::pair().unwrap();
    drop(reader);
    Stdio::from(OwnedFd::from(writer))
}

#[test]
fn every_command_ends_quietly_when_its_stdout_is_closed() {
    let cache = TempDir::new("cli-closed");
    let plugins = TempDir::new("cli-closed-plugins");
    std::fs::copy(guest("hello-v1"), plugins.path().join("hello.wasm")).unwrap();
    let dir = plugins.path().display().to_string();
    for (args, stdin) in [
        (vec!["inspect", &hello()], ""),
        (vec!["call", &hello(), r#"welcome("x")"#], ""),
        (vec!["run", &dir], "list\nhello welcome(\"x\")\n"),
        (vec!["compile", &hello()], ""),
        (vec!["completions", "bash"], ""),
    ] {
        let mut child = wasmplug(cache.path())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running wasmplug");
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes()); // it may have exited already
        drop(input);
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?}: {stderr}", out.status);
    }
}

/// The review's CLI escape, `--dir-rw data::/data --dir data/pub::/pub`, is
/// refused before anything runs, naming both grants; `--connect` grants no
/// DNS, `--dns` does.
#[test]
fn the_cli_refuses_a_nested_grant_and_grants_the_network_one_use_at_a_time() {
    let dir = TempDir::new("cli-grants");
    let cache = dir.path().join("cache");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("pub")).unwrap();
    let hostile = guest("hostile");
    let (out, _, stderr) = run(wasmplug(&cache)
        .arg("call")
        .arg(&hostile)
        .arg(r#"welcome("list:/pub")"#)
        .arg("--dir-rw")
        .arg(format!("{}::/data", data.display()))
        .arg("--dir")
        .arg(format!("{}::/pub", data.join("pub").display())));
    assert!(!out.status.success(), "a nested grant ran");
    assert!(
        stderr.contains("inside the writable grant") && stderr.contains("/pub"),
        "{stderr}"
    );

    let lookup = |flags: &[&str]| {
        let (out, stdout, stderr) = run(wasmplug(&cache)
            .arg("call")
            .arg(&hostile)
            .arg(r#"welcome("lookup:localhost")"#)
            .args(flags));
        assert!(out.status.success(), "{stderr}");
        stdout
    };
    let denied = lookup(&["--connect", "127.0.0.1:9"]);
    assert!(denied.contains("error:"), "{denied}");
    let resolved = lookup(&["--dns"]);
    assert!(resolved.contains("resolved:"), "{resolved}");
}
