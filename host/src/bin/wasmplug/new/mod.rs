//! `wasmplug new --lang LANG --wit WIT [--world NAME] DIR`: a buildable
//! plugin project for any WIT world, in Rust, C, JavaScript, Python or Go.
//!
//! What every project gets:
//! * `wit/`: a copy of the WIT (its `.wit` files and `deps/`), so the
//!   project builds on its own;
//! * the sources, with every export stubbed: each stub answers a *default
//!   value* of its result type ([`Value`]), the same in every language
//!   (zero, `""`, `[]`, `none`, `ok(default)`, a variant's first case, an
//!   enum's first case, no flags), so one case file checks any of them;
//! * `setup.sh` (pinned tools, idempotent) and `build.sh` (the component
//!   into `dist/NAME.wasm`);
//! * `cases.toml`: a call of every export with default arguments, and the
//!   default answer, for `wasmplug test`; the imports' mocks, commented;
//! * a README saying what to edit and how to build, inspect and test.
//!
//! The world is read once ([`Model`]); each language module writes its
//! sources from the model: the names of generated bindings follow the
//! naming rules of that language's binding generator at the version the
//! project pins. The stubs are checked by building them, in CI, for a
//! world using every kind of WIT type (tests/wit/kitchen-sink).
//!
//! Resources (and futures, streams, error-context and maps) are not
//! templated: a world whose exports use them is refused, naming the
//! function, before anything is written.

mod c;
mod go;
mod js;
mod python;
mod rust;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use heck::ToKebabCase as _;
use wit_parser::{
    Function, FunctionKind, InterfaceId, Resolve, Type, TypeDefKind, TypeId, TypeOwner, WorldId,
    WorldItem, WorldKey,
};

/// The languages `new` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Js,
    Python,
    Go,
}

/// A file of the project: its path in the project, its text, and whether
/// it is a script.
pub struct File {
    pub path: PathBuf,
    pub text: String,
    pub executable: bool,
}

impl File {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        File {
            path: path.into(),
            text: text.into(),
            executable: false,
        }
    }

    pub fn script(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        File {
            executable: true,
            ..File::new(path, text)
        }
    }
}

/// The world, as `new` needs it: what it exports, function by function.
pub struct Model {
    pub resolve: Resolve,
    pub world: WorldId,
    /// Where the WIT was read from.
    pub wit: PathBuf,
    /// The project's name: the last component of DIR, in kebab case.
    pub name: String,
    /// Exported functions, grouped: `None` for the world's own functions.
    pub exports: Vec<Group>,
    /// Interfaces the world exports, and under which key.
    exported: BTreeMap<InterfaceId, WorldKey>,
    /// Interfaces the world imports, and under which key.
    imported: BTreeMap<InterfaceId, WorldKey>,
}

/// One exported interface (or the world's own functions) and its functions.
pub struct Group {
    pub key: Option<WorldKey>,
    pub funcs: Vec<Function>,
}

impl Model {
    pub fn world_name(&self) -> &str {
        &self.resolve.worlds[self.world].name
    }

    /// Is interface `id` exported (its types then live in the bindings'
    /// export modules)?
    pub fn is_exported(&self, id: InterfaceId) -> bool {
        self.exported.contains_key(&id)
    }

    /// The key under which the world exports or imports interface `id`.
    pub fn key_of(&self, id: InterfaceId) -> WorldKey {
        self.exported
            .get(&id)
            .or_else(|| self.imported.get(&id))
            .cloned()
            .unwrap_or(WorldKey::Interface(id))
    }

    /// `(namespace, package, interface)` of an interface named by `key`; a
    /// world-local interface (`export foo: interface { .. }`) has only the
    /// last.
    pub fn interface_path(&self, key: &WorldKey) -> (Option<(String, String)>, String) {
        match key {
            WorldKey::Name(name) => (None, name.clone()),
            WorldKey::Interface(id) => {
                let iface = &self.resolve.interfaces[*id];
                let package = iface.package.map(|p| &self.resolve.packages[p].name);
                (
                    package.map(|p| (p.namespace.clone(), p.name.clone())),
                    iface.name.clone().unwrap_or_default(),
                )
            }
        }
    }

    /// Follow `type x = y` aliases to the type that defines the shape.
    pub fn unalias(&self, ty: Type) -> Type {
        let mut ty = ty;
        while let Type::Id(id) = ty {
            match self.resolve.types[id].kind {
                TypeDefKind::Type(inner) => ty = inner,
                _ => break,
            }
        }
        ty
    }

