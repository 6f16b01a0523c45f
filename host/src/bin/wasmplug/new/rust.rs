//! Rust: `wit_bindgen::generate!` (wit-bindgen 0.63.0) and a `cdylib` for
//! `wasm32-wasip2`, where cargo writes a component itself. The stubs
//! implement the generated `Guest` traits; names follow wit-bindgen-rust
//! 0.63: interfaces at `exports::ns::pkg::iface` (exported) or
//! `ns::pkg::iface` (imported), types in UpperCamelCase, functions and
//! fields in snake_case with keywords suffixed `_`.

use std::fmt::Write as _;

use heck::{ToSnakeCase as _, ToUpperCamelCase as _};
use wit_parser::{Type, TypeDefKind, TypeId, WorldKey};

use super::{default_result, escape, File, Group, Kind, Model, Value};

pub const SOURCES: &str =
    "`src/lib.rs`: one `impl … Guest for Plugin` per exported interface (and\n\
`impl Guest` for the world's own functions). The bindings are generated at\n\
compile time by `wit_bindgen::generate!` from `wit/`.";

pub const NOTES: &str = "Needs Rust with the `wasm32-wasip2` target (`./setup.sh` adds it).";

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

fn ident(name: &str) -> String {
    escape(name.to_snake_case(), KEYWORDS)
}

fn camel(name: &str) -> String {
    match name {
        "guest" => "Guest_".into(),
        _ => name.to_upper_camel_case(),
    }
}

/// The module path of an interface in the bindings.
fn module(model: &Model, key: &WorldKey, exported: bool) -> String {
    let (package, iface) = model.interface_path(key);
    let mut parts = Vec::new();
    if exported {
        parts.push("exports".to_string());
    }
    if let Some((ns, pkg)) = package {
        parts.push(ident(&ns));
        parts.push(ident(&pkg));
    }
    parts.push(ident(&iface));
    parts.join("::")
}

/// The path of a named type (record, variant, enum, flags).
fn type_path(model: &Model, id: TypeId) -> String {
    let name = camel(model.type_name(id));
    match model.owner(id) {
        Some(iface) => format!(
            "{}::{name}",
            module(model, &model.key_of(iface), model.is_exported(iface))
        ),
        None => name,
    }
}

fn rust_type(model: &Model, ty: Type) -> String {
    match model.unalias(ty) {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "i8".into(),
        Type::S16 => "i16".into(),
        Type::S32 => "i32".into(),
        Type::S64 => "i64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "String".into(),
        Type::ErrorContext => "()".into(),
        Type::Id(id) => match &model.resolve.types[id].kind {
            TypeDefKind::List(t) => format!("Vec<{}>", rust_type(model, *t)),
            TypeDefKind::Option(t) => format!("Option<{}>", rust_type(model, *t)),
            TypeDefKind::Result(r) => {
                let part = |t: Option<Type>| t.map_or("()".into(), |t| rust_type(model, t));
                format!("Result<{}, {}>", part(r.ok), part(r.err))
            }
            TypeDefKind::Tuple(t) => {
                let types: Vec<String> = t.types.iter().map(|t| rust_type(model, *t)).collect();
                if types.len() == 1 {
                    format!("({},)", types[0])
                } else {
                    format!("({})", types.join(", "))
                }
            }
            _ => type_path(model, id),
        },
    }
}

fn expr(model: &Model, value: &Value) -> String {
    match &value.kind {
        Kind::Zero => match model.unalias(value.ty) {
            Type::Bool => "false".into(),
            Type::Char => "'\\0'".into(),
            Type::F32 | Type::F64 => "0.0".into(),
            _ => "0".into(),
        },
        Kind::Str(s) if s.is_empty() => "String::new()".into(),
        Kind::Str(s) => format!("{s:?}.to_string()"),
        Kind::List(_) => "Vec::new()".into(),
        Kind::None(_) => "None".into(),
        Kind::Ok(None, ..) => "Ok(())".into(),
        Kind::Ok(Some(v), ..) => format!("Ok({})", expr(model, v)),
        Kind::Tuple(items) => {
            let items: Vec<String> = items.iter().map(|v| expr(model, v)).collect();
            if items.len() == 1 {
                format!("({},)", items[0])
            } else {
                format!("({})", items.join(", "))
            }
        }
        Kind::Record(id, fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, v)| format!("{}: {}", ident(name), expr(model, v)))
                .collect();
            format!("{} {{ {} }}", type_path(model, *id), fields.join(", "))
        }
        Kind::Variant(id, case, payload) => {
            let path = format!("{}::{}", type_path(model, *id), camel(case));
            match payload {
                Some(v) => format!("{path}({})", expr(model, v)),
                None => path,
            }
        }
        Kind::Enum(id, case) => format!("{}::{}", type_path(model, *id), camel(case)),
        Kind::Flags(id) => format!("{}::empty()", type_path(model, *id)),
    }
}

