//! C: clang 14 and wasi-libc (Debian), bindings from `wit-bindgen c`
//! 0.63.0, the preview1 reactor adapter of wasmtime 48 — the recipe of
//! wasmplug's own `hello-c`. The C names of wit-bindgen's bindings (types
//! such as `exports_ns_pkg_iface_list_shape_t`, out-pointers, `bool` for
//! `result` and `option`) are not re-derived here: `new` runs the same
//! generator, as a library at the pinned version, reads the prototypes of
//! the exported functions from the header it writes, and defines each one
//! in `plugin.c`. Every stub frees its arguments (the callee owns them)
//! and answers zero: in wit-bindgen's C layout, all zeros is exactly the
//! default value (`""`, `[]`, `none`, a first case), and a `result` is
//! made `ok` by returning `true`.

use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use heck::ToSnakeCase as _;
use wit_bindgen_core::wit_parser as wp;
use wit_parser::Type;

use super::{default_result, wit_signature, File, Group, Kind, Model, Value};

pub const SOURCES: &str = "`plugin.c`: one C function per export, as declared in the generated\n\
header (`build/gen/<world>.h`, written by `build.sh`). Arguments belong to\n\
the callee (free them with the header's `*_free` helpers); returned strings\n\
must be heap memory (`<world>_string_dup`), freed after the host copies them.";

pub const NOTES: &str =
    "Needs Debian's clang 14, lld and wasi-libc (apt) and cargo (`wit-bindgen`,\n\
the adapter): `./setup.sh` installs them (as root, or with sudo).";

pub const SETUP: &str = include_str!("../../../../../guest-plugins/hello-c/setup.sh");

/// `adapter/`: the tool that writes the preview1 reactor adapter of
/// wasmtime 48 (shared by C and Go).
pub fn adapter_files() -> Vec<File> {
    vec![
        File::new(
            "adapter/Cargo.toml",
            include_str!("../../../../../guest-plugins/hello-c/adapter/Cargo.toml"),
        ),
        File::new(
            "adapter/Cargo.lock",
            include_str!("../../../../../guest-plugins/hello-c/adapter/Cargo.lock"),
        ),
        File::new(
            "adapter/src/main.rs",
            include_str!("../../../../../guest-plugins/hello-c/adapter/src/main.rs"),
        ),
    ]
}