    /// The interface a named type is defined in (after aliases), or `None`
    /// for a type of the world itself.
    pub fn owner(&self, id: TypeId) -> Option<InterfaceId> {
        match self.resolve.types[id].owner {
            TypeOwner::Interface(i) => Some(i),
            _ => None,
        }
    }

    pub fn type_name(&self, id: TypeId) -> &str {
        self.resolve.types[id]
            .name
            .as_deref()
            .unwrap_or("anonymous")
    }

    /// The name a case file calls `func` of `group` by: `iface.func`, or the
    /// full `ns:pkg/iface#func` when two exported interfaces share a short
    /// name, or `func` for the world's own.
    pub fn call_name(&self, group: &Group, func: &Function) -> String {
        let Some(key) = &group.key else {
            return func.name.clone();
        };
        let (_, short) = self.interface_path(key);
        let clashes = self
            .exports
            .iter()
            .filter_map(|g| g.key.as_ref())
            .filter(|k| self.interface_path(k).1 == short)
            .count();
        if clashes > 1 {
            format!("{}#{}", self.resolve.name_world_key(key), func.name)
        } else {
            format!("{short}.{}", func.name)
        }
    }
}

/// A default value of a WIT type: what a stub answers. `ty` is the type as
/// written (for the languages that spell it), `kind` the value.
#[derive(Clone, Debug)]
pub struct Value {
    pub ty: Type,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// `false`, `0`, `0.0` or `'\0'`, by `ty`.
    Zero,
    Str(String),
    /// An empty list; the element type.
    List(Type),
    /// `none`; the payload type.
    None(Type),
    /// `ok(..)`: the payload (if any) and the ok and err types.
    Ok(Option<Box<Value>>, Option<Type>, Option<Type>),
    Tuple(Vec<Value>),
    /// The record's type (after aliases) and its fields, in order.
    Record(TypeId, Vec<(String, Value)>),
    /// The variant's type, its first case and that case's payload.
    Variant(TypeId, String, Option<Box<Value>>),
    Enum(TypeId, String),
    Flags(TypeId),
}

impl Model {
    /// The default value of `ty` (see [`Value`]). `func` names the function
    /// for the error a type no template supports is.
    pub fn default_value(&self, ty: Type, func: &str) -> anyhow::Result<Value> {
        let kind = match self.unalias(ty) {
            Type::String => Kind::Str(String::new()),
            Type::Id(id) => match &self.resolve.types[id].kind {
                TypeDefKind::List(elem) => Kind::List(*elem),
                TypeDefKind::Option(inner) => Kind::None(*inner),
                TypeDefKind::Result(r) => Kind::Ok(
                    r.ok.map(|ok| self.default_value(ok, func).map(Box::new))
                        .transpose()?,
                    r.ok,
                    r.err,
                ),
                TypeDefKind::Tuple(t) => Kind::Tuple(
                    t.types
                        .iter()
                        .map(|ty| self.default_value(*ty, func))
                        .collect::<anyhow::Result<_>>()?,
                ),
                TypeDefKind::Record(r) => Kind::Record(
                    id,
                    r.fields
                        .iter()
                        .map(|f| Ok((f.name.clone(), self.default_value(f.ty, func)?)))
                        .collect::<anyhow::Result<_>>()?,
                ),
                TypeDefKind::Variant(v) => {
                    let case = &v.cases[0];
                    let payload = case
                        .ty
                        .map(|ty| self.default_value(ty, func).map(Box::new))
                        .transpose()?;
                    Kind::Variant(id, case.name.clone(), payload)
                }
                TypeDefKind::Enum(e) => Kind::Enum(id, e.cases[0].name.clone()),
                TypeDefKind::Flags(_) => Kind::Flags(id),
                other => bail!(
                    "`{func}` uses a {} (`{}`), which `wasmplug new` does not template yet; \
                     start from a world without it, or write that export by hand",
                    other.as_str(),
                    self.type_name(id)
                ),
            },
            Type::ErrorContext => {
                bail!("`{func}` uses an error-context, which `wasmplug new` does not template yet")
            }
            _ => Kind::Zero,
        };
        Ok(Value { ty, kind })
    }
}

