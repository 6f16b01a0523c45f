//! Does a component fit a WIT world given as a file? (`inspect --wit`.)
//!
//! Strategy: parse the WIT with `wit-parser`, let `wit-component` build the
//! smallest component that targets the world (a dummy whose functions only
//! trap), compile it with the same engine, and compare the two components'
//! function types as wasmplug's [`signature`](wasmplug::signature) writes
//! them. Comparing two components compiled by one engine, rather than WIT
//! against a component, means one type printer decides both sides.
//!
//! The component fits when it exports every function the world exports,
//! with the same type, and imports nothing beyond what the world imports
//! (same types) and what every wasmplug host provides (WASI).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use wasmplug::signature;
use wasmplug::wasmtime::component::Component;
use wasmplug::wasmtime::Engine;
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{ManglingAndAbi, Resolve};

/// The verdict: which world, and what does not fit (empty when it fits).
pub struct Fit {
    pub world: String,
    pub problems: Vec<String>,
}

/// Check `component` against `world` (or the only world) of the WIT
/// package at `wit` (a `.wit` file or a directory with a `deps/` folder).
pub fn check(
    engine: &Engine,
    component: &Component,
    wit: &Path,
    world: Option<&str>,
) -> anyhow::Result<Fit> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_path(wit).map_err(|err| {
        // A WIT syntax or name error renders with its file, line and column
        // and the offending line, when asked.
        let rendered = err
            .downcast_ref::<wit_parser::ParseError>()
            .map(|e| anyhow::anyhow!("{}", e.render(&resolve.source_map)));
        rendered
            .unwrap_or(err)
            .context(format!("reading WIT from {}", wit.display()))
    })?;
    let world_id = resolve
        .select_world(&[package], world)
        .with_context(|| format!("choosing a world in {} (see --world)", wit.display()))?;
    let package_name = &resolve.packages[package].name;
    let world_name = format!(
        "{}:{}/{}{}",
        package_name.namespace,
        package_name.name,
        resolve.worlds[world_id].name,
        package_name
            .version
            .as_ref()
            .map(|v| format!("@{v}"))
            .unwrap_or_default()
    );

    let mut module = wit_component::dummy_module(&resolve, world_id, ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(&mut module, &resolve, world_id, StringEncoding::UTF8)
        .context("encoding the world")?;
    let expected_bytes = ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode())
        .with_context(|| format!("building a component for {world_name}"))?;
    let expected = Component::new(engine, &expected_bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling a component for {world_name}"))?;

    let (want_exports, want_imports) = functions(engine, &expected);
    let (have_exports, have_imports) = functions(engine, component);
    let mut problems = Vec::new();
    for (name, want) in &want_exports {
        match have_exports.get(name) {
            None => problems.push(format!("missing export `{name}`: {want}")),
            Some(have) if have != want => problems.push(format!(
                "export `{name}` is `{have}`, the world says `{want}`"
            )),
            Some(_) => {}
        }
    }
    for (name, have) in &have_imports {
        match want_imports.get(name) {
            None if name.starts_with("wasi:") => {} // every wasmplug host links WASI
            None => problems.push(format!("imports `{name}`, which the world does not offer")),
            Some(want) if want != have => problems.push(format!(
                "import `{name}` is `{have}`, the world offers `{want}`"
            )),
            Some(_) => {}
        }
    }
    Ok(Fit {
        world: world_name,
        problems,
    })
}

type Signatures = BTreeMap<String, String>;

/// A component's exported and imported functions, with their types as WIT.
fn functions(engine: &Engine, component: &Component) -> (Signatures, Signatures) {
    let ty = component.component_type();
    let written = |funcs: Vec<(String, _)>| {
        funcs
            .into_iter()
            .map(|(name, func)| (name, signature::func(&func)))
            .collect()
    };
    (
        written(signature::funcs(engine, ty.exports(engine))),
        written(signature::funcs(engine, ty.imports(engine))),
    )
}
