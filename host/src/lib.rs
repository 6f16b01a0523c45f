//! # wasmplug
//!
//! WebAssembly component plugins for Rust services: each plugin instance in
//! its own wasmtime `Store`, so repeated and versioned loads never collide;
//! unloading is dropping, so nothing leaks; and typed calls generated from the
//! service's own WIT world.
//!
//! The concepts, in lifecycle order:
//!
//! * [`Runtime`] — the engine and linker, configured once, for one
//!   [`World`].
//! * [`Plugin`] — one loaded version of a component: compiled, linked,
//!   type-checked at load, identified (name@version). Cheap to clone.
//! * [`Instance`] — one live, isolated copy of a plugin. Drop it to unload.
//! * [`Dynamic`] — a world for hosts that learn a plugin's interface at run
//!   time: calls by export name with values, or in WAVE text.
//! * [`Registry`] — plugins by name, versions side by side, an atomic
//!   current-version pointer per name, state handoff across swaps.
//! * [`Watcher`] — a directory of component files kept in sync with a
//!   registry: hot swap for operators.
//! * [`oci::Follower`] — a tag in an OCI registry kept in sync with a
//!   registry: signed artefacts, every replica of a fleet on one version
//!   (feature `oci`, on by default).
//! * [`Policy`] — what a plugin may do and use (deny by default).
//! * [`Error`] — refused at load, init failed, the guest said no, the guest
//!   crashed: told apart without parsing strings.
//!
//! Each concept's details are in its module: [`runtime`] (the builder, pool
//! sizes, the disk cache's figures), [`policy`] (grants and caps),
//! [`registry`] (activation guards, health, listings), [`watcher`] (watch
//! options), [`telemetry`] (spans and metrics), [`manifest`], [`identity`], [`error`], [`log`], [`handoff`],
//! [`world`].
//!
//! ```no_run
//! use wasmplug::reference::{GreeterPlugin, User};
//!
//! # fn main() -> anyhow::Result<()> {
//! let runtime = wasmplug::Runtime::<GreeterPlugin>::new()?;
//! let plugin = runtime.load("guest-plugins/dist/hello-v1.wasm")?;
//! let mut instance = plugin.instantiate()?; // a fresh Store; `init` has run
//! let who = User { name: "Gopher".into(), age: 13 };
//! println!("{}", instance.hello(&who)?);
//! drop(instance); // unloaded: store, memory and instance freed
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for the path of load → instantiate → call → unload.

#![warn(missing_docs)]

mod admit;
mod cache;
pub mod canary;
mod deadline;
mod dynamic;
pub mod error;
mod event;
mod handle;
pub mod handoff;
pub mod identity;
mod instance;
pub mod log;
pub mod manifest;
#[cfg(feature = "oci")]
pub mod oci;
mod plugin;
pub mod policy;
mod pool;
pub mod reach;
pub mod reference;
pub mod registry;
mod rollout;
pub mod runtime;
pub mod signature;
mod slot;
mod snapshot;
pub mod telemetry;
pub mod versioned;
pub mod watcher;
pub mod world;

// The concepts, at the root; everything else in its concept's module
// (`wasmplug::policy::DirAccess`, `wasmplug::registry::Guard`, ...).
pub use dynamic::Dynamic;
pub use error::{Error, Result};
pub use event::Event;
pub use handle::Handle;
pub use identity::{Identity, Source};
pub use instance::Instance;
pub use plugin::Plugin;
pub use policy::Policy;
pub use registry::Registry;
pub use runtime::Runtime;
pub use watcher::Watcher;
pub use world::{State, World};

/// Re-exported so embedders use the same wasmtime as wasmplug.
pub use wasmtime;

/// The README's code blocks, compiled as doctests so its example stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The modules in layers, lowest first: a module may use only modules of
/// lower layers, so the crate reads bottom to top with no import circle.
/// `ARCHITECTURE.md` ("Layers") explains each step; this test keeps it true.
#[cfg(test)]
mod layers {
    const LAYERS: &[&[&str]] = &[
        &["log", "signature", "deadline", "telemetry"],
        &["policy"],
        &["reach"],
        &["error"],
        &["identity"],
        &["cache", "manifest", "event"],
        &["world"],
        &["versioned"],
        &["runtime"],
        &["snapshot"],
        &["plugin"],
        &["instance"],
        &["handoff", "reference"],
        &["dynamic"],
        &["pool"],
        &["canary"],
        &["slot"],
        &["handle"],
        &["rollout"],
        &["registry"],
        &["admit"],
        &["watcher", "oci"],
    ];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    /// Every `crate::x` a module names, as the module it comes from (a name
    /// re-exported at the root counts as its own module).
    fn uses(source: &str, roots: &std::collections::HashMap<String, String>) -> Vec<String> {
        let code: String = without_test_modules(source)
            .lines()
            .map(|line| line.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                if layer_of(name).is_some() {
                    found.push(name.to_string());
                } else if let Some(module) = roots.get(name) {
                    found.push(module.clone());
                }
            }
        }
        found
    }

    /// `source` less each `#[cfg(test)]` item (up to its matching brace):
    /// tests may use any layer for their fixtures.
    fn without_test_modules(source: &str) -> String {
        let mut out = String::new();
        let mut rest = source;
        while let Some(at) = rest.find("#[cfg(test)]") {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let Some(open) = rest.find('{') else {
                return out;
            };
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_module_uses_only_modules_of_lower_layers() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        // `pub use module::{A, B};` and `pub use module::A;` at the root.
        let mut roots = std::collections::HashMap::new();
        for line in lib.lines().filter_map(|l| l.strip_prefix("pub use ")) {
            let Some((module, names)) = line.split_once("::") else {
                continue;
            };
            for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                if !name.is_empty() && name != "as" {
                    roots.insert(name.to_string(), module.to_string());
                }
            }
        }
        let mut broken = Vec::new();
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            // A module directory (`oci/mod.rs` and its files) is one module.
            let files: Vec<std::path::PathBuf> = if path.join("mod.rs").is_file() {
                std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                    .collect()
            } else if path.extension().is_some_and(|e| e == "rs") && module != "lib" {
                vec![path.clone()]
            } else {
                continue;
            };
            seen.push(module.to_string());
            let Some(own) = layer_of(module) else {
                broken.push(format!("{module}.rs is in no layer: add it to LAYERS"));
                continue;
            };
            let source: String = files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap())
                .collect();
            for used in uses(&source, &roots) {
                let theirs = layer_of(&used).expect("uses() returns layered modules");
                if used != module && theirs >= own {
                    broken.push(format!(
                        "{module} (layer {own}) uses {used} (layer {theirs})"
                    ));
                }
            }
        }
        broken.sort();
        broken.dedup();
        assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
        for layer in LAYERS {
            for module in *layer {
                assert!(seen.iter().any(|m| m == module), "no {module}.rs");
            }
        }
    }
}