/// The default result of `func`: [`Model::default_value`], except that a
/// wasmplug `lifecycle.identity` answers the project's name and 0.1.0 (an
/// empty name is refused at load).
pub fn default_result(
    model: &Model,
    group: &Group,
    func: &Function,
) -> anyhow::Result<Option<Value>> {
    let Some(ty) = func.result else {
        return Ok(None);
    };
    let mut value = model.default_value(ty, &func.name)?;
    let is_identity = group.key.as_ref().is_some_and(|key| {
        let name = model.resolve.name_world_key(key);
        name.starts_with("wasmplug:plugin/lifecycle") && func.name == "identity"
    });
    if let (true, Kind::Record(_, fields)) = (is_identity, &mut value.kind) {
        for (field, value) in fields {
            match (field.as_str(), &mut value.kind) {
                ("name", Kind::Str(s)) => *s = model.name.clone(),
                ("version", Kind::Str(s)) => *s = "0.1.0".into(),
                _ => {}
            }
        }
    }
    Ok(Some(value))
}

/// A value in WAVE.
pub fn wave(model: &Model, value: &Value) -> String {
    let label = |name: &str| match name {
        "true" | "false" | "some" | "none" | "ok" | "err" | "inf" | "nan" => format!("%{name}"),
        _ => name.to_string(),
    };
    match &value.kind {
        Kind::Zero => match model.unalias(value.ty) {
            Type::Bool => "false".into(),
            Type::Char => "'\\u{0}'".into(),
            Type::F32 | Type::F64 => "0.0".into(),
            _ => "0".into(),
        },
        Kind::Str(s) => format!("{s:?}"),
        Kind::List(_) => "[]".into(),
        Kind::None(_) => "none".into(),
        Kind::Ok(None, ..) => "ok".into(),
        Kind::Ok(Some(v), ..) => format!("ok({})", wave(model, v)),
        Kind::Tuple(items) => {
            let items: Vec<String> = items.iter().map(|v| wave(model, v)).collect();
            format!("({})", items.join(", "))
        }
        Kind::Record(_, fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, v)| format!("{}: {}", label(name), wave(model, v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Kind::Variant(_, case, None) | Kind::Enum(_, case) => label(case),
        Kind::Variant(_, case, Some(v)) => format!("{}({})", label(case), wave(model, v)),
        Kind::Flags(_) => "{}".into(),
    }
}

pub fn run(lang: Lang, wit: &Path, world: Option<&str>, dir: &Path) -> anyhow::Result<ExitCode> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; `new` writes a project into an empty or new directory",
            dir.display()
        );
    }
    let name = project_name(dir)?;
    let (resolve, _, world_id) = crate::fit::read_wit(wit, world)?;
    let model = Model::new(resolve, world_id, wit.to_path_buf(), name)?;
    let mut files = match lang {
        Lang::Rust => rust::files(&model)?,
        Lang::C => c::files(&model)?,
        Lang::Js => js::files(&model)?,
        Lang::Python => python::files(&model)?,
        Lang::Go => go::files(&model)?,
    };
    files.push(File::new("cases.toml", cases(&model)?));
    files.push(File::new("README.md", readme(&model, lang, wit)));
    files.push(File::new(".gitignore", gitignore(lang)));
    let existed = dir.exists();
    if let Err(err) = write_project(dir, wit, &files) {
        // Half a project is worse than none: take back what was written.
        if existed {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(err);
    }
    outln!(
        "created {} ({:?} plugin of world `{}`, {} exported functions)",
        dir.display(),
        lang,
        model.world_name(),
        model.exports.iter().map(|g| g.funcs.len()).sum::<usize>()
    );
    outln!("next:");
    outln!("  cd {}", dir.display());
    outln!("  ./setup.sh && ./build.sh");
    outln!(
        "  wasmplug inspect dist/{}.wasm --wit wit --world {}",
        model.name,
        model.world_name()
    );
    outln!("  wasmplug test dist/{}.wasm cases.toml", model.name);
    Ok(ExitCode::SUCCESS)
}

fn write_project(dir: &Path, wit: &Path, files: &[File]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy_wit(wit, &dir.join("wit"))?;
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.text).with_context(|| format!("writing {}", path.display()))?;
        if file.executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", path.display()))?;
        }
    }
    Ok(())
}

fn project_name(dir: &Path) -> anyhow::Result<String> {
    let base = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable last component for a name", dir.display()))?;
    let name: String = base
        .to_kebab_case()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let name = name.trim_matches('-').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!(
            "the project's name comes from the directory's ({base:?}): it needs to start with a \
             letter (e.g. `my-plugin`)"
        );
    }
    Ok(name)
}

