//! Every guest program has a test: a guest plugin nobody exercises is a
//! guest whose breakage nobody notices. (wasmtime's test-programs enforce
//! the same with a macro.)

use wasmplug_tests::{dist_dir, repo_root};

fn test_sources() -> String {
    // The integration tests here, and each example's own tests
    // (examples/*/tests/: the HTTP service tests its handler guests).
    let mut dirs = vec![repo_root().join("tests").join("tests")];
    if let Ok(examples) = std::fs::read_dir(repo_root().join("examples")) {
        dirs.extend(
            examples
                .filter_map(|e| Some(e.ok()?.path().join("tests")))
                .filter(|dir| dir.is_dir()),
        );
    }
    let mut all = String::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with(file!().rsplit('/').next().unwrap())
            {
                all.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    all
}

fn built_components() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dist_dir())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the guests with `just guests`",
                dist_dir().display()
            )
        })
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "wasm").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

#[test]
fn every_built_guest_component_is_used_by_some_test() {
    let sources = test_sources();
    let components = built_components();
    assert!(
        !components.is_empty(),
        "no guest components built: run `just guests`"
    );
    let unused: Vec<&String> = components
        .iter()
        .filter(|name| !sources.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        unused.is_empty(),
        "guest components no test loads: {unused:?}"
    );
}

#[test]
fn every_guest_plugin_crate_is_built_into_a_component() {
    let components = built_components();
    let guests = repo_root().join("guest-plugins");
    for entry in std::fs::read_dir(&guests).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if !manifest.contains("cdylib") || dir == guests {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            components.iter().any(|c| c.starts_with(name)),
            "guest plugin crate {name} builds no component in dist/: add it to guest-plugins/justfile"
        );
    }
}
