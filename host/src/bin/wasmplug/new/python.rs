//! Python: componentize-py 0.25.1 (it embeds CPython). `app.py` holds one
//! class per exported interface, subclassing the protocol componentize-py
//! generates in `wit_world.exports` (and `WitWorld` for the world's own
//! functions). Names follow componentize-py 0.25: classes and types in
//! UpperCamelCase, methods and fields in snake_case, enum and flags cases
//! in SHOUTY_CASE, variant cases as `Type_Case` classes with a `value`;
//! `result<T, E>` returns a T or raises `Err(e)`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::bail;
use heck::{ToShoutySnakeCase as _, ToSnakeCase as _, ToUpperCamelCase as _};
use wit_parser::{Type, TypeId, WorldKey};

use super::{default_result, escape, wit_signature, File, Kind, Model, Value};

pub const SOURCES: &str =
    "`app.py`: one class per exported interface (and `WitWorld` for the world's\n\
own functions). The `wit_world` bindings are generated at build time; to\n\
read them, run `.venv/bin/componentize-py -d wit -w WORLD bindings bindings/`.";

pub const NOTES: &str =
    "Needs Python 3 with venv (`./setup.sh` installs componentize-py into `.venv/`).\n\
Module-level state is per instance. Any exception other than `Err` traps.";

const REQUIREMENTS: &str = include_str!("../../../../../guest-plugins/hello-py/requirements.txt");
const SETUP: &str = include_str!("../../../../../guest-plugins/hello-py/setup.sh");

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

fn ident(name: &str) -> String {
    escape(name.to_snake_case(), KEYWORDS)
}

/// The module a named type lives in (imported as its last part), and the
/// Python expression naming the type.
fn type_ref(model: &Model, id: TypeId, modules: &mut BTreeSet<String>) -> String {
    let name = model.type_name(id).to_upper_camel_case();
    match model.owner(id) {
        Some(iface) => {
            let (_, short) = model.interface_path(&model.key_of(iface));
            let side = if model.is_exported(iface) {
                "exports"
            } else {
                "imports"
            };
            let module = short.to_snake_case();
            modules.insert(format!("from wit_world.{side} import {module}"));
            format!("{module}.{name}")
        }
        None => {
            modules.insert("import wit_world".into());
            format!("wit_world.{name}")
        }
    }
}

/// A value as Python; `top` for a function's own result, where a
/// `result` is its ok value (an error is raised, not returned).
fn expr(model: &Model, value: &Value, top: bool, modules: &mut BTreeSet<String>) -> String {
    match &value.kind {
        Kind::Zero => match model.unalias(value.ty) {
            Type::Bool => "False".into(),
            Type::Char => "\"\\x00\"".into(),
            Type::F32 | Type::F64 => "0.0".into(),
            _ => "0".into(),
        },
        Kind::Str(s) => format!("{s:?}"),
        Kind::List(Type::U8) => "b\"\"".into(),
        Kind::List(_) => "[]".into(),
        Kind::None(_) => "None".into(),
        Kind::Ok(payload, ..) => {
            let inner = payload
                .as_ref()
                .map_or("None".into(), |v| expr(model, v, false, modules));
            if top {
                inner
            } else {
                modules.insert("from componentize_py_types import Ok".into());
                format!("Ok({inner})")
            }
        }
        Kind::Tuple(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| expr(model, v, false, modules))
                .collect();
            if items.len() == 1 {
                format!("({},)", items[0])
            } else {
                format!("({})", items.join(", "))
            }
        }
        Kind::Record(id, fields) => {
            let ty = type_ref(model, *id, modules);
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, v)| format!("{}={}", ident(name), expr(model, v, false, modules)))
                .collect();
            format!("{ty}({})", fields.join(", "))
        }
        Kind::Variant(id, case, payload) => {
            let ty = type_ref(model, *id, modules);
            let arg = payload
                .as_ref()
                .map(|v| expr(model, v, false, modules))
                .unwrap_or_default();
            // `Answer_None_`: a case named like a Python keyword is escaped.
            let case = escape(case.to_upper_camel_case(), KEYWORDS);
            format!("{ty}_{case}({arg})")
        }
        Kind::Enum(id, case) => {
            format!(
                "{}.{}",
                type_ref(model, *id, modules),
                case.to_shouty_snake_case()
            )
        }
        Kind::Flags(id) => format!("{}(0)", type_ref(model, *id, modules)),
    }
}