impl Model {
    fn new(resolve: Resolve, world: WorldId, wit: PathBuf, name: String) -> anyhow::Result<Model> {
        let w = &resolve.worlds[world];
        let mut exported = BTreeMap::new();
        let mut imported = BTreeMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut own = Vec::new();
        for (key, item) in &w.imports {
            if let WorldItem::Interface { id, .. } = item {
                imported.insert(*id, key.clone());
            }
        }
        for (key, item) in &w.exports {
            match item {
                WorldItem::Interface { id, .. } => {
                    exported.insert(*id, key.clone());
                    let funcs = resolve.interfaces[*id]
                        .functions
                        .values()
                        .cloned()
                        .collect();
                    groups.push(Group {
                        key: Some(key.clone()),
                        funcs,
                    });
                }
                WorldItem::Function(f) => own.push(f.clone()),
                WorldItem::Type { .. } => {}
            }
        }
        if !own.is_empty() {
            groups.push(Group {
                key: None,
                funcs: own,
            });
        }
        let model = Model {
            resolve,
            world,
            wit,
            name,
            exports: groups,
            exported,
            imported,
        };
        // Everything the stubs will need, checked before a file is written.
        for group in &model.exports {
            for func in &group.funcs {
                if !matches!(func.kind, FunctionKind::Freestanding) {
                    bail!(
                        "`{}` is a resource's function; `wasmplug new` does not template \
                         resources yet",
                        func.name
                    );
                }
                for param in &func.params {
                    model.default_value(param.ty, &func.name)?;
                }
                default_result(&model, group, func)?;
            }
        }
        if model.exports.is_empty() {
            bail!(
                "world `{}` exports nothing: a plugin is called through its exports",
                model.world_name()
            );
        }
        Ok(model)
    }
}

/// `cases.toml`: each export called with default arguments, expecting the
/// stub's default answer; the mocks of the imports that return something,
/// commented (an import the code never calls is not in the component).
fn cases(model: &Model) -> anyhow::Result<String> {
    let mut out = String::new();
    let name = &model.name;
    writeln!(
        out,
        "# The cases of `wasmplug test dist/{name}.wasm cases.toml` (the format: wasmplug's\n\
         # docs/AUTHORING.md). Every export is a stub answering a default value, and\n\
         # each case below checks one. As you write an export, write what it should\n\
         # answer here, with cases of your own.\n"
    )?;
    let w = &model.resolve.worlds[model.world];
    let mut mocks = Vec::new();
    for (key, item) in &w.imports {
        let WorldItem::Interface { id, .. } = item else {
            continue;
        };
        let full = model.resolve.name_world_key(key);
        if full.starts_with("wasi:") {
            continue;
        }
        let (_, short) = model.interface_path(key);
        for func in model.resolve.interfaces[*id].functions.values() {
            let Some(ty) = func.result else { continue };
            let Ok(value) = model.default_value(ty, &func.name) else {
                continue;
            };
            mocks.push(format!(
                "# \"{short}.{}\" = '{}'",
                func.name,
                wave(model, &value)
            ));
        }
    }
    writeln!(
        out,
        "# The answers of the host imports your code calls (WAVE). Uncomment the ones\n\
         # it calls: an import the code never calls is not in the component.\n[mocks]"
    )?;
    for mock in &mocks {
        writeln!(out, "{mock}")?;
    }
    for group in &model.exports {
        for func in &group.funcs {
            let args: Vec<String> = func
                .params
                .iter()
                .map(|p| Ok(wave(model, &model.default_value(p.ty, &func.name)?)))
                .collect::<anyhow::Result<_>>()?;
            let call = format!("{}({})", model.call_name(group, func), args.join(", "));
            writeln!(out, "\n[[case]]\ncall = {}", toml_string(&call))?;
            if let Some(result) = default_result(model, group, func)? {
                writeln!(out, "expect = {}", toml_string(&wave(model, &result)))?;
            }
        }
    }
    Ok(out)
}

/// A TOML string: literal (`'...'`) unless the text has a `'`.
fn toml_string(text: &str) -> String {
    if text.contains('\'') || text.contains('\n') {
        format!("{text:?}")
    } else {
        format!("'{text}'")
    }
}

