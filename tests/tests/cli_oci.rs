//! `wasmplug key generate`, `push`, `pull`, `sign`, `tag` and
//! `run --follow`, as an operator would type them, against a real OCI
//! registry (`docker-registry` on a loopback port), run through the real
//! release binary (`target/release/wasmplug`, which
//! `cargo test --release --workspace` builds; run alone, build it first:
//! `cargo build --release -p wasmplug`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wasmplug_tests::oci_registry::OciRegistry;
use wasmplug_tests::{guest, guest_bytes, wasmplug_binary, TempDir};

/// The binary, with caches of its own under `dir`, and the registry logins
/// of `dir/docker/config.json` (none unless a test writes it), not the
/// machine's.
fn wasmplug(dir: &Path) -> Command {
    let mut command = Command::new(wasmplug_binary());
    command
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", dir.join("xdg"))
        .env("WASMPLUG_CACHE_DIR", dir.join("code-cache"))
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env_remove("WASMPLUG_REGISTRY")
        .env_remove("WASMPLUG_REGISTRY_USER")
        .env_remove("WASMPLUG_REGISTRY_PASSWORD")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    with_text(command.output().expect("running wasmplug"))
}

/// `out` with its stdout and stderr as text.
fn with_text(out: Output) -> (Output, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// [`run`], failing the test if the command is still running after `limit`.
fn run_within(limit: Duration, command: &mut Command) -> (Output, String, String) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running wasmplug");
    let id = child.id();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(out) => with_text(out.expect("waiting for wasmplug")),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("wasmplug was still running after {limit:?}: it should have refused");
        }
    }
}

/// The `sha256:…` in `text`.
fn digest_in(text: &str) -> String {
    let at = text
        .find("sha256:")
        .unwrap_or_else(|| panic!("no digest in {text:?}"));
    text[at..at + 71].to_string()
}

#[test]
fn keys_push_pull_sign_and_tag_round_trip_and_refuse_what_is_not_trusted() {
    let oci = OciRegistry::start();
    let dir = TempDir::new("cli-oci");
    let d = dir.path();
    let reference = oci.reference("plugins/hello", "stable");

    let (out, stdout, stderr) = run(wasmplug(d).args(["key", "generate", "release"]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("release.key") && stdout.contains("release.pub"),
        "{stdout}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.join("release.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    // Never overwritten.
    let (out, _, stderr) = run(wasmplug(d).args(["key", "generate", "release"]));
    assert!(
        !out.status.success() && stderr.contains("exists"),
        "{stderr}"
    );
    run(wasmplug(d).args(["key", "generate", "stranger"]));

    // Signed push, verified pull: the same bytes.
    let (out, stdout, stderr) = run(wasmplug(d).arg("push").arg(guest("hello-v1")).args([
        &reference,
        "--sign",
        "release.key",
    ]));
    assert!(out.status.success(), "{stderr}");
    let v1 = digest_in(&stdout);
    assert!(stdout.contains("signed"), "{stdout}");
    let (out, stdout, stderr) = run(wasmplug(d).args([
        "pull",
        &reference,
        "--trust",
        "release.pub",
        "-o",
        "pulled.wasm",
    ]));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&v1) && stdout.contains("signed by"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(d.join("pulled.wasm")).unwrap(),
        guest_bytes("hello-v1")
    );

    // Trusting another key: refused, naming the reference and the digest,
    // and nothing written.
    let (out, _, stderr) = run(wasmplug(d).args([
        "pull",
        &reference,
        "--trust",
        "stranger.pub",
        "-o",
        "refused.wasm",
    ]));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&reference) && stderr.contains(&v1),
        "{stderr}"
    );
    assert!(stderr.contains("none of the 1 trusted"), "{stderr}");
    assert!(!d.join("refused.wasm").exists());
    // No key and no --unsigned: refused before any request.
    let (out, _, stderr) = run(wasmplug(d).args(["pull", &reference]));
    assert!(
        !out.status.success() && stderr.contains("--trust"),
        "{stderr}"
    );

    // An unsigned push, signed afterwards.
    let candidate = oci.reference("plugins/hello", "candidate");
    let (out, stdout, _) = run(wasmplug(d)
        .arg("push")
        .arg(guest("hello-v2"))
        .arg(&candidate));
    assert!(out.status.success());
    let v2 = digest_in(&stdout);
    let (out, _, stderr) = run(wasmplug(d).args(["pull", &candidate, "--trust", "release.pub"]));
    assert!(
        !out.status.success() && stderr.contains("not signed"),
        "{stderr}"
    );
    let (out, _, stderr) = run(wasmplug(d).args(["sign", &candidate, "--key", "release.key"]));
    assert!(out.status.success(), "{stderr}");

    // Promote the candidate's digest to stable: the signature comes along.
    let at_v2 = format!("{}/plugins/hello@{v2}", oci.addr());
    let (out, stdout, stderr) = run(wasmplug(d).args(["tag", &at_v2, "stable"]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&v2), "{stdout}");
    let (out, stdout, stderr) = run(wasmplug(d).args([
        "pull",
        &reference,
        "--trust",
        "release.pub",
        "-o",
        "promoted.wasm",
    ]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&v2), "{stdout}");
    assert_eq!(
        std::fs::read(d.join("promoted.wasm")).unwrap(),
        guest_bytes("hello-v2")
    );

    // Not a component: nothing pushed.
    std::fs::write(d.join("junk.wasm"), b"\0asm\x01\0\0\0garbage").unwrap();
    let (out, _, stderr) = run(wasmplug(d).args(["push", "junk.wasm", &reference]));
    assert!(
        !out.status.success() && stderr.contains("not a WebAssembly component"),
        "{stderr}"
    );
}