pub fn files(model: &Model) -> anyhow::Result<Vec<File>> {
    // componentize-py 0.25.1 writes no bindings for an interface a world
    // defines inline, and then asks for its class: refuse it here.
    if let Some(WorldKey::Name(inline)) = model.exports.iter().find_map(|g| match &g.key {
        Some(key @ WorldKey::Name(_)) => Some(key),
        _ => None,
    }) {
        bail!(
            "world `{}` exports `{inline}`, an interface it defines inline; componentize-py \
             0.25.1 generates no Python bindings for those. Declare it as an interface of the \
             package (`interface {inline} {{ .. }}`, then `export {inline};`)",
            model.world_name()
        );
    }
    let name = &model.name;
    let world = model.world_name();
    let mut modules = BTreeSet::new();
    let mut classes = String::new();
    for group in &model.exports {
        let class = match &group.key {
            Some(key) => {
                modules.insert("from wit_world import exports".into());
                let (_, short) = model.interface_path(key);
                let class = short.to_upper_camel_case();
                format!("class {class}(exports.{class}):")
            }
            None => {
                modules.insert("import wit_world".into());
                "class WitWorld(wit_world.WitWorld):".into()
            }
        };
        writeln!(classes, "\n\n{class}")?;
        for (i, func) in group.funcs.iter().enumerate() {
            if i > 0 {
                classes.push('\n');
            }
            let params: Vec<String> = func.params.iter().map(|p| ident(&p.name)).collect();
            writeln!(classes, "    # {}", wit_signature(model, func))?;
            let mut args = vec!["self".to_string()];
            args.extend(params);
            writeln!(
                classes,
                "    def {}({}):",
                ident(&func.name),
                args.join(", ")
            )?;
            match default_result(model, group, func)? {
                Some(value) => writeln!(
                    classes,
                    "        return {}",
                    expr(model, &value, true, &mut modules)
                )?,
                None => writeln!(classes, "        pass")?,
            }
        }
    }
    let mut app = format!(
        "\"\"\"{name}: a wasmplug plugin of world `{world}`.\n\n\
         Every export is a stub answering a default value (cases.toml checks them).\n\
         Write the real answers, then update the cases. A `result` is returned as\n\
         its ok value; raise `componentize_py_types.Err(value)` for an error.\n\
         \"\"\"\n\n"
    );
    // `import x` lines first, then `from x import y`, each sorted.
    let (plain, from): (Vec<&String>, Vec<&String>) =
        modules.iter().partition(|m| m.starts_with("import "));
    for line in plain.iter().chain(&from) {
        writeln!(app, "{line}")?;
    }
    app.push_str(&classes);

    let build = format!(
        "#!/usr/bin/env bash\n\
         # Build dist/{name}.wasm (a component of world `{world}`) from app.py and wit/\n\
         # with componentize-py (from ./setup.sh).\n\
         #   ./build.sh [OUT_DIR]\n\
         set -euo pipefail\n\
         here=\"$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\" && pwd)\"\n\
         out_dir=\"${{1:-$here/dist}}\"\n\
         cpy=\"$here/.venv/bin/componentize-py\"\n\
         [ -x \"$cpy\" ] || {{ echo \"error: componentize-py is not installed; run $here/setup.sh first\" >&2; exit 1; }}\n\
         mkdir -p \"$out_dir\"\n\
         out=\"$(cd \"$out_dir\" && pwd)/{name}.wasm\"\n\
         cd \"$here\"\n\
         env -u VIRTUAL_ENV \"$cpy\" -d wit -w {world} componentize app -p . -o \"$out.tmp\"\n\
         mv \"$out.tmp\" \"$out\"\n\
         echo \"built $out ($(stat -c %s \"$out\") bytes)\"\n"
    );
    Ok(vec![
        File::new("app.py", app),
        File::new("requirements.txt", REQUIREMENTS),
        File::script("setup.sh", SETUP.replace("hello-py", name)),
        File::script("build.sh", build),
    ])
}