/// The header `wit-bindgen c` 0.63.0 writes for the world.
fn header(model: &Model) -> anyhow::Result<String> {
    let mut resolve = wp::Resolve::default();
    let (package, _) = resolve
        .push_path(&model.wit)
        .with_context(|| format!("reading WIT from {} for wit-bindgen c", model.wit.display()))?;
    let world = resolve.select_world(&[package], Some(model.world_name()))?;
    let mut generator = wit_bindgen_c::Opts {
        no_object_file: true,
        ..Default::default()
    }
    .build();
    let mut files = wit_bindgen_core::Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    let (_, text) = files
        .iter()
        .find(|(name, _)| name.ends_with(".h"))
        .context("wit-bindgen c wrote no header")?;
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// The prototypes under each "// Exported Functions from `NAME`" heading.
fn exported_prototypes(header: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in header.lines() {
        if let Some(rest) = line.strip_prefix("// Exported Functions from `") {
            sections.push((rest.trim_end_matches('`').to_string(), Vec::new()));
            current = Some(sections.len() - 1);
        } else if line.trim().is_empty() {
            current = None;
        } else if let Some(i) = current {
            // Doc comments above a prototype are skipped; wit-bindgen
            // writes each prototype on one line.
            if line.ends_with(");") && !line.starts_with("//") {
                sections[i].1.push(line.trim_end_matches(';').to_string());
            }
        }
    }
    sections
}

/// A C prototype, read: `int32_t f(int32_t a, foo_t *b)`.
struct Prototype {
    ret: String,
    /// `(type, name)`: `("foo_t *", "b")`.
    params: Vec<(String, String)>,
}

fn split_prototype(proto: &str) -> anyhow::Result<Prototype> {
    let open = proto.find('(').context("no parameter list")?;
    let head = proto[..open].trim();
    let (ret, _name) = head.rsplit_once(' ').context("no return type")?;
    let params = proto[open + 1..proto.len() - 1].trim();
    let params = if params == "void" || params.is_empty() {
        Vec::new()
    } else {
        params
            .split(',')
            .map(|p| {
                let p = p.trim();
                let at = p
                    .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map_or(0, |i| i + 1);
                (p[..at].trim().to_string(), p[at..].to_string())
            })
            .collect()
    };
    Ok(Prototype {
        ret: ret.trim().to_string(),
        params,
    })
}

/// Statements that give `place` (a record behind `ret`) the non-zero parts
/// of `value`: its strings (the only defaults that are not zero).
fn assign(value: &Value, place: &str, dup: &str, out: &mut String) {
    match &value.kind {
        Kind::Str(s) if !s.is_empty() => {
            let _ = writeln!(out, "  {dup}(&{place}, {s:?});");
        }
        Kind::Record(_, fields) => {
            for (name, v) in fields {
                assign(v, &format!("{place}.{}", name.to_snake_case()), dup, out);
            }
        }
        Kind::Ok(Some(v), ..) => assign(v, place, dup, out),
        _ => {}
    }
}

fn stub(
    model: &Model,
    group: &Group,
    func: &wit_parser::Function,
    proto: &str,
    header: &str,
    dup: &str,
) -> anyhow::Result<String> {
    let Prototype { ret, params } = split_prototype(proto)
        .with_context(|| format!("reading the prototype `{proto}` of `{}`", func.name))?;
    let mut out = format!("// {}\n{proto} {{\n", wit_signature(model, func));
    let inputs = func.params.len().min(params.len());
    for (ty, pname) in &params[..inputs] {
        let base = ty.trim_end_matches('*').trim().trim_end_matches("_t");
        if ty.ends_with('*') && header.contains(&format!("void {base}_free(")) {
            writeln!(out, "  {base}_free({pname});")?;
        } else {
            writeln!(out, "  (void){pname};")?;
        }
    }
    let value = default_result(model, group, func)?;
    let outputs = &params[inputs..];
    for (i, (_, pname)) in outputs.iter().enumerate() {
        writeln!(out, "  memset({pname}, 0, sizeof *{pname});")?;
        if i == 0 {
            if let Some(value) = &value {
                assign(value, &format!("(*{pname})"), dup, &mut out);
            }
        }
    }
    match ret.as_str() {
        "void" => {}
        "bool" => {
            let ok = func
                .result
                .map(|t| model.unalias(t))
                .and_then(|t| match t {
                    Type::Id(id) => Some(&model.resolve.types[id].kind),
                    _ => None,
                })
                .is_some_and(|k| matches!(k, wit_parser::TypeDefKind::Result(_)));
            writeln!(out, "  return {};", if ok { "true" } else { "false" })?;
        }
        _ => writeln!(out, "  return 0;")?,
    }
    out.push_str("}\n");
    Ok(out)
}

pub fn files(model: &Model) -> anyhow::Result<Vec<File>> {
    let name = &model.name;
    let world = model.world_name();
    let base = world.to_snake_case();
    let header = header(model)?;
    let dup = format!("{base}_string_dup");
    let sections = exported_prototypes(&header);
    let mut c = format!(
        "// {name}: a wasmplug plugin of world `{world}`, in C.\n\
         //\n\
         // Every export is a stub answering a default value (cases.toml checks\n\
         // them): zeros, which in wit-bindgen's C layout are \"\", [], none or a\n\
         // first case, and `true` (ok) for a result. Write the real answers, then\n\
         // update the cases.\n\
         //\n\
         // Ownership (see build/gen/{base}.h): arguments belong to the callee --\n\
         // free them with the `*_free` helpers (as the stubs do) or hand them on\n\
         // in the result; returned strings must be heap memory ({dup}), which\n\
         // the bindings free after the host has copied them.\n\n\
         #include <stdbool.h>\n\
         #include <stdint.h>\n\
         #include <stdlib.h>\n\
         #include <string.h>\n\n\
         #include \"{base}.h\"\n"
    );
    for group in &model.exports {
        let title = match &group.key {
            Some(key) => model.resolve.name_world_key(key),
            None => world.to_string(),
        };
        let Some((_, protos)) = sections.iter().find(|(t, _)| *t == title) else {
            bail!("wit-bindgen c declared no functions for `{title}` (a wasmplug bug)");
        };
        if protos.len() != group.funcs.len() {
            bail!(
                "wit-bindgen c declared {} functions for `{title}`, the WIT has {} (a wasmplug bug)",
                protos.len(),
                group.funcs.len()
            );
        }
        writeln!(c, "\n// --- {title}")?;
        for (func, proto) in group.funcs.iter().zip(protos) {
            c.push('\n');
            c.push_str(&stub(model, group, func, proto, &header, &dup)?);
        }
    }
    let mut files = vec![
        File::new("plugin.c", c),
        File::script("setup.sh", SETUP),
        File::script("build.sh", build_script(name, world, &base)),
    ];
    files.extend(adapter_files());
    Ok(files)
}

fn build_script(name: &str, world: &str, base: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Build dist/{name}.wasm (a WASI 0.2 component of world `{world}`):
#   wit-bindgen c -> clang (wasm32-wasi reactor core module) -> wasm-tools
#   component new (+ the preview1 reactor adapter of wasmtime 48, written by
#   adapter/) -> wasm-tools validate.
#   ./build.sh [OUT_DIR]
# Tools come from ./setup.sh. Generated files go to build/. Set WASI_SYSROOT
# if wasi-libc is not where clang looks (Debian's is found without it).
set -euo pipefail

HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
OUT_DIR="${{1:-$HERE/dist}}"
BUILD_DIR="$HERE/build"
GEN_DIR="$BUILD_DIR/gen"
WIT_BINDGEN_VERSION=0.63.0
TARGET="${{TARGET:-wasm32-wasi}}"
SYSROOT_FLAG=()
if [[ -n "${{WASI_SYSROOT:-}}" ]]; then SYSROOT_FLAG=(--sysroot "$WASI_SYSROOT"); fi

die() {{ echo "build.sh: $*" >&2; exit 1; }}
need() {{ command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run $HERE/setup.sh first"; }}
need clang
need wasm-ld
need wit-bindgen
need wasm-tools
need cargo
have="$(wit-bindgen --version | awk '{{print $2}}')"
[[ "$have" == "$WIT_BINDGEN_VERSION" ]] || die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed; run $HERE/setup.sh"

mkdir -p "$BUILD_DIR" "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -rf "$GEN_DIR"
echo "==> wit-bindgen c (world {world})"
wit-bindgen c "$HERE/wit" --world {world} --out-dir "$GEN_DIR" | sed 's/^/    /'
echo "==> clang --target=$TARGET -mexec-model=reactor"
clang --target="$TARGET" "${{SYSROOT_FLAG[@]}}" -mexec-model=reactor -O2 -Wall -Wextra \
  -I "$GEN_DIR" "$HERE/plugin.c" "$GEN_DIR/{base}.c" "$GEN_DIR/{base}_component_type.o" \
  -Wl,--strip-debug -o "$BUILD_DIR/{name}.core.wasm"
echo "==> preview1 reactor adapter (wasmtime 48)"
CARGO_TARGET_DIR="$HERE/adapter/target" cargo run --quiet --locked --release \
  --manifest-path "$HERE/adapter/Cargo.toml" -- "$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm"
echo "==> wasm-tools component new"
wasm-tools component new "$BUILD_DIR/{name}.core.wasm" \
  --adapt "wasi_snapshot_preview1=$BUILD_DIR/wasi_snapshot_preview1.reactor.wasm" \
  -o "$OUT_DIR/{name}.wasm"
wasm-tools validate --features component-model "$OUT_DIR/{name}.wasm"
echo "==> $OUT_DIR/{name}.wasm ($(wc -c <"$OUT_DIR/{name}.wasm") bytes)"
"#
    )
}
