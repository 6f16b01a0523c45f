//! `wasmplug new`, end to end, for every language: new -> build (the
//! project's own `build.sh`, its pinned tools) -> `inspect --wit` fits ->
//! `wasmplug test` passes the project's own `cases.toml`. For the
//! reference world and for a world using every kind of WIT type with names
//! that are keywords in the template languages (tests/wit/kitchen-sink.wit).
//!
//! The toolchains are the ones `just setup` installs for the repo's own
//! guests (the templates pin the same versions: their setup scripts and
//! lock files are the guests', compiled in). JavaScript and Python projects
//! borrow hello-js's `node_modules/` and hello-py's `.venv/` instead of
//! installing them again; a missing toolchain fails here, naming what to
//! run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the projects are written: under target/, so the Rust projects'
/// shared cargo target directory survives between runs.
fn work_dir() -> PathBuf {
    repo().join("target/wasmplug-new-tests")
}

fn kitchen_sink() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wit/kitchen-sink.wit")
}

fn wasmplug(args: &[&str], cwd: &Path) -> Output {
    let cache = std::env::temp_dir().join(format!("wasmplug-new-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_wasmplug"))
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .env("WASMPLUG_CACHE_DIR", cache)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wasmplug new` into a fresh `work_dir()/<name>`; the project's path.
fn new_project(lang: &str, wit: &Path, world: &str, name: &str) -> PathBuf {
    let dir = work_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(work_dir()).unwrap();
    let out = wasmplug(
        &[
            "new",
            "--lang",
            lang,
            "--wit",
            wit.to_str().unwrap(),
            "--world",
            world,
            dir.to_str().unwrap(),
        ],
        &work_dir(),
    );
    assert!(out.status.success(), "new {lang} {world}: {}", text(&out));
    dir
}

/// The toolchain directory a JS or Python project borrows from the repo's
/// guest, after checking the project pins exactly what that guest pins.
fn borrow_toolchain(project: &Path, lang: &str) {
    let (guest, dir, pins) = match lang {
        "js" => ("hello-js", "node_modules", "package-lock.json"),
        "python" => ("hello-py", ".venv", "requirements.txt"),
        _ => return,
    };
    let guest = repo().join("guest-plugins").join(guest);
    let theirs = std::fs::read_to_string(guest.join(pins)).unwrap();
    let ours = std::fs::read_to_string(project.join(pins)).unwrap();
    let name = project.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        ours.replace(&format!("\"{name}\""), "\"wasmplug-hello-js\""),
        theirs,
        "{pins} of the {lang} template differs from {}'s",
        guest.display()
    );
    assert!(
        guest.join(dir).is_dir(),
        "{} is missing: run `just setup` (the {lang} toolchain)",
        guest.join(dir).display()
    );
    std::os::unix::fs::symlink(guest.join(dir), project.join(dir)).unwrap();
}

/// Build with the project's `build.sh`; prints the build's wall time and
/// the component's size (`-- --nocapture` shows them).
fn build(project: &Path, lang: &str) {
    borrow_toolchain(project, lang);
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .arg(project.join("build.sh"))
        .current_dir(project)
        .env("CARGO_TARGET_DIR", work_dir().join("cargo-target"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}/build.sh failed (toolchains: `just setup`):\n{}",
        project.display(),
        text(&out)
    );
    let name = project.file_name().unwrap().to_str().unwrap();
    let size = std::fs::metadata(project.join(format!("dist/{name}.wasm")))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "built {name:<26} {:>7.1} s  {:>10} bytes",
        started.elapsed().as_secs_f64(),
        size
    );
}

/// new -> build -> inspect fits -> the project's cases pass.
fn round_trip(lang: &str, wit: &Path, world: &str) -> PathBuf {
    let name = format!("{world}-{lang}");
    let project = new_project(lang, wit, world, &name);
    build(&project, lang);
    let component = format!("dist/{name}.wasm");
    let inspect = wasmplug(
        &["inspect", &component, "--wit", "wit", "--world", world],
        &project,
    );
    assert!(inspect.status.success(), "{}", text(&inspect));
    assert!(
        text(&inspect).contains("world      fits "),
        "{}",
        text(&inspect)
    );
    let test = wasmplug(&["test", &component, "cases.toml"], &project);
    let report = text(&test);
    assert!(test.status.success(), "{lang} {world}: {report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");
    project
}

fn every_world(lang: &str) {
    round_trip(lang, &kitchen_sink(), "kitchen");
    if lang != "python" {
        round_trip(lang, &kitchen_sink(), "kitchen-inline");
    }
    let project = round_trip(lang, &repo().join("wit"), "greeter-plugin");
    // The reference world's stub says who it is: a plugin with an empty
    // name would be refused at load.
    let name = project.file_name().unwrap().to_str().unwrap().to_string();
    let inspect = wasmplug(&["inspect", &format!("dist/{name}.wasm")], &project);
    assert!(
        text(&inspect).contains(&format!("identity   {name}@0.1.0")),
        "{}",
        text(&inspect)
    );
}

#[test]
fn rust_projects_build_fit_and_pass_their_cases() {
    every_world("rust");
    // The cases check the answers: a stub changed to answer 1 fails its case.
    let project = work_dir().join("kitchen-rust");
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let add = "fn add(a: i32, b: i32) -> i32 {\n        0\n";
    assert!(source.contains(add), "{source}");
    std::fs::write(
        &lib,
        source.replace(add, "fn add(a: i32, b: i32) -> i32 {\n        1\n"),
    )
    .unwrap();
    build(&project, "rust");
    let test = wasmplug(&["test", "dist/kitchen-rust.wasm", "cases.toml"], &project);
    let report = text(&test);
    assert_eq!(test.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL  api.add(0, 0)"), "{report}");
    assert!(report.contains("got:      1"), "{report}");
}

#[test]
fn c_projects_build_fit_and_pass_their_cases() {
    every_world("c");
}

#[test]
fn js_projects_build_fit_and_pass_their_cases() {
    every_world("js");
}

#[test]
fn python_projects_build_fit_and_pass_their_cases() {
    every_world("python");
}

#[test]
fn go_projects_build_fit_and_pass_their_cases() {
    every_world("go");
}

#[test]
fn what_new_cannot_template_is_refused_before_anything_is_written() {
    let scratch =
        std::env::temp_dir().join(format!("wasmplug-new-refusals-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let refused = |wit_text: &str, args: &[&str], dir: &str, wants: &[&str]| {
        let wit = scratch.join("world.wit");
        std::fs::write(&wit, wit_text).unwrap();
        let mut all = vec!["new", "--wit", wit.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(dir);
        let out = wasmplug(&all, &scratch);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        for want in wants {
            assert!(said.contains(want), "wants {want:?} in: {said}");
        }
        assert!(!said.contains("panicked"), "{said}");
        said
    };
    let resource = "package a:b;\ninterface files {\n  resource file { read: func() -> string; }\n  open: func(path: string) -> file;\n}\nworld w { export files; }\n";
    refused(
        resource,
        &["--lang", "rust"],
        "with-resource",
        &["`[method]file.read` is a resource's function", "resources"],
    );
    assert!(!scratch.join("with-resource").exists(), "nothing written");
    refused(
        "package a:b;\nworld w { import x: func(); }\n",
        &["--lang", "go"],
        "no-exports",
        &["exports nothing"],
    );
    refused(
        "package a:b;\nworld w { export f: func() -> u32 }\n",
        &["--lang", "c"],
        "syntax",
        &["world.wit:2"],
    );
    refused(
        "package a:b;\nworld w { export f: func() -> u32; }\nworld v { export g: func(); }\n",
        &["--lang", "js"],
        "two-worlds",
        &["one must be explicitly chosen", "--world"],
    );
    refused(
        "package a:b;\nworld w { export f: func() -> u32; }\n",
        &["--lang", "python"],
        "9lives",
        &["start with a letter"],
    );
    std::fs::create_dir_all(scratch.join("taken")).unwrap();
    std::fs::write(scratch.join("taken/keep.txt"), "mine").unwrap();
    refused(
        "package a:b;\nworld w { export f: func() -> u32; }\n",
        &["--lang", "rust"],
        "taken",
        &["taken exists and is not empty"],
    );
    assert_eq!(
        std::fs::read_to_string(scratch.join("taken/keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(scratch.join("taken")).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_wit_is_copied_with_its_deps_following_links_and_a_link_cycle_is_an_error() {
    let scratch = std::env::temp_dir().join(format!("wasmplug-new-deps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let shared = scratch.join("shared/clock");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(
        shared.join("clock.wit"),
        "package example:clock;\ninterface now { now: func() -> u64; }\n",
    )
    .unwrap();
    let wit = scratch.join("wit");
    std::fs::create_dir_all(&wit).unwrap();
    std::fs::write(
        wit.join("world.wit"),
        "package example:app;\nworld app {\n  import example:clock/now;\n  export run: func() -> u32;\n}\n",
    )
    .unwrap();
    // deps/ is a link to a shared folder, as in a monorepo.
    std::os::unix::fs::symlink(scratch.join("shared"), wit.join("deps")).unwrap();
    let out = wasmplug(
        &[
            "new",
            "--lang",
            "rust",
            "--wit",
            wit.to_str().unwrap(),
            "app",
        ],
        &scratch,
    );
    assert!(out.status.success(), "{}", text(&out));
    let copied = scratch.join("app/wit/deps/clock/clock.wit");
    assert!(copied.is_file(), "{} missing", copied.display());
    assert!(!copied.is_symlink(), "copied, not linked");
    // A cycle under deps/: refused, not followed forever.
    std::os::unix::fs::symlink(&shared, shared.join("again")).unwrap();
    let out = wasmplug(
        &[
            "new",
            "--lang",
            "rust",
            "--wit",
            wit.to_str().unwrap(),
            "cycle",
        ],
        &scratch,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("a symbolic link cycle?"),
        "{}",
        text(&out)
    );
    assert!(!scratch.join("cycle").exists(), "nothing left behind");
    let _ = std::fs::remove_dir_all(&scratch);
}
