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
//! (same types) and what every wasmplug host provides (WASI). Names match as
//! wasmtime links them: semver-compatibly (`greeter@1.0.0` is on the track
//! of `greeter@1.1.0`), so a 1.0 component fits a 1.1 world if it has all
//! of 1.1's exports and only 1.1's imports.
//!
//! A directory may hold several versions of one package: the directory's
//! own `.wit` files, and each subdirectory (not `deps/`) with `.wit` files
//! of its own (`wit/` and `wit/v1.1/`). [`check_versions`] checks each.

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
    /// The package's version, when it has one.
    pub version: Option<semver::Version>,
    /// Where the WIT came from.
    pub path: std::path::PathBuf,
    pub problems: Vec<String>,
}

/// Check `component` against every version of the WIT package at `wit`:
/// one [`Fit`] per version, newest first. A file, or a directory without
/// versioned subdirectories, is one version.
pub fn check_versions(
    engine: &Engine,
    component: &Component,
    wit: &Path,
    world: Option<&str>,
) -> anyhow::Result<Vec<Fit>> {
    let dirs = versions(wit)?;
    let mut fits = Vec::new();
    for dir in &dirs {
        match check(engine, component, dir, world) {
            Ok(fit) => fits.push(fit),
            // One unreadable version among several is a verdict, not the end.
            Err(err) if dirs.len() > 1 => fits.push(Fit {
                world: format!("the WIT in {}", dir.display()),
                version: None,
                path: dir.clone(),
                problems: vec![format!("{err:#}")],
            }),
            Err(err) => return Err(err),
        }
    }
    fits.sort_by(|a, b| b.version.cmp(&a.version));
    Ok(fits)
}

/// `wit` itself when it has `.wit` files (or is one), and each subdirectory
/// of it, `deps/` aside, that has `.wit` files.
fn versions(wit: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let has_wit = |dir: &Path| -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "wit") && e.path().is_file())
        })
    };
    if !wit.is_dir() {
        return Ok(vec![wit.to_path_buf()]);
    }
    let mut dirs = Vec::new();
    if has_wit(wit) {
        dirs.push(wit.to_path_buf());
    }
    let entries = std::fs::read_dir(wit)
        .with_context(|| format!("reading the directory {}", wit.display()))?;
    let mut subdirs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("deps") && has_wit(p))
        .collect();
    subdirs.sort();
    dirs.extend(subdirs);
    if dirs.is_empty() {
        anyhow::bail!("{} holds no .wit files", wit.display());
    }
    Ok(dirs)
}

/// Parse the WIT at `wit` (a `.wit` file, or a directory with a `deps/`
/// folder) and choose `world`, or its only world: the package and world.
/// A syntax or name error renders with its file, line, column and line.
pub fn read_wit(
    wit: &Path,
    world: Option<&str>,
) -> anyhow::Result<(Resolve, wit_parser::PackageId, wit_parser::WorldId)> {
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
    Ok((resolve, package, world_id))
}

/// Check `component` against `world` (or the only world) of the WIT
/// package at `wit` (a `.wit` file or a directory with a `deps/` folder).
pub fn check(
    engine: &Engine,
    component: &Component,
    wit: &Path,
    world: Option<&str>,
) -> anyhow::Result<Fit> {
    let (resolve, package, world_id) = read_wit(wit, world)?;
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
    for (track, (name, want)) in &want_exports {
        match have_exports.get(track).map(|(_, have)| have) {
            None => problems.push(format!("missing export `{name}`: {want}")),
            Some(have) if have != want => problems.push(format!(
                "export `{name}` is `{have}`, the world says `{want}`"
            )),
            Some(_) => {}
        }
    }
    for (track, (name, have)) in &have_imports {
        match want_imports.get(track).map(|(_, want)| want) {
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
        version: package_name.version.clone(),
        path: wit.to_path_buf(),
        problems,
    })
}

/// By semver track (see [`track`]): the name as written, and its type.
type Signatures = BTreeMap<String, (String, String)>;

/// A name with its version cut to its semver track
/// ([`wasmplug::versioned::track`]): `a:b/c@1.2.0#f` → `a:b/c@1#f`,
/// `@0.2.1` → `@0.2`; a pre-release, or `0.0.x`, stays whole.
fn track(name: &str) -> String {
    let Some((head, rest)) = name.split_once('@') else {
        return name.to_string();
    };
    let (version, tail) = match rest.split_once('#') {
        Some((v, f)) => (v, format!("#{f}")),
        None => (rest, String::new()),
    };
    match semver::Version::parse(version) {
        Ok(v) => format!("{head}@{}{tail}", wasmplug::versioned::track(&v)),
        Err(_) => name.to_string(),
    }
}

/// A component's exported and imported functions, with their types as WIT.
fn functions(engine: &Engine, component: &Component) -> (Signatures, Signatures) {
    let ty = component.component_type();
    let written = |funcs: Vec<(String, _)>| {
        funcs
            .into_iter()
            .map(|(name, func)| (track(&name), (name, signature::func(&func))))
            .collect()
    };
    (
        written(signature::funcs(engine, ty.exports(engine))),
        written(signature::funcs(engine, ty.imports(engine))),
    )
}
