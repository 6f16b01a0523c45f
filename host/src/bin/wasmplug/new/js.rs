//! JavaScript: componentize-js 0.23.0 (StarlingMonkey). `plugin.js`
//! exports one object per exported interface, named after it in
//! camelCase, and a function per world-level export. Values follow jco's
//! conventions: records as objects with camelCase keys, variants as
//! `{ tag, val }`, enums as their case names, `option` as the value or
//! `undefined`, 64-bit integers as BigInt; a function's `result` is
//! returned as its ok value, and an error is thrown.

use std::fmt::Write as _;

use heck::ToLowerCamelCase as _;
use wit_parser::{Type, TypeDefKind};

use super::{default_result, escape, wit_signature, File, Kind, Model, Value};

pub const SOURCES: &str =
    "`plugin.js`: one exported object per exported interface (and an exported\n\
function per function of the world's own). Imports are ES modules named\n\
after the interface: `import { get } from 'example:kv/store@1.0.0';`.";

pub const NOTES: &str = "Needs Node.js >= 18 and npm (`./setup.sh` installs componentize-js into\n\
`node_modules/`). Module-level state is per instance; an exception traps,\n\
except in a function returning `result`, where `throw value` is its error.";

const PACKAGE: &str = include_str!("../../../../../guest-plugins/hello-js/package.json");
const LOCK: &str = include_str!("../../../../../guest-plugins/hello-js/package-lock.json");
const SETUP: &str = include_str!("../../../../../guest-plugins/hello-js/setup.sh");

const KEYWORDS: &[&str] = &[
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "arguments",
    "eval",
];

fn ident(name: &str) -> String {
    escape(name.to_lower_camel_case(), KEYWORDS)
}

/// A value as JavaScript; `top` for a function's own result, where a
/// `result` is its ok value (an error is thrown, not returned).
fn expr(model: &Model, value: &Value, top: bool) -> String {
    match &value.kind {
        Kind::Zero => match model.unalias(value.ty) {
            Type::Bool => "false".into(),
            Type::Char => "'\\0'".into(),
            Type::U64 | Type::S64 => "0n".into(),
            _ => "0".into(),
        },
        Kind::Str(s) => format!("{s:?}"),
        Kind::List(Type::U8) => "new Uint8Array(0)".into(),
        Kind::List(_) => "[]".into(),
        // An option of an option is tagged, so the two `none`s differ.
        Kind::None(inner) if is_option(model, *inner) => "{ tag: 'none' }".into(),
        Kind::None(_) => "undefined".into(),
        Kind::Ok(payload, ..) => {
            let inner = payload
                .as_ref()
                .map_or("undefined".into(), |v| expr(model, v, false));
            if top {
                inner
            } else {
                format!("{{ tag: 'ok', val: {inner} }}")
            }
        }
        Kind::Tuple(items) => {
            let items: Vec<String> = items.iter().map(|v| expr(model, v, false)).collect();
            format!("[{}]", items.join(", "))
        }
        Kind::Record(_, fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, v)| {
                    format!("{}: {}", name.to_lower_camel_case(), expr(model, v, false))
                })
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Kind::Variant(_, case, Some(v)) => {
            format!("{{ tag: '{case}', val: {} }}", expr(model, v, false))
        }
        Kind::Variant(_, case, None) => format!("{{ tag: '{case}' }}"),
        Kind::Enum(_, case) => format!("'{case}'"),
        Kind::Flags(id) => {
            let TypeDefKind::Flags(flags) = &model.resolve.types[*id].kind else {
                unreachable!("Kind::Flags is made from flags");
            };
            let fields: Vec<String> = flags
                .flags
                .iter()
                .map(|f| format!("{}: false", f.name.to_lower_camel_case()))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}

fn is_option(model: &Model, ty: Type) -> bool {
    matches!(model.unalias(ty), Type::Id(id) if matches!(model.resolve.types[id].kind, TypeDefKind::Option(_)))
}

pub fn files(model: &Model) -> anyhow::Result<Vec<File>> {
    let name = &model.name;
    let world = model.world_name();
    let mut js = format!(
        "// {name}: a wasmplug plugin of world `{world}`.\n\
         //\n\
         // Every export is a stub answering a default value (cases.toml checks\n\
         // them). Write the real answers, then update the cases.\n"
    );
    for group in &model.exports {
        let method = |func: &wit_parser::Function, indent: &str| -> anyhow::Result<String> {
            let params: Vec<String> = func.params.iter().map(|p| ident(&p.name)).collect();
            let mut out = format!("{indent}// {}\n", wit_signature(model, func));
            let head = match group.key {
                Some(_) => format!("{indent}{}({}) {{\n", ident(&func.name), params.join(", ")),
                None => format!(
                    "{indent}export function {}({}) {{\n",
                    ident(&func.name),
                    params.join(", ")
                ),
            };
            out.push_str(&head);
            if let Some(value) = default_result(model, group, func)? {
                writeln!(out, "{indent}  return {};", expr(model, &value, true))?;
            }
            let close = if group.key.is_some() { "}," } else { "}" };
            writeln!(out, "{indent}{close}")?;
            Ok(out)
        };
        match &group.key {
            Some(key) => {
                let (_, short) = model.interface_path(key);
                writeln!(js, "\nexport const {} = {{", short.to_lower_camel_case())?;
                for (i, func) in group.funcs.iter().enumerate() {
                    if i > 0 {
                        js.push('\n');
                    }
                    js.push_str(&method(func, "  ")?);
                }
                js.push_str("};\n");
            }
            None => {
                for func in &group.funcs {
                    js.push('\n');
                    js.push_str(&method(func, "")?);
                }
            }
        }
    }
    let build = format!(
        "#!/usr/bin/env bash\n\
         # Build dist/{name}.wasm (a component of world `{world}`) from plugin.js and\n\
         # wit/ with componentize-js (from ./setup.sh).\n\
         #   ./build.sh [OUT_DIR]\n\
         set -euo pipefail\n\
         here=\"$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\" && pwd)\"\n\
         out_dir=\"${{1:-$here/dist}}\"\n\
         cjs=\"$here/node_modules/.bin/componentize-js\"\n\
         [ -x \"$cjs\" ] || {{ echo \"error: componentize-js is not installed; run $here/setup.sh first\" >&2; exit 1; }}\n\
         mkdir -p \"$out_dir\"\n\
         out=\"$(cd \"$out_dir\" && pwd)/{name}.wasm\"\n\
         cd \"$here\"\n\
         \"$cjs\" plugin.js --wit wit --world-name {world} --disable http fetch-event --out \"$out.tmp\"\n\
         mv \"$out.tmp\" \"$out\"\n\
         echo \"built $out ($(stat -c %s \"$out\") bytes)\"\n"
    );
    let package = PACKAGE
        .replace("\"wasmplug-hello-js\"", &format!("{name:?}"))
        .replace(
            "wasmplug reference greeter plugin in JavaScript (componentize-js)",
            &format!("a wasmplug plugin of world {world}"),
        );
    Ok(vec![
        File::new("plugin.js", js),
        File::new("package.json", package),
        File::new(
            "package-lock.json",
            LOCK.replace("\"wasmplug-hello-js\"", &format!("{name:?}")),
        ),
        File::script("setup.sh", SETUP.replace("hello-js", name)),
        File::script("build.sh", build),
    ])
}