#[test]
fn run_follow_serves_the_tag_and_swaps_when_it_moves() {
    let oci = OciRegistry::start();
    let dir = TempDir::new("cli-oci-run");
    let d = dir.path();
    let reference = oci.reference("plugins/hello", "stable");
    run(wasmplug(d).args(["key", "generate", "release"]));
    run(wasmplug(d)
        .arg("push")
        .arg(guest("hello-v1"))
        .args([&reference, "--sign", "release.key"]));

    let mut child = wasmplug(d)
        .args([
            "run",
            "--follow",
            &reference,
            "--trust",
            "release.pub",
            "--poll",
            "200ms",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wasmplug run");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |what: &str| -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains(what) => return seen,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line with {what:?}; saw {seen:#?}"),
            }
        }
    };
    let before = wait_for("watching oci://");
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("pulled ") && l.contains("signed by")),
        "{before:#?}"
    );
    writeln!(stdin, r#"hello welcome("Zoë")"#).unwrap();
    wait_for(r#""Welcome, Zoë!""#);

    run(wasmplug(d)
        .arg("push")
        .arg(guest("hello-v2"))
        .args([&reference, "--sign", "release.key"]));
    wait_for("swapped hello@1.0.0 -> hello@2.0.0");
    writeln!(stdin, r#"hello welcome("Zoë")"#).unwrap();
    wait_for(r#""Welcome back, Zoë!""#);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn logins_come_from_a_docker_config_or_the_environment_and_only_for_their_registry() {
    let oci = OciRegistry::start_with_login("ops", "s3cret");
    let dir = TempDir::new("cli-oci-login");
    let d = dir.path();
    let reference = oci.reference("plugins/hello", "stable");
    let push = || {
        let mut command = wasmplug(d);
        command.arg("push").arg(guest("hello-v1")).arg(&reference);
        command
    };
    let pull = || {
        let mut command = wasmplug(d);
        command.args(["pull", &reference, "--unsigned", "-o", "pulled.wasm"]);
        command
    };
    let wants_login = |stderr: &str| stderr.contains("401") || stderr.contains("nauthorized");

    // No login: refused, and the registry's answer is in the error.
    let (out, _, stderr) = run(&mut push());
    assert!(!out.status.success() && wants_login(&stderr), "{stderr}");

    // What `docker login` writes, where Docker keeps it ($DOCKER_CONFIG).
    std::fs::create_dir_all(d.join("docker")).unwrap();
    let config = format!(
        r#"{{"auths": {{"{}": {{"auth": "b3BzOnMzY3JldA=="}}}}, "credsStore": "desktop",
            "credHelpers": {{"gcr.io": "gcloud"}}}}"#,
        oci.addr()
    );
    std::fs::write(d.join("docker/config.json"), &config).unwrap();
    let (out, stdout, stderr) = run(&mut push());
    assert!(out.status.success(), "{stderr}");
    let pushed = digest_in(&stdout);
    // What it cannot use, it says.
    assert!(
        stderr.contains("`gcr.io` (credential helper `gcloud`)"),
        "{stderr}"
    );
    // Or named with --registry-config (a pull secret's .dockerconfigjson).
    std::fs::rename(d.join("docker/config.json"), d.join("pull-secret.json")).unwrap();
    let (out, stdout, stderr) = run(pull().args(["--registry-config", "pull-secret.json"]));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(digest_in(&stdout), pushed);
    assert_eq!(
        std::fs::read(d.join("pulled.wasm")).unwrap(),
        guest_bytes("hello-v1")
    );

    // The environment's login is for the registry the command names.
    let (out, _, stderr) = run(pull()
        .env("WASMPLUG_REGISTRY_USER", "ops")
        .env("WASMPLUG_REGISTRY_PASSWORD", "s3cret"));
    assert!(out.status.success(), "{stderr}");
    // ... or the one WASMPLUG_REGISTRY names: not this one, so none is sent.
    let (out, _, stderr) = run(pull()
        .env("WASMPLUG_REGISTRY", "registry.example:5000")
        .env("WASMPLUG_REGISTRY_USER", "ops")
        .env("WASMPLUG_REGISTRY_PASSWORD", "s3cret"));
    assert!(!out.status.success() && wants_login(&stderr), "{stderr}");

    // Half a login, a config that is not one, and one login for two
    // registries are errors that say so, before anything is sent.
    let (out, _, stderr) = run(pull().env("WASMPLUG_REGISTRY_USER", "ops"));
    assert!(
        !out.status.success() && stderr.contains("WASMPLUG_REGISTRY_PASSWORD is unset"),
        "{stderr}"
    );
    std::fs::write(
        d.join("broken.json"),
        "{\"auths\": {\"x\": {\"auth\": \"%%\"}}}",
    )
    .unwrap();
    let (out, _, stderr) = run(pull().args(["--registry-config", "broken.json"]));
    assert!(
        !out.status.success() && stderr.contains("broken.json") && stderr.contains("not base64"),
        "{stderr}"
    );
    let elsewhere = format!(
        "127.0.0.2:{}/plugins/hello:stable",
        oci.addr().rsplit(':').next().unwrap()
    );
    // (A `run` that did not refuse would serve until killed.)
    let (out, _, stderr) = run_within(
        Duration::from_secs(60),
        wasmplug(d)
            .args([
                "run",
                "--follow",
                &reference,
                "--follow",
                &elsewhere,
                "--unsigned",
            ])
            .env("WASMPLUG_REGISTRY_USER", "ops")
            .env("WASMPLUG_REGISTRY_PASSWORD", "s3cret"),
    );
    assert!(
        !out.status.success()
            && stderr.contains("2 registries")
            && stderr.contains("WASMPLUG_REGISTRY"),
        "{stderr}"
    );

    // Docker's own config, found rather than named, that cannot be read
    // costs its logins with a warning, not the command.
    std::fs::write(d.join("docker/config.json"), "{\"auths\": ").unwrap();
    let (out, _, stderr) = run(pull()
        .env("WASMPLUG_REGISTRY_USER", "ops")
        .env("WASMPLUG_REGISTRY_PASSWORD", "s3cret"));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("docker/config.json") && stderr.contains("no logins from it"),
        "{stderr}"
    );
}