fn readme(model: &Model, lang: Lang, wit: &Path) -> String {
    let name = &model.name;
    let world = model.world_name();
    let (sources, notes) = match lang {
        Lang::Rust => (rust::SOURCES, rust::NOTES),
        Lang::C => (c::SOURCES, c::NOTES),
        Lang::Js => (js::SOURCES, js::NOTES),
        Lang::Python => (python::SOURCES, python::NOTES),
        Lang::Go => (go::SOURCES, go::NOTES),
    };
    let wit_name = wit
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "# {name}\n\n\
         A [wasmplug](https://crates.io/crates/wasmplug) plugin of world `{world}`\n\
         (from `{wit_name}`, copied into `wit/`), written in {lang:?}. Made by\n\
         `wasmplug new`: every export is a stub that answers a default value.\n\n\
         ## Build, check, test\n\n\
         ```sh\n\
         ./setup.sh                                   # the pinned tools (idempotent)\n\
         ./build.sh                                   # -> dist/{name}.wasm\n\
         wasmplug inspect dist/{name}.wasm --wit wit --world {world}  # does it fit?\n\
         wasmplug test dist/{name}.wasm cases.toml    # do the exports answer as expected?\n\
         ```\n\n\
         ## Where to write the plugin\n\n{sources}\n\n{notes}\n\n\
         `cases.toml` calls every export and checks its answer; the host imports\n\
         your code calls are answered there too (`[mocks]`), and the calls it makes\n\
         can be checked (`imports = [...]`). Its format is in wasmplug's\n\
         `docs/AUTHORING.md`.\n\n\
         If the world changes, copy the new WIT into `wit/` and rebuild: the build\n\
         regenerates the bindings, and the compiler names what no longer fits.\n"
    )
}

fn gitignore(lang: Lang) -> String {
    let extra = match lang {
        Lang::Rust => "target/\n",
        Lang::C | Lang::Go => "build/\nadapter/target/\n",
        Lang::Js => "node_modules/\n",
        Lang::Python => ".venv/\n__pycache__/\nwit_world/\ncomponentize_py_*\n",
    };
    format!("dist/\n{extra}")
}

/// Copy the WIT: a file as `wit/<its name>`, a directory's `.wit` files
/// and its `deps/`. Symbolic links are followed (a `deps/` linked from a
/// shared folder is common), to a depth of [`MAX_DEPTH`] so a link cycle
/// ends in an error instead of a full disk.
fn copy_wit(wit: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    if wit.is_file() {
        let name = wit.file_name().context("the WIT file has no name")?;
        std::fs::copy(wit, to.join(name)).with_context(|| format!("copying {}", wit.display()))?;
        return Ok(());
    }
    for entry in std::fs::read_dir(wit).with_context(|| format!("reading {}", wit.display()))? {
        let path = entry?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "wit") {
            std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))
                .with_context(|| format!("copying {}", path.display()))?;
        } else if path.is_dir() && path.file_name().is_some_and(|n| n == "deps") {
            copy_tree(&path, &to.join("deps"), 0)?;
        }
    }
    Ok(())
}

const MAX_DEPTH: usize = 16;

fn copy_tree(from: &Path, to: &Path, depth: usize) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        bail!(
            "{} is nested more than {MAX_DEPTH} directories deep (a symbolic link cycle?)",
            from.display()
        );
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        if path.is_dir() {
            copy_tree(&path, &to.join(name), depth + 1)?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

/// A WIT type as written in WIT, for the comments above stubs.
pub fn wit_type(model: &Model, ty: Type) -> String {
    match ty {
        Type::Id(id) => match (&model.resolve.types[id].name, &model.resolve.types[id].kind) {
            (Some(name), _) => name.clone(),
            (None, TypeDefKind::List(t)) => format!("list<{}>", wit_type(model, *t)),
            (None, TypeDefKind::Option(t)) => format!("option<{}>", wit_type(model, *t)),
            (None, TypeDefKind::Result(r)) => {
                let part = |t: Option<Type>| t.map_or("_".into(), |t| wit_type(model, t));
                format!("result<{}, {}>", part(r.ok), part(r.err))
            }
            (None, TypeDefKind::Tuple(t)) => {
                let types: Vec<String> = t.types.iter().map(|t| wit_type(model, *t)).collect();
                format!("tuple<{}>", types.join(", "))
            }
            (None, other) => other.as_str().to_string(),
        },
        // `Bool`, `U8`, `String`, …: WIT's names, capitalised.
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `name: func(a: t, ..) -> r`, as WIT writes it.
pub fn wit_signature(model: &Model, func: &Function) -> String {
    let params: Vec<String> = func
        .params
        .iter()
        .map(|p| format!("{}: {}", p.name, wit_type(model, p.ty)))
        .collect();
    let result = func
        .result
        .map(|t| format!(" -> {}", wit_type(model, t)))
        .unwrap_or_default();
    format!("{}: func({}){result}", func.name, params.join(", "))
}

/// Identifiers: `name` with `_` appended when it is one of `keywords`.
pub fn escape(name: String, keywords: &[&str]) -> String {
    if keywords.contains(&name.as_str()) {
        name + "_"
    } else {
        name
    }
}