fn guest_trait(model: &Model, group: &Group) -> String {
    match &group.key {
        Some(key) => format!("{}::Guest", module(model, key, true)),
        None => "Guest".into(),
    }
}

pub fn files(model: &Model) -> anyhow::Result<Vec<File>> {
    let name = &model.name;
    let world = model.world_name();
    let mut lib = format!(
        "//! {name}: a wasmplug plugin of world `{world}`.\n\
         //!\n\
         //! Every export is a stub answering a default value (`cases.toml` checks\n\
         //! them). Write the real answers, then update the cases.\n\
         #![allow(unused_variables)] // the stubs' arguments; remove when they are used\n\n\
         wit_bindgen::generate!({{ path: \"wit\", world: \"{world}\" }});\n\n\
         struct Plugin;\n"
    );
    for group in &model.exports {
        writeln!(lib, "\nimpl {} for Plugin {{", guest_trait(model, group))?;
        for (i, func) in group.funcs.iter().enumerate() {
            if i > 0 {
                lib.push('\n');
            }
            for line in func.docs.contents.iter().flat_map(|d| d.lines()) {
                writeln!(lib, "    /// {line}")?;
            }
            let params: Vec<String> = func
                .params
                .iter()
                .map(|p| format!("{}: {}", ident(&p.name), rust_type(model, p.ty)))
                .collect();
            let ret = func
                .result
                .map(|t| format!(" -> {}", rust_type(model, t)))
                .unwrap_or_default();
            writeln!(
                lib,
                "    fn {}({}){ret} {{",
                ident(&func.name),
                params.join(", ")
            )?;
            if let Some(value) = default_result(model, group, func)? {
                writeln!(lib, "        {}", expr(model, &value))?;
            }
            writeln!(lib, "    }}")?;
        }
        writeln!(lib, "}}")?;
    }
    lib.push_str("\nexport!(Plugin);\n");

    let cargo = format!(
        "[package]\n\
         name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         edition = \"2021\"\n\
         publish = false\n\n\
         [lib]\n\
         crate-type = [\"cdylib\"]\n\n\
         [dependencies]\n\
         wit-bindgen = \"=0.63.0\"\n\n\
         [profile.release]\n\
         opt-level = \"s\"\n\
         lto = true\n\
         codegen-units = 1\n\
         strip = true\n\
         panic = \"abort\"\n\n\
         # Its own workspace, even when created inside another one.\n\
         [workspace]\n"
    );
    let crate_file = name.replace('-', "_");
    let build = format!(
        "#!/usr/bin/env bash\n\
         # Build dist/{name}.wasm (a component of world `{world}`) from src/ and wit/.\n\
         #   ./build.sh [OUT_DIR]\n\
         # CARGO_TARGET_DIR is honoured (default: ./target).\n\
         set -euo pipefail\n\
         HERE=\"$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\" && pwd)\"\n\
         OUT_DIR=\"${{1:-$HERE/dist}}\"\n\
         TARGET_DIR=\"${{CARGO_TARGET_DIR:-$HERE/target}}\"\n\
         command -v cargo >/dev/null || {{ echo \"build.sh: cargo not found; install Rust (rustup)\" >&2; exit 1; }}\n\
         rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 ||\n\
         \x20 {{ echo \"build.sh: the wasm32-wasip2 target is missing; run ./setup.sh\" >&2; exit 1; }}\n\
         cargo build --release --target wasm32-wasip2 --manifest-path \"$HERE/Cargo.toml\" --target-dir \"$TARGET_DIR\"\n\
         mkdir -p \"$OUT_DIR\"\n\
         cp \"$TARGET_DIR/wasm32-wasip2/release/{crate_file}.wasm\" \"$OUT_DIR/{name}.wasm\"\n\
         echo \"built $OUT_DIR/{name}.wasm ($(wc -c <\"$OUT_DIR/{name}.wasm\") bytes)\"\n"
    );
    let setup = "#!/usr/bin/env bash\n\
         # The Rust target this plugin builds for. Idempotent.\n\
         set -euo pipefail\n\
         command -v rustup >/dev/null || { echo \"setup.sh: rustup not found; install Rust from https://rustup.rs\" >&2; exit 1; }\n\
         rustup target add wasm32-wasip2\n";
    Ok(vec![
        File::new("Cargo.toml", cargo),
        File::new("src/lib.rs", lib),
        File::script("build.sh", build),
        File::script("setup.sh", setup),
    ])
}
